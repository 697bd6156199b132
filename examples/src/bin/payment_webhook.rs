//! A run that hands a callback token to a payment provider and waits for its webhook, which a
//! second invocation of this binary plays.
//!
//! ```text
//! cargo run --bin payment_webhook -- start                     # starts a run and waits
//! cargo run --bin payment_webhook -- complete <token> 4200     # the provider's webhook
//! cargo run --bin payment_webhook -- fail <token> "card declined"
//! ```
//!
//! `request_payment` is the callback's submit function: it receives a `Callback` whose token
//! (random, 128 bits, routed to its run) it sends to the provider; it is a normal step
//! (retried, journaled), and the token is journaled before it first runs, so a crash before
//! its call was journaled sends the same token again. The run then waits, suspended, until the
//! webhook completes or fails the callback; a token is good once.

use std::process::ExitCode;

use durable::callback::Callback;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Client, Data, Engine, StepContext, StepError};
use durable_examples::{exit, finished, print_history, say, started};

async fn create_order(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    finished(&ctx);
    Ok(data.assign("order", "order-42"))
}

/// Sends the token to the payment provider (printed here: the webhook is played by hand).
async fn request_payment(callback: Callback, data: Data) -> Result<Data, StepError> {
    started(callback.context());
    say(format!(
        "POST https://payments.example/charge token={}",
        callback.token()
    ));
    finished(callback.context());
    Ok(data.assign("payment_requested", true))
}

async fn ship(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    finished(&ctx);
    Ok(data.assign("shipped", true))
}

workflow! {
    /// An order shipped once its payment provider confirmed the payment.
    checkout {
        step create_order;
        callback paid = request_payment(timeout = 1d, retry(max_attempts = 3));
        step ship;
    }
}

fn db() -> String {
    std::env::var("DURABLE_EXAMPLE_DB").unwrap_or_else(|_| "payment_webhook.db".into())
}

const USAGE: &str = "usage: payment_webhook start | payment_webhook complete <token> <amount> | \
                     payment_webhook fail <token> <reason>";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["start"] => start().await,
        ["complete", token, amount] => complete(token, amount).await,
        ["fail", token, reason] => fail(token, reason).await,
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    exit(result)
}

async fn start() -> anyhow::Result<()> {
    let engine = Engine::builder(SqliteStore::open(db())?)
        .register(checkout)
        .build()
        .await?;
    let run = engine.start(checkout, Data::new()).await?;
    say(format!("run {} waits for the payment provider", run.id()));
    let outcome = run.wait().await;
    print_history(&engine.history(run.id()).await?);
    engine.shutdown().await?;
    let output = outcome?;
    say(format!(
        "paid {}, shipped: {}",
        output.value("paid").cloned().unwrap_or_default(),
        output.get::<bool>("shipped").unwrap_or(false)
    ));
    Ok(())
}

/// The provider's webhook: the payment went through.
async fn complete(token: &str, amount: &str) -> anyhow::Result<()> {
    let client = Client::open(SqliteStore::open_client(db())?);
    let amount: u64 = amount.parse()?;
    client
        .complete_callback(token, serde_json::json!({ "amount": amount }))
        .await?;
    say("callback completed");
    Ok(())
}

/// The provider's webhook: the payment failed.
async fn fail(token: &str, reason: &str) -> anyhow::Result<()> {
    let client = Client::open(SqliteStore::open_client(db())?);
    client.fail_callback(token, reason).await?;
    say("callback failed");
    Ok(())
}
