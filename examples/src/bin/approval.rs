//! A run that waits for a person's approval, sent by a second invocation of this binary.
//!
//! ```text
//! cargo run --bin approval -- start                  # starts a run and waits for it
//! cargo run --bin approval -- approve <run id> ann   # in another terminal
//! ```
//!
//! `start` drives the SQLite file (`approval.db`, or `$DURABLE_EXAMPLE_DB`); the run prepares
//! the request, then waits (suspended: no task, no thread) for signal `approved`. `approve`
//! opens the same file beside it as a `Client`, without its lock, and sends the signal; the
//! engine notices the write within tens of milliseconds, wakes the run and finishes it. A
//! run that waits is kept across restarts: kill `start` and run it again, then approve.

use std::process::ExitCode;

use durable::store::sqlite::SqliteStore;
use durable::{
    workflow, Client, Data, Engine, RunFilter, RunId, RunStatus, StepContext, StepError,
};
use durable_examples::{exit, finished, print_history, say, started};

async fn prepare_request(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    let amount: u64 = data.get("amount").unwrap_or(0);
    finished(&ctx);
    Ok(data.assign("request", format!("expense of {amount} EUR")))
}

async fn pay_out(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    let by: String = data.get("approved").unwrap_or_default();
    finished(&ctx);
    Ok(data.assign("paid", format!("paid, approved by {by}")))
}

workflow! {
    /// An expense that needs a person's approval before it is paid.
    expense {
        step prepare_request;
        wait_for approved(timeout = 1d);
        step pay_out;
    }
}

fn db() -> String {
    std::env::var("DURABLE_EXAMPLE_DB").unwrap_or_else(|_| "approval.db".into())
}

const USAGE: &str = "usage: approval start | approval approve <run id> [approver]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["start"] => start().await,
        ["approve", id] => approve(id, "someone").await,
        ["approve", id, by] => approve(id, by).await,
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    exit(result)
}

/// Drives the file: resumes a waiting run, or starts one, and waits for it to finish.
async fn start() -> anyhow::Result<()> {
    let engine = Engine::builder(SqliteStore::open(db())?)
        .register(expense)
        .build()
        .await?;
    // A run the engine resumed as it started (one approved while no `start` ran, say), else
    // one still waiting, else a new one.
    let resumed = engine.resumed().into_iter().next();
    let waiting = engine
        .list(RunFilter {
            workflow: Some("expense".into()),
            status: Some(RunStatus::Suspended),
            ..RunFilter::default()
        })
        .await?
        .into_iter()
        .map(|run| run.id)
        .next();
    let id = match (resumed, waiting) {
        (Some(id), _) => {
            say(format!("run {id} was unfinished: resumed it"));
            id
        }
        (None, Some(id)) => {
            say(format!("run {id} is still waiting for its approval"));
            id
        }
        (None, None) => {
            let run = engine
                .start(expense, Data::new().assign("amount", 120))
                .await?;
            run.id().clone()
        }
    };
    say(format!(
        "waiting for approval: run `approval approve {id} <name>` in another terminal"
    ));
    let output: Data = engine.wait(&id).await?;
    say(output.get::<String>("paid").unwrap_or_default());
    print_history(&engine.history(&id).await?);
    engine.shutdown().await?;
    Ok(())
}

/// Sends signal `approved` from another process, beside the engine that holds the file.
async fn approve(id: &str, by: &str) -> anyhow::Result<()> {
    let client = Client::open(SqliteStore::open_client(db())?);
    client
        .signal(expense, &RunId::from(id), "approved", by)
        .await?;
    say(format!("approved run {id} as {by}"));
    Ok(())
}
