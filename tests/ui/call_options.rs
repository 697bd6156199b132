use durable::{workflow, Data, StepError};

async fn charge(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! { payment { step charge; } }

workflow! {
    order {
        call paid = payment(timeot = 1h);
        call refunded = payment(retry(max_attempts = 3));
        call settled = payment(timeout = 0s);
    }
}

fn main() {}
