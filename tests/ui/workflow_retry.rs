use durable::workflow;

workflow! {
    onboard(retry(backoff = constant), timeout = 5s) {
        step a(retry(initial = 1s));
    }
}

workflow! {
    ship(state = u32, retry) {
        step b;
    }
}

fn main() {}
