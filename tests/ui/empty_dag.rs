use durable::workflow;

workflow! {
    onboard {
        step a;
        dag {}
    }
}

fn main() {}
