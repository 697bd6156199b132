use durable::workflow;

workflow! {
    onboard {
        map missing {
            step one;
        }
        map missing_too(max_concurrency = 2) {
            step two;
        }
        map misspelled(ovr = items) {
            step three;
        }
        map inline(over = [1, 2, 3]) {
            step four;
        }
        map quoted(over = "items") {
            step five;
        }
        map nested(over = order.items) {
            step six;
        }
        map flag(over) {
            step seven;
        }
    }
}

fn main() {}
