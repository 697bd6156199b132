use durable::workflow;

workflow! {
    onboard {
        step a;
        parallel {
            step b;
            step a;
        }
        step b = other::b;
    }
}

fn main() {}
