use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    lines: Vec<Line>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
}

async fn reserve(line: Line) -> Result<Line, StepError> {
    Ok(line)
}

workflow! {
    checkout(state = Order) {
        map reservations(over = lines, item = Line) {
            step reserve;
        }
    }
}

fn main() {}
