//! The workflow of the frozen-worker trials (`tests/tests/pg_thaw.rs`, worker process
//! `src/bin/thaw_worker.rs`): short steps, a retried step and a step with sub-operations,
//! each recording that it STARTED, first thing, in a side-effect log of its worker.
//!
//! A log line is `run \t path \t attempt \t micros \t worker`: `path` is the journal path
//! the start belongs to (a step's name, or `fan/map#1[i]` for operation `i` of step `fan`),
//! `micros` the wall clock (microseconds since the Unix epoch) when the start was recorded,
//! so it can be set against the journal's times (milliseconds of the same clock): a start
//! recorded after its path's completion was journaled is a finished step started again.

use std::fs::File;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use durable::{workflow, Data, StepContext, StepError};

/// This process's side-effect log and worker name.
static LOG: OnceLock<(Mutex<File>, String)> = OnceLock::new();

/// Opens this process's side-effect log (appending), recording starts as `worker`.
pub fn open_log(path: &std::path::Path, worker: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    assert!(
        LOG.set((Mutex::new(file), worker.to_owned())).is_ok(),
        "the log is opened once"
    );
}

/// Records the start of `path` (one `write`, before anything else the step does).
fn started(ctx: &StepContext, path: &str) {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let (file, worker) = LOG.get().expect("the worker opened its log");
    let line = format!(
        "{}\t{path}\t{}\t{micros}\t{worker}\n",
        ctx.run_id(),
        ctx.attempt()
    );
    file.lock()
        .unwrap()
        .write_all(line.as_bytes())
        .expect("the side-effect log takes the line");
}

async fn work(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx, ctx.step());
    Ok(data.assign(format!("did_{}", ctx.step()), true))
}

/// Fails its first attempt; the retry waits a short backoff.
async fn flaky(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx, ctx.step());
    if ctx.attempt() == 1 {
        return Err(StepError::retryable("the first attempt fails"));
    }
    Ok(data.assign("did_flaky", true))
}

/// Three sub-operations, one at a time, each journaled as it finishes.
async fn fan(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx, ctx.step());
    let op_ctx = ctx.clone();
    let done = ctx
        .map_concurrent(vec![0u32, 1, 2], 1, move |i| {
            let ctx = op_ctx.clone();
            async move {
                started(&ctx, &format!("{}/map#1[{i}]", ctx.step()));
                Ok(i)
            }
        })
        .await?;
    Ok(data.assign("did_fan", done.len()))
}

/// The journal paths whose starts the log records, for one run.
pub const PATHS: [&str; 11] = [
    "s1",
    "s2",
    "s3",
    "flaky",
    "fan",
    "fan/map#1[0]",
    "fan/map#1[1]",
    "fan/map#1[2]",
    "s6",
    "s7",
    "s8",
];

workflow! {
    /// The frozen-worker trials' workflow.
    pub thawed {
        step s1 = work;
        step s2 = work;
        step s3 = work;
        step flaky(retry(max_attempts = 3, backoff = constant, initial = 20ms));
        step fan;
        step s6 = work;
        step s7 = work;
        step s8 = work;
    }
}
