use durable::workflow;

workflow! {
    fetch_all {
        parallel too_many(min_successful = 3) {
            step a;
            step b;
        }
        parallel none_needed(min_successful = 0) {
            step c;
            step d;
        }
        // Exactly the number of branches: every one must succeed, which is fine.
        parallel all(min_successful = 2) {
            step e;
            step f;
        }
    }
}

fn main() {}
