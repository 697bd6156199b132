//! PostgreSQL restarted while two workers drive and recover runs: no run is left pending, and
//! each run's journal holds each step once.
//!
//! Restarting the server disturbs every other user of it, so this test runs only when
//! `DURABLE_TEST_POSTGRES_RESTART=1` is set as well as `DURABLE_TEST_POSTGRES_URL` (`.ci/run`
//! sets both; it is alone in its test binary, and cargo runs test binaries one at a time).

use std::time::{Duration, Instant};

use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::{workflow, Data, Engine, RunStatus, StepContext, StepError};
use durable_tests::{in_runtime, note, postgres_url_or_skip, Backend, TestStore};

async fn first(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "first");
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(data.assign("first", true))
}

async fn second(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "second");
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(data.assign("second", true))
}

workflow! { survive { step first; step second; } }

fn restart_server() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL is installed from Debian's packages")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .expect("a cluster");
    let status = std::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "restarting PostgreSQL");
}

#[test]
fn a_server_restart_while_workers_recover_leaves_no_run_pending() {
    if postgres_url_or_skip(
        "pg_restart::a_server_restart_while_workers_recover_leaves_no_run_pending",
    )
    .is_none()
    {
        return;
    }
    if std::env::var("DURABLE_TEST_POSTGRES_RESTART").as_deref() != Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED pg_restart::a_server_restart_while_workers_recover_leaves_no_run_pending: \
             DURABLE_TEST_POSTGRES_RESTART=1 is not set (the test restarts the server)"
        );
        return;
    }
    let store = TestStore::new(Backend::Postgres);
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    in_runtime(async {
        let client = Engine::builder_shared(store.open())
            .register(survive)
            .max_runs(0)
            .build()
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..80 {
            ids.push(
                client
                    .start(survive, Data::new())
                    .await
                    .unwrap()
                    .id()
                    .clone(),
            );
        }
        let mut workers = Vec::new();
        for _ in 0..2 {
            let store =
                PostgresStore::with_options(&url, PostgresOptions::schema(schema.clone())).unwrap();
            workers.push(
                Engine::builder(store)
                    .register(survive)
                    .max_runs(8)
                    .lease_duration(Duration::from_secs(2))
                    .poll_interval(Duration::from_millis(100))
                    .build()
                    .await
                    .unwrap(),
            );
        }
        let completed = |url: String, schema: String| async move {
            let Ok((admin, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                return None;
            };
            tokio::spawn(connection);
            let row = admin
                .query_one(
                    &format!(
                        "SELECT count(*) FROM \"{schema}\".durable_runs WHERE status = 'completed'"
                    ),
                    &[],
                )
                .await
                .ok()?;
            Some(row.get::<_, i64>(0) as usize)
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut restarted = false;
        loop {
            let done = completed(url.clone(), schema.clone()).await.unwrap_or(0);
            if done == ids.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{done} of {} runs completed after 120s",
                ids.len()
            );
            if !restarted && done >= ids.len() / 4 {
                tokio::task::spawn_blocking(restart_server).await.unwrap();
                restarted = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(restarted, "the server restarted mid-way");
        for id in &ids {
            let info = client.status(id).await.unwrap();
            assert_eq!(info.status, RunStatus::Completed);
            let steps: Vec<_> = client
                .history(id)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.step)
                .collect();
            assert_eq!(
                steps,
                ["first", "second"],
                "run {id}: each step journaled once"
            );
        }
    });
}
