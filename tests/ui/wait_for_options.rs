use durable::{workflow, Data, StepError};

async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    review {
        step prepare;
        wait_for approved(timout = 1h);
        wait_for signed(timeout = 1 hour);
        wait_for paid(timeout = 5x);
        wait_for shipped(timeout = 0s);
        wait_for checked(max_attempts = 3);
        wait_for counted(timeout = 1h, timeout = 2h);
        wait_for prepare(timeout = 1h);
    }
}

fn main() {}
