//! A second process for the cross-process signal and callback tests: it opens an SQLite store
//! that a running engine (in the test process) holds, with `SqliteStore::open_client`, and
//! sends one signal or completes one callback, then exits.
//!
//! Usage: `signal_child <db> signal <run id> <name> <payload JSON>` or
//! `signal_child <db> complete <token> <payload JSON>` or `signal_child <db> fail <token> <error>`.
//! Exits 0 once the message is stored, 2 on any error (printed on stderr).

use durable::callback::Callback;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Client, Data, RunId, StepError};

// The engine's workflow (tests/tests/cross_process.rs): a client checks the signal's name
// against it, never runs its steps.
async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data)
}
async fn request_payment(_callback: Callback, data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    remote_review {
        step prepare;
        wait_for approved(timeout = 1h);
        callback paid = request_payment(timeout = 1h);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = send(&args[1..]).await {
        eprintln!("signal_child: {e}");
        std::process::exit(2);
    }
}

async fn send(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::open(SqliteStore::open_client(&args[0])?);
    match args[1].as_str() {
        "signal" => {
            let payload: serde_json::Value = serde_json::from_str(&args[4])?;
            let id = RunId::from(args[2].as_str());
            client.signal(remote_review, &id, &args[3], payload).await?;
        }
        "complete" => {
            let payload: serde_json::Value = serde_json::from_str(&args[3])?;
            client.complete_callback(&args[2], payload).await?;
        }
        "fail" => client.fail_callback(&args[2], &args[3]).await?,
        other => return Err(format!("unknown command `{other}`").into()),
    }
    Ok(())
}
