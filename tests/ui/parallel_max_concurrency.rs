use durable::workflow;

workflow! {
    fetch_all {
        parallel(max_concurrency = 0) {
            step a;
            step b;
        }
        parallel(max_concurrency = -1) {
            step c;
            step d;
        }
    }
}

fn main() {}
