//! A worker process for the crash tests of waits (tests/tests/wait_crash.rs): it drives runs
//! `wait-0` .. `wait-<n-1>` of `approval_flow` on an SQLite store until they complete, and
//! gets killed (SIGKILL) while they wait for a signal or a callback, or while a submit
//! function runs. Every step's side effect and every submit call (with its token) is appended
//! to the log at `CRASH_LOG`, one line per write.
//!
//! Usage: `wait_crash_child <db> <n>`. Environment: `SLOW_SUBMIT=1`: the submit function
//! logs its call, then sleeps a minute (the test kills the process then, before the call is
//! journaled). Prints each run's output as one JSON line and exits 0 once all completed.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use durable::callback::Callback;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Engine, Error, RunId, StepContext, StepError};
use durable_tests::wait_for_run;

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
    record(format!("{} {}\n", ctx.run_id(), ctx.step()));
    let step = ctx.step().to_owned();
    Ok(data.assign(format!("did_{step}"), true))
}

async fn request_payment(callback: Callback, data: Data) -> Result<Data, StepError> {
    record(format!(
        "{} submit {}\n",
        callback.run_id(),
        callback.token()
    ));
    if std::env::var("SLOW_SUBMIT").is_ok() {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    Ok(data.assign("requested", true))
}

// The same workflow as the test's (tests/tests/wait_crash.rs).
workflow! {
    approval_flow {
        step before = work;
        wait_for approved(timeout = 1h);
        callback paid = request_payment(timeout = 1h);
        step after = work;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let db = args.next().expect("db path");
    let n: usize = args.next().expect("run count").parse().expect("a count");
    let store = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::builder(store)
        .register(approval_flow)
        .build()
        .await
        .unwrap();
    let ids: Vec<RunId> = (0..n).map(|i| RunId::from(format!("wait-{i}"))).collect();
    for id in &ids {
        match engine
            .start_with_id(approval_flow, id.clone(), Data::new())
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
