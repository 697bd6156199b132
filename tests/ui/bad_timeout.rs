use durable::workflow;

workflow! {
    onboard {
        step a(timeout = 0s);
        step b(timeout = 30);
        step c(timeout);
        step d(timeout = 0.5ms);
        step e(optional = yes);
        step f(optional, optional = false);
    }
}

fn main() {}
