//! A worker process of the frozen-worker trials (`tests/tests/pg_thaw.rs`): an `Engine` over
//! the PostgreSQL store that drives runs of `durable_tests::thaw::thawed` until it is killed,
//! recording every start of a step or sub-operation in its side-effect log. The test
//! SIGSTOPs it past its leases and SIGCONTs it.
//!
//! Usage: `thaw_worker <url> <schema> <name> <log>`; prints `ready` once built.
//! Environment: `LEASE_MS` (default 1000), `MAX_RUNS` (default 20).

use std::time::Duration;

use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::Engine;
use durable_tests::thaw::{open_log, thawed};

fn env_ms(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, name, log] = &args[..] else {
        panic!("usage: thaw_worker <url> <schema> <name> <log>")
    };
    open_log(std::path::Path::new(log), name);
    let lease = Duration::from_millis(env_ms("LEASE_MS", 1000));
    let options = PostgresOptions {
        pool_size: 4,
        // A transaction left open by a stopped worker holds its rows' locks until then.
        idle_in_transaction_timeout: lease,
        ..PostgresOptions::schema(schema.clone())
    };
    let store = PostgresStore::connect_with(url, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _engine = Engine::builder(store)
        .register(thawed)
        .max_runs(env_ms("MAX_RUNS", 20) as usize)
        .lease_duration(lease)
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    println!("ready");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
