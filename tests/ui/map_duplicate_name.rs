use durable::workflow;

workflow! {
    onboard {
        step items;
        map items(over = items) {
            step process_item;
        }
        map batch(over = items) {
            step process_item;
            map batch(over = parts) {
                step part;
            }
        }
        seq batch {
            step last;
        }
    }
}

fn main() {}
