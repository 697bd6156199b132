//! `Engine::health` tells what went wrong in the worker: besides its heartbeat and claims, a
//! run it stopped driving, such as one whose writes the store refused after another worker
//! took its lease over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable::store::{
    Claim, JournalEntry, Rejected, RunFilter, RunRecord, Store, StoreError, Write,
};
use durable::{workflow, BoxFuture, Data, Engine, Error, RunId, StepContext, StepError};
use durable_tests::{count, in_runtime, note, postgres_url_or_skip, Backend, TestStore};

/// A store whose lease renewals never land, as for a worker frozen or cut off from the store
/// while its steps go on: everything else goes to `inner`.
struct RenewalsLost {
    inner: Arc<dyn Store>,
}

impl Store for RenewalsLost {
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
        _owner: &'a str,
        _lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(std::future::ready(Ok(0)))
    }
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.inner.list_runs(filter)
    }
}

/// The runs whose first call of `hold` the test let finish.
static RELEASED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Its first call in a run holds until the test releases it; later calls (another worker's)
/// finish at once.
async fn hold(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "hold");
    if count(ctx.run_id(), "hold") == 1 {
        while !RELEASED
            .lock()
            .unwrap()
            .iter()
            .any(|r| r == ctx.run_id().as_str())
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(data.assign("held", true))
}

workflow! { held { step hold; } }

/// Polls `done` every 5 ms for at most 10 s, failing with `what` it waited for.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two workers on one store (SQLite has one engine per file: no second worker).
mod a_worker_whose_writes_are_refused_after_it_lost_its_lease_reports_it {
    use super::*;

    #[test]
    fn memory() {
        body(TestStore::new(Backend::Memory));
    }

    #[test]
    fn postgres() {
        let test = concat!(module_path!(), "::postgres");
        if postgres_url_or_skip(test).is_some() {
            body(TestStore::new(Backend::Postgres));
        }
    }

    fn body(store: TestStore) {
        in_runtime(async {
            let lease = Duration::from_millis(150);
            // One run at a time, so `frozen` does not claim its own run back.
            let frozen = Engine::builder_shared(Arc::new(RenewalsLost {
                inner: store.open(),
            }))
            .register(held)
            .lease_duration(lease)
            .max_runs(1)
            .build()
            .await
            .unwrap();
            let run = frozen.start(held, Data::new()).await.unwrap();
            let id = run.id().clone();
            until("`hold` to start", || count(&id, "hold") == 1).await;
            assert!(frozen.health().last_error.is_none());
            // Its lease runs out; another worker takes the run over and finishes it.
            let other = Engine::builder_shared(store.open())
                .register(held)
                .lease_duration(lease)
                .build()
                .await
                .unwrap();
            let out: Data = tokio::time::timeout(Duration::from_secs(30), other.wait(&id))
                .await
                .expect("the other worker finished the run within 30 s")
                .unwrap();
            assert_eq!(out.get::<bool>("held"), Some(true));
            // The frozen worker's step ends now; its write is refused, and it says so.
            RELEASED.lock().unwrap().push(id.to_string());
            until("the frozen worker to report an error", || {
                frozen.health().errors > 0
            })
            .await;
            let health = frozen.health();
            let last = health.last_error.expect("an error");
            assert_eq!(
                (last.during, last.run.as_ref()),
                ("driving a run", Some(&id))
            );
            assert!(matches!(last.error, Error::LeaseLost { .. }), "{last}");
            assert_eq!(
                last.to_string(),
                format!("driving a run (run {id}): workflow `held` run {id}: another worker claimed the run, so this engine stopped driving it")
            );
            assert_eq!(health.errors, 1);
            assert_eq!(count(&id, "hold"), 2, "the step ran on each worker once");
            frozen.shutdown().await.unwrap();
            other.shutdown().await.unwrap();
        });
    }
}
