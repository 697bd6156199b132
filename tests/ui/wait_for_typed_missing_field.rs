use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Review {
    id: u64,
}

async fn prepare(review: Review) -> Result<Review, StepError> {
    Ok(review)
}

workflow! {
    review_flow(state = Review) {
        step prepare;
        wait_for approved(timeout = 1d);
    }
}

fn main() {}
