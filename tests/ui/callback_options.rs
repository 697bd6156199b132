use durable::callback::Callback;
use durable::{workflow, Data, StepError};

async fn request(_callback: Callback, data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    payment {
        callback paid = request(timeot = 1d);
        callback refunded = request(timeout = 2 days);
        callback settled = request(retry(max_attempts = 0));
        wait_for paid;
    }
}

fn main() {}
