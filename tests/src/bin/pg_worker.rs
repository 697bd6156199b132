//! A worker process for the multi-process PostgreSQL test: an `Engine` over the PostgreSQL
//! store that drives runs of `fleet` until it is killed, recording every step execution that
//! finished (its run, step, attempt, an execution id and this worker's name) in a table of
//! its own, `<schema>.effects`, just before the step returns its result.
//!
//! Usage:
//! - `pg_worker <url> <schema> worker <name>`: work until killed; prints `ready` once built.
//! - `pg_worker <url> <schema> client <n>`: start `n` runs of `fleet` from a client that
//!   drives none (capacity 0), print their ids, and exit.
//!
//! Environment: `STEP_DELAY_MS` (default 5), `LEASE_MS` (default 2000), `MAX_RUNS` (default 30).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::{workflow, Data, Engine, StepContext, StepError};

struct Effects {
    client: tokio_postgres::Client,
    insert: String,
    worker: String,
}

static EFFECTS: OnceLock<Effects> = OnceLock::new();
static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

fn env_ms(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Does the step's work, then records that this execution finished, then returns.
async fn work(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(env_ms("STEP_DELAY_MS", 5))).await;
    let effects = EFFECTS.get().expect("a worker");
    let exec = format!(
        "{}:{}",
        effects.worker,
        EXECUTIONS.fetch_add(1, Ordering::SeqCst)
    );
    effects
        .client
        .execute(
            &effects.insert,
            &[
                &ctx.run_id().as_str(),
                &ctx.step(),
                &(ctx.attempt() as i32),
                &exec,
                &effects.worker,
            ],
        )
        .await
        .map_err(|e| StepError::retryable(format!("recording the effect: {e}")))?;
    Ok(data.assign(format!("exec_{}", ctx.step()), exec))
}

async fn prepare(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let items: Vec<serde_json::Value> = (0..5).map(|k| serde_json::json!({ "k": k })).collect();
    work(ctx, data.assign("items", items)).await
}

async fn handle(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    work(ctx, item).await
}

/// Fails its first attempt, then works.
async fn flaky(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    if ctx.attempt() == 1 {
        return Err(StepError::retryable("the first attempt always fails"));
    }
    work(ctx, data).await
}

workflow! {
    fleet {
        step prepare;
        parallel {
            step p1 = work;
            step p2 = work;
        }
        map items_done(over = items, max_concurrency = 3) {
            step handle;
        }
        step flaky(retry(max_attempts = 3, backoff = constant, initial = 10ms));
        step finish = work;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, mode, arg] = &args[..] else {
        panic!("usage: pg_worker <url> <schema> worker <name> | client <n>")
    };
    let lease = Duration::from_millis(env_ms("LEASE_MS", 2000));
    let options = PostgresOptions {
        pool_size: 4,
        idle_in_transaction_timeout: lease,
        ..PostgresOptions::schema(schema.clone())
    };
    let store = PostgresStore::connect_with(url, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match mode.as_str() {
        "client" => {
            let client = Engine::builder(store)
                .register(fleet)
                .max_runs(0)
                .build()
                .await
                .unwrap();
            let n: usize = arg.parse().expect("a number of runs");
            for _ in 0..n {
                let run = client.start(fleet, Data::new()).await.unwrap();
                println!("{}", run.id());
            }
        }
        "worker" => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("effects connection");
            tokio::spawn(connection);
            let effects = Effects {
                client,
                insert: format!(
                    "INSERT INTO \"{schema}\".effects (run_id, step, attempt, exec, worker) \
                     VALUES ($1, $2, $3, $4, $5)"
                ),
                worker: arg.clone(),
            };
            assert!(EFFECTS.set(effects).is_ok());
            let _engine = Engine::builder(store)
                .register(fleet)
                .max_runs(env_ms("MAX_RUNS", 30) as usize)
                .lease_duration(lease)
                .poll_interval(Duration::from_millis(200))
                .build()
                .await
                .unwrap();
            println!("ready");
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
