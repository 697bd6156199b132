use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
struct Order {
    due: u64,
}

async fn a(o: Order) -> Result<Order, StepError> {
    Ok(o)
}

workflow! {
    remind(state = Order) {
        step a;
        sleep wait_due(until = due_at);
    }
}

fn main() {}
