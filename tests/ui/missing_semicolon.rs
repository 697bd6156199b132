use durable::workflow;

workflow! {
    onboard {
        step a
        step b(retry(max_attempts = 2)) = other::b
        step c;
    }
}

fn main() {}
