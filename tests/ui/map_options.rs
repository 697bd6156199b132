use durable::workflow;

workflow! {
    onboard {
        map a(over = items, max_concurrency = 0, min_successful = 0) {
            step one;
        }
        map b(over = items, tolerated_failure_percentage = 150) {
            step two;
        }
        map c(over = items, tolerated_failure_percentage = -5, tolerated_failures = -1) {
            step three;
        }
        map d(over = items, tolerated_failure_percentage = 10%, max_concurrency = "4") {
            step four;
        }
        map e(over = items, max_concurency = 2, retry(max_attempts = 3), merge = collect) {
            step five;
        }
        map f(over = items, item = 3) {
            step six;
        }
    }
}

fn main() {}
