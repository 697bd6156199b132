use durable::workflow;

workflow! {
    onboard {
        dag {
            step a;
            step b(after = [a, d]);
            step c(after = [b]);
            step d(after = [c]);
        }
        dag {
            seq e(after = [f]) {
                step e1;
            }
            step f(after = [e]);
        }
    }
}

fn main() {}
