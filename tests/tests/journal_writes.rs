//! The journal writer: concurrent runs' writes share commits, and a store that fails for a
//! while (a disk hiccup, a locked file) is retried without losing or repeating a step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::store::{JournalEntry, Rejected, RunFilter, RunRecord, Store, StoreError, Write};
use durable::{workflow, BoxFuture, Data, Engine, Error, RunId, StepContext, StepError};
use durable_tests::{count, in_runtime, note, run_to_end, wait_for_handle, wait_for_run};

/// A memory store whose commits take `delay`, fail while `failures_left` lasts, and are
/// counted.
#[derive(Default)]
struct TestStore {
    inner: MemoryStore,
    delay: Duration,
    failures_left: AtomicUsize,
    batches: AtomicUsize,
    writes: AtomicUsize,
    largest: AtomicUsize,
    /// Take failures from [`ARMED`] too.
    armed: bool,
}

impl Store for TestStore {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let take = |n: &AtomicUsize| {
                n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            };
            let failing = take(&self.failures_left) || (self.armed && take(&ARMED));
            if failing {
                return Err(StoreError::transient("disk I/O error"));
            }
            self.batches.fetch_add(1, Ordering::SeqCst);
            self.writes.fetch_add(batch.len(), Ordering::SeqCst);
            self.largest.fetch_max(batch.len(), Ordering::SeqCst);
            self.inner.commit(batch).await
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

async fn noop(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    three { step a = noop; step b = noop; step c = noop; }
}

/// Commit failures to inject, armed by a step of the run itself so that they hit exactly
/// that step's commit. Only the store of the test that uses it reads it.
static ARMED: AtomicUsize = AtomicUsize::new(0);

async fn counted(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, ctx.step().to_owned());
    if let Some(n) = data
        .get::<usize>("fail_commits_after_one")
        .filter(|_| ctx.step() == "one")
    {
        ARMED.store(n, Ordering::SeqCst);
    }
    Ok(data.assign(ctx.step(), true))
}

workflow! {
    counted_steps { step one = counted; step two = counted; step three = counted; }
}

#[test]
fn concurrent_runs_share_commits() {
    let store = Arc::new(TestStore {
        delay: Duration::from_millis(5),
        ..Default::default()
    });
    in_runtime(async {
        let engine = Engine::builder_shared(store.clone())
            .register(three)
            .build()
            .await
            .unwrap();
        let runs: Vec<_> = (0..100)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { run_to_end(&engine, three, Data::new()).await })
            })
            .collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }
    });
    // 100 runs x (1 start + 3 steps, the last one finishing the run) = 400 writes.
    let (batches, writes) = (
        store.batches.load(Ordering::SeqCst),
        store.writes.load(Ordering::SeqCst),
    );
    assert_eq!(writes, 400);
    assert!(
        batches * 10 <= writes,
        "{writes} writes took {batches} commits: not group-committed"
    );
    assert!(
        store.largest.load(Ordering::SeqCst) >= 50,
        "largest batch {}",
        store.largest.load(Ordering::SeqCst)
    );
}

#[test]
fn a_store_that_fails_for_a_while_is_retried_and_no_step_runs_twice() {
    let store = Arc::new(TestStore {
        armed: true,
        ..Default::default()
    });
    in_runtime(async {
        let engine = Engine::builder_shared(store.clone())
            .register(counted_steps)
            .build()
            .await
            .unwrap();
        // The start's commit fails twice, then step one's commit four times: each is retried
        // until the store is back.
        store.failures_left.store(2, Ordering::SeqCst);
        let input = Data::new().assign("fail_commits_after_one", 4);
        let run = engine.start(counted_steps, input).await.unwrap();
        assert_eq!(
            store.failures_left.load(Ordering::SeqCst),
            0,
            "the start's commit failed twice"
        );
        let out = wait_for_handle(&engine, &run).await.unwrap();
        assert_eq!(out.get::<bool>("three"), Some(true));
        for step in ["one", "two", "three"] {
            assert_eq!(count(run.id(), step), 1, "{step} ran again");
        }
        assert_eq!(engine.history(run.id()).await.unwrap().len(), 3);
        assert_eq!(
            ARMED.load(Ordering::SeqCst),
            0,
            "step one's commit failed four times"
        );
    });
}

/// Lets the held step finish; set by the test once the store is failing.
static GO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn held(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    while !GO.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    counted(ctx, data).await
}

workflow! {
    held_steps { step one = held; step two = counted; step three = counted; }
}

#[test]
fn a_store_that_stays_down_stops_the_run_and_the_engine_resumes_it_when_the_store_is_back() {
    let store = Arc::new(TestStore::default());
    in_runtime(async {
        let engine = Engine::builder_shared(store.clone())
            .register(held_steps)
            .commit_retry(Duration::from_millis(100))
            .lease_duration(Duration::from_millis(150))
            .build()
            .await
            .unwrap();
        let run = engine.start(held_steps, Data::new()).await.unwrap();
        // Step one finishes only once the store fails: its result cannot be committed.
        store.failures_left.store(usize::MAX, Ordering::SeqCst);
        GO.store(true, Ordering::SeqCst);
        let err = wait_for_handle(&engine, &run).await.unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
        let expected = format!("workflow `held_steps` run {}: disk I/O error", run.id());
        assert!(err.to_string().contains(&expected), "{err}");
        // Nothing was lost: the run is still unfinished in the store.
        let info = engine.status(run.id()).await.unwrap();
        assert_eq!(info.status, durable::RunStatus::Running);
        // The store is back: a heartbeat drives the run again from its journal.
        store.failures_left.store(0, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let out = loop {
            match wait_for_run::<Data>(&engine, run.id()).await {
                Ok(out) => break out,
                Err(Error::Store(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(out.get::<bool>("three"), Some(true));
        // Step one's result was never committed, so it ran again; the others ran once.
        let runs = ["one", "two", "three"].map(|step| count(run.id(), step));
        assert_eq!(runs, [2, 1, 1]);
        assert_eq!(
            engine.history(run.id()).await.unwrap().len(),
            3,
            "each step journaled once"
        );
    });
}
