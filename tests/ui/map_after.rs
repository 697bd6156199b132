use durable::workflow;

workflow! {
    onboard {
        map outside(over = items, after = [first]) {
            step a;
        }
        dag {
            step first;
            map process(over = items, after = [first]) {
                step b;
                step c(after = [b]);
            }
            step report(after = [c, proces]);
        }
    }
}

fn main() {}
