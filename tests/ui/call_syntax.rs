use durable::{workflow, Data, StepError};

async fn charge(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! { payment { step charge; } }

workflow! {
    order {
        call paid(timeout = 1h) = payment;
    }
}

fn main() {}
