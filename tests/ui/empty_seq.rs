use durable::workflow;

workflow! {
    onboard {
        step a;
        parallel {
            seq billing {}
            step b;
        }
    }
}

fn main() {}
