use durable::workflow;

workflow! {
    onboard {
        dag {
            step a;
            seq b(retry(max_attempts = 3), aftr = [a]) {
                step c;
            }
            dag(merge = collect) {
                step d;
            }
        }
    }
}

fn main() {}
