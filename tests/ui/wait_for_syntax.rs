use durable::workflow;

workflow! {
    review {
        wait_for approved = check_approval;
        wait_for (timeout = 1h);
        wait_for done(timeout = 1h)
    }
}

fn main() {}
