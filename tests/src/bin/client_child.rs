//! A second process for the client tests: it opens an SQLite store that a running engine (in
//! the test process) holds, with `SqliteStore::open_client`, starts one run of `greeting`,
//! waits for the engine to finish it, and prints what it reads back, one `key value` line
//! each.
//!
//! Usage: `client_child <db> <run id> <name>`. Exits 0 once the run completed, 2 on any error
//! (printed on stderr).

use std::time::Duration;

use durable::store::sqlite::SqliteStore;
use durable::{workflow, Client, Data, RunFilter, StepError, StepEvent};

// The same workflow as the engine's (tests/tests/client.rs): a client needs its name and
// fingerprint, never runs its steps.
async fn hello(data: Data) -> Result<Data, StepError> {
    Ok(data)
}
async fn shout(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    greeting {
        step hello;
        step shout;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = drive(&args[1], &args[2], &args[3]).await {
        eprintln!("client_child: {e}");
        std::process::exit(2);
    }
}

async fn drive(db: &str, id: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::open(SqliteStore::open_client(db)?);
    let id = client
        .start_with_id(greeting, id, Data::new().assign("name", name))
        .await?;
    let started = client.status(&id).await?;
    println!("started {:?} owner-less", started.status);
    let output: Data = tokio::time::timeout(Duration::from_secs(20), client.wait(&id)).await??;
    println!(
        "output {}",
        output.get::<String>("greeting").unwrap_or_default()
    );
    let info = client.status(&id).await?;
    println!("status {:?}", info.status);
    let history = client.history(&id).await?;
    for record in &history {
        let what = if matches!(record.event, StepEvent::Completed { .. }) {
            "completed"
        } else {
            "not-completed"
        };
        println!("history {} {what}", record.step);
    }
    // The first step's end, against the run's creation: how long the engine took to pick the
    // run up (and run one instant step).
    let first = history.first().ok_or("no history")?;
    println!("pickup_ms {}", first.at.saturating_sub(info.created_at));
    let page = client
        .list_page(RunFilter {
            limit: Some(10),
            ..Default::default()
        })
        .await?;
    let listed = page.runs.iter().any(|run| run.id == id);
    println!("listed {listed}");
    Ok(())
}
