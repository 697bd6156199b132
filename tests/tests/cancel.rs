//! Steering runs: `cancel` (from the engine's process or from a Client, mid-step and
//! mid-sleep, and while no engine drives the run) and `resume_failed`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use durable::store::sqlite::SqliteStore;
use durable::{
    workflow, Client, Data, Engine, Error, RunId, RunStatus, StepContext, StepError, StepEvent,
};
use durable_tests::{
    count, each_store, each_store_and_postgres, events, in_paused_runtime, in_runtime, note,
    now_ms, wait_for_handle, Backend, TestStore,
};

/// Notes "dropped" when the future holding it is dropped.
struct Noted(StepContext);

impl Drop for Noted {
    fn drop(&mut self) {
        note(&self.0, "dropped");
    }
}

async fn hang(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let _guard = Noted(ctx.clone());
    note(&ctx, "hanging");
    std::future::pending::<()>().await;
    Ok(data)
}

async fn next(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "next");
    Ok(data.assign("next", true))
}

async fn first(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "first");
    Ok(data.assign("first", true))
}

workflow! { stuck { step first; step hang; step next; } }
workflow! { sleepy { step first; sleep nap(for = 1h); step next; } }

/// Waits (for real, at most 10 s) until `run` noted `what`.
async fn noted(run: &RunId, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(run, what) == 0 {
        assert!(Instant::now() < deadline, "{what} never happened in {run}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A Client on the test's store, as another process would open it.
fn client_of(store: &TestStore, shared: &std::sync::Arc<dyn durable::Store>) -> Client {
    match store.backend() {
        Backend::Memory => Client::new(shared.clone()),
        // A store of its own: other connections, as another process has.
        Backend::Postgres => Client::new(store.open()),
        Backend::Sqlite => Client::open(SqliteStore::open_client(store.db_path()).unwrap()),
    }
}

fn assert_cancelled(result: Result<Data, Error>, id: &RunId, reason: &str) {
    match result {
        Err(Error::RunCancelled {
            workflow,
            run_id,
            reason: why,
        }) => {
            assert_eq!((run_id, why.as_str()), (id.clone(), reason));
            assert!(["stuck", "sleepy"].contains(&workflow.as_str()));
        }
        other => panic!("not cancelled: {other:?}"),
    }
}

each_store! {
    fn cancel_mid_step_drops_the_step_starts_nothing_more_and_refuses_a_second_time(store) {
        in_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(stuck).build().await.unwrap();
            let run = engine.start(stuck, Data::new()).await.unwrap();
            let id = run.id().clone();
            noted(&id, "hanging").await;
            engine.cancel(&id, "the customer withdrew").await.unwrap();
            assert_cancelled(wait_for_handle(&engine, &run).await, &id, "the customer withdrew");
            // The step's future was dropped, and nothing after it started.
            assert_eq!(events(&id), ["first", "hanging", "dropped"]);
            let record = shared.load_run(&id).await.unwrap().unwrap();
            assert_eq!(
                (record.status, record.error.as_deref()),
                (RunStatus::Cancelled, Some("the customer withdrew"))
            );
            let journal = shared.load_journal(&id).await.unwrap();
            assert!(journal.iter().all(|e| e.step == "first"), "{journal:?}");
            // Cancelling it again is a clear error, and changes nothing.
            let err = engine.cancel(&id, "again").await.unwrap_err();
            assert!(matches!(err, Error::RunNotInState { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("workflow `stuck`") && text.contains(id.as_str())
                    && text.contains("finished (cancelled)"),
                "{text}"
            );
            assert!(matches!(
                engine.cancel(&"nobody".into(), "why").await,
                Err(Error::RunNotFound { .. })
            ));
            let record = shared.load_run(&id).await.unwrap().unwrap();
            assert_eq!(record.error.as_deref(), Some("the customer withdrew"));
            engine.shutdown().await.unwrap();
        });
    }

    fn cancel_from_a_client_mid_step_is_noticed_by_the_engine(store) {
        in_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(stuck).build().await.unwrap();
            let run = engine.start(stuck, Data::new()).await.unwrap();
            let id = run.id().clone();
            noted(&id, "hanging").await;
            let client = client_of(&store, &shared);
            let asked = Instant::now();
            client.cancel(&id, "from the CLI").await.unwrap();
            assert_cancelled(wait_for_handle(&engine, &run).await, &id, "from the CLI");
            // Through the watch, not a heartbeat (the default lease is 30 s).
            assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
            assert_eq!(events(&id), ["first", "hanging", "dropped"]);
            let err = client.cancel(&id, "again").await.unwrap_err();
            assert!(matches!(err, Error::RunNotInState { .. }), "{err:?}");
            engine.shutdown().await.unwrap();
        });
    }

    fn cancel_mid_sleep_ends_the_run_at_once_and_it_never_resumes(store) {
        in_paused_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(sleepy).build().await.unwrap();
            let run = engine.start(sleepy, Data::new()).await.unwrap();
            let id = run.id().clone();
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(engine.status(&id).await.unwrap().status, RunStatus::Suspended);
            let asked = now_ms();
            engine.cancel(&id, "no reminder needed").await.unwrap();
            assert_cancelled(wait_for_handle(&engine, &run).await, &id, "no reminder needed");
            assert!(now_ms() - asked < 60_000, "cancelled {} ms later", now_ms() - asked);
            // Past the wake time, nothing resumes it.
            tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
            assert_eq!(events(&id), ["first"]);
            let record = shared.load_run(&id).await.unwrap().unwrap();
            assert_eq!(record.status, RunStatus::Cancelled);
            engine.shutdown().await.unwrap();
        });
    }

    fn cancel_from_a_client_mid_sleep_wakes_and_ends_the_run(store) {
        in_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(sleepy).build().await.unwrap();
            let run = engine.start(sleepy, Data::new()).await.unwrap();
            let id = run.id().clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while engine.status(&id).await.unwrap().status != RunStatus::Suspended {
                assert!(Instant::now() < deadline, "never suspended");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let client = client_of(&store, &shared);
            let asked = Instant::now();
            client.cancel(&id, "unsubscribed").await.unwrap();
            assert_cancelled(wait_for_handle(&engine, &run).await, &id, "unsubscribed");
            assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
            assert_eq!(events(&id), ["first"]);
            engine.shutdown().await.unwrap();
        });
    }
}

/// Runs whose bug is fixed.
static FIXED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn fixed(run: &RunId) -> bool {
    FIXED
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|f| f.contains(run.as_str()))
}

/// Fails until fixed; once fixed, fails its first attempt and succeeds on its second, which
/// only a fresh attempt budget of two allows.
async fn flaky(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("flaky {}", ctx.attempt()));
    if fixed(ctx.run_id()) && ctx.attempt() == 2 {
        return Ok(data.assign("flaky", true));
    }
    Err(StepError::retryable("the bug"))
}

workflow! {
    buggy {
        step first;
        step flaky(retry(max_attempts = 2, initial = 10ms));
        step next;
    }
}

each_store_and_postgres! {
    fn resume_failed_goes_on_from_the_failed_step_with_a_fresh_budget(store) {
        in_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(buggy).build().await.unwrap();
            let run = engine.start(buggy, Data::new()).await.unwrap();
            let id = run.id().clone();
            assert!(matches!(wait_for_handle(&engine, &run).await, Err(Error::RunFailed { .. })));
            assert_eq!(events(&id), ["first", "flaky 1", "flaky 2"]);
            FIXED.lock().unwrap().get_or_insert_with(HashSet::new).insert(id.to_string());
            engine.resume_failed(&id).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(
                (out.get::<bool>("first"), out.get::<bool>("flaky"), out.get::<bool>("next")),
                (Some(true), Some(true), Some(true))
            );
            // `first` is kept, not run again; `flaky` had two fresh attempts.
            assert_eq!(events(&id), ["first", "flaky 1", "flaky 2", "flaky 1", "flaky 2", "next"]);
            let history = engine.history(&id).await.unwrap();
            let resumed: Vec<_> = history
                .iter()
                .filter(|r| matches!(r.event, StepEvent::Resumed { attempts: 2 }))
                .map(|r| r.step.as_str())
                .collect();
            assert_eq!(resumed, ["flaky"]);
            assert_eq!(engine.status(&id).await.unwrap().status, RunStatus::Completed);
            // Only a failed run resumes.
            let err = engine.resume_failed(&id).await.unwrap_err();
            assert!(matches!(err, Error::RunNotInState { .. }), "{err:?}");
            assert!(err.to_string().contains("it is completed, not failed"), "{err}");
            assert!(matches!(
                engine.resume_failed(&"nobody".into()).await,
                Err(Error::RunNotFound { .. })
            ));
            engine.shutdown().await.unwrap();
        });
    }
}

workflow! { awaits { step first; wait_for go; } }

/// A store that steers how cancellations reach a worker.
struct Steered {
    inner: std::sync::Arc<dyn durable::Store>,
    /// A cancellation is requested just before a run's suspension commits: the race of a
    /// `cancel` with a run about to sleep, after its worker last looked for requests.
    cancel_as_it_suspends: bool,
    /// The worker's periodic look-up of cancel requests finds none, so a request made while
    /// no engine drove the run reaches the worker through the claim alone.
    no_cancel_lookups: bool,
}

impl Steered {
    fn cancelling_as_it_suspends(inner: std::sync::Arc<dyn durable::Store>) -> Self {
        Self {
            inner,
            cancel_as_it_suspends: true,
            no_cancel_lookups: false,
        }
    }

    fn without_cancel_lookups(inner: std::sync::Arc<dyn durable::Store>) -> Self {
        Self {
            inner,
            cancel_as_it_suspends: false,
            no_cancel_lookups: true,
        }
    }
}

impl durable::Store for Steered {
    fn commit<'a>(
        &'a self,
        batch: &'a [durable::store::Write],
    ) -> durable::BoxFuture<
        'a,
        Result<Vec<Result<(), durable::store::Rejected>>, durable::store::StoreError>,
    > {
        use durable::store::{Finish, Write};
        Box::pin(async move {
            for write in batch.iter().filter(|_| self.cancel_as_it_suspends) {
                if let Write::Append {
                    run,
                    finish: Some(Finish::Suspended { .. }),
                    ..
                } = write
                {
                    let asked = self
                        .inner
                        .request_cancel(run, "asked as it fell asleep")
                        .await;
                    assert_eq!(asked.unwrap(), Ok(()));
                }
            }
            self.inner.commit(batch).await
        })
    }
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> durable::BoxFuture<'a, Result<Option<durable::store::RunRecord>, durable::store::StoreError>>
    {
        self.inner.load_run(id)
    }
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> durable::BoxFuture<'a, Result<Vec<durable::store::JournalEntry>, durable::store::StoreError>>
    {
        self.inner.load_journal(id)
    }
    fn claim_runs<'a>(
        &'a self,
        claim: durable::store::Claim<'a>,
    ) -> durable::BoxFuture<'a, Result<Vec<durable::store::RunRecord>, durable::store::StoreError>>
    {
        self.inner.claim_runs(claim)
    }
    fn watch_claimable(
        &self,
    ) -> Result<Option<Box<dyn durable::store::ClaimableWatch>>, durable::store::StoreError> {
        self.inner.watch_claimable()
    }
    fn next_wake_at(
        &self,
    ) -> durable::BoxFuture<'_, Result<Option<u64>, durable::store::StoreError>> {
        self.inner.next_wake_at()
    }
    fn wake<'a>(
        &'a self,
        run: &'a RunId,
    ) -> durable::BoxFuture<'a, Result<bool, durable::store::StoreError>> {
        self.inner.wake(run)
    }
    fn request_cancel<'a>(
        &'a self,
        run: &'a RunId,
        reason: &'a str,
    ) -> durable::BoxFuture<
        'a,
        Result<Result<(), durable::store::Rejected>, durable::store::StoreError>,
    > {
        self.inner.request_cancel(run, reason)
    }
    fn cancel_requests<'a>(
        &'a self,
        owner: &'a str,
    ) -> durable::BoxFuture<'a, Result<Vec<(RunId, String)>, durable::store::StoreError>> {
        if self.no_cancel_lookups {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        self.inner.cancel_requests(owner)
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> durable::BoxFuture<'a, Result<usize, durable::store::StoreError>> {
        self.inner.renew_leases(owner, lease)
    }
    fn release_leases<'a>(
        &'a self,
        owner: &'a str,
    ) -> durable::BoxFuture<'a, Result<(), durable::store::StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(
        &self,
        filter: durable::store::RunFilter,
    ) -> durable::BoxFuture<'_, Result<Vec<durable::store::RunRecord>, durable::store::StoreError>>
    {
        self.inner.list_runs(filter)
    }
    fn attach(&self) -> Result<(), durable::store::StoreError> {
        self.inner.attach()
    }
    fn detach(&self) {
        self.inner.detach()
    }
    fn close(&self) {
        self.inner.close()
    }
    fn deliver<'a>(
        &'a self,
        run: &'a RunId,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
    ) -> durable::BoxFuture<
        'a,
        Result<Result<u64, durable::store::Rejected>, durable::store::StoreError>,
    > {
        self.inner.deliver(run, kind, name, payload)
    }
    fn load_inbox<'a>(
        &'a self,
        run: &'a RunId,
    ) -> durable::BoxFuture<'a, Result<Vec<durable::store::InboxMessage>, durable::store::StoreError>>
    {
        self.inner.load_inbox(run)
    }
}

each_store_and_postgres! {
    fn a_cancel_requested_as_the_run_falls_asleep_is_carried_out(store) {
        in_runtime(async move {
            let shared: std::sync::Arc<dyn durable::Store> =
                std::sync::Arc::new(Steered::cancelling_as_it_suspends(store.open()));
            let engine = Engine::builder_shared(shared.clone())
                .register(awaits)
                .build()
                .await
                .unwrap();
            let run = engine.start(awaits, Data::new()).await.unwrap();
            let id = run.id().clone();
            let ended = tokio::time::timeout(Duration::from_secs(10), run.wait())
                .await
                .unwrap_or_else(|_| panic!("run {id} still waits for `go`, its cancel pending"));
            match ended {
                Err(Error::RunCancelled { reason, .. }) => {
                    assert_eq!(reason, "asked as it fell asleep")
                }
                other => panic!("not cancelled: {other:?}"),
            }
            let record = shared.load_run(&id).await.unwrap().unwrap();
            assert_eq!(record.status, RunStatus::Cancelled);
        });
    }
}

/// Waits (at most 10 s) for `id` to end, driven by `engine`; it must end cancelled for
/// `reason`.
async fn ends_cancelled(engine: &Engine, id: &RunId, reason: &str) {
    let ended = tokio::time::timeout(Duration::from_secs(10), engine.wait::<Data>(id))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "run {id} did not end within 10 s of the engine's start, its cancel pending; its \
                 steps did {:?}",
                events(id)
            )
        });
    assert_cancelled(ended, id, reason);
}

each_store_and_postgres! {
    fn a_cancel_requested_while_no_engine_drives_the_run_is_carried_out_by_the_claim(store) {
        in_runtime(async move {
            // A run stopped mid-step by a shutdown: unfinished, nobody's.
            let first_engine = Engine::builder_shared(store.open()).register(stuck).build().await.unwrap();
            let id = first_engine.start(stuck, Data::new()).await.unwrap().id().clone();
            noted(&id, "hanging").await;
            first_engine.shutdown().await.unwrap();
            // The aborted attempt is dropped by its task, maybe after `shutdown` returned.
            noted(&id, "dropped").await;
            assert_eq!(events(&id), ["first", "hanging", "dropped"]);
            let shared = store.open();
            Client::new(shared.clone()).cancel(&id, "asked while nobody drove it").await.unwrap();
            // Only the claim can carry the request out: the worker's look-ups find none.
            let steered: std::sync::Arc<dyn durable::Store> =
                std::sync::Arc::new(Steered::without_cancel_lookups(shared.clone()));
            let engine = Engine::builder_shared(steered).register(stuck).build().await.unwrap();
            ends_cancelled(&engine, &id, "asked while nobody drove it").await;
            // The step in flight at the shutdown did not run again, nor anything after it.
            assert_eq!(events(&id), ["first", "hanging", "dropped"]);
            let journal = shared.load_journal(&id).await.unwrap();
            assert!(journal.iter().all(|e| e.step == "first"), "{journal:?}");
            let record = shared.load_run(&id).await.unwrap().unwrap();
            assert_eq!(
                (record.status, record.error.as_deref()),
                (RunStatus::Cancelled, Some("asked while nobody drove it"))
            );
            engine.shutdown().await.unwrap();
        });
    }

    fn a_cancel_requested_while_a_run_sleeps_with_no_engine_is_carried_out_by_the_claim(store) {
        in_runtime(async move {
            let first_engine = Engine::builder_shared(store.open()).register(sleepy).build().await.unwrap();
            let id = first_engine.start(sleepy, Data::new()).await.unwrap().id().clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while first_engine.status(&id).await.unwrap().status != RunStatus::Suspended {
                assert!(Instant::now() < deadline, "run {id} never fell asleep");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            first_engine.shutdown().await.unwrap();
            let shared = store.open();
            // The request wakes it: running, nobody's, for the next claim.
            Client::new(shared.clone()).cancel(&id, "no longer wanted").await.unwrap();
            let steered: std::sync::Arc<dyn durable::Store> =
                std::sync::Arc::new(Steered::without_cancel_lookups(shared.clone()));
            let engine = Engine::builder_shared(steered).register(sleepy).build().await.unwrap();
            ends_cancelled(&engine, &id, "no longer wanted").await;
            assert_eq!(events(&id), ["first"]);
            let record = shared.load_run(&id).await.unwrap().unwrap();
            assert_eq!(record.status, RunStatus::Cancelled);
            engine.shutdown().await.unwrap();
        });
    }
}
