use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
}

async fn pack(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn email(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn sms(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn audit(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

workflow! {
    ship(state = Order) {
        // An optional step outside parallel blocks and dags writes nothing: no error here.
        step audit(optional);
        parallel(on_error = complete_all) {
            step sms(optional);
            step pack;
        }
        dag {
            step email(optional);
        }
    }
}

fn main() {}
