//! A worker process for the stuck-run crash test (tests/tests/stuck_crash.rs): it starts a
//! batch of runs that each wait for one message (a signal, a callback's completion, or a
//! child run's end), delivers each message at a random moment around the run's suspension,
//! and gets killed (SIGKILL) at random points; a last process finishes everything.
//!
//! Usage: `stuck_child <kind> start <batch> <runs>` or `stuck_child <kind> finish`, where
//! `<kind>` is `signal`, `callback` or `call`. The store is the SQLite file `STUCK_DB`, or
//! with `STUCK_PG_URL` set, the PostgreSQL schema `STUCK_PG_SCHEMA` there (lease 1 s, so a
//! killed process's runs are free again soon). Each step appends `<run> <step> start` and
//! `<run> <step> end` to the log at `CRASH_LOG`, in one write each; a callback's submit
//! function also logs `token <run> <token>`.
//!
//! - `start`: commits runs `<batch>-0` .. `<batch>-<runs-1>` of the kind's workflow from a
//!   client, then builds the engine (which claims them all at once, so they reach their waits
//!   together), delivers what earlier processes left undelivered (a signal never sent, a
//!   callback token never completed), and drives runs until killed. A run's message is sent
//!   0-15 ms after its `before` step (signal) or its submit function (callback) returns, so
//!   it lands before, during or after the wait's suspension; a child run's one step takes
//!   0-15 ms.
//! - `finish`: the same delivery of what was left undelivered, then waits until every run in
//!   the store has finished, at most `STUCK_BOUND_MS` (default 20000) ms, and prints one JSON
//!   line: `{"runs": n, "unfinished": [...]}`, each unfinished run with its status and inbox.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use durable::callback::Callback;
use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::store::sqlite::SqliteStore;
use durable::store::{inbox_kinds, RunFilter};
use durable::{workflow, Client, Data, Engine, Error, RunId, StepContext, StepError, Store};
use serde_json::json;

static CLIENT: OnceLock<Client> = OnceLock::new();

fn log_line(line: String) {
    let path = std::env::var("CRASH_LOG").expect("CRASH_LOG");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log");
    file.write_all(line.as_bytes()).expect("log write");
}

fn record(ctx: &StepContext, what: &str) {
    log_line(format!("{} {} {what}\n", ctx.run_id(), ctx.step()));
}

/// A random number below `n` (a fresh random hasher key each call).
fn random_below(n: u64) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.finish() % n.max(1)
}

fn random_delay() -> Duration {
    Duration::from_millis(random_below(16))
}

/// Sends run `id` its signal after a random delay, from a task of its own.
fn signal_later(id: RunId) {
    tokio::spawn(async move {
        tokio::time::sleep(random_delay()).await;
        let client = CLIENT.get().expect("a client");
        let _ = client
            .signal(signalled, &id, "go", format!("go-{id}"))
            .await;
    });
}

/// Completes callback `token` of run `id` after a random delay, from a task of its own.
fn complete_later(id: RunId, token: String) {
    tokio::spawn(async move {
        tokio::time::sleep(random_delay()).await;
        let client = CLIENT.get().expect("a client");
        let _ = client
            .complete_callback(&token, json!({ "run": id.as_str() }))
            .await;
    });
}

async fn work(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    record(&ctx, "start");
    let step = ctx.step().to_owned();
    record(&ctx, "end");
    Ok(data.assign(format!("did_{step}"), true))
}

/// `before` of a signalled run: its signal goes out a moment after it returns.
async fn before_signal(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let out = work(ctx.clone(), data).await?;
    signal_later(ctx.run_id().clone());
    Ok(out)
}

async fn submit(callback: Callback, data: Data) -> Result<Data, StepError> {
    let ctx = callback.context();
    record(ctx, "start");
    log_line(format!("token {} {}\n", ctx.run_id(), callback.token()));
    record(ctx, "end");
    complete_later(ctx.run_id().clone(), callback.token().to_owned());
    Ok(data.assign("submitted", true))
}

/// A child run's one step: 0-15 ms, so the child ends around its parent's suspension.
async fn chore(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    record(&ctx, "start");
    tokio::time::sleep(random_delay()).await;
    record(&ctx, "end");
    Ok(data.assign("chore", ctx.run_id().as_str()))
}

workflow! {
    signalled {
        step before = before_signal;
        wait_for go(timeout = 1h);
        step after = work;
    }
}

workflow! {
    called_back {
        step before = work;
        callback done = submit(timeout = 1h);
        step after = work;
    }
}

workflow! {
    kid_flow {
        step chore;
    }
}

workflow! {
    parent {
        step before = work;
        call kid = kid_flow(timeout = 1h);
        step after = work;
    }
}

async fn open_store() -> Arc<dyn Store> {
    if let Ok(url) = std::env::var("STUCK_PG_URL") {
        let schema = std::env::var("STUCK_PG_SCHEMA").expect("STUCK_PG_SCHEMA");
        let options = PostgresOptions {
            pool_size: 4,
            ..PostgresOptions::schema(schema)
        };
        let store = PostgresStore::connect_with(&url, options)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        return Arc::new(store);
    }
    let db = std::env::var("STUCK_DB").expect("STUCK_DB");
    Arc::new(SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")))
}

/// Sends what earlier processes left undelivered to the unfinished runs not of `batch`: a
/// signal to a signalled run whose inbox holds none, a completion for each logged callback
/// token its run's inbox lacks. (A child run's end needs no sender: the engine drives it.)
async fn deliver_leftovers(store: &Arc<dyn Store>, kind: &str, batch: Option<&str>) {
    let client = CLIENT.get().expect("a client");
    let runs = client.list(RunFilter::default()).await.unwrap();
    let mine = |id: &RunId| batch.is_some_and(|b| id.as_str().starts_with(&format!("{b}-")));
    let log = std::fs::read_to_string(std::env::var("CRASH_LOG").unwrap()).unwrap_or_default();
    for run in runs {
        if run.status.is_finished() || mine(&run.id) {
            continue;
        }
        let inbox = store.load_inbox(&run.id).await.unwrap();
        match kind {
            "signal"
                if run.workflow == "signalled"
                    && inbox.iter().all(|m| m.kind != inbox_kinds::SIGNAL) =>
            {
                let _ = client
                    .signal(signalled, &run.id, "go", format!("go-{}", run.id))
                    .await;
            }
            "callback" if run.workflow == "called_back" => {
                let sent: HashSet<&str> = inbox.iter().map(|m| m.name.as_str()).collect();
                let prefix = format!("token {} ", run.id);
                for token in log.lines().filter_map(|l| l.strip_prefix(&prefix)) {
                    if !sent.contains(token) {
                        let _ = client
                            .complete_callback(token, json!({ "run": run.id.as_str() }))
                            .await;
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, mode) = (args[0].as_str(), args[1].as_str());
    let store = open_store().await;
    assert!(CLIENT.set(Client::new(Arc::clone(&store))).is_ok());
    let client = CLIENT.get().expect("a client");
    if mode == "start" {
        // All of the batch is committed before the engine is built: it claims them at once,
        // so they reach their waits together.
        let batch = args[2].as_str();
        let runs: usize = args[3].parse().expect("a number of runs");
        for i in 0..runs {
            let id = RunId::from(format!("{batch}-{i}"));
            let started = match kind {
                "signal" => client.start_with_id(signalled, id, Data::new()).await,
                "callback" => client.start_with_id(called_back, id, Data::new()).await,
                "call" => client.start_with_id(parent, id, Data::new()).await,
                other => panic!("unknown kind {other}"),
            };
            match started {
                Ok(_) | Err(Error::RunExists { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    let engine = Engine::builder_shared(Arc::clone(&store))
        .register(signalled)
        .register(called_back)
        .register(parent)
        .register(kid_flow)
        .lease_duration(Duration::from_secs(1))
        .build()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match mode {
        "start" => {
            let batch = args[2].as_str();
            deliver_leftovers(&store, kind, Some(batch)).await;
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        "finish" => {
            deliver_leftovers(&store, kind, None).await;
            let bound = std::env::var("STUCK_BOUND_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000);
            let limit = Instant::now() + Duration::from_millis(bound);
            loop {
                let runs = client.list(RunFilter::default()).await.unwrap();
                let unfinished: Vec<_> = runs.iter().filter(|r| !r.status.is_finished()).collect();
                if unfinished.is_empty() || Instant::now() >= limit {
                    let mut report = Vec::new();
                    for run in unfinished {
                        let inbox = store.load_inbox(&run.id).await.unwrap();
                        report.push(json!({
                            "id": run.id.as_str(),
                            "status": run.status.as_str(),
                            "inbox": inbox.iter().map(|m| m.kind.clone()).collect::<Vec<_>>(),
                        }));
                    }
                    println!("{}", json!({ "runs": runs.len(), "unfinished": report }));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            engine.shutdown().await.unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
}
