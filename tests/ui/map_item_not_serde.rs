use durable::{workflow, Data, StepError};

struct LineItem {
    sku: String,
}

async fn price(item: LineItem) -> Result<LineItem, StepError> {
    let _ = &item.sku;
    Ok(item)
}

async fn load(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    process_order {
        step load;
        map price_items(over = items, item = LineItem) {
            step price;
        }
    }
}

fn main() {}
