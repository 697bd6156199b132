use durable::{workflow, StepError};

struct Order;

async fn pay(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

workflow! {
    onboard(state = Order) {
        step pay;
    }
}

fn main() {}
