use durable::workflow;

workflow! {
    onboard {
        step a;
        parallel(merge = collect) {}
    }
}

fn main() {}
