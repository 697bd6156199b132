use durable::workflow;

workflow! {
    onboard {
        step a(retry(backoff = linear, initial = 1s));
        step b(retry);
        step c(retry(max_attempts = 3, multiplier = 0.5, jitter = yes));
        step d(retry(max_attempts = 3, max_attempts = 4));
        step e(retry(max_attempts = -1));
    }
}

fn main() {}
