//! A reminder: schedule it, sleep until it is due (a durable sleep: the run is journaled as
//! suspended, and holds no task while it waits), then send it. Half-way through the sleep the
//! engine shuts down, as a deploy or a crash would stop the process; a new engine on the same
//! SQLite file wakes the run on time, and no step runs twice.
//!
//! `cargo run --bin reminder [DB]` (an SQLite file, default `reminder.db`).

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Engine, RunStatus, StepContext, StepError};
use durable_examples::{db_path, exit, finished, print_history, say, scaled, started};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Decides when the reminder is due: three seconds from now (0.3 s in fast mode).
async fn schedule(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    let due = unix_ms() + scaled(Duration::from_secs(3)).as_millis() as u64;
    finished(&ctx);
    Ok(data.assign("remind_at", due))
}

async fn send_reminder(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    let due: u64 = data.get("remind_at").unwrap_or(0);
    say(format!(
        "reminder for {} sent, {} ms after it was due",
        data.get::<String>("who").unwrap_or_default(),
        unix_ms().saturating_sub(due)
    ));
    finished(&ctx);
    Ok(data.assign("sent", true))
}

workflow! {
    reminder {
        step schedule;
        sleep until_due(until = remind_at);
        step send_reminder;
    }
}

async fn run() -> anyhow::Result<()> {
    let path = db_path("reminder.db");
    let begun = Instant::now();
    let engine = Engine::builder(SqliteStore::open(&path)?)
        .register(reminder)
        .build()
        .await?;
    let run = engine
        .start(reminder, Data::new().assign("who", "ada"))
        .await?;
    let id = run.id().clone();
    while engine.status(&id).await?.status != RunStatus::Suspended {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    say("the run sleeps: status suspended, no task holds it");
    tokio::time::sleep(scaled(Duration::from_secs(1))).await;
    engine.shutdown().await?;
    say("engine shut down mid-sleep (a deploy, a crash)");
    let engine = Engine::builder(SqliteStore::open(&path)?)
        .register(reminder)
        .build()
        .await?;
    say(format!(
        "new engine: the run is {}",
        engine.status(&id).await?.status.as_str()
    ));
    let out: Data = engine.wait(&id).await?;
    say(format!(
        "done after {:.1} s: sent = {}",
        begun.elapsed().as_secs_f64(),
        out.get::<bool>("sent").unwrap_or(false)
    ));
    print_history(&engine.history(&id).await?);
    engine.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    exit(run().await)
}
