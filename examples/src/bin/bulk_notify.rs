//! Bulk notifications with partial failures (the AWS SDK's map with a failure tolerance):
//! 12 recipients, 4 sends at a time; two addresses bounce, which the batch tolerates (up to
//! 3 failures), so the campaign completes and reports exactly which sends failed.
//!
//! `cargo run --bin bulk_notify`

use std::process::ExitCode;
use std::time::Duration;

use durable::batch::BatchResult;
use durable::store::memory::MemoryStore;
use durable::{workflow, Data, Engine, StepContext, StepError};
use durable_examples::{exit, say, work};

async fn load_recipients(data: Data) -> Result<Data, StepError> {
    let recipients: Vec<serde_json::Value> = (1..=12)
        .map(|i| {
            let domain = if i == 4 || i == 9 {
                "bounce.invalid"
            } else {
                "example.com"
            };
            serde_json::json!({ "email": format!("user{i}@{domain}") })
        })
        .collect();
    say(format!("loaded {} recipients", recipients.len()));
    Ok(data.assign("recipients", recipients))
}

async fn send(ctx: StepContext, recipient: Data) -> Result<Data, StepError> {
    let email: String = recipient.get("email").unwrap_or_default();
    work(Duration::from_millis(100)).await;
    if email.ends_with(".invalid") {
        say(format!("{}: {email} bounced", ctx.step()));
        return Err(StepError::terminal(format!(
            "{email}: mailbox does not exist"
        )));
    }
    say(format!("{}: sent to {email}", ctx.step()));
    Ok(recipient.assign("sent", true))
}

async fn report(data: Data) -> Result<Data, StepError> {
    let batch: BatchResult<Data> = data
        .get("sends")
        .ok_or_else(|| StepError::terminal("no batch"))?;
    say(format!(
        "campaign {} ({}): {} sent, {} failed of {}",
        batch.status,
        batch.completion_reason,
        batch.success_count,
        batch.failure_count,
        batch.total_count
    ));
    for item in batch.failed() {
        say(format!(
            "  failed #{}: {}",
            item.index,
            item.error.as_deref().unwrap_or("?")
        ));
    }
    Ok(data)
}

workflow! {
    campaign {
        step load_recipients;
        map sends(over = recipients, max_concurrency = 4, tolerated_failures = 3) {
            step send;
        }
        step report;
    }
}

async fn run() -> anyhow::Result<()> {
    let engine = Engine::builder(MemoryStore::new())
        .register(campaign)
        .build()
        .await?;
    engine.run(campaign, Data::new()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    exit(run().await)
}
