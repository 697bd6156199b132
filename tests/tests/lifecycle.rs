//! An engine's life: one engine per SQLite store, waiters that learn the true outcome of a run
//! another engine finished, graceful shutdown, the file free again once the engine is gone,
//! and a full disk that leaves every run readable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::store::sqlite::SqliteStore;
use durable::store::{JournalEntry, Rejected, RunRecord, StoreError, StoreErrorKind, Write};
use durable::{
    workflow, BoxFuture, Data, Engine, Error, RunFilter, RunId, RunStatus, StepContext, StepError,
    StepEvent, Store,
};
use durable_tests::{
    count, each_store, in_runtime, note, run_to_end, scratch_dir, wait_for_handle, wait_for_run,
    Backend,
};

/// Waits until `done` holds, failing after 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn quick(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "quick");
    Ok(data.assign("quick", true))
}

// ---------------------------------------------------------------------------------------
// Two engines on clones of one SQLite store.

/// Set once the test tried to build a second engine.
static SECOND_TRIED: AtomicBool = AtomicBool::new(false);

async fn hold(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "hold");
    while !SECOND_TRIED.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(data.assign("held", true))
}

workflow! { held_run { step hold; step quick; } }
workflow! { other_run { step quick; } }

#[test]
fn a_second_engine_on_a_clone_of_an_sqlite_store_is_refused_and_the_first_keeps_its_runs() {
    let path = scratch_dir().join("one-engine.db");
    let store = SqliteStore::open(&path).unwrap();
    in_runtime(async {
        let lease = Duration::from_millis(60);
        let first = Engine::builder(store.clone())
            .register(held_run)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let run = first.start(held_run, Data::new()).await.unwrap();
        let id = run.id().clone();
        until("hold", || count(&id, "hold") == 1).await;
        // A second engine, even with other workflows, would take every run the first drives.
        let err = Engine::builder(store.clone())
            .register(other_run)
            .lease_duration(lease)
            .build()
            .await
            .err()
            .expect("the second engine is refused");
        assert!(matches!(err, Error::StoreInUse(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("another engine of this process drives this store"),
            "{text}"
        );
        SECOND_TRIED.store(true, Ordering::SeqCst);
        // Heartbeats later, the first engine still drives its run and finishes it.
        tokio::time::sleep(lease * 3).await;
        let out = wait_for_handle(&first, &run).await.unwrap();
        assert_eq!(out.get::<bool>("held"), Some(true));
        assert_eq!((count(&id, "hold"), count(&id, "quick")), (1, 1));
        // Once the first engine is shut down (which closes the store), another engine may
        // drive the file, opened again at once.
        drop(run);
        first.shutdown().await.unwrap();
        let second = Engine::builder(SqliteStore::open(&path).unwrap())
            .register(held_run)
            .build()
            .await
            .unwrap();
        let info = second.status(&id).await.unwrap();
        assert_eq!(info.status, RunStatus::Completed);
    });
}

// ---------------------------------------------------------------------------------------
// A waiter on a run another engine finished.

/// A memory store whose lease renewals never get through: a worker cut off from its store
/// for a while, whose runs another worker takes over.
struct NoRenewals(MemoryStore);

impl Store for NoRenewals {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        self.0.commit(batch)
    }
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        self.0.load_run(id)
    }
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        self.0.load_journal(id)
    }
    fn claim_runs<'a>(
        &'a self,
        claim: durable::store::Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        self.0.claim_runs(claim)
    }
    fn renew_leases<'a>(
        &'a self,
        _owner: &'a str,
        _lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(std::future::ready(Ok(0)))
    }
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.release_leases(owner)
    }
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.0.list_runs(filter)
    }
}

/// Slow on its first call in a run, quick after.
async fn slow_first(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "slow_first");
    if count(ctx.run_id(), "slow_first") == 1 {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    Ok(data.assign("attempted_by_call", count(ctx.run_id(), "slow_first")))
}

workflow! { taken_over { step slow_first; } }

#[test]
fn a_waiter_learns_the_outcome_of_a_run_another_engine_finished() {
    let memory = MemoryStore::new();
    in_runtime(async {
        let lease = Duration::from_millis(100);
        let cut_off = Engine::builder(NoRenewals(memory.clone()))
            .register(taken_over)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let run = cut_off.start(taken_over, Data::new()).await.unwrap();
        let id = run.id().clone();
        let engine = cut_off.clone();
        let waiter = tokio::spawn(async move { wait_for_handle(&engine, &run).await });
        // The cut-off engine's lease expires; the other engine takes the run and finishes it.
        tokio::time::sleep(lease + lease / 2).await;
        let other = Engine::builder(memory.clone())
            .register(taken_over)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        assert_eq!(other.resumed(), std::slice::from_ref(&id));
        let out: Data = wait_for_run(&other, &id).await.unwrap();
        assert_eq!(out.get::<usize>("attempted_by_call"), Some(2));
        // The cut-off engine's attempt ends later and is fenced off; its waiter still learns
        // the run's true outcome, and so does a later one.
        let seen = waiter.await.unwrap().expect("the waiter sees the output");
        assert_eq!(seen, out);
        until("the fenced attempt", || count(&id, "slow_first") == 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again: Data = wait_for_run(&cut_off, &id).await.unwrap();
        assert_eq!(again, out);
        let info = cut_off.status(&id).await.unwrap();
        assert_eq!(info.status, RunStatus::Completed);
        assert!(info.stalled.is_none(), "stale error: {:?}", info.stalled);
        let listed = cut_off.list(RunFilter::default()).await.unwrap();
        assert!(listed[0].stalled.is_none(), "{:?}", listed[0].stalled);
        // The journal holds the one completion, by the engine that took over.
        let history = cut_off.history(&id).await.unwrap();
        assert_eq!(history.len(), 1);
        assert!(matches!(history[0].event, StepEvent::Completed { .. }));
    });
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown.

async fn finishing(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "finishing started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    note(&ctx, "finishing done");
    Ok(data.assign("finishing", true))
}

async fn next(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "next");
    Ok(data.assign("next", true))
}

workflow! { drained { step finishing; step next; } }

/// Hangs on its first call in a run.
async fn hangs_once(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "hangs_once");
    if count(ctx.run_id(), "hangs_once") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("hangs_once", true))
}

workflow! { cut_short { step hangs_once; step next; } }

/// The store again, as a new process would open it: for SQLite the file opened at once,
/// with no retry, which succeeds only if the previous engine let go of it.
fn reopen(store: &durable_tests::TestStore) -> Arc<dyn Store> {
    match store.backend() {
        Backend::Memory | Backend::Postgres => store.open(),
        Backend::Sqlite => Arc::new(
            SqliteStore::open(store.db_path()).expect("the file is free as soon as shut down"),
        ),
    }
}

each_store! {
    fn graceful_shutdown_lets_the_attempt_in_flight_finish_and_starts_nothing_more(store) {
        let id = in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(drained)
                .build()
                .await
                .unwrap();
            let run = engine.start(drained, Data::new()).await.unwrap();
            let id = run.id().clone();
            until("finishing", || count(&id, "finishing started") == 1).await;
            let started = Instant::now();
            engine.shutdown_gracefully(Duration::from_secs(10)).await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            assert_eq!(count(&id, "finishing done"), 1, "the attempt in flight finished");
            assert_eq!(count(&id, "next"), 0, "no step started after the shutdown began");
            // The store is free at once: a new engine can open it without waiting.
            let store_again = reopen(&store);
            // This engine starts nothing more, and says so.
            let err = engine.start(drained, Data::new()).await.err().expect("refused");
            assert!(matches!(err, Error::EngineShutDown { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("workflow `drained`"), "{text}");
            assert!(text.contains("engine was shut down"), "{text}");
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(matches!(err, Error::ShutDown { .. }), "{err:?}");
            // The next engine resumes after the journaled step.
            let engine = Engine::builder_shared(store_again)
                .register(drained)
                .build()
                .await
                .unwrap();
            assert_eq!(engine.resumed(), std::slice::from_ref(&id));
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!((out.get::<bool>("finishing"), out.get::<bool>("next")), (Some(true), Some(true)));
            assert_eq!(count(&id, "finishing started"), 1, "the finished step did not run again");
            assert_eq!(count(&id, "next"), 1);
            let steps: Vec<_> = engine.history(&id).await.unwrap().into_iter().map(|r| r.step).collect();
            assert_eq!(steps, ["finishing", "next"]);
            id
        });
        assert_eq!(count(&id, "next"), 1);
    }

    fn a_grace_shorter_than_the_attempt_cancels_it_and_the_next_engine_runs_it_again(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(cut_short)
                .build()
                .await
                .unwrap();
            let run = engine.start(cut_short, Data::new()).await.unwrap();
            let id = run.id().clone();
            until("hangs_once", || count(&id, "hangs_once") == 1).await;
            let started = Instant::now();
            engine.shutdown_gracefully(Duration::from_millis(100)).await.unwrap();
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(100), "{took:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
            let engine = Engine::builder_shared(reopen(&store))
                .register(cut_short)
                .build()
                .await
                .unwrap();
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(out.get::<bool>("next"), Some(true));
            assert_eq!(count(&id, "hangs_once"), 2, "the cancelled attempt ran again");
            assert_eq!(count(&id, "next"), 1);
        });
    }

    fn start_after_shutdown_is_a_clear_error(store) {
        in_runtime(async {
            let opened = store.open();
            let engine = Engine::builder_shared(opened.clone())
                .register(other_run)
                .build()
                .await
                .unwrap();
            engine.shutdown().await.unwrap();
            if store.backend() == Backend::Sqlite {
                // The shutdown closed the store: using it says so, and how to go on.
                let err = engine.list(RunFilter::default()).await.unwrap_err().to_string();
                assert!(err.contains("the store was closed (its engine shut down); open the file again"), "{err}");
                let err = Engine::builder_shared(opened).build().await.err().expect("closed").to_string();
                assert!(err.contains("the store was closed"), "{err}");
            }
            let err = run_to_end(&engine, other_run, Data::new()).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                "cannot start a run of workflow `other_run`: this engine was shut down; build a \
                 new engine (Engine::builder(store)...build()) to start runs"
            );
            // A second shutdown is harmless.
            engine.shutdown().await.unwrap();
        });
    }
}

async fn hangs(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, "hangs");
    std::future::pending().await
}

workflow! { hanging_run { step hangs; } }

/// Dropping the engine lets go of the file: nothing keeps it, not even a run still in flight.
/// A store operation in flight at the drop (the pickup's poll, a commit) holds it for that
/// operation's time, longer on a busy machine, so the test waits for the file to be free
/// (bounded: a file still held after 60 s was leaked).
#[test]
fn the_sqlite_file_opens_again_right_after_the_engine_is_dropped() {
    let path = scratch_dir().join("dropped.db");
    in_runtime(async {
        for round in 0..20 {
            let engine = Engine::builder(SqliteStore::open(&path).unwrap())
                .register(other_run)
                .register(hanging_run)
                .build()
                .await
                .unwrap();
            run_to_end(&engine, other_run, Data::new()).await.unwrap();
            // A run still in flight does not keep the file either.
            let hanging = engine.start(hanging_run, Data::new()).await.unwrap();
            let id = hanging.id().clone();
            until("hangs", || count(&id, "hangs") == 1).await;
            drop(hanging);
            drop(engine);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match SqliteStore::open(&path) {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        assert_eq!(e.kind(), StoreErrorKind::InUse, "round {round}: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!(
                        "round {round}: the file is still held 60 s after the engine was dropped: {e}"
                    ),
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// A full disk.

/// Holds the full-disk test's runs until the test lets them finish.
static FULL_DISK_HOLD: AtomicBool = AtomicBool::new(true);

async fn wait_for_space(_ctx: StepContext, data: Data) -> Result<Data, StepError> {
    while FULL_DISK_HOLD.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(data.assign("done", true))
}

async fn instant(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("instant", true))
}

workflow! { full_disk { step wait_for_space; } }
workflow! { full_disk_quick { step instant; } }

#[test]
fn a_full_disk_leaves_every_run_readable_and_they_go_on_once_there_is_space() {
    const WAITING: usize = 300;
    let path = scratch_dir().join("full.db");
    let (done, waiting) = in_runtime(async {
        let engine = Engine::builder(SqliteStore::open(&path).unwrap())
            .register(full_disk)
            .register(full_disk_quick)
            .build()
            .await
            .unwrap();
        let done = engine.start(full_disk_quick, Data::new()).await.unwrap();
        wait_for_handle(&engine, &done).await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..WAITING {
            waiting.push(
                engine
                    .start(full_disk, Data::new())
                    .await
                    .unwrap()
                    .id()
                    .clone(),
            );
        }
        engine.shutdown().await.unwrap();
        (done.id().clone(), waiting)
    });
    // Pack the pages full, so that claiming the runs (which writes the owner into each row)
    // needs pages the capped file cannot have: the disk is full for every write.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    in_runtime(async {
        let store = SqliteStore::open(&path).unwrap();
        store.set_max_size(0).unwrap();
        let engine = Engine::builder(store.clone())
            .register(full_disk)
            .register(full_disk_quick)
            .commit_retry(Duration::from_millis(200))
            .lease_duration(Duration::from_millis(300))
            .build()
            .await
            .expect("an engine builds on a full store");
        assert!(engine.resumed().is_empty(), "nothing could be claimed");
        // Reading works.
        let running = RunFilter {
            status: Some(RunStatus::Running),
            ..Default::default()
        };
        assert_eq!(engine.list(running.clone()).await.unwrap().len(), WAITING);
        assert_eq!(
            engine.status(&done).await.unwrap().status,
            RunStatus::Completed
        );
        assert_eq!(engine.history(&done).await.unwrap().len(), 1);
        let out: Data = wait_for_run(&engine, &done).await.unwrap();
        assert_eq!(out.get::<bool>("instant"), Some(true));
        // Writing fails, with the store's reason, once the retries are spent.
        let mut squeezed_in = Vec::new();
        let err = loop {
            match engine.start(full_disk_quick, Data::new()).await {
                // A page had room for this one.
                Ok(run) => squeezed_in.push(run.id().clone()),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Store(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("full"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        // Space is back: the heartbeat claims the runs and drives them to their end.
        FULL_DISK_HOLD.store(false, Ordering::SeqCst);
        store.set_max_size(1 << 30).unwrap();
        for id in waiting.iter().chain(&squeezed_in) {
            let out = tokio::time::timeout(Duration::from_secs(20), engine.wait::<Data>(id))
                .await
                .expect("the run finished once there was space")
                .unwrap();
            assert!(out.get::<bool>("done").or(out.get::<bool>("instant")) == Some(true));
        }
        assert_eq!(engine.list(running).await.unwrap().len(), 0);
    });
}

#[test]
fn a_second_open_of_a_file_says_what_to_do_and_advertises_no_missing_store() {
    let path = scratch_dir().join("locked.db");
    let _first = SqliteStore::open(&path).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("the file is open in another durable engine"),
        "{err}"
    );
    assert!(
        err.contains("stop the other one, or share one engine"),
        "{err}"
    );
    assert!(!err.contains("PostgreSQL"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Workers with different workflows on one memory store.

workflow! { only_some_know { step hangs_once; step next; } }

#[test]
fn a_worker_never_takes_a_run_it_cannot_drive_from_one_that_can() {
    let memory = MemoryStore::new();
    let lease = Duration::from_millis(100);
    let id = in_runtime(async {
        let first = Engine::builder(memory.clone())
            .register(only_some_know)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let run = first.start(only_some_know, Data::new()).await.unwrap();
        let id = run.id().clone();
        until("hangs_once", || count(&id, "hangs_once") == 1).await;
        id
        // The runtime stops: this worker dies holding the run's lease.
    });
    in_runtime(async {
        tokio::time::sleep(lease * 2).await;
        // A worker that knows other workflows only: the dead worker's run is not for it.
        let other = Engine::builder(memory.clone())
            .register(other_run)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        assert!(other.resumed().is_empty());
        let err = wait_for_run::<Data>(&other, &id).await.unwrap_err();
        assert!(matches!(err, Error::UnknownWorkflow { .. }), "{err:?}");
        let info = other.status(&id).await.unwrap();
        assert!(
            matches!(info.stalled, Some(Error::UnknownWorkflow { .. })),
            "{:?}",
            info.stalled
        );
        // Several of its heartbeats later, a worker that knows the workflow takes the run.
        tokio::time::sleep(lease * 2).await;
        let knows = Engine::builder(memory.clone())
            .register(only_some_know)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), knows.wait::<Data>(&id))
            .await
            .expect("the run was not held by a worker that cannot drive it")
            .unwrap();
        assert_eq!(out.get::<bool>("next"), Some(true));
        assert_eq!(knows.resumed(), std::slice::from_ref(&id));
        assert_eq!(count(&id, "hangs_once"), 2);
        drop(other);
    });
}
