use durable::workflow;

workflow! {
    onboard {
        step finish = billing::finish(retry(max_attempts = 3));
    }
}

fn main() {}
