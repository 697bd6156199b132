use durable::workflow;

workflow! {
    regions {
        map too_many(over = ["eu", "us", "ap"], item = String, min_successful = 5) {
            step one;
        }
        map one_item(over = [1], item = i64, min_successful = 2, tolerated_failures = 4) {
            step two;
        }
        // Exactly the length, and tolerating more failures than there are items: both fine.
        map all(over = [true, false], item = bool, min_successful = 2, tolerated_failures = 9) {
            step three;
        }
        // Over a state field the length is unknown: no check.
        map field(over = items, min_successful = 50) {
            step four;
        }
    }
}

fn main() {}
