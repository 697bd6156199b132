use durable::workflow;

workflow! {
    onboard {
        dag {
            step a;
            step b;
            step c(after = [a, b, a]);
            step d(after = a);
            step e(after);
            step f(after = [a b]);
            step g(after = ["a"]);
        }
    }
}

fn main() {}
