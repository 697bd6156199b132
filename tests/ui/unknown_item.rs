use durable::workflow;

workflow! {
    onboard {
        stpe a;
        paralel {
            step b;
        }
        step c;
    }
}

fn main() {}
