use durable::{workflow, Data, StepError};

async fn a(d: Data) -> Result<Data, StepError> {
    Ok(d)
}

workflow! {
    naps {
        step a;
        sleep typo(fro = 10m);
        sleep both(for = 10m, until = due_at);
        sleep neither;
        sleep bad(for = 10 minutes);
        sleep unit(for = 10min);
        sleep field(until = "2030-01-01T00:00:00Z");
        sleep delay(timeout = 1h);
        sleep twice(for = 1s, for = 2s);
        sleep no_semi(for = 1s)
    }
}

fn main() {}
