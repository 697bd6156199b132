//! A worker starts nothing more of a run it cannot show to be its own: in one process, on
//! the memory store and tokio's paused clock, a worker's renewals fail while the clock moves
//! past its lease (as for a worker frozen, or cut off from the store), another owner claims
//! the run, the renewals work again; the worker's next start (a retry's attempt, a step's
//! sub-operations) must not happen. The multi-process proof with real SIGSTOPs is
//! `pg_thaw.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::store::{
    Claim, JournalEntry, Rejected, RunFilter, RunRecord, Store, StoreError, Write,
};
use durable::{workflow, BoxFuture, Data, Engine, RunId, StepContext, StepError};
use durable_tests::{count, events, in_paused_runtime, note};

const LEASE: Duration = Duration::from_secs(1);

/// The memory store, whose lease renewals fail while `failing` is set.
struct Renewals {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl Store for Renewals {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        self.inner.commit(batch)
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
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        self.inner.claim_runs(claim)
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::transient(
                "the store does not answer",
            ))));
        }
        self.inner.renew_leases(owner, lease)
    }
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.inner.list_runs(filter)
    }
}

/// Waits (at most 10 s of the paused clock) until `run` noted `what`.
async fn noted(run: &RunId, what: &str) {
    for _ in 0..10_000 {
        if count(run, what) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{what} never happened in {run}: {:?}", events(run));
}

/// Takes `run` from its worker as a frozen worker loses it: renewals fail until its lease
/// has expired in the store, another owner claims it, and renewals work again.
async fn steal(store: &Renewals, run: &RunId) {
    store.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(LEASE + LEASE / 2).await;
    let claimed = store
        .inner
        .claim_runs(Claim::new("another-worker", Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [run],
        "another worker took the run over"
    );
    store.failing.store(false, Ordering::SeqCst);
}

async fn retried(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("attempt {}", ctx.attempt()));
    if ctx.attempt() == 1 {
        return Err(StepError::retryable("the first attempt fails"));
    }
    Ok(data)
}

workflow! { backoff { step retried(retry(max_attempts = 3, backoff = constant, initial = 5s)); } }

#[test]
fn a_retry_whose_run_was_taken_over_during_its_backoff_does_not_start() {
    in_paused_runtime(async {
        let store = Arc::new(Renewals {
            inner: MemoryStore::new(),
            failing: AtomicBool::new(false),
        });
        let engine = Engine::builder_shared(store.clone())
            .register(backoff)
            .lease_duration(LEASE)
            .build()
            .await
            .unwrap();
        let id = engine
            .start(backoff, Data::new())
            .await
            .unwrap()
            .id()
            .clone();
        noted(&id, "attempt 1").await;
        // During the 5 s backoff.
        steal(&store, &id).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(events(&id), ["attempt 1"], "the second attempt started");
        let record = store.load_run(&id).await.unwrap().unwrap();
        assert_eq!(record.owner.as_deref(), Some("another-worker"));
        assert!(
            engine.health().errors > 0,
            "the failed renewals are reported"
        );
    });
}

/// Set by the test once the run was taken over.
static GO: AtomicBool = AtomicBool::new(false);

/// A long step: waits until the test says go, then starts three sub-operations at once.
async fn long(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "long");
    while !GO.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let op_ctx = ctx.clone();
    let done = ctx
        .map_concurrent(vec![0u32, 1, 2], 3, move |i| {
            let ctx = op_ctx.clone();
            async move {
                note(&ctx, format!("op {i}"));
                Ok(i)
            }
        })
        .await?;
    Ok(data.assign("done", done.len()))
}

workflow! { operations { step long; } }

#[test]
fn sub_operations_of_a_step_whose_run_was_taken_over_meanwhile_do_not_start() {
    in_paused_runtime(async {
        let store = Arc::new(Renewals {
            inner: MemoryStore::new(),
            failing: AtomicBool::new(false),
        });
        let engine = Engine::builder_shared(store.clone())
            .register(operations)
            .lease_duration(LEASE)
            .build()
            .await
            .unwrap();
        let id = engine
            .start(operations, Data::new())
            .await
            .unwrap()
            .id()
            .clone();
        noted(&id, "long").await;
        steal(&store, &id).await;
        GO.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(events(&id), ["long"], "an operation started");
        // The attempt's failure was refused: the new owner's journal is untouched.
        assert!(store.load_journal(&id).await.unwrap().is_empty());
    });
}
