//! Nested per-tenant sync: a map over tenants, each running a map over its users, two
//! tenants and three users at a time. Every user's sync is journaled under
//! `tenants_synced[t]/users_synced[u]/sync_user`, so a crash mid-way redoes no finished user.
//!
//! `cargo run --bin tenant_sync [DB]` (an SQLite file, default `tenant_sync.db`).

use anyhow::Context as _;
use std::process::ExitCode;
use std::time::Duration;

use durable::batch::BatchResult;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Engine, StepContext, StepError};
use durable_examples::{db_path, exit, print_history, say, work};

async fn sync_user(ctx: StepContext, user: Data) -> Result<Data, StepError> {
    work(Duration::from_millis(80)).await;
    say(format!(
        "{}: synced {}",
        ctx.step(),
        user.get::<String>("name").unwrap_or_default()
    ));
    Ok(user.assign("synced", true))
}

workflow! {
    tenant_sync {
        map tenants_synced(over = tenants, max_concurrency = 2) {
            map users_synced(over = users, max_concurrency = 3) {
                step sync_user;
            }
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let path = db_path("tenant_sync.db");
    let engine = Engine::builder(SqliteStore::open(&path)?)
        .register(tenant_sync)
        .build()
        .await?;
    let input = Data::new().assign(
        "tenants",
        serde_json::json!([
            {"tenant": "acme", "users": [{"name": "ada"}, {"name": "bob"}, {"name": "cy"}, {"name": "dee"}]},
            {"tenant": "initech", "users": [{"name": "eve"}, {"name": "fay"}]},
            {"tenant": "umbrella", "users": [{"name": "gus"}]},
        ]),
    );
    let run = engine.start(tenant_sync, input).await?;
    let out = run.wait().await?;
    let tenants: BatchResult<Data> = out.get("tenants_synced").context("no batch result")?;
    for tenant in tenants.get_results() {
        let users: BatchResult<Data> = tenant.get("users_synced").context("no user batch")?;
        say(format!(
            "tenant {}: {} of {} users synced",
            tenant.get::<String>("tenant").unwrap_or_default(),
            users.success_count,
            users.total_count
        ));
    }
    print_history(&engine.history(run.id()).await?);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    exit(run().await)
}
