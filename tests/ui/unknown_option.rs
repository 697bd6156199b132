use durable::workflow;

workflow! {
    onboard(stat = Order) {
        step a(rety(max_attempts = 3));
        step b(retry(max_attempt = 3));
        step c(max_attempts = 3);
        parallel(merg = deep_merge, timeout = 5s) {
            step d;
        }
    }
}

fn main() {}
