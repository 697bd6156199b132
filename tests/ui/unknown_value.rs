use durable::workflow;

workflow! {
    onboard {
        step a(retry(max_attempts = 3, backoff = exponental));
        parallel(merge = deepmerge, on_error = fail) {
            step b;
        }
        parallel(merge = "collect") {
            step c;
        }
    }
}

fn main() {}
