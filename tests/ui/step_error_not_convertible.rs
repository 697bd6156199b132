use durable::{workflow, Data};

/// Only `Display`: neither a `std::error::Error`, nor `StepError`, nor `anyhow::Error`.
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined")
    }
}

async fn charge(data: Data) -> Result<Data, Declined> {
    Ok(data)
}

workflow! {
    checkout {
        step charge;
    }
}

fn main() {}
