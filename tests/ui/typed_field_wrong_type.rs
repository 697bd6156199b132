use std::collections::HashMap;

use durable::batch::BatchResult;
use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    lines: Vec<Line>,
    parallel_results: Option<u32>,
    parallel_errors: Vec<String>,
    reservations: Option<BatchResult<String>>,
    // Right: these hold what the blocks below write.
    prices: Option<BatchResult<Line>>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
    parallel_errors: Option<HashMap<String, String>>,
}

async fn keep(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn keep_line(line: Line) -> Result<Line, StepError> {
    Ok(line)
}

workflow! {
    checkout(state = Order) {
        parallel(merge = collect) {
            step price = keep;
            step tax(optional) = keep;
        }
        map reservations(over = lines, item = Line) {
            step reserve = keep_line;
        }
        map prices(over = lines, item = Line) {
            parallel {
                step quote(optional) = keep_line;
            }
        }
    }
}

fn main() {}
