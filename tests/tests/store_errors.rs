//! Store errors have a kind and a cause: the journal retries only failures that may pass
//! (transient, full) and fails the others at once; a commit that went through although the
//! store reported a failure counts as committed on the retry; and every error keeps its
//! chain of causes, down to what the backend reported.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable::store::sqlite::SqliteStore;
use durable::store::{
    JournalEntry, NewRun, Rejected, RunFilter, RunRecord, Store, StoreError, StoreErrorKind, Write,
};
use durable::{workflow, BoxFuture, Data, Engine, Error, RunId, StepContext, StepError};
use durable_tests::{count, each_store, in_runtime, note, scratch_dir, wait_for_handle};

/// Which commit to answer with a failure although it went through.
type LostAck = Box<dyn Fn(&[Write]) -> bool + Send>;

/// A store around another whose commits can fail: the next `failures` commits with `error`
/// (nothing written), or one chosen commit after it went through (the acknowledgement lost,
/// as when the connection drops right after the commit). Commits are counted.
struct Faulty {
    inner: Arc<dyn Store>,
    commits: AtomicUsize,
    failures: AtomicUsize,
    error: Mutex<Option<StoreError>>,
    lose_ack: Mutex<Option<LostAck>>,
}

impl Faulty {
    fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            commits: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            error: Mutex::new(None),
            lose_ack: Mutex::new(None),
        }
    }

    /// The next `times` commits fail with `error`.
    fn fail(&self, error: StoreError, times: usize) {
        *self.error.lock().unwrap() = Some(error);
        self.failures.store(times, Ordering::SeqCst);
    }
}

impl Store for Faulty {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        Box::pin(async move {
            self.commits.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(self
                    .error
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("an error to fail with"));
            }
            let outcome = self.inner.commit(batch).await?;
            let lose = {
                let mut chosen = self.lose_ack.lock().unwrap();
                match chosen.as_ref() {
                    Some(chooses) if chooses(batch) => chosen.take().is_some(),
                    _ => false,
                }
            };
            if lose {
                return Err(StoreError::transient(
                    "the connection dropped after the commit",
                ));
            }
            Ok(outcome)
        })
    }
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        self.inner.load_run(id)
    }
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        self.inner.load_journal(id)
    }
    fn claim_runs<'a>(
        &'a self,
        claim: durable::store::Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        self.inner.claim_runs(claim)
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.inner.renew_leases(owner, lease)
    }
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.inner.list_runs(filter)
    }
}

async fn counted(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, ctx.step().to_owned());
    Ok(data.assign(ctx.step(), true))
}

workflow! {
    errs { step one = counted; step two = counted; step three = counted; }
}

/// Lets the gated step finish; set by the test once the store is failing.
static GO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn gated(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    while !GO.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    counted(ctx, data).await
}

workflow! {
    gated_errs { step one = gated; step two = counted; }
}

/// Whether `batch` appends an entry of `step`.
fn appends_step(batch: &[Write], step: &str) -> bool {
    batch.iter().any(|w| match w {
        Write::Append { entries, .. } => entries.iter().any(|e| e.step == step),
        Write::CreateRun(_) => false,
    })
}

#[test]
fn a_store_error_that_cannot_pass_fails_the_write_at_once_and_a_transient_one_is_retried() {
    let store = Arc::new(Faulty::new(Arc::new(
        durable::store::memory::MemoryStore::new(),
    )));
    in_runtime(async {
        let engine = Engine::builder_shared(store.clone())
            .register(errs)
            .commit_retry(Duration::from_secs(30))
            .build()
            .await
            .unwrap();
        for kind in [
            StoreErrorKind::Corrupt,
            StoreErrorKind::Foreign,
            StoreErrorKind::Closed,
            StoreErrorKind::InUse,
            StoreErrorKind::Other,
        ] {
            store.fail(StoreError::new(kind, "the store cannot take it"), 1_000);
            let before = store.commits.load(Ordering::SeqCst);
            let started = Instant::now();
            let err = engine
                .start(errs, Data::new())
                .await
                .err()
                .expect("the start failed");
            let Error::Store(e) = &err else {
                panic!("{kind}: not a store error: {err}")
            };
            assert_eq!(e.kind(), kind, "{err}");
            assert_eq!(
                store.commits.load(Ordering::SeqCst) - before,
                1,
                "a {kind} failure was retried"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a {kind} failure waited {:?}",
                started.elapsed()
            );
        }
        // Transient and full failures are retried, and the write goes through.
        for kind in [StoreErrorKind::Transient, StoreErrorKind::Full] {
            store.fail(StoreError::new(kind, "busy for a moment"), 3);
            let run = engine.start(errs, Data::new()).await.unwrap();
            assert_eq!(
                store.failures.load(Ordering::SeqCst),
                0,
                "the start's commit failed three times with a {kind} failure, and was retried"
            );
            wait_for_handle(&engine, &run).await.unwrap();
        }
    });
}

each_store! {
    fn a_commit_that_went_through_although_the_store_failed_counts_as_committed(store) {
        let faulty = Arc::new(Faulty::new(store.open()));
        in_runtime(async {
            let engine = Engine::builder_shared(faulty.clone())
                .register(errs)
                .build()
                .await
                .unwrap();
            // Step two's entry, then the run's end with step three's: each commits, but the
            // store reports a failure; the retry finds it there.
            for lost in ["two", "three"] {
                *faulty.lose_ack.lock().unwrap() =
                    Some(Box::new(move |batch: &[Write]| appends_step(batch, lost)));
                let run = engine.start(errs, Data::new()).await.unwrap();
                let out = wait_for_handle(&engine, &run).await.unwrap_or_else(|e| panic!("lost {lost}: {e}"));
                assert_eq!(out.get::<bool>("three"), Some(true));
                assert!(faulty.lose_ack.lock().unwrap().is_none(), "the failure was injected");
                for step in ["one", "two", "three"] {
                    assert_eq!(count(run.id(), step), 1, "lost {lost}: {step} ran again");
                }
                let history: Vec<_> = engine
                    .history(run.id())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.seq, r.step))
                    .collect();
                assert_eq!(
                    history,
                    [(1, "one".into()), (2, "two".into()), (3, "three".into())],
                    "lost {lost}: each step journaled once"
                );
            }
        });
    }
}

#[test]
fn a_store_failure_keeps_its_chain_of_causes_down_to_the_io_error() {
    let store = Arc::new(Faulty::new(Arc::new(
        durable::store::memory::MemoryStore::new(),
    )));
    in_runtime(async {
        let engine = Engine::builder_shared(store.clone())
            .register(gated_errs)
            .build()
            .await
            .unwrap();
        let run = engine.start(gated_errs, Data::new()).await.unwrap();
        // Not before the run started: step one's commit fails.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad sector 7");
        store.fail(
            StoreError::corrupt("my store: a page is damaged: bad sector 7").with_source(io),
            1,
        );
        GO.store(true, Ordering::SeqCst);
        let err = wait_for_handle(&engine, &run).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store error: workflow `gated_errs` run {}: my store: a page is damaged: bad sector 7",
                run.id()
            )
        );
        // Error -> StoreError -> io::Error.
        let store_error = err
            .source()
            .and_then(|e| e.downcast_ref::<StoreError>())
            .expect("the engine's error has the store's as its source");
        assert_eq!(store_error.kind(), StoreErrorKind::Corrupt);
        let cause = store_error
            .source()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the store's error has the io::Error as its source");
        assert_eq!(
            (cause.kind(), cause.to_string()),
            (std::io::ErrorKind::InvalidData, "bad sector 7".to_owned())
        );
        assert!(cause.source().is_none());
    });
}

#[test]
fn sqlite_failures_have_their_kind_and_their_cause() {
    let dir = scratch_dir();
    // No such directory: the file cannot be opened; the cause is the io::Error.
    let err = SqliteStore::open(dir.join("missing").join("runs.db"))
        .err()
        .expect("no directory, no store");
    assert_eq!(err.kind(), StoreErrorKind::Other, "{err}");
    let io = err
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("no io::Error under {err}"));
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    // Not a database: foreign.
    std::fs::write(dir.join("notes.txt"), "hello, not a database at all").unwrap();
    let err = SqliteStore::open(dir.join("notes.txt")).err().unwrap();
    assert_eq!(err.kind(), StoreErrorKind::Foreign, "{err}");
    // Open already: in use; closed: closed.
    let path = dir.join("runs.db");
    let store = SqliteStore::open(&path).unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert_eq!(err.kind(), StoreErrorKind::InUse, "{err}");
    in_runtime(async {
        // A capped file is full: the write fails as on a full disk, with SQLite's error as
        // its cause.
        store.set_max_size(64 * 1024).unwrap();
        let batch = [Write::CreateRun(NewRun {
            id: "big".into(),
            workflow: "wf".into(),
            fingerprint: "f".into(),
            input: format!("\"{}\"", "x".repeat(1 << 20)),
            owner: "me".into(),
            lease_expires_at: 0,
            parent: None,
        })];
        let err = store.commit(&batch).await.expect_err("the file is full");
        assert_eq!(err.kind(), StoreErrorKind::Full, "{err}");
        assert!(err.is_retryable());
        let sqlite = err
            .source()
            .and_then(|e| e.downcast_ref::<rusqlite::Error>())
            .unwrap_or_else(|| panic!("no rusqlite::Error under {err}"));
        assert_eq!(
            sqlite.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull)
        );
        // A damaged journal entry is corrupt.
        store.set_max_size(1 << 30).unwrap();
        let create = [Write::CreateRun(NewRun {
            id: "r".into(),
            workflow: "wf".into(),
            fingerprint: "f".into(),
            input: "{}".into(),
            owner: "me".into(),
            lease_expires_at: 0,
            parent: None,
        })];
        assert_eq!(store.commit(&create).await.unwrap(), [Ok(())]);
        let append = [Write::Append {
            run: "r".into(),
            lease_token: 1,
            entries: vec![JournalEntry {
                seq: 1,
                step: "a".into(),
                kind: durable::store::EntryKind::StepCompleted,
                attempt: 1,
                payload: r#"{"n":1}"#.into(),
                at: 1,
            }],
            finish: None,
        }];
        assert_eq!(store.commit(&append).await.unwrap(), [Ok(())]);
        {
            // A second connection may write beside the store's (WAL); the lock is only ours.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE durable_journal SET payload = '{\"n\":2}' WHERE run_id = 'r'",
                [],
            )
            .unwrap();
        }
        let err = store.load_journal(&"r".into()).await.expect_err("damaged");
        assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
        assert!(!err.is_retryable());
        store.close();
        let err = store.load_run(&"r".into()).await.expect_err("closed");
        assert_eq!(err.kind(), StoreErrorKind::Closed, "{err}");
    });
}

async fn reads(path: String) -> Result<String, std::io::Error> {
    std::fs::read_to_string(path)
}

async fn read_config(data: Data) -> Result<Data, StepError> {
    let path: String = data.get("path").unwrap_or_default();
    let text = reads(path).await?;
    Ok(data.assign("config", text))
}

#[test]
fn a_step_error_made_with_a_question_mark_keeps_the_error_it_was_made_from() {
    let missing = scratch_dir().join("missing.toml");
    let input = Data::new().assign("path", missing.display().to_string());
    let err = in_runtime(read_config(input)).unwrap_err();
    assert!(!err.is_terminal());
    // The journal keeps the text; the error itself is there to downcast.
    let io = err
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .expect("the io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(err.message(), io.to_string());
}
