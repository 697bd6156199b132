//! Journals written before steps were journaled as changes (commit 34af333, where every
//! `step_completed` entry holds the step's whole output state) still read and resume.
//!
//! `tests/fixtures/legacy_v1.db` was written by [`write_legacy_fixture`] run at that commit:
//! run `legacy-done` finished, run `legacy-open` stopped inside its last step `gate` with
//! every earlier step (a removal, a `last_wins` parallel block, a map) journaled.

use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Mutex;

use durable::{workflow, Data, StepContext, StepError};

/// The steps that ran. The fixture's run ids are fixed, so the tests of this file take
/// [`SERIAL`] and run one at a time.
static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

fn note(_ctx: &StepContext, step: &str) {
    RAN.lock().unwrap().push(step.to_owned());
}

/// Takes [`SERIAL`] and forgets which steps ran.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    RAN.lock().unwrap().clear();
    guard
}

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

/// Puts the fixture's runs into `store`: the file itself for SQLite; for memory, the same rows
/// written through the `Store` trait (the runs created, their journals appended as they are).
fn load_fixture(store: &durable_tests::TestStore) {
    use durable::store::{Finish, NewRun, Store, Write};
    use durable::RunId;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy_v1.db");
    match store.backend() {
        durable_tests::Backend::Sqlite => {
            std::fs::copy(&fixture, store.db_path()).unwrap();
        }
        durable_tests::Backend::Memory => {
            let copy = durable_tests::scratch_dir().join("legacy_v1.db");
            std::fs::copy(&fixture, &copy).unwrap();
            let source = durable::store::sqlite::SqliteStore::open(&copy).unwrap();
            let target = store.open();
            durable_tests::in_runtime(async {
                for id in ["legacy-done", "legacy-open"] {
                    let id = RunId::from(id);
                    let run = source.load_run(&id).await.unwrap().unwrap();
                    let entries = source.load_journal(&id).await.unwrap();
                    let finish = run.output.clone().map(Finish::Completed);
                    let batch = [
                        Write::CreateRun(NewRun {
                            id: id.clone(),
                            workflow: run.workflow,
                            fingerprint: run.fingerprint,
                            input: run.input,
                            owner: "a-process-long-gone".into(),
                            lease_expires_at: 0,
                        }),
                        Write::Append {
                            run: id,
                            lease_token: 1,
                            entries,
                            finish,
                        },
                    ];
                    let outcomes = target.commit(&batch).await.unwrap();
                    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                }
            });
        }
    }
}

durable_tests::each_store! {
    fn an_old_journal_resumes_without_rerunning_its_finished_steps(store) {
        let _serial = serial();
        load_fixture(&store);
        durable_tests::in_runtime(async {
            let engine = durable::Engine::builder_shared(store.open()).register(legacy).build().await.unwrap();
            let open = durable::RunId::from("legacy-open");
            let done = durable::RunId::from("legacy-done");
            assert_eq!(engine.resumed(), std::slice::from_ref(&open));
            let out: Data = engine.wait(&open).await.unwrap();
            // Every step before `gate` replayed from its whole-state entry: none ran again,
            // and the result is the one the old code computed for the same input.
            assert_eq!(*RAN.lock().unwrap(), ["gate"]);
            let expected = engine.status(&done).await.unwrap().output.unwrap();
            assert_eq!(serde_json::Value::from(out.clone()), expected);
            assert_eq!(out.value("temp"), None, "prune's removal replays");
            assert_eq!(out.value("profile"), Some(&serde_json::json!({"name": "ada", "age": 2})));
            assert_eq!(out.get::<String>("side").as_deref(), Some("right"), "last_wins order replays");
            assert_eq!(out.get::<bool>("gated"), Some(true));
            // The new code journals only `gate`'s change after the old entries.
            let history = engine.history(&open).await.unwrap();
            assert_eq!(history.len(), 8);
            assert_eq!(history[7].step, "gate");
            assert_eq!(history[7].event, durable::StepEvent::Completed { output: serde_json::json!({"gated": true}) });
        });
    }

    fn an_old_journal_reads_as_history(store) {
        let _serial = serial();
        load_fixture(&store);
        durable_tests::in_runtime(async {
            let engine = durable::Engine::builder_shared(store.open()).register(legacy).build().await.unwrap();
            let history = engine.history(&durable::RunId::from("legacy-done")).await.unwrap();
            let steps: Vec<_> = history.iter().map(|r| r.step.as_str()).collect();
            assert_eq!(steps, ["grow", "prune", "left", "right", "doubled[0]/double", "doubled[1]/double", "doubled", "gate"]);
            // Old entries hold whole states.
            match &history[1].event {
                durable::StepEvent::Completed { output } => {
                    assert_eq!(output["blob"], "x".repeat(200));
                    assert!(output.get("temp").is_none());
                }
                other => panic!("expected a completion, got {other:?}"),
            }
        });
    }
}

/// A file of schema version 1 is migrated in place on open, through every version: it gains
/// the listing indexes (the old `(status, workflow)` index is replaced) and the checksum
/// columns, and lists page by page.
#[test]
fn opening_a_version_1_file_migrates_it_in_place() {
    let _serial = serial();
    let path = durable_tests::scratch_dir().join("legacy_v1.db");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy_v1.db");
    std::fs::copy(&fixture, &path).unwrap();
    let indexes = |path: &std::path::Path| -> (String, Vec<String>) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let version = conn
            .query_row(
                "SELECT value FROM durable_meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'durable_runs' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        let names = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (version, names)
    };
    assert_eq!(
        indexes(&path),
        ("1".to_owned(), vec!["durable_runs_by_status".to_owned()])
    );
    durable_tests::in_runtime(async {
        let store = durable::store::sqlite::SqliteStore::open(&path).unwrap();
        let engine = durable::Engine::builder(store).build().await.unwrap();
        let filter = durable::RunFilter {
            limit: Some(1),
            ..Default::default()
        };
        let first = engine.list_page(filter.clone()).await.unwrap();
        assert_eq!(first.runs[0].id.as_str(), "legacy-open");
        let second = engine
            .list_page(durable::RunFilter {
                after: first.next,
                ..filter
            })
            .await
            .unwrap();
        assert_eq!(second.runs[0].id.as_str(), "legacy-done");
        assert!(second.next.is_none());
        engine.shutdown().await.unwrap();
    });
    let expected = [
        "durable_runs_by_created",
        "durable_runs_by_status_created",
        "durable_runs_by_workflow_created",
        "durable_runs_by_workflow_status_created",
    ];
    assert_eq!(
        indexes(&path),
        ("3".to_owned(), expected.map(String::from).to_vec())
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let unchecked: i64 = conn
        .query_row(
            "SELECT count(*) FROM durable_journal WHERE checksum IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        unchecked > 0,
        "the old entries keep no checksum and were read as they are"
    );
}
