//! Send a notification on three channels with `on_error = complete_all`: a failing channel does
//! not cancel the others; the block fails once every branch has ended, naming each failed step.
//!
//! ```text
//! cargo run --bin notify_all
//! ```
//!
//! Two runs of the same workflow: in the first the SMS gateway is down (the run fails, listing
//! `send_sms`), in the second it is up (every channel succeeds and `log_results` runs). In both,
//! `send_email` fails twice and succeeds on its third attempt. The store is in memory.

use std::process::ExitCode;
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::{data, workflow, Data, Engine, Error, StepContext, StepError};
use durable_examples::{failed, finished, print_history, say, started, work};

const SEND_TIME: Duration = Duration::from_millis(100);

async fn prepare(ctx: StepContext, input: Data) -> Result<Data, StepError> {
    started(&ctx);
    let user_id: u64 = input
        .get("user_id")
        .ok_or_else(|| StepError::terminal("the input has no user_id"))?;
    let message: String = input.get("message").unwrap_or_default();
    let sms_gateway_down: bool = input.get("sms_gateway_down").unwrap_or(false);
    finished(&ctx);
    Ok(data! {
        "user_id" => user_id,
        "message" => message,
        "sms_gateway_down" => sms_gateway_down,
    })
}

async fn send_email(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(SEND_TIME).await;
    if ctx.attempt() < 3 {
        let error = StepError::retryable("mail server busy");
        failed(&ctx, &error);
        return Err(error);
    }
    finished(&ctx);
    Ok(data.assign("email_sent", true))
}

/// A stand-in for an SMS provider's client.
fn sms_gateway_send(down: bool) -> std::io::Result<()> {
    if down {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "SMS gateway unreachable",
        ))
    } else {
        Ok(())
    }
}

async fn send_sms(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(SEND_TIME).await;
    let down = data.get("sms_gateway_down").unwrap_or(false);
    if let Err(error) = sms_gateway_send(down) {
        failed(&ctx, &error);
        // `?` turns any std error into a (retryable) StepError; this step has no retries.
        return Err(error.into());
    }
    finished(&ctx);
    Ok(data.assign("sms_sent", true))
}

async fn send_push(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(SEND_TIME).await;
    finished(&ctx);
    Ok(data.assign("push_sent", true))
}

async fn log_results(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    let user_id: u64 = data.get("user_id").unwrap_or_default();
    say(format!(
        "log_results: notifications sent for user {user_id}"
    ));
    finished(&ctx);
    Ok(data.assign("logged", true))
}

workflow! {
    /// Notifies a user by email, SMS and push; every channel is tried even if another fails.
    notify_all {
        step prepare;
        parallel(on_error = complete_all) {
            step send_email(retry(max_attempts = 3, initial = 100ms));
            step send_sms;
            step send_push;
        }
        step log_results;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    durable_examples::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let engine = Engine::builder(MemoryStore::new())
        .register(notify_all)
        .build()
        .await?;

    for sms_gateway_down in [true, false] {
        say(format!(
            "--- a run with the SMS gateway {}",
            if sms_gateway_down { "down" } else { "up" }
        ));
        let input = data! {
            "user_id" => 7,
            "message" => "Your order shipped",
            "sms_gateway_down" => sms_gateway_down,
        };
        let run = engine.start(notify_all, input).await?;
        match run.wait().await {
            Ok(output) => {
                say(format!("run {} completed; final state:", run.id()));
                println!("{}", serde_json::to_string_pretty(&output)?);
            }
            Err(error) => {
                // Display names the workflow, the run and every failed step.
                say(format!("error: {error}"));
                let Error::RunFailed { failure, .. } = &error else {
                    return Err(error.into());
                };
                for step in &failure.steps {
                    say(format!(
                        "  failed step `{}` after {} attempt(s): {}",
                        step.step, step.attempts, step.error
                    ));
                }
                say("every branch ran to its end; log_results did not run");
            }
        }
        println!("history of run {}:", run.id());
        print_history(&engine.history(run.id()).await?);
    }
    Ok(())
}
