//! A signal delivered after a wait looked at the inbox but before the run was recorded
//! suspended finds the run still running, so the delivery wakes nothing: the suspension
//! carries how far the waits saw the inbox, and the store leaves the run awake. Played
//! deterministically by a store that delivers the signal right after the first look.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::store::{
    inbox_kinds, ClaimableWatch, InboxMessage, JournalEntry, Rejected, RunFilter, RunRecord,
    StoreError, Write,
};
use durable::{workflow, BoxFuture, Data, Engine, RunId, StepError, StepEvent, Store};
use durable_tests::in_runtime;

/// A memory store whose first `load_inbox` of a run delivers signal `signal` right after
/// reading (then opens [`GATE`], if `opens_gate`): the message lands while the run is still
/// running, between the wait's look and the suspension.
struct LateSignal {
    inner: MemoryStore,
    signal: &'static str,
    opens_gate: bool,
    delivered: AtomicBool,
}

/// Opened once the late signal is delivered (by the one test whose store opens it).
static GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

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
                    .deliver(run, inbox_kinds::SIGNAL, self.signal, "\"late\"")
                    .await?;
                assert_eq!(delivered, Ok(1), "delivered to the running run");
                if self.opens_gate {
                    GATE.notify_one();
                }
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
            signal: "approved",
            opens_gate: false,
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

/// Waits until the late signal was delivered (it opens the gate).
async fn gate(data: Data) -> Result<Data, StepError> {
    tokio::time::timeout(Duration::from_secs(10), GATE.notified())
        .await
        .map_err(|_| StepError::terminal("the late signal was never delivered"))?;
    Ok(data)
}

workflow! {
    two_waits {
        parallel {
            wait_for first(timeout = 1h);
            seq then {
                step gate;
                wait_for second(timeout = 1h);
            }
        }
    }
}

/// Two waits in parallel: `first` looks at the empty inbox, then its signal comes, then
/// `second` looks and sees that signal (not its own). The run suspends having seen the
/// inbox only up to what `first` saw, so the store keeps it awake and `first` takes its
/// signal: the highest seq any wait saw would have put it to sleep until the deadline.
#[test]
fn a_signal_for_the_first_of_two_parallel_waits_delivered_between_their_looks_is_taken() {
    in_runtime(async {
        let store = Arc::new(LateSignal {
            inner: MemoryStore::new(),
            signal: "first",
            opens_gate: true,
            delivered: AtomicBool::new(false),
        });
        let engine = Engine::builder_shared(store.clone())
            .register(two_waits)
            .build()
            .await
            .unwrap();
        let run = engine.start(two_waits, Data::new()).await.unwrap();
        let limit = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let history = engine.history(run.id()).await.unwrap();
            let took = history
                .iter()
                .any(|r| r.step == "first" && matches!(r.event, StepEvent::Received { .. }));
            if took {
                break;
            }
            assert!(
                std::time::Instant::now() < limit,
                "wait `first` never took the signal delivered between the two looks: {history:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine
            .signal(two_waits, run.id(), "second", "on time")
            .await
            .unwrap();
        let output = tokio::time::timeout(Duration::from_secs(10), run.wait())
            .await
            .expect("the run ended once both signals came")
            .unwrap();
        assert_eq!(output.get::<String>("first").as_deref(), Some("late"));
        assert_eq!(output.get::<String>("second").as_deref(), Some("on time"));
        engine.shutdown().await.unwrap();
    });
}
