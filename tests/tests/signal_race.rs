//! A signal delivered after a wait looked at the inbox but before the run was recorded
//! suspended finds the run still running, so the delivery wakes nothing: the engine looks at
//! the inbox again once the run is suspended, and wakes it. Played deterministically by a
//! store that delivers the signal right after the wait's look.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::store::{
    inbox_kinds, ClaimableWatch, InboxMessage, JournalEntry, Rejected, RunFilter, RunRecord,
    StoreError, Write,
};
use durable::{workflow, BoxFuture, Data, Engine, RunId, StepError, Store};
use durable_tests::in_runtime;

/// A memory store whose first `load_inbox` of a run delivers signal `approved` right after
/// reading: the message lands while the run is still running, between the wait's look and
/// the suspension.
struct LateSignal {
    inner: MemoryStore,
    delivered: AtomicBool,
}

impl Store for LateSignal {
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
        claim: durable::store::Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        self.inner.claim_runs(claim)
    }
    fn watch_claimable(&self) -> Result<Option<Box<dyn ClaimableWatch>>, StoreError> {
        self.inner.watch_claimable()
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
    fn next_wake_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        self.inner.next_wake_at()
    }
    fn wake<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.wake(run)
    }
    fn deliver<'a>(
        &'a self,
        run: &'a RunId,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, Result<Result<u64, Rejected>, StoreError>> {
        self.inner.deliver(run, kind, name, payload)
    }
    fn load_inbox<'a>(
        &'a self,
        run: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, StoreError>> {
        Box::pin(async move {
            let inbox = self.inner.load_inbox(run).await?;
            if !self.delivered.swap(true, Ordering::SeqCst) {
                let delivered = self
                    .inner
                    .deliver(run, inbox_kinds::SIGNAL, "approved", "\"late\"")
                    .await?;
                assert_eq!(delivered, Ok(1), "delivered to the running run");
            }
            Ok(inbox)
        })
    }
}

async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    raced {
        step prepare;
        wait_for approved(timeout = 1h);
    }
}

#[test]
fn a_signal_delivered_while_the_run_suspends_wakes_it() {
    in_runtime(async {
        let store = Arc::new(LateSignal {
            inner: MemoryStore::new(),
            delivered: AtomicBool::new(false),
        });
        let engine = Engine::builder_shared(store.clone())
            .register(raced)
            .build()
            .await
            .unwrap();
        let run = engine.start(raced, Data::new()).await.unwrap();
        // Without the second look the run would sleep until its deadline, an hour away.
        let output = tokio::time::timeout(Duration::from_secs(10), run.wait())
            .await
            .expect("the late signal woke the run")
            .unwrap();
        assert_eq!(output.get::<String>("approved").as_deref(), Some("late"));
        assert!(store.delivered.load(Ordering::SeqCst));
        engine.shutdown().await.unwrap();
    });
}
