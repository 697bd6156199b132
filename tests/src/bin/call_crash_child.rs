//! A worker process for the crash test of child runs (tests/tests/call_crash.rs): it drives
//! runs `order-0` .. `order-<n-1>` of `order_flow` (each calling `payment_flow` as a child)
//! on an SQLite store until they complete, and gets killed (SIGKILL) while the children run.
//! Each step appends `<run> <step> <what>` to the log at `CRASH_LOG`.
//!
//! Usage: `call_crash_child <db> <n>`. The children's `charge` step logs `start`, then waits
//! until the file `<db>.release` exists, then logs `done`. Prints each run's output as one
//! JSON line and exits 0 once all completed.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Engine, Error, RunId, StepContext, StepError};
use durable_tests::wait_for_run;

fn record(ctx: &StepContext, what: &str) {
    let path = std::env::var("CRASH_LOG").expect("CRASH_LOG");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log");
    let line = format!("{} {} {what}\n", ctx.run_id(), ctx.step());
    file.write_all(line.as_bytes()).expect("log write");
}

async fn work(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    record(&ctx, "done");
    let step = ctx.step().to_owned();
    Ok(data.assign(format!("did_{step}"), true))
}

async fn charge(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    record(&ctx, "start");
    let release = format!("{}.release", std::env::args().nth(1).expect("db path"));
    while !std::path::Path::new(&release).exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    record(&ctx, "done");
    let n = data.get::<i64>("n").unwrap_or(0);
    Ok(data.assign("charged", n * 10))
}

async fn prepare(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    record(&ctx, "done");
    let n: i64 = ctx
        .run_id()
        .as_str()
        .trim_start_matches("order-")
        .parse()
        .unwrap();
    Ok(data.assign("payment", serde_json::json!({ "n": n })))
}

workflow! { payment_flow { step charge; step receipt = work; } }
workflow! { order_flow { step prepare; call payment = payment_flow; step after = work; } }

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let db = args.next().expect("db path");
    let n: usize = args.next().expect("run count").parse().expect("a count");
    let store = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::builder(store)
        .register(order_flow)
        .register(payment_flow)
        .build()
        .await
        .unwrap();
    let ids: Vec<RunId> = (0..n).map(|i| RunId::from(format!("order-{i}"))).collect();
    for id in &ids {
        match engine
            .start_with_id(order_flow, id.clone(), Data::new())
            .await
        {
            Ok(_) | Err(Error::RunExists { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    for id in &ids {
        match wait_for_run::<Data>(&engine, id).await {
            Ok(out) => println!("{}", serde_json::Value::from(out)),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
}
