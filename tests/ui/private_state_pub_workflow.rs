use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

mod orders {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Order {
        id: u64,
    }

    async fn validate(order: Order) -> Result<Order, StepError> {
        Ok(order)
    }

    workflow! {
        pub checkout(state = Order) {
            step validate;
        }
    }
}

fn main() {}
