use durable::workflow;

workflow! {
    fetch_all {
        // A policy needs a name for its batch result.
        parallel(min_successful = 1) {
            step a;
            step b;
        }
        // `on_error` does not apply with a policy.
        parallel fetched(tolerated_failure_percentage = 50, on_error = complete_all) {
            step c;
            step d;
        }
        parallel limited(max_concurency = 2) {
            step e;
            step f;
        }
        // The name is shared with steps, seqs and maps.
        parallel e {
            step g;
        }
    }
}

fn main() {}
