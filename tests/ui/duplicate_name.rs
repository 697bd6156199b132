use durable::workflow;

workflow! {
    onboard {
        step pack;
        dag {
            seq pack {
                step label;
            }
            seq shipping {
                step ship;
            }
        }
        parallel {
            seq shipping {
                step label;
            }
        }
    }
}

fn main() {}
