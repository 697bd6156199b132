//! The `Client`: starts and reads runs without driving them, in this process or another one
//! (an SQLite file a running engine holds); the engine picks the client's runs up promptly.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::store::sqlite::SqliteStore;
use durable::store::{JournalEntry, NewRun, RunRecord, Write};
use durable::{
    workflow, BoxFuture, Client, Data, Engine, Error, RunFilter, RunId, RunStatus, StepError, Store,
};
use durable_tests::{client_wait_for_handle, in_runtime, scratch_dir, wait_for_run};

const CHILD: &str = env!("CARGO_BIN_EXE_client_child");

async fn hello(data: Data) -> Result<Data, StepError> {
    let name: String = data.get("name").unwrap_or_default();
    Ok(data.assign("greeting", format!("hello, {name}")))
}

async fn shout(data: Data) -> Result<Data, StepError> {
    let text: String = data.get("greeting").unwrap_or_default();
    Ok(data.assign("greeting", text.to_uppercase()))
}

// The same workflow as tests/src/bin/client_child.rs starts.
workflow! {
    greeting {
        step hello;
        step shout;
    }
}

/// The value of the child's `key value` line.
fn line<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .collect()
}

#[test]
fn a_client_in_another_process_starts_a_run_the_engine_holding_the_file_drives() {
    let dir = scratch_dir();
    let db = dir.join("runs.db");
    in_runtime(async move {
        // The default lease (30s): the heartbeat would claim only after 10s, so a prompt
        // pickup is the worker noticing the client's run.
        let engine = Engine::builder(SqliteStore::open(&db).unwrap())
            .register(greeting)
            .build()
            .await
            .unwrap();
        let child = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || {
                Command::new(CHILD)
                    .args([db.to_str().unwrap(), "from-cli", "ada"])
                    .output()
                    .expect("spawn client_child")
            })
        };
        let out = child.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "client_child failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The client saw its run waiting, then finished by the engine, step by step.
        assert_eq!(line(&stdout, "started"), ["Running owner-less"]);
        assert_eq!(line(&stdout, "output"), ["HELLO, ADA"]);
        assert_eq!(line(&stdout, "status"), ["Completed"]);
        assert_eq!(
            line(&stdout, "history"),
            ["hello completed", "shout completed"]
        );
        assert_eq!(line(&stdout, "listed"), ["true"]);
        let pickup: u64 = line(&stdout, "pickup_ms")[0].parse().unwrap();
        eprintln!("pickup of a client's run by the engine: {pickup} ms");
        // Polled every 50 ms; room for a loaded machine, far below the 10s heartbeat.
        assert!(pickup < 3_000, "picked up after {pickup} ms");
        // The engine drove it: it waits on it and reads the same.
        let id = RunId::from("from-cli");
        let output: Data = wait_for_run(&engine, &id).await.unwrap();
        assert_eq!(
            output.get::<String>("greeting").as_deref(),
            Some("HELLO, ADA")
        );
        assert!(engine.resumed().contains(&id));
        assert!(
            engine.health().last_error.is_none(),
            "{:?}",
            engine.health()
        );
        engine.shutdown().await.unwrap();
    });
}

#[test]
fn a_client_store_cannot_drive_and_a_client_needs_an_existing_store() {
    let dir = scratch_dir();
    let db = dir.join("runs.db");
    let missing = SqliteStore::open_client(dir.join("missing.db"))
        .err()
        .unwrap();
    assert!(
        missing.to_string().contains("missing.db") && missing.to_string().contains("engine"),
        "{missing}"
    );
    in_runtime(async move {
        let engine = Engine::builder(SqliteStore::open(&db).unwrap())
            .register(greeting)
            .build()
            .await
            .unwrap();
        // Beside the engine holding the file, a client opens it; an engine on it is refused.
        let client_store = SqliteStore::open_client(&db).unwrap();
        let refused = Engine::builder(client_store.clone())
            .build()
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&refused, Error::StoreInUse(e) if e.to_string().contains("open_client")),
            "{refused}"
        );
        let client = Client::open(client_store);
        let id = client
            .start(greeting, Data::new().assign("name", "bob"))
            .await
            .unwrap();
        let output: Data = tokio::time::timeout(Duration::from_secs(10), client.wait(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            output.get::<String>("greeting").as_deref(),
            Some("HELLO, BOB")
        );
        // Retrying a start is refused, not duplicated.
        let again = client
            .start_with_id(greeting, id.clone(), Data::new())
            .await;
        assert!(matches!(again, Err(Error::RunExists { .. })), "{again:?}");
        engine.shutdown().await.unwrap();
    });
}

#[test]
fn a_client_over_a_shared_memory_store_starts_runs_the_engine_drives_at_once() {
    in_runtime(async {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::builder_shared(store.clone())
            .register(greeting)
            .build()
            .await
            .unwrap();
        let client = Client::new(store);
        let begun = Instant::now();
        let run = client.handle(
            greeting,
            client
                .start(greeting, Data::new().assign("name", "cy"))
                .await
                .unwrap(),
        );
        let output = client_wait_for_handle(&client, &run).await.unwrap();
        let took = begun.elapsed();
        assert_eq!(
            output.get::<String>("greeting").as_deref(),
            Some("HELLO, CY")
        );
        // The heartbeat (every 10s) would be far later.
        assert!(took < Duration::from_secs(3), "took {took:?}");
        let info = engine.status(run.id()).await.unwrap();
        assert_eq!(info.status, RunStatus::Completed);
        let listed = client.list(RunFilter::default()).await.unwrap();
        assert_eq!(listed.len(), 1);
    });
}

/// A memory store that counts `load_run` calls and can fail `renew_leases`.
struct Watched {
    inner: MemoryStore,
    loads: AtomicUsize,
    fail_renewals: bool,
}

impl Store for Watched {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), durable::store::Rejected>>, durable::store::StoreError>>
    {
        self.inner.commit(batch)
    }
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, durable::store::StoreError>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_run(id)
    }
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, durable::store::StoreError>> {
        self.inner.load_journal(id)
    }
    fn claim_runs<'a>(
        &'a self,
        claim: durable::store::Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, durable::store::StoreError>> {
        self.inner.claim_runs(claim)
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, durable::store::StoreError>> {
        if self.fail_renewals {
            return Box::pin(async {
                Err(durable::store::StoreError::transient("the disk is on fire"))
            });
        }
        self.inner.renew_leases(owner, lease)
    }
    fn release_leases<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<(), durable::store::StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(
        &self,
        filter: RunFilter,
    ) -> BoxFuture<'_, Result<Vec<RunRecord>, durable::store::StoreError>> {
        self.inner.list_runs(filter)
    }
}

#[test]
fn heartbeat_errors_are_reported_not_dropped() {
    in_runtime(async {
        let store = Watched {
            inner: MemoryStore::new(),
            loads: AtomicUsize::new(0),
            fail_renewals: true,
        };
        // A beat every 10 ms.
        let engine = Engine::builder(store)
            .lease_duration(Duration::from_millis(30))
            .build()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.health().errors == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let health = engine.health();
        let last = health.last_error.expect("the failed renewal is kept");
        assert_eq!(last.during, "renewing leases");
        assert!(matches!(&last.error, Error::Store(e) if e.message() == "the disk is on fire"));
        assert!(last
            .to_string()
            .contains("renewing leases: store error: the disk is on fire"));
    });
}

#[test]
fn waiting_on_a_run_another_worker_drives_polls_the_store_less_and_less() {
    in_runtime(async {
        let store = Arc::new(Watched {
            inner: MemoryStore::new(),
            loads: AtomicUsize::new(0),
            fail_renewals: false,
        });
        // A run another, live worker holds (its lease far off): this engine does not take it.
        let id = RunId::from("elsewhere");
        store
            .commit(&[Write::CreateRun(NewRun {
                id: id.clone(),
                workflow: "greeting".into(),
                fingerprint: durable::Workflow::definition(&greeting)
                    .fingerprint()
                    .to_owned(),
                input: "{}".into(),
                owner: "another-worker".into(),
                lease_expires_at: u64::MAX / 2,
                parent: None,
            })])
            .await
            .unwrap();
        let engine = Engine::builder_shared(store.clone())
            .register(greeting)
            .build()
            .await
            .unwrap();
        let before = store.loads.load(Ordering::SeqCst);
        let waited =
            tokio::time::timeout(Duration::from_millis(1500), engine.wait::<Data>(&id)).await;
        assert!(waited.is_err(), "the run is not finished: {waited:?}");
        let loads = store.loads.load(Ordering::SeqCst) - before;
        // Every 10, 20, 40 ... ms up to 500 ms: about 8 looks in 1.5 s (every 50 ms: 30).
        assert!(
            (2..=12).contains(&loads),
            "{loads} looks at the store in 1.5 s"
        );
    });
}

/// Fails for good until the fix is deployed (`FIXED`), counting its attempts.
static FIXED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CHARGES: AtomicUsize = AtomicUsize::new(0);
static PREPARED: AtomicUsize = AtomicUsize::new(0);

async fn prepare(data: Data) -> Result<Data, StepError> {
    PREPARED.fetch_add(1, Ordering::SeqCst);
    Ok(data.assign("prepared", true))
}

async fn charge(data: Data) -> Result<Data, StepError> {
    CHARGES.fetch_add(1, Ordering::SeqCst);
    if !FIXED.load(Ordering::SeqCst) {
        return Err(StepError::terminal("the card service rejected the request"));
    }
    Ok(data.assign("charged", true))
}

workflow! {
    checkout {
        step prepare;
        step charge;
    }
}

#[test]
fn a_client_beside_the_engine_holding_an_sqlite_file_resumes_a_failed_run() {
    let db = scratch_dir().join("runs.db");
    in_runtime(async move {
        let engine = Engine::builder(SqliteStore::open(&db).unwrap())
            .register(checkout)
            .build()
            .await
            .unwrap();
        let run = engine.start(checkout, Data::new()).await.unwrap();
        let failed = tokio::time::timeout(Duration::from_secs(60), run.wait())
            .await
            .expect("the run ends within 60 s");
        assert!(matches!(failed, Err(Error::RunFailed { .. })), "{failed:?}");
        // The fix is deployed; an operator resumes the run from another connection to the
        // file (a CLI, say), which the engine holds.
        FIXED.store(true, Ordering::SeqCst);
        let client = Client::open(SqliteStore::open_client(&db).unwrap());
        client.resume_failed(run.id()).await.unwrap();
        let output: Data = tokio::time::timeout(Duration::from_secs(60), client.wait(run.id()))
            .await
            .expect("the engine drives the resumed run to its end within 60 s")
            .unwrap();
        assert_eq!(output.get::<bool>("charged"), Some(true));
        assert_eq!(
            PREPARED.load(Ordering::SeqCst),
            1,
            "a finished step never runs again"
        );
        assert_eq!(
            CHARGES.load(Ordering::SeqCst),
            2,
            "the failed step ran once more"
        );
        // Resumed once: a second resume finds it completed.
        let again = client.resume_failed(run.id()).await.unwrap_err();
        assert!(
            matches!(
                again,
                Error::RunNotInState {
                    status: RunStatus::Completed,
                    ..
                }
            ),
            "{again:?}"
        );
        engine.shutdown().await.unwrap();
    });
}
