use durable::workflow;

workflow! {
    onboard {
        step a(retry(max_attempts = 0));
    }
}

fn main() {}
