use durable::{workflow, Data, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct LineItem {
    sku: String,
}

#[derive(Serialize, Deserialize)]
struct Order {
    items: Vec<LineItem>, reserve_items: Option<durable::batch::BatchResult<LineItem>>, untyped: Option<durable::batch::BatchResult<Data>>, // the maps' results
}

async fn load(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

// Takes the workflow's state, not the map's item type.
async fn reserve(order: Order) -> Result<Order, StepError> {
    Ok(order)
}

async fn price(item: LineItem) -> Result<LineItem, StepError> {
    Ok(item)
}

// Takes the default item type, `Data`, in a map whose items are `LineItem`s.
async fn tax(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    process_order(state = Order) {
        step load;
        map reserve_items(over = items, item = LineItem) {
            step reserve;
            step price;
            parallel {
                step tax;
            }
        }
        map untyped(over = items) {
            step price_again = price;
        }
    }
}

fn main() {}
