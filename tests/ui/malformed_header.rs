use durable::workflow;

workflow! {}

workflow! {
    pub onboard
    step a;
}

workflow! {
    first { step a; }
    second { step b; }
}

fn main() {}
