//! Journals written before steps were journaled as changes (commit 34af333, where every
//! `step_completed` entry holds the step's whole output state) still read and resume.
//!
//! `tests/fixtures/legacy_v1.db` was written by [`write_legacy_fixture`] run at that commit:
//! run `legacy-done` finished, run `legacy-open` stopped inside its last step `gate` with
//! every earlier step (a removal, a `last_wins` parallel block, a map) journaled.

use std::sync::atomic::{AtomicBool, Ordering};

use durable::{workflow, Data, StepContext, StepError};
use durable_tests::note;

/// Whether `gate` returns; closed, it never does (the run stays unfinished).
static GATE_OPEN: AtomicBool = AtomicBool::new(true);

async fn grow(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "grow");
    Ok(data
        .assign("blob", "x".repeat(200))
        .assign("count", 1)
        .assign("temp", "scratch")
        .assign(
            "profile",
            serde_json::json!({"name": "ada", "age": 1, "old": true}),
        ))
}

async fn prune(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "prune");
    let mut value = serde_json::Value::from(data);
    let state = value.as_object_mut().unwrap();
    state.remove("temp");
    let profile = state["profile"].as_object_mut().unwrap();
    profile.remove("old");
    profile.insert("age".into(), 2.into());
    let serde_json::Value::Object(map) = value else {
        unreachable!()
    };
    Ok(Data::from(map))
}

async fn left(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "left");
    Ok(data.assign("side", "left").assign("l", true))
}

async fn right(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "right");
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    Ok(data.assign("side", "right").assign("r", true))
}

async fn double(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    note(&ctx, "double");
    let n = item.get::<u64>("n").unwrap_or(0);
    Ok(item.assign("n", n * 2))
}

async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if !GATE_OPEN.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("gated", true))
}

workflow! {
    legacy {
        step grow;
        step prune;
        parallel(merge = last_wins) { step left; step right; }
        map doubled(over = items) { step double; }
        step gate;
    }
}

/// The input both fixture runs started from.
fn legacy_input() -> Data {
    Data::new().assign("items", serde_json::json!([{"n": 1}, {"n": 2}]))
}

/// Writes `tests/fixtures/legacy_v1.db` (run once, at commit 34af333).
#[test]
#[ignore = "writes the fixture; run only at the commit whose format it records"]
fn write_legacy_fixture() {
    use durable::{Engine, RunId};
    let dir = durable_tests::scratch_dir();
    let path = dir.join("legacy_v1.db");
    durable_tests::in_runtime(async {
        let store = durable::store::sqlite::SqliteStore::open(&path).unwrap();
        let engine = Engine::builder(store)
            .register(legacy)
            .build()
            .await
            .unwrap();
        let done = engine
            .start_with_id(legacy, RunId::from("legacy-done"), legacy_input())
            .await
            .unwrap();
        done.wait().await.unwrap();
        GATE_OPEN.store(false, Ordering::SeqCst);
        let open = engine
            .start_with_id(legacy, RunId::from("legacy-open"), legacy_input())
            .await
            .unwrap();
        loop {
            let history = engine.history(open.id()).await.unwrap();
            if history.iter().any(|r| r.step == "doubled") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Let `gate` start, then stop the process with the run unfinished.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    });
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy_v1.db");
    std::fs::copy(&path, &target).unwrap();
}
