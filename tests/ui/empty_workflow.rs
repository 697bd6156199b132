use durable::workflow;

workflow! {
    /// Does nothing yet.
    pub onboard {}
}

fn main() {}
