//! The main example: onboard a user, durably, in an SQLite file.
//!
//! ```text
//! cargo run --bin onboarding            # uses ./onboarding.db
//! cargo run --bin onboarding my.db      # or another file
//! ```
//!
//! Each step works for about a second. Press Ctrl-C while the three parallel steps run, then
//! run the command again: the run resumes, and the steps that finished are not run again.
//! `send_welcome_email` fails on its first attempt to show a retry.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use durable::store::sqlite::SqliteStore;
use durable::{
    data, workflow, Client, Data, Engine, RunFilter, RunId, StepContext, StepError, Store,
};
use durable_examples::{db_path, failed, finished, print_history, say, started, work};

const STEP_TIME: Duration = Duration::from_secs(1);

async fn create_user(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(STEP_TIME).await;
    finished(&ctx);
    Ok(data.assign("user_id", 42))
}

async fn send_welcome_email(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(STEP_TIME).await;
    if ctx.attempt() == 1 {
        // A transient failure: `?` on any std error makes a retryable StepError.
        let error = std::io::Error::other("mail server timed out");
        failed(&ctx, &error);
        return Err(error.into());
    }
    finished(&ctx);
    // The key is the same on every attempt and after a restart: a mailer can deduplicate on it.
    Ok(data
        .assign("email_sent", true)
        .assign("email_key", ctx.idempotency_key()))
}

async fn provision_workspace(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(STEP_TIME).await;
    let user_id: u64 = data
        .get("user_id")
        .ok_or_else(|| StepError::terminal("no user_id"))?;
    finished(&ctx);
    Ok(data.assign("workspace_id", format!("ws-{user_id}")))
}

async fn setup_billing(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(STEP_TIME).await;
    finished(&ctx);
    Ok(data.assign("billing_ready", true))
}

async fn complete(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    work(STEP_TIME).await;
    let user_id: u64 = data.get("user_id").unwrap_or_default();
    say(format!("complete: user {user_id} onboarded"));
    finished(&ctx);
    Ok(data.assign("onboarded", true))
}

workflow! {
    /// Creates a user, then welcomes them, provisions a workspace and sets up billing at once.
    onboard_user {
        step create_user;
        parallel {
            step send_welcome_email(retry(max_attempts = 3, backoff = exponential, initial = 200ms));
            step provision_workspace;
            step setup_billing;
        }
        step complete;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    durable_examples::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let path = db_path("onboarding.db");
    say(format!("opening {}", path.display()));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path)?);
    // Building the engine resumes every unfinished run in the file: say which before it does.
    let unfinished = Client::new(Arc::clone(&store))
        .list(RunFilter::default())
        .await?
        .into_iter()
        .filter(|run| !run.status.is_finished());
    for run in unfinished {
        say(format!(
            "resuming run {} (finished steps are not run again)",
            run.id
        ));
    }
    let engine = Engine::builder_shared(store)
        .register(onboard_user)
        .build()
        .await?;

    let resumed = engine.resumed();
    let runs: Vec<RunId> = if resumed.is_empty() {
        let finished = engine.list(RunFilter::default()).await?.len();
        if finished > 0 {
            say(format!(
                "no unfinished run ({finished} finished in this file): starting a new run"
            ));
        } else {
            say("starting a new run");
        }
        say("(press Ctrl-C during the parallel steps, then run this again to see it resume)");
        let input = data! { "name" => "Ada", "email" => "ada@example.com" };
        let run = engine.start(onboard_user, input).await?;
        say(format!("run {} started", run.id()));
        vec![run.id().clone()]
    } else {
        resumed
    };

    for id in runs {
        let output: Data = engine.wait(&id).await?;
        say(format!("run {id} completed; final state:"));
        println!("{}", serde_json::to_string_pretty(&output)?);
        println!("history of run {id}:");
        print_history(&engine.history(&id).await?);
    }
    Ok(())
}
