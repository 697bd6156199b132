//! Journal writes from concurrent runs are group-committed: while one batch commits, the
//! next one gathers every write that arrives, so many steps share one transaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::store::{JournalEntry, Rejected, RunFilter, RunRecord, Store, StoreError, Write};
use durable::{workflow, BoxFuture, Data, Engine, RunId, StepError};
use durable_tests::in_runtime;

/// A memory store whose commits take as long as a slow fsync, counting batches and writes.
#[derive(Default)]
struct SlowStore {
    inner: MemoryStore,
    batches: AtomicUsize,
    writes: AtomicUsize,
    largest: AtomicUsize,
}

impl Store for SlowStore {
    fn commit(
        &self,
        batch: Vec<Write>,
    ) -> BoxFuture<'_, Result<Vec<Result<(), Rejected>>, StoreError>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(batch.len(), Ordering::SeqCst);
        self.largest.fetch_max(batch.len(), Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
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
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        self.inner.claim_runs(owner, lease)
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

#[test]
fn concurrent_runs_share_commits() {
    let store = Arc::new(SlowStore::default());
    in_runtime(async {
        let engine = Engine::builder_shared(store.clone())
            .register(three)
            .build()
            .await
            .unwrap();
        let runs: Vec<_> = (0..100)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.run(three, Data::new()).await })
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
