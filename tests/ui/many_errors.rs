use durable::workflow;

workflow! {
    onboard {
        stpe a;
        step b(retry(max_attempts = 0, backoff = linaer));
        parallel(on_error = fail_fast, on_error = complete_all) {}
        step b;
        step c(retry(max_attempts = 2, initial = 10))
    }
}

fn main() {}
