use durable::workflow;

workflow! {
    /// Docs are fine.
    #[derive(PartialEq)]
    onboard {
        step a;
    }
}

fn main() {}
