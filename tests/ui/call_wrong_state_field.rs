use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Payment {
    amount: u64,
}

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    // The child `payment`'s state is `Payment`, not a number.
    payment: u64,
}

async fn charge(p: Payment) -> Result<Payment, StepError> {
    Ok(p)
}

workflow! { payment(state = Payment) { step charge; } }

workflow! {
    checkout(state = Order) {
        call payment = payment;
        call refund = payment;
    }
}

fn main() {}
