use durable::workflow;

workflow! {
    onboard {
        step create_user;
        step finish = billing::finish;
    }
}

mod billing {}

fn main() {}
