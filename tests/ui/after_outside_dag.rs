use durable::workflow;

workflow! {
    onboard {
        step a;
        step b(after = [a]);
        parallel {
            step c(after = [b]);
            step d;
        }
        dag {
            seq e {
                step f;
                step g(after = [f]);
            }
        }
        seq h(after = [a]) {
            step i(after = []);
        }
    }
}

fn main() {}
