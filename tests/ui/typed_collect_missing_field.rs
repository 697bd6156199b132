use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    paid: bool,
}

#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
}

async fn price(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn tax(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn check(line: Line) -> Result<Line, StepError> {
    Ok(line)
}

workflow! {
    checkout(state = Order) {
        parallel(merge = collect) {
            step price;
            step tax;
        }
    }
}

// Inside a map, the items' type receives what the blocks inside write.
workflow! {
    check_lines(state = durable::Data) {
        map lines(over = lines, item = Line) {
            parallel(merge = collect) {
                step check;
            }
        }
    }
}

fn main() {}
