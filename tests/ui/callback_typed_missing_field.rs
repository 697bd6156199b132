use durable::callback::Callback;
use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
}

async fn request_payment(_callback: Callback, order: Order) -> Result<Order, StepError> {
    Ok(order)
}

workflow! {
    checkout(state = Order) {
        callback paid = request_payment(timeout = 1d);
    }
}

fn main() {}
