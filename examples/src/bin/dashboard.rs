//! Fetch a dashboard's three sources at once: the parallel block takes as long as its slowest
//! branch, not the sum of all three.
//!
//! ```text
//! cargo run --bin dashboard
//! ```
//!
//! The store is in memory: this example is about concurrency, not about surviving a crash.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use durable::store::memory::MemoryStore;
use durable::{data, workflow, Data, Engine, StepContext, StepError};
use durable_examples::{finished, print_history, say, scaled, started, work};
use serde_json::json;

const ORDERS_LATENCY: Duration = Duration::from_millis(300);
const METRICS_LATENCY: Duration = Duration::from_millis(200);
const NOTIFICATIONS_LATENCY: Duration = Duration::from_millis(250);

async fn init(ctx: StepContext, input: Data) -> Result<Data, StepError> {
    started(&ctx);
    let user_id: u64 = input
        .get("user_id")
        .ok_or_else(|| StepError::terminal("the input has no user_id"))?;
    finished(&ctx);
    // Keep only what the rest of the workflow needs.
    Ok(data! { "user_id" => user_id })
}

/// What the orders service answers.
const ORDERS_RESPONSE: &str = r#"[{ "id": 1001, "total": 25.0 }, { "id": 1002, "total": 12.5 }]"#;

// A step may return `anyhow::Result`: `?` and `.context(..)` work as in the rest of the
// application, and any failure is retried (the journal keeps its chain of causes).
async fn fetch_orders(ctx: StepContext, data: Data) -> anyhow::Result<Data> {
    started(&ctx);
    work(ORDERS_LATENCY).await;
    let orders: serde_json::Value = serde_json::from_str(ORDERS_RESPONSE)
        .context("the orders service answered with something that is not JSON")?;
    finished(&ctx);
    Ok(data.assign("orders", orders))
}

async fn fetch_metrics(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(METRICS_LATENCY).await;
    finished(&ctx);
    Ok(data.assign("metrics", json!({ "visits": 1234, "signups": 56 })))
}

async fn fetch_notifications(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(NOTIFICATIONS_LATENCY).await;
    finished(&ctx);
    Ok(data.assign("notifications", json!(["Your invoice is ready"])))
}

async fn build_dashboard(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    // Every branch's result was merged into the state (deep_merge, the default).
    let dashboard = json!({
        "orders": data.value("orders"),
        "metrics": data.value("metrics"),
        "notifications": data.value("notifications"),
    });
    finished(&ctx);
    Ok(data.assign("dashboard", dashboard))
}

workflow! {
    /// Gathers a user's dashboard from three services at once.
    dashboard_data {
        step init;
        parallel {
            step fetch_orders;
            step fetch_metrics;
            step fetch_notifications;
        }
        step build_dashboard;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    durable_examples::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let engine = Engine::builder(MemoryStore::new())
        .register(dashboard_data)
        .build()
        .await?;
    let began = Instant::now();
    let run = engine
        .start(dashboard_data, data! { "user_id" => 7 })
        .await?;
    let output = run.wait().await?;
    let took = began.elapsed();

    println!("dashboard:");
    println!(
        "{}",
        serde_json::to_string_pretty(&output.value("dashboard"))?
    );
    let one_by_one = scaled(ORDERS_LATENCY + METRICS_LATENCY + NOTIFICATIONS_LATENCY);
    let slowest = scaled(ORDERS_LATENCY);
    let verdict = if took < one_by_one {
        "the fetches ran concurrently"
    } else {
        "the fetches did NOT overlap"
    };
    say(format!(
        "the run took {} ms; the slowest fetch takes {} ms, all three one after another {} ms: \
         {verdict}",
        took.as_millis(),
        slowest.as_millis(),
        one_by_one.as_millis(),
    ));
    println!("history of run {}:", run.id());
    print_history(&engine.history(run.id()).await?);
    Ok(())
}
