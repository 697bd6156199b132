//! Journals written before steps were journaled as changes (commit 34af333, where every
//! `step_completed` entry holds the step's whole output state) still read and resume.
//!
//! `tests/fixtures/legacy_v1.db` was written by [`write_legacy_fixture`] run at that commit:
//! run `legacy-done` finished, run `legacy-open` stopped inside its last step `gate` with
//! every earlier step (a removal, a `last_wins` parallel block, a map) journaled.
//!
//! `tests/fixtures/journal_v2.db` was written by [`write_journal_v2_fixture`] at commit
//! 32dd9c5, the last before the journal's events were typed: steps journaled as their changes,
//! a fan-out operation's result a `step_completed` entry at a path holding `#`, its failure an
//! `attempt_failed` entry there. It holds the runs above again, and runs of [`journal_v2`],
//! whose journal has every kind of entry, one stopped inside a fan-out.

use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Mutex;

use durable::{workflow, Data, StepContext, StepError};
use durable_tests::{wait_for_handle, wait_for_run};

/// The steps that ran. The fixture's run ids are fixed, so the tests of this file take
/// [`SERIAL`] and run one at a time.
static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());
/// The steps that ran, with their runs.
static RAN_IN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn note(ctx: &StepContext, step: &str) {
    RAN.lock().unwrap().push(step.to_owned());
    RAN_IN
        .lock()
        .unwrap()
        .push((ctx.run_id().to_string(), step.to_owned()));
}

/// Takes [`SERIAL`] and forgets which steps ran.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    RAN.lock().unwrap().clear();
    RAN_IN.lock().unwrap().clear();
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
        wait_for_handle(&engine, &done).await.unwrap();
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

// ---------------------------------------------------------------------------------------
// `tests/fixtures/journal_v2.db`: the journal format of commit 32dd9c5 (steps journaled as
// their changes; a fan-out operation's result a `step_completed` entry whose path holds `#`,
// its failure an `attempt_failed` entry), written before the journal's events were typed.

/// Whether `gate_ops`' third operation returns; closed, it never does.
static OPS_GATE_OPEN: AtomicBool = AtomicBool::new(true);
/// Whether `flaky` (and `enrich`'s second operation) fail on their first attempt.
static FIRST_ATTEMPTS_FAIL: AtomicBool = AtomicBool::new(true);

async fn setup(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "setup");
    Ok(data.assign("ready", true))
}

async fn flaky(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "flaky");
    if ctx.attempt() == 1 && FIRST_ATTEMPTS_FAIL.load(Ordering::SeqCst) {
        return Err(StepError::retryable("flaky: first attempt"));
    }
    Ok(data.assign("flaky", ctx.attempt()))
}

async fn skipped(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, "skipped");
    Err(StepError::terminal("skipped: never works"))
}

async fn north(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "north");
    Ok(data.assign("north", 1))
}

async fn south(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "south");
    Ok(data.assign("south", 2))
}

async fn enrich(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "enrich");
    let attempt = ctx.attempt();
    let ops: Vec<_> = (0..3u32)
        .map(|i| {
            let ctx = ctx.clone();
            move || async move {
                note(&ctx, &format!("enrich op {i}"));
                if i == 1 && attempt == 1 && FIRST_ATTEMPTS_FAIL.load(Ordering::SeqCst) {
                    return Err(StepError::retryable("op 1: first attempt"));
                }
                Ok(i * 10)
            }
        })
        .collect();
    let out = ctx.fan_out(ops).await?;
    if out.failed > 0 {
        return Err(StepError::retryable(format!(
            "{} operation failed",
            out.failed
        )));
    }
    Ok(data.assign("enriched", out.results))
}

async fn gate_ops(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate_ops");
    let ops: Vec<_> = (0..3u32)
        .map(|i| {
            let ctx = ctx.clone();
            move || async move {
                note(&ctx, &format!("gate op {i}"));
                if i == 2 && !OPS_GATE_OPEN.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                Ok::<_, StepError>(i + 100)
            }
        })
        .collect();
    let out = ctx.fan_out_fail(ops).await?;
    Ok(data.assign("gated", out))
}

workflow! {
    journal_v2 {
        step setup;
        step flaky(retry(max_attempts = 2, backoff = constant, initial = 10ms));
        step skipped(optional);
        parallel picked(min_successful = 2) { step north; step south; }
        map doubled(over = items) { step double; }
        step enrich(retry(max_attempts = 2, backoff = constant, initial = 10ms));
        step gate_ops;
    }
}

/// The fixture runs of `tests/fixtures/journal_v2.db`.
const V2_RUNS: [&str; 4] = ["legacy-done", "legacy-open", "v2-done", "v2-open"];

/// Writes `tests/fixtures/journal_v2.db` (run once, at the commit whose format it records):
/// the runs of [`write_legacy_fixture`] again, in this format, and `v2-done` / `v2-open` of
/// [`journal_v2`], whose journal holds every kind of entry, `v2-open` stopped inside `gate_ops`
/// with two of its three operations journaled.
#[test]
#[ignore = "writes the fixture; run only at the commit whose format it records"]
fn write_journal_v2_fixture() {
    use durable::{Engine, RunId};
    let _serial = serial();
    let dir = durable_tests::scratch_dir();
    let path = dir.join("journal_v2.db");
    durable_tests::in_runtime(async {
        let store = durable::store::sqlite::SqliteStore::open(&path).unwrap();
        let engine = Engine::builder(store)
            .register(legacy)
            .register(journal_v2)
            .build()
            .await
            .unwrap();
        let done = engine
            .start_with_id(legacy, RunId::from("legacy-done"), legacy_input())
            .await
            .unwrap();
        wait_for_handle(&engine, &done).await.unwrap();
        let done = engine
            .start_with_id(journal_v2, RunId::from("v2-done"), legacy_input())
            .await
            .unwrap();
        wait_for_handle(&engine, &done).await.unwrap();
        GATE_OPEN.store(false, Ordering::SeqCst);
        OPS_GATE_OPEN.store(false, Ordering::SeqCst);
        let open = engine
            .start_with_id(legacy, RunId::from("legacy-open"), legacy_input())
            .await
            .unwrap();
        let open_v2 = engine
            .start_with_id(journal_v2, RunId::from("v2-open"), legacy_input())
            .await
            .unwrap();
        let journaled =
            |history: &[durable::StepRecord], step: &str| history.iter().any(|r| r.step == step);
        loop {
            let old = engine.history(open.id()).await.unwrap();
            let v2 = engine.history(open_v2.id()).await.unwrap();
            if journaled(&old, "doubled")
                && journaled(&v2, "gate_ops/fan_out_fail#1[0]")
                && journaled(&v2, "gate_ops/fan_out_fail#1[1]")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Let `gate` start, then stop the process with the runs unfinished.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    });
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journal_v2.db");
    std::fs::copy(&path, &target).unwrap();
}

/// Puts the fixture's runs into `store`: the file itself for SQLite; for memory, the same rows
/// written through the `Store` trait (the runs created, their journals appended as they are).
fn load_fixture(store: &durable_tests::TestStore) {
    load_fixture_file(store, "legacy_v1.db", &["legacy-done", "legacy-open"]);
}

/// Puts the runs `ids` of `tests/fixtures/<file>` into `store`, as [`load_fixture`] does.
fn load_fixture_file(store: &durable_tests::TestStore, file: &str, ids: &[&str]) {
    use durable::store::{Finish, NewRun, Store, Write};
    use durable::RunId;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(file);
    match store.backend() {
        durable_tests::Backend::Sqlite => {
            std::fs::copy(&fixture, store.db_path()).unwrap();
        }
        durable_tests::Backend::Memory | durable_tests::Backend::Postgres => {
            let copy = durable_tests::scratch_dir().join(file);
            std::fs::copy(&fixture, &copy).unwrap();
            let source = durable::store::sqlite::SqliteStore::open(&copy).unwrap();
            let target = store.open();
            durable_tests::in_runtime(async {
                for &id in ids {
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
                            parent: None,
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
            let out: Data = wait_for_run(&engine, &open).await.unwrap();
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
        "durable_runs_by_parent",
        "durable_runs_by_status_created",
        "durable_runs_by_wake",
        "durable_runs_by_workflow_created",
        "durable_runs_by_workflow_status_created",
        "durable_runs_cancel_requested",
        "durable_runs_unread",
    ];
    assert_eq!(
        indexes(&path),
        ("8".to_owned(), expected.map(String::from).to_vec())
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

/// A resumed run: its output, the steps that ran, and its history's steps and attempts.
type Resumed = (serde_json::Value, Vec<String>, Vec<(String, u32)>);

/// The fixture runs `runs` resumed to their end (or read, when finished) by
/// an engine on `store`: their outputs, what ran, and their histories' steps and attempts.
fn resume_fixture(store: &durable_tests::TestStore, runs: &[&str]) -> Vec<Resumed> {
    durable_tests::in_runtime(async {
        let engine = durable::Engine::builder_shared(store.open())
            .register(legacy)
            .register(journal_v2)
            .build()
            .await
            .unwrap();
        let mut resumed = Vec::new();
        for &id in runs {
            let id = durable::RunId::from(id);
            let out: serde_json::Value = wait_for_run(&engine, &id).await.unwrap();
            let ran = RAN_IN
                .lock()
                .unwrap()
                .iter()
                .filter(|(run, _)| run == id.as_str())
                .map(|(_, step)| step.clone())
                .collect();
            let history = engine.history(&id).await.unwrap();
            let steps = history.into_iter().map(|r| (r.step, r.attempt)).collect();
            resumed.push((out, ran, steps));
        }
        resumed
    })
}

durable_tests::each_store! {
    fn a_journal_of_the_previous_format_resumes_without_rerunning_finished_steps_or_operations(store) {
        let _serial = serial();
        load_fixture_file(&store, "journal_v2.db", &V2_RUNS);
        let resumed = resume_fixture(&store, &["v2-open", "v2-done"]);
        let (open, ran, steps) = &resumed[0];
        // `gate_ops` ran again, but of its operations only the one that had not finished.
        assert_eq!(*ran, ["gate_ops", "gate op 2"]);
        // The same output as the run the old code finished, from the same input.
        assert_eq!(*open, resumed[1].0);
        assert_eq!(open["enriched"], serde_json::json!([0, 10, 20]));
        assert_eq!(open["gated"], serde_json::json!([100, 101, 102]));
        assert_eq!(open["flaky"], 2);
        assert_eq!(open["picked"]["status"], "completed");
        assert_eq!(open["doubled"]["items"][1]["result"]["n"], 4);
        // The resumed run's history is the finished run's, entry for entry.
        assert_eq!(*steps, resumed[1].2);
    }

    fn a_journal_of_the_previous_format_reads_as_history(store) {
        let _serial = serial();
        load_fixture_file(&store, "journal_v2.db", &V2_RUNS);
        durable_tests::in_runtime(async {
            use durable::StepEvent;
            let engine = durable::Engine::builder_shared(store.open()).register(journal_v2).build().await.unwrap();
            let history = engine.history(&durable::RunId::from("v2-done")).await.unwrap();
            let event = |step: &str, attempt: u32| {
                history
                    .iter()
                    .find(|r| r.step == step && r.attempt == attempt)
                    .unwrap_or_else(|| panic!("no entry for {step} attempt {attempt}: {history:?}"))
                    .event
                    .clone()
            };
            assert!(matches!(event("flaky", 1), StepEvent::AttemptFailed { error, retry_at } if error == "flaky: first attempt" && retry_at > 0));
            assert_eq!(event("flaky", 2), StepEvent::Completed { output: serde_json::json!({"flaky": 2}) });
            assert_eq!(event("skipped", 1), StepEvent::Failed { error: "skipped: never works".into(), optional: true });
            assert_eq!(event("enrich/fan_out#1[0]", 1), StepEvent::Completed { output: serde_json::json!(0) });
            assert_eq!(event("enrich/fan_out#1[1]", 1), StepEvent::AttemptFailed { error: "op 1: first attempt".into(), retry_at: 0 });
            assert_eq!(event("enrich/fan_out#1[1]", 2), StepEvent::Completed { output: serde_json::json!(10) });
            assert!(matches!(event("picked", 1), StepEvent::Completed { output } if output["picked"]["status"] == "completed"));
            assert!(matches!(event("doubled", 1), StepEvent::Completed { output } if output.as_object().unwrap().len() == 1));
            assert_eq!(history.len(), 20);
        });
    }

    fn both_old_formats_read_and_resume_identically(store) {
        let _serial = serial();
        load_fixture(&store);
        let v1 = resume_fixture(&store, &["legacy-open", "legacy-done"]);
        RAN_IN.lock().unwrap().clear();
        let store = durable_tests::TestStore::new(store.backend());
        load_fixture_file(&store, "journal_v2.db", &V2_RUNS);
        let v2 = resume_fixture(&store, &["legacy-open", "legacy-done"]);
        // Whole states (v1) and changes (v2) replay to the same states: the same outputs, the
        // same steps ran again (only the unfinished `gate`), the same history of steps.
        assert_eq!(v1, v2);
        assert_eq!(v1[0].1, ["gate"]);
        assert_eq!(v1[0].0, v1[1].0);
    }
}

// ---------------------------------------------------------------------------------------
// `tests/fixtures/checksums_v7.db`: a file of schema version 7, the last whose checksums are
// 64-bit FNV-1a (of journal entries, of runs' inputs and ends, of inbox messages); later
// versions write CRC-32C into columns of their own and still verify these.

async fn prepare(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "prepare");
    Ok(data.assign("prepared", "p".repeat(100)))
}

async fn finish(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "finish");
    let go: String = data.get("go").unwrap_or_default();
    Ok(data.assign("finished_with", go))
}

workflow! {
    checked {
        step prepare;
        wait_for go;
        step finish;
    }
}

/// The fixture runs of `tests/fixtures/checksums_v7.db`: finished (signalled `first`); waiting,
/// with signal `second` in its inbox; waiting, with nothing in its inbox.
const FNV_RUNS: [&str; 3] = ["fnv-done", "fnv-signalled", "fnv-waiting"];

/// Writes `tests/fixtures/checksums_v7.db` (run once, at commit e91072d, schema version 7):
/// the runs of [`FNV_RUNS`] of [`checked`], each started from `{"order": n}`.
#[test]
#[ignore = "writes the fixture; run only at the commit whose format it records"]
fn write_checksums_v7_fixture() {
    use durable::{Client, Engine, RunId, RunStatus};
    let _serial = serial();
    let dir = durable_tests::scratch_dir();
    let path = dir.join("checksums_v7.db");
    let ids = FNV_RUNS.map(RunId::from);
    durable_tests::in_runtime(async {
        let store = durable::store::sqlite::SqliteStore::open(&path).unwrap();
        let engine = Engine::builder(store)
            .register(checked)
            .build()
            .await
            .unwrap();
        for (n, id) in ids.iter().enumerate() {
            let input = Data::new().assign("order", n);
            engine
                .start_with_id(checked, id.clone(), input)
                .await
                .unwrap();
            let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while engine.status(id).await.unwrap().status != RunStatus::Suspended {
                assert!(std::time::Instant::now() < limit, "run {id} never waited");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        engine
            .signal(checked, &ids[0], "go", "first")
            .await
            .unwrap();
        let done: Data = engine.wait(&ids[0]).await.unwrap();
        assert_eq!(
            done.get::<String>("finished_with").as_deref(),
            Some("first")
        );
        engine.shutdown().await.unwrap();
    });
    // Signalled with no engine running: the message waits in the file.
    durable_tests::in_runtime(async {
        let store = durable_tests::open_sqlite_retrying(&path);
        let client = Client::new(std::sync::Arc::new(store));
        client
            .signal(checked, &ids[1], "go", "second")
            .await
            .unwrap();
    });
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/checksums_v7.db");
    std::fs::copy(&path, &target).unwrap();
}

/// CRC-32C of the little-endian `numbers`, then of `texts`: what the SQLite store keeps from
/// schema version 8 on for a journal entry (`seq, attempt, at, len(step), len(kind),
/// len(payload)`, then `step, kind, payload`) or an inbox message (`seq, at, len(kind),
/// len(name), len(payload)`, then `kind, name, payload`), computed here on its own.
fn crc32c_of(numbers: &[u64], texts: &[&str]) -> i64 {
    let mut bytes = Vec::new();
    for n in numbers {
        bytes.extend_from_slice(&n.to_le_bytes());
    }
    for text in texts {
        bytes.extend_from_slice(text.as_bytes());
    }
    i64::from(crc32c::crc32c(&bytes))
}

/// A journal row as stored: run, seq, step, kind, attempt, payload, at, crc32c, checksum.
type JournalRow = (
    String,
    i64,
    String,
    String,
    i64,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);
/// An inbox row as stored: run, seq, kind, name, payload, at, crc32c, checksum.
type InboxRow = (
    String,
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);
/// A run's row as stored: id, input, output, input_crc32c, input_checksum, end_crc32c,
/// end_checksum.
type RunRow = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Every journal, inbox and run row of the file at `path`, in key order.
fn checksum_rows(path: &std::path::Path) -> (Vec<JournalRow>, Vec<InboxRow>, Vec<RunRow>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let has_crc = conn.prepare("SELECT crc32c FROM durable_journal").is_ok();
    let crc = if has_crc { "crc32c" } else { "NULL" };
    let journal = conn
        .prepare(&format!(
            "SELECT run_id, seq, step, kind, attempt, payload, at, {crc}, checksum \
             FROM durable_journal ORDER BY run_id, seq"
        ))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let inbox = conn
        .prepare(&format!(
            "SELECT run_id, seq, kind, name, payload, at, {crc}, checksum FROM durable_inbox \
             ORDER BY run_id, seq"
        ))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (input_crc, end_crc) = if has_crc {
        ("input_crc32c", "end_crc32c")
    } else {
        ("NULL", "NULL")
    };
    let runs = conn
        .prepare(&format!(
            "SELECT id, input, coalesce(output, error), {input_crc}, input_checksum, {end_crc}, \
             end_checksum FROM durable_runs ORDER BY id"
        ))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (journal, inbox, runs)
}

/// A file whose checksums are all FNV-1a (schema version 7) opens, is migrated, verifies and
/// resumes: the run whose signal waited in the file and the one signalled now finish without
/// running a finished step again, and the finished one reads back. The rows it had keep their
/// FNV-1a checksums; every row written after carries a CRC-32C of its fields and no FNV-1a.
#[test]
fn a_file_with_fnv_checksums_verifies_and_resumes_and_its_new_rows_get_crc32c() {
    use durable::store::sqlite::SqliteStore;
    use durable::{Engine, RunId};
    use std::time::Duration;
    let _serial = serial();
    let path = durable_tests::scratch_dir().join("checksums_v7.db");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/checksums_v7.db");
    std::fs::copy(&fixture, &path).unwrap();
    let (old_journal, old_inbox, old_runs) = checksum_rows(&path);
    // As written: every row with an FNV-1a checksum (every end there was, too).
    assert_eq!(
        (old_journal.len(), old_inbox.len(), old_runs.len()),
        (8, 2, 3)
    );
    assert!(
        old_journal.iter().all(|row| row.8.is_some()),
        "{old_journal:?}"
    );
    assert!(old_inbox.iter().all(|row| row.7.is_some()), "{old_inbox:?}");
    assert!(old_runs
        .iter()
        .all(|row| row.4.is_some() && row.2.is_some() == row.6.is_some()));
    let ids = FNV_RUNS.map(RunId::from);
    durable_tests::in_runtime(async {
        let store = SqliteStore::open(&path).unwrap();
        let engine = Engine::builder(store)
            .register(checked)
            .build()
            .await
            .unwrap();
        // The run whose signal waited in the file is taken up at once.
        assert_eq!(engine.resumed(), std::slice::from_ref(&ids[1]));
        let out: Data = tokio::time::timeout(Duration::from_secs(20), engine.wait(&ids[1]))
            .await
            .expect("fnv-signalled did not finish within 20 s")
            .unwrap();
        assert_eq!(
            out.get::<String>("finished_with").as_deref(),
            Some("second")
        );
        assert_eq!(out.get::<String>("prepared"), Some("p".repeat(100)));
        engine
            .signal(checked, &ids[2], "go", "third")
            .await
            .unwrap();
        let out: Data = tokio::time::timeout(Duration::from_secs(20), engine.wait(&ids[2]))
            .await
            .expect("fnv-waiting did not finish within 20 s")
            .unwrap();
        assert_eq!(out.get::<String>("finished_with").as_deref(), Some("third"));
        assert_eq!(out.get::<usize>("order"), Some(2));
        // The finished run reads back, output and history, through its FNV-1a checksums.
        let done = engine.status(&ids[0]).await.unwrap().output.unwrap();
        assert_eq!(done["finished_with"], "first");
        assert_eq!(engine.history(&ids[0]).await.unwrap().len(), 4);
        engine.shutdown().await.unwrap();
    });
    // Only the step after each wait ran: `prepare` replayed from its FNV-1a-checked entry.
    let mut ran = RAN_IN.lock().unwrap().clone();
    ran.sort();
    assert_eq!(
        ran,
        [
            ("fnv-signalled".to_owned(), "finish".to_owned()),
            ("fnv-waiting".to_owned(), "finish".to_owned()),
        ]
    );
    drop(durable_tests::open_sqlite_retrying(&path));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let schema: String = conn
        .query_row(
            "SELECT value FROM durable_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(schema, "8");
    drop(conn);
    let (journal, inbox, runs) = checksum_rows(&path);
    // The journal: the old entries as they were, the new ones CRC-32C alone.
    let mut new_entries = 0;
    for row in &journal {
        let (run, seq, step, kind, attempt, payload, at, crc, fnv) = row;
        if let Some(old) = old_journal.iter().find(|o| (&o.0, o.1) == (run, *seq)) {
            assert_eq!((old.8, *crc, *fnv), (*fnv, None, old.8), "{row:?}");
            continue;
        }
        new_entries += 1;
        let lengths = [step.len(), kind.len(), payload.len()].map(|n| n as u64);
        let numbers = [*seq as u64, *attempt as u64, *at as u64];
        let expected = crc32c_of(
            &[&numbers[..], &lengths[..]].concat(),
            &[step, kind, payload],
        );
        assert_eq!((*crc, *fnv), (Some(expected), None), "{row:?}");
    }
    // Each resumed run's `go` received and `finish`'s change.
    assert_eq!(new_entries, 2 * 2, "{journal:?}");
    // The inbox: the two old messages as they were, the new signal CRC-32C alone.
    assert_eq!(inbox.len(), 3, "{inbox:?}");
    for row in &inbox {
        let (run, seq, kind, name, payload, at, crc, fnv) = row;
        if let Some(old) = old_inbox.iter().find(|o| (&o.0, o.1) == (run, *seq)) {
            assert_eq!((*crc, *fnv), (None, old.7), "{row:?}");
            continue;
        }
        assert_eq!(run, "fnv-waiting");
        let lengths = [kind.len(), name.len(), payload.len()].map(|n| n as u64);
        let numbers = [*seq as u64, *at as u64];
        let expected = crc32c_of(
            &[&numbers[..], &lengths[..]].concat(),
            &[kind, name, payload],
        );
        assert_eq!((*crc, *fnv), (Some(expected), None), "{row:?}");
    }
    // The runs: inputs as they were; the ends written now CRC-32C alone.
    for (row, old) in runs.iter().zip(&old_runs) {
        let (id, _, end, input_crc, input_fnv, end_crc, end_fnv) = row;
        assert_eq!((*input_crc, *input_fnv), (None, old.4), "{row:?}");
        if id == "fnv-done" {
            assert_eq!((*end_crc, *end_fnv), (None, old.6), "{row:?}");
        } else {
            let expected = crc32c_of(&[], &[end.as_deref().unwrap()]);
            assert_eq!((*end_crc, *end_fnv), (Some(expected), None), "{row:?}");
        }
    }
}

/// One bit flipped in a payload is caught whichever checksum its row carries: an entry and a
/// message the fixture wrote with FNV-1a, and an entry and a message written now with CRC-32C.
/// The store refuses each, naming the run and the row, and reads it again once it is restored.
#[test]
fn a_flipped_bit_is_caught_in_rows_with_either_checksum() {
    use durable::store::sqlite::SqliteStore;
    use durable::store::{Store, StoreErrorKind};
    use durable::{Engine, RunId};
    let _serial = serial();
    let path = durable_tests::scratch_dir().join("checksums_v7.db");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/checksums_v7.db");
    std::fs::copy(&fixture, &path).unwrap();
    let waiting = RunId::from("fnv-waiting");
    // `fnv-waiting` gets a signal and an entry of each kind written by this version.
    durable_tests::in_runtime(async {
        let store = SqliteStore::open(&path).unwrap();
        let engine = Engine::builder(store)
            .register(checked)
            .build()
            .await
            .unwrap();
        engine
            .signal(checked, &waiting, "go", "third")
            .await
            .unwrap();
        let wait = engine.wait::<Data>(&waiting);
        tokio::time::timeout(std::time::Duration::from_secs(20), wait)
            .await
            .expect("fnv-waiting did not finish within 20 s")
            .unwrap();
        engine.shutdown().await.unwrap();
    });
    drop(durable_tests::open_sqlite_retrying(&path));
    let (journal, inbox, _) = checksum_rows(&path);
    let journal_row = |run: &str, step: &str, crc: bool| {
        journal
            .iter()
            .find(|r| r.0 == run && r.2 == step && r.7.is_some() == crc)
            .unwrap_or_else(|| panic!("no entry {run} {step} (crc {crc}): {journal:?}"))
            .clone()
    };
    let old_entry = journal_row("fnv-done", "prepare", false);
    let new_entry = journal_row("fnv-waiting", "finish", true);
    let message = |run: &str| inbox.iter().find(|r| r.0 == run).unwrap().clone();
    let (old_message, new_message) = (message("fnv-done"), message("fnv-waiting"));
    assert!(
        old_message.7.is_some() && new_message.6.is_some(),
        "{inbox:?}"
    );
    let cases = [
        (
            "durable_journal",
            old_entry.0.clone(),
            old_entry.1,
            old_entry.5.clone(),
        ),
        (
            "durable_journal",
            new_entry.0.clone(),
            new_entry.1,
            new_entry.5.clone(),
        ),
        (
            "durable_inbox",
            old_message.0.clone(),
            old_message.1,
            old_message.4.clone(),
        ),
        (
            "durable_inbox",
            new_message.0.clone(),
            new_message.1,
            new_message.4.clone(),
        ),
    ];
    for (table, run, seq, payload) in cases {
        let shown = format!("{table} {run} {seq}");
        let set = |payload: &str| {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let sql = format!("UPDATE {table} SET payload = ?1 WHERE run_id = ?2 AND seq = ?3");
            let changed = conn
                .execute(&sql, rusqlite::params![payload, run, seq])
                .unwrap();
            assert_eq!(changed, 1, "{shown}");
        };
        // One bit of an ASCII byte in the middle: still text, same length.
        let mut bytes = payload.clone().into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x02;
        let flipped = String::from_utf8(bytes).unwrap();
        set(&flipped);
        let read = |store: &SqliteStore| {
            let id = RunId::from(run.as_str());
            durable_tests::in_runtime(async {
                if table == "durable_journal" {
                    store.load_journal(&id).await.map(drop)
                } else {
                    store.load_inbox(&id).await.map(drop)
                }
            })
        };
        let store = SqliteStore::open(&path).unwrap();
        let err = read(&store).expect_err(&format!("{shown}: a flipped bit was read"));
        assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{shown}: {err}");
        let text = err.to_string();
        let names = if table == "durable_journal" {
            format!(
                "run {run} step `{}` (journal entry {seq}): the entry does not match",
                if run == "fnv-done" {
                    "prepare"
                } else {
                    "finish"
                }
            )
        } else {
            format!("run {run}: inbox message {seq} (signal `go`) does not match")
        };
        assert!(text.contains(&names), "{shown}: {text}");
        drop(store);
        set(&payload);
        let store = SqliteStore::open(&path).unwrap();
        read(&store).unwrap_or_else(|e| panic!("{shown}: restored but refused: {e}"));
    }
}
