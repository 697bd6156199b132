//! A worker process for the crash tests: it drives one run named `crash-run` on an SQLite
//! store, recording every step's start and end in a side-effect log, and gets killed.
//!
//! Usage: `crash_child <db> <seq|parallel|graph|batch|policy|sleep>` with the log path in `CRASH_LOG`. Environment:
//! - `SLOW_STEP=name`: that step sleeps for a minute (the test kills the process then);
//! - `STEP_DELAY_MS=n`: every step sleeps `n` ms.
//!
//! Prints the run's output as JSON and exits 0 when the run completes.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Engine, Error, StepContext, StepError};
use durable_tests::wait_for_run;

/// Appends one line with a single `write` call, so a kill never leaves half a line.
fn record(line: String) {
    let path = std::env::var("CRASH_LOG").expect("CRASH_LOG");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log");
    file.write_all(line.as_bytes()).expect("log write");
}

async fn work(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let step = ctx.step().to_owned();
    record(format!("start {step}\n"));
    if std::env::var("SLOW_STEP").ok().as_deref() == Some(step.as_str()) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if let Some(ms) = std::env::var("STEP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let n: u64 = data.get("n").unwrap_or(0);
    let mut trail: Vec<String> = data.get("trail").unwrap_or_default();
    trail.push(step.clone());
    let out = data
        .assign("n", n + 1)
        .assign("trail", trail)
        .assign(format!("did_{step}"), true);
    record(format!("end {step}\n"));
    Ok(out)
}

workflow! {
    seq {
        step s1 = work;
        step s2 = work;
        step s3 = work;
        step s4 = work;
        step s5 = work;
    }
}

workflow! {
    parallel {
        step prepare = work;
        parallel {
            step p1 = work;
            step p2 = work;
            step p3 = work;
        }
        step middle = work;
        parallel(merge = last_wins) {
            step q1 = work;
            step q2 = work;
        }
        step finish = work;
    }
}

workflow! {
    graph {
        step prepare = work;
        dag {
            step d1 = work;
            seq chain(after = [d1]) {
                step c1 = work;
                step c2 = work;
            }
            parallel {
                step p1 = work;
                step p2 = work;
            }
            step d2(after = [chain]) = work;
        }
        step finish = work;
    }
}

async fn seed(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let items: Vec<serde_json::Value> = (0..20).map(|k| serde_json::json!({ "k": k })).collect();
    work(ctx, data.assign("items", items)).await
}

/// One item of the map: the same side effects as a step, on the item's own state.
async fn handle(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    work(ctx, item).await
}

workflow! {
    batch {
        step seed;
        map items_done(over = items, max_concurrency = 4) {
            step handle;
        }
        step finish = work;
    }
}

/// A branch that always fails, after recording its start and end like the others.
async fn broken(ctx: StepContext, _: Data) -> Result<Data, StepError> {
    let step = ctx.step().to_owned();
    record(format!("start {step}\n"));
    record(format!("end {step}\n"));
    Err(StepError::terminal(format!("{step} is broken")))
}

workflow! {
    policy {
        step prepare = work;
        parallel picked(max_concurrency = 2, tolerated_failures = 1) {
            step b1 = work;
            step b2 = broken;
            step b3 = work;
            step b4 = work;
            step b5 = work;
        }
        step finish = work;
    }
}

workflow! {
    sleeper {
        step before = work;
        parallel {
            step side = work;
            seq later {
                sleep nap(for = 1500ms);
                step after = work;
            }
        }
        sleep rest(for = 300ms);
        step finish = work;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (db, scenario) = (
        args.next().expect("db path"),
        args.next().expect("scenario"),
    );
    let store = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::builder(store)
        .register(seq)
        .register(parallel)
        .register(graph)
        .register(batch)
        .register(policy)
        .register(sleeper)
        .build()
        .await
        .unwrap();
    let started = match scenario.as_str() {
        "seq" => engine
            .start_with_id(seq, "crash-run", Data::new())
            .await
            .map(drop),
        "parallel" => engine
            .start_with_id(parallel, "crash-run", Data::new())
            .await
            .map(drop),
        "graph" => engine
            .start_with_id(graph, "crash-run", Data::new())
            .await
            .map(drop),
        "batch" => engine
            .start_with_id(batch, "crash-run", Data::new())
            .await
            .map(drop),
        "policy" => engine
            .start_with_id(policy, "crash-run", Data::new())
            .await
            .map(drop),
        "sleep" => engine
            .start_with_id(sleeper, "crash-run", Data::new())
            .await
            .map(drop),
        other => panic!("unknown scenario {other}"),
    };
    match started {
        Ok(()) | Err(Error::RunExists { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    match wait_for_run::<Data>(&engine, &"crash-run".into()).await {
        Ok(out) => println!("{}", serde_json::Value::from(out)),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
