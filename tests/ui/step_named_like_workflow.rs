use durable::workflow;

workflow! {
    greet {
        step greet;
    }
}

fn main() {}
