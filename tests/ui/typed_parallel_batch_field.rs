use durable::{workflow, StepError};
use serde::{Deserialize, Serialize};

// A named parallel block writes its batch result under its name: a typed state needs that
// field, of a type that holds a `BatchResult<serde_json::Value>`.
#[derive(Serialize, Deserialize)]
struct Quote {
    price: u64,
}

#[derive(Serialize, Deserialize)]
struct Priced {
    price: u64,
    quotes: Vec<String>,
}

async fn ask(quote: Quote) -> Result<Quote, StepError> {
    Ok(quote)
}

async fn ask_again(quote: Quote) -> Result<Quote, StepError> {
    Ok(quote)
}

async fn ask_priced(priced: Priced) -> Result<Priced, StepError> {
    Ok(priced)
}

async fn ask_priced_again(priced: Priced) -> Result<Priced, StepError> {
    Ok(priced)
}

workflow! {
    missing(state = Quote) {
        parallel quotes(min_successful = 1) {
            step ask;
            step ask_again;
        }
    }
}

workflow! {
    wrong_type(state = Priced) {
        parallel quotes(min_successful = 1) {
            step ask_priced;
            step ask_priced_again;
        }
    }
}

fn main() {}
