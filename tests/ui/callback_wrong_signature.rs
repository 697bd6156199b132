use durable::{workflow, Data, StepError};

// A step's signature: a submit function also takes the Callback.
async fn request_payment(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    payment {
        callback paid = request_payment(timeout = 1d);
    }
}

fn main() {}
