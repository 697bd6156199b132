use durable::workflow;

workflow! {
    onboard {
        step first;
        map process_items(over = items) {}
    }
}

fn main() {}
