use durable::workflow;

workflow! {
    fetch_all {
        // Even both branches failing would not fail the block.
        parallel everything_tolerated(tolerated_failures = 2) {
            step a;
            step b;
        }
        // Needing 2 of 3, the block fails at the second failure whatever the tolerance says.
        parallel beside_min(min_successful = 2, tolerated_failures = 1) {
            step c;
            step d;
            step e;
        }
        // Meaningful: fails only when all three fail, or once 1 of 3 is out of reach.
        parallel all_but_one(tolerated_failures = 2) {
            step f;
            step g;
            step h;
        }
        parallel one_of_three(min_successful = 1, tolerated_failures = 1) {
            step i;
            step j;
            step k;
        }
    }
}

fn main() {}
