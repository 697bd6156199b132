//! Many worker processes on one PostgreSQL database: this program starts N worker processes
//! (itself, with `--worker`), then acts as a client that drives nothing: it starts runs, waits
//! for them, and shows which worker ran each.
//!
//! ```sh
//! cargo run -p durable-examples-postgres --bin workers -- 3 60     # 3 workers, 60 runs
//! ```
//!
//! The database is `$DURABLE_EXAMPLE_POSTGRES_URL`, else `$DURABLE_TEST_POSTGRES_URL`, else
//! `postgres://root@127.0.0.1:5432/test`; the schema `$DURABLE_EXAMPLE_SCHEMA`, else
//! `durable_workers_example`. Each worker claims at most 8 runs at a time, so runs spread
//! over the workers; a run started by the client wakes an idle worker at once (NOTIFY).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::{workflow, Data, Engine, StepContext, StepError};

/// This process's worker name (set in worker processes).
fn worker_name() -> String {
    std::env::var("WORKER_NAME").unwrap_or_else(|_| "client".into())
}

async fn fetch(data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(data.assign("fetched", true))
}

async fn transform(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Which worker ran the step: the output shows it.
    Ok(data
        .assign("worker", worker_name())
        .assign("key", ctx.idempotency_key()))
}

async fn store_result(data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(data.assign("stored", true))
}

workflow! {
    /// Three steps of pretend work, run by whichever worker claims the run.
    etl {
        step fetch;
        step transform;
        step store_result;
    }
}

fn url() -> String {
    std::env::var("DURABLE_EXAMPLE_POSTGRES_URL")
        .or_else(|_| std::env::var("DURABLE_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

fn schema() -> String {
    std::env::var("DURABLE_EXAMPLE_SCHEMA").unwrap_or_else(|_| "durable_workers_example".into())
}

async fn connect() -> Result<PostgresStore, durable::store::StoreError> {
    PostgresStore::connect_with(&url(), PostgresOptions::schema(schema())).await
}

/// A worker: drives runs until its standard input closes, then shuts down cleanly (giving
/// its leases back, so another worker takes its runs at once).
async fn worker() -> Result<(), durable::Error> {
    let engine = Engine::builder(connect().await?)
        .register(etl)
        .max_runs(8)
        .build()
        .await?;
    println!("ready");
    std::io::stdout().flush().ok();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await
    .ok();
    engine.shutdown().await
}

fn spawn_worker(i: usize) -> std::io::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--worker")
        .env("WORKER_NAME", format!("worker-{i}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(std::io::Error::other(format!("worker-{i} did not start")));
    }
    Ok(child)
}

async fn client(workers: usize, runs: usize) -> anyhow::Result<()> {
    println!("database {}, schema {}", url(), schema());
    let store = connect().await?;
    let children = (0..workers)
        .map(spawn_worker)
        .collect::<Result<Vec<_>, _>>()?;
    println!("{workers} worker processes started");
    // Capacity 0: this process starts runs and waits for them, and drives none.
    let client = Engine::builder(store)
        .register(etl)
        .max_runs(0)
        .build()
        .await?;
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..runs {
        handles.push(client.start(etl, Data::new().assign("n", i)).await?);
    }
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for handle in handles {
        let out = handle.wait().await?;
        let worker: String = out.get("worker").unwrap_or_default();
        *per_worker.entry(worker).or_default() += 1;
    }
    println!(
        "{runs} runs completed in {:.2}s; runs per worker:",
        started.elapsed().as_secs_f64()
    );
    for (worker, n) in &per_worker {
        println!("  {worker}: {n}");
    }
    for mut child in children {
        drop(child.stdin.take()); // the worker shuts down
        child.wait()?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return match worker().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {e}", worker_name());
                ExitCode::FAILURE
            }
        };
    }
    let workers = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let runs = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    match client(workers, runs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
