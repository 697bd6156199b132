//! Rate-limited batch processing (Restate's `ProcessBatch` / `MapConcurrent`): a step imports
//! 40 rows through an API that allows 5 calls at a time. Every finished call is journaled
//! under the step's path, so when the step fails and is retried, only the calls that failed
//! run again.
//!
//! `cargo run --bin rate_limited_batch`

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::{workflow, Data, Engine, StepContext, StepError};
use durable_examples::{exit, say, work};

/// API calls made in this process, across attempts.
static CALLS: AtomicUsize = AtomicUsize::new(0);

async fn import_rows(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let rows: Vec<u32> = (1..=40).collect();
    let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let gauge = Arc::clone(&in_flight);
    let attempt = ctx.attempt();
    let batch = ctx
        .process_batch(rows, 5, move |row| {
            let gauge = Arc::clone(&gauge);
            async move {
                CALLS.fetch_add(1, Ordering::Relaxed);
                let now = gauge.0.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.1.fetch_max(now, Ordering::SeqCst);
                work(Duration::from_millis(50)).await;
                gauge.0.fetch_sub(1, Ordering::SeqCst);
                // The API rejects every 10th row on the first attempt (a flaky upstream).
                if row % 10 == 0 && attempt == 1 {
                    return Err(StepError::retryable(format!("row {row}: upstream 503")));
                }
                Ok(row * 100)
            }
        })
        .await?;
    say(format!(
        "attempt {attempt}: {} imported, {} failed, at most {} calls at once",
        batch.success_count,
        batch.failure_count,
        in_flight.1.load(Ordering::SeqCst)
    ));
    if batch.failure_count > 0 {
        return Err(StepError::retryable(format!(
            "{} rows failed; retrying them",
            batch.failure_count
        )));
    }
    Ok(data.assign("imported", batch.success_count))
}

workflow! {
    import {
        step import_rows(retry(max_attempts = 3, backoff = constant, initial = 100ms));
    }
}

async fn run() -> anyhow::Result<()> {
    let engine = Engine::builder(MemoryStore::new())
        .register(import)
        .build()
        .await?;
    let begun = Instant::now();
    say("importing 40 rows, at most 5 API calls at once");
    let out = engine.run(import, Data::new()).await?;
    say(format!(
        "imported {} rows with {} API calls (40 rows + 4 retried) in {} ms",
        out.get::<usize>("imported").unwrap_or(0),
        CALLS.load(Ordering::Relaxed),
        begun.elapsed().as_millis()
    ));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    exit(run().await)
}
