use durable::{workflow, Data, StepError};

async fn a(d: Data) -> Result<Data, StepError> {
    Ok(d)
}

workflow! {
    naps {
        step a;
        sleep a(for = 10m);
        sleep nap(for = 1m);
        sleep nap(for = 2m);
        slep later(for = 1h);
    }
}

fn main() {}
