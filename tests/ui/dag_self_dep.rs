use durable::workflow;

workflow! {
    onboard {
        dag {
            step a;
            step b(after = [a, b]);
            seq c(after = [c]) {
                step d;
            }
        }
    }
}

fn main() {}
