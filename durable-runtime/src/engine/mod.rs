//! The public entry point: an [`Engine`] registers workflows, starts runs, waits for them,
//! reads their state, and resumes every unfinished run when it starts.
//!
//! Split the way tokio splits its runtime: [`builder`](EngineBuilder) configures and builds
//! it; the worker (`worker.rs`) claims runs, renews their leases, resumes and drives them,
//! and reports its errors ([`Engine::health`]); a [`Client`] starts runs and reads them
//! without driving anything, so it can live in another process (on SQLite, see
//! [`SqliteStore::open_client`](crate::store::sqlite::SqliteStore::open_client)). The engine
//! reads through a client of its own ([`Engine::client`]).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

use crate::clock::now_millis;
use crate::data::State;
use crate::definition::{Definition, Workflow};
use crate::error::{Error, RunFailure};
use crate::store::{NewRun, Rejected, RunFilter, RunRecord, RunStatus, Store, StoreError, Write};
use crate::walk::Walked;
use crate::writer::{CommitError, Writer};
use crate::RunId;

mod builder;
mod client;
mod control;
mod records;
mod signals;
mod worker;

pub use builder::EngineBuilder;
pub use client::{Client, ClientRun};
pub use records::{RunHandle, RunInfo, RunPage, StepEvent, StepRecord};
pub use worker::{Health, WorkerError};

/// How long a worker's claim on a run lasts without a heartbeat.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How long the journal retries a failing store before it fails the writes.
const DEFAULT_COMMIT_RETRY: Duration = Duration::from_secs(30);

/// Runs workflows durably over a [`Store`].
///
/// Build one with [`Engine::builder`], registering every workflow whose runs it should drive;
/// [`build`](EngineBuilder::build) resumes every unfinished run of those workflows. Stop it
/// with [`shutdown_gracefully`](Engine::shutdown_gracefully); dropping its last handle stops
/// its runs too (they resume on the next start) and lets go of the store.
///
/// ```
/// use durable::{workflow, Data, Engine, StepError};
/// use durable::store::memory::MemoryStore;
///
/// async fn double(data: Data) -> Result<Data, StepError> {
///     let n: i64 = data.get("n").unwrap_or(0);
///     Ok(data.assign("n", n * 2))
/// }
///
/// workflow! { doubler { step double; } }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
/// let engine = Engine::builder(MemoryStore::new()).register(doubler).build().await?;
/// let run = engine.start(doubler, Data::new().assign("n", 21)).await?;
/// let output = run.wait().await?;
/// assert_eq!(output.get::<i64>("n"), Some(42));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    /// Reads runs: the part of the engine that drives nothing.
    client: Client,
    journal: Writer,
    /// The current definition of each workflow: new runs start on it.
    workflows: HashMap<&'static str, Arc<Definition>>,
    /// Every registered definition, current and older, by workflow and fingerprint: a run
    /// resumes on the definition it started under.
    versions: HashMap<(&'static str, String), Arc<Definition>>,
    owner: String,
    lease: Duration,
    /// Until when this engine surely holds each run it drives (see `lease.rs`).
    leases: Arc<crate::lease::Leases>,
    /// Runs this engine drives now, with the channel their outcome arrives on. Shared with
    /// the run tasks, which never hold the engine itself (so dropping it lets go of the store).
    active: Arc<Mutex<HashMap<RunId, Active>>>,
    /// Runs this engine claimed but cannot drive, and runs it stopped driving, with why.
    stalled: Arc<Mutex<HashMap<RunId, Error>>>,
    /// Runs this engine resumed (claimed unfinished from the store), in order.
    resumed: Mutex<Vec<RunId>>,
    /// Set by [`Engine::shutdown`]: the heartbeat stops renewing and claiming, and no run
    /// starts.
    stopped: Arc<std::sync::atomic::AtomicBool>,
    /// This engine is attached to its store (see [`Store::attach`]) and must detach once.
    attached: std::sync::atomic::AtomicBool,
    /// Held by the heartbeat while it renews and claims, so a shutdown can wait for a beat in
    /// flight (which could claim runs again) before it gives up the leases.
    beat: tokio::sync::Mutex<()>,
    /// Notified when a run of this engine suspends until a time: the worker's timer looks
    /// again at the store's next wake time.
    timer: Arc<Notify>,
    /// Notified when this engine starts driving a run or stops: waiters on a run it does
    /// not drive (yet) look again at once instead of on their next poll.
    changed: Arc<Notify>,
    /// What went wrong in the worker last, and how often (see [`Engine::health`]). Shared with
    /// the run tasks, which report why they stopped driving a run.
    health: Arc<Mutex<Health>>,
    /// The most runs this engine drives at once (`usize::MAX`: no limit).
    max_runs: usize,
    /// One permit per run this engine may drive (`None`: no limit). A run driven holds one;
    /// taken atomically, so a claim and a local start cannot both spend the last one.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    /// How often the worker looks for runs to claim when nothing wakes it sooner.
    poll: Duration,
    /// Wakes the worker's claimer: a run finished while runs wait for capacity.
    wake: Arc<Notify>,
    /// Set when the last claim took as many runs as it could: more may be waiting.
    backlog: Arc<std::sync::atomic::AtomicBool>,
}

/// A permit to drive one run (see `Shared::slots`); `None` when capacity is unlimited.
type Slot = Option<tokio::sync::OwnedSemaphorePermit>;

impl Drop for Shared {
    /// The last handle on the engine is gone: stop driving its runs (they resume on the next
    /// start) and let go of the store, so another engine can drive it at once.
    fn drop(&mut self) {
        self.journal.close();
        for (_, run) in lock(&self.active).drain() {
            run.task.abort();
        }
        if self
            .attached
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.store.detach();
        }
    }
}

struct Active {
    workflow: &'static str,
    outcome: watch::Receiver<Option<Walked>>,
    task: AbortHandle,
    /// A reason sent here cancels the run (see `RunTask::run_cancellable`).
    cancel: watch::Sender<Option<String>>,
    /// Its lease, which the heartbeat's renewals extend.
    lease: Arc<crate::lease::RunLease>,
}

impl Engine {
    /// Starts a run of `workflow` with `input` under a fresh id. The run and its input are
    /// committed to the store before this returns.
    pub async fn start<W: Workflow>(
        &self,
        workflow: W,
        input: W::State,
    ) -> Result<RunHandle<W>, Error> {
        self.start_with_id(workflow, RunId::generate(), input).await
    }

    /// Starts a run under an id of the caller's choosing (an order number, say). A second
    /// start with the same id fails with [`Error::RunExists`], so retrying a start is safe.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// let run = engine.start_with_id(hello, "order-7", Data::new()).await?;
    /// assert_eq!(run.id().as_str(), "order-7");
    /// // Retrying the start is safe: the second one is refused, the run is not duplicated.
    /// let again = engine.start_with_id(hello, "order-7", Data::new()).await;
    /// assert!(matches!(again, Err(durable::Error::RunExists { .. })));
    /// # Ok(()) }
    /// ```
    pub async fn start_with_id<W: Workflow>(
        &self,
        workflow: W,
        id: impl Into<RunId>,
        input: W::State,
    ) -> Result<RunHandle<W>, Error> {
        let _ = workflow;
        let id = id.into();
        if self
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::EngineShutDown {
                workflow: W::NAME.to_owned(),
            });
        }
        id.check()?;
        let def =
            self.shared
                .workflows
                .get(W::NAME)
                .cloned()
                .ok_or_else(|| Error::NotRegistered {
                    workflow: W::NAME.to_owned(),
                })?;
        let input = input.into_json().map_err(|e| Error::BadState {
            workflow: W::NAME.to_owned(),
            run_id: id.clone(),
            step: None,
            message: format!("the input does not encode as JSON: {e}"),
        })?;
        let text = crate::encode::to_text(&input).map_err(|e| Error::BadState {
            workflow: W::NAME.to_owned(),
            run_id: id.clone(),
            step: None,
            message: format!("the input cannot be journaled: {e}"),
        })?;
        // At capacity (or a pure client, `max_runs(0)`): queue the run for whichever worker
        // is free.
        let slot = match &self.shared.slots {
            None => Ok(None),
            Some(slots) => Arc::clone(slots).try_acquire_owned().map(Some),
        };
        let drive = slot.is_ok();
        // Read before the lease's expiry is set: the store's expiry is no earlier than this
        // plus the lease (see `lease.rs`).
        let sent = self.shared.leases.now();
        let write = Write::CreateRun(NewRun {
            id: id.clone(),
            workflow: W::NAME.to_owned(),
            fingerprint: def.fingerprint().to_owned(),
            input: text,
            owner: if drive {
                self.shared.owner.clone()
            } else {
                String::new()
            },
            lease_expires_at: if drive {
                now_millis() + self.shared.lease.as_millis() as u64
            } else {
                0
            },
            parent: None,
        });
        match self.shared.journal.write(write).await {
            Ok(()) => {}
            Err(CommitError::Rejected(Rejected::DuplicateRun)) => {
                return Err(Error::RunExists { run_id: id })
            }
            Err(CommitError::Rejected(other)) => {
                return Err(Error::Store(
                    StoreError::other(format!("run {id}: the store refused it: {other}"))
                        .with_source(other),
                ))
            }
            Err(CommitError::Store(e)) => return Err(Error::Store(e)),
        }
        match slot {
            Ok(slot) => {
                let lease = self.shared.leases.run(id.clone(), 1, sent);
                self.shared
                    .spawn_run(def, id.clone(), lease, Vec::new(), input, None, slot)
            }
            Err(_) => {
                // Claim it here too as soon as a run of this engine finishes.
                self.shared
                    .backlog
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.shared.wake.notify_one();
            }
        }
        Ok(RunHandle {
            engine: self.clone(),
            id,
            workflow: PhantomData,
        })
    }

    /// Starts a run and waits for its output.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// let output = engine.run(hello, Data::new()).await?;
    /// assert_eq!(output.get::<bool>("hi"), Some(true));
    /// # Ok(()) }
    /// ```
    pub async fn run<W: Workflow>(&self, workflow: W, input: W::State) -> Result<W::State, Error> {
        self.start(workflow, input).await?.wait().await
    }

    /// A typed handle on an existing run of `workflow`, e.g. one this engine resumed.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// # let id = engine.start(hello, Data::new()).await?.id().clone();
    /// let run = engine.handle(hello, id);
    /// assert_eq!(run.wait().await?.get::<bool>("hi"), Some(true));
    /// # Ok(()) }
    /// ```
    pub fn handle<W: Workflow>(&self, workflow: W, id: impl Into<RunId>) -> RunHandle<W> {
        let _ = workflow;
        RunHandle {
            engine: self.clone(),
            id: id.into(),
            workflow: PhantomData,
        }
    }

    /// Waits for a run to finish and decodes its output as `S`.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// let id = engine.start(hello, Data::new()).await?.id().clone();
    /// // Later, maybe in another process on the same store:
    /// let output: Data = engine.wait(&id).await?;
    /// assert_eq!(output.get::<bool>("hi"), Some(true));
    /// # Ok(()) }
    /// ```
    pub async fn wait<S: State>(&self, id: &RunId) -> Result<S, Error> {
        let ended = self.wait_json(id).await;
        client::decode_output(id, ended)
    }

    /// Waits for a run to finish; returns its workflow's name and its output as JSON.
    ///
    /// A run this engine drives is awaited on its task's channel. Any other (driven by another
    /// worker, suspended, or claimed here in a moment) is looked up in the store when this
    /// engine starts or stops driving a run, and otherwise after 1 ms at first, less often
    /// the longer it waits (every 500 ms at most).
    async fn wait_json(&self, id: &RunId) -> Result<(String, Value), Error> {
        id.check()?;
        let mut poll = client::FIRST_POLL;
        loop {
            // Listen before looking, so a run that starts or stops being driven here between
            // the look and the sleep still wakes this waiter.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let local = lock(&self.shared.active)
                .get(id)
                .map(|a| (a.workflow, a.outcome.clone()));
            if let Some((workflow, mut rx)) = local {
                // A closed channel means the task was aborted (shutdown): fall through to the store.
                if let Ok(outcome) = rx.wait_for(Option::is_some).await {
                    let outcome = outcome.clone().expect("waited for Some");
                    match outcome {
                        // Another worker took the run over: learn its outcome from the store.
                        Walked::Ended(Err(Error::LeaseLost { .. })) => {}
                        Walked::Ended(outcome) => return outcome.map(|v| (workflow.to_owned(), v)),
                        // Waits for a time or an event: the store says when it is woken.
                        Walked::Suspended { .. } => {}
                    }
                }
            }
            let stalled = lock(&self.shared.stalled).get(id).cloned();
            match stalled {
                // The store knows better: another worker may have finished the run, or may
                // drive it now.
                Some(Error::LeaseLost { .. } | Error::Store(_)) | None => {}
                Some(error) => return Err(error),
            }
            let run = self.shared.client.load(id).await?;
            if let Some(ended) = client::ended(&run) {
                return ended;
            }
            match run.status {
                // Stopped here by a store outage: the heartbeat drives it again later.
                RunStatus::Running if matches!(stalled, Some(Error::Store(_))) => {
                    return Err(stalled.expect("matched"))
                }
                RunStatus::Running => {
                    // Not driven here, and this engine could not drive it: say why.
                    self.shared.check_resumable(&run)?;
                }
                // Suspended: woken later, by this engine or another.
                _ => {}
            }
            // Driven by another worker, or about to be driven here: wait for this engine's
            // next start or stop of a run, or the next poll.
            let _ = tokio::time::timeout(poll, changed).await;
            poll = (poll * 2).min(client::MAX_POLL);
        }
    }

    /// A run's status, input, output or failure.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// let run = engine.start(hello, Data::new()).await?;
    /// run.wait().await?;
    /// let info = engine.status(run.id()).await?;
    /// assert_eq!((info.workflow.as_str(), info.status), ("hello", durable::RunStatus::Completed));
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, id: &RunId) -> Result<RunInfo, Error> {
        let run = self.shared.client.load(id).await?;
        let stalled = self.shared.stalled_for(&run);
        Ok(RunInfo::from_record(run, stalled))
    }

    /// A run's journal: every finished step and every failed attempt, in order.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// let run = engine.start(hello, Data::new()).await?;
    /// run.wait().await?;
    /// let history = engine.history(run.id()).await?;
    /// assert_eq!((history[0].step.as_str(), history[0].attempt), ("greet", 1));
    /// assert!(matches!(history[0].event, durable::StepEvent::Completed { .. }));
    /// # Ok(()) }
    /// ```
    pub async fn history(&self, id: &RunId) -> Result<Vec<StepRecord>, Error> {
        self.shared
            .client
            .history_with(id, &self.shared.versions)
            .await
    }

    /// Runs in the store, newest first.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// engine.run(hello, Data::new()).await?;
    /// let done = durable::RunFilter { status: Some(durable::RunStatus::Completed), ..Default::default() };
    /// assert_eq!(engine.list(done).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, filter: RunFilter) -> Result<Vec<RunInfo>, Error> {
        let runs = self.shared.store.list_runs(filter).await?;
        Ok(self.run_infos(runs))
    }

    /// One page of runs, newest first: at most `filter.limit` of them (all when `None`),
    /// after `filter.after`, with the cursor of the next page if there are more. The store
    /// reads only the page (and one run more, to know whether another page follows).
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, RunFilter, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// for _ in 0..5 {
    ///     engine.run(hello, Data::new()).await?;
    /// }
    /// let mut filter = RunFilter { limit: Some(2), ..Default::default() };
    /// let mut seen = Vec::new();
    /// loop {
    ///     let page = engine.list_page(filter.clone()).await?;
    ///     seen.extend(page.runs.into_iter().map(|run| run.id));
    ///     match page.next {
    ///         Some(next) => filter.after = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(seen.len(), 5);
    /// # Ok(()) }
    /// ```
    pub async fn list_page(&self, filter: RunFilter) -> Result<RunPage, Error> {
        let (runs, next) = self.shared.client.page(filter).await?;
        Ok(RunPage {
            runs: self.run_infos(runs),
            next,
        })
    }

    fn run_infos(&self, runs: Vec<RunRecord>) -> Vec<RunInfo> {
        runs.into_iter()
            .map(|r| {
                let s = self.shared.stalled_for(&r);
                RunInfo::from_record(r, s)
            })
            .collect()
    }

    /// The runs this engine resumed: those unfinished when it was built, those it took
    /// over since from workers whose leases expired, and those [`Client`]s started.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// // A fresh store has nothing to resume.
    /// assert!(engine.resumed().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn resumed(&self) -> Vec<RunId> {
        lock(&self.shared.resumed).clone()
    }

    /// A [`Client`] of this engine's store: it starts runs for this engine (or another
    /// worker) to claim and reads them, and can be handed to code that must not drive runs.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// let client = engine.client();
    /// let id = client.start(hello, Data::new()).await?;
    /// // The engine claims the client's run and drives it.
    /// let output: Data = engine.wait(&id).await?;
    /// assert_eq!(output.get::<bool>("hi"), Some(true));
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// How the worker fares: the last error of its heartbeat, its claims (renewing leases,
    /// claiming runs, resuming them) or the runs it drives (a run it stopped driving, such as
    /// one whose writes the store refused after another worker took its lease over), when it
    /// happened, and how many there were. Each is also logged with `tracing::warn!`.
    ///
    /// ```
    /// # use durable::store::memory::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let engine = durable::Engine::builder(MemoryStore::new()).build().await?;
    /// let health = engine.health();
    /// assert!(health.last_error.is_none());
    /// assert_eq!(health.errors, 0);
    /// # Ok(()) }
    /// ```
    pub fn health(&self) -> Health {
        lock(&self.shared.health).clone()
    }

    /// The registered definition of a workflow.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// assert_eq!(engine.definition("hello").unwrap().step_names(), ["greet"]);
    /// # Ok(()) }
    /// ```
    pub fn definition(&self, workflow: &str) -> Option<&Definition> {
        self.shared.workflows.get(workflow).map(|d| &**d)
    }

    /// Stops at once: [`shutdown_gracefully`](Self::shutdown_gracefully) with no time for the
    /// attempts in flight, which are cancelled. Their runs stay unfinished in the store and
    /// resume on the next start (another worker on a shared store takes them at once).
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// engine.shutdown().await?;
    /// assert!(matches!(
    ///     engine.start(hello, Data::new()).await,
    ///     Err(durable::Error::EngineShutDown { .. })
    /// ));
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shutdown_gracefully(Duration::ZERO).await
    }

    /// Shuts the engine down, giving the attempts in flight up to `grace` to finish:
    ///
    /// - at once, it stops claiming and resuming runs, and [`start`](Self::start) fails with
    ///   [`Error::EngineShutDown`];
    /// - each step attempt already running may finish and is journaled; no run starts another
    ///   attempt or step;
    /// - after `grace`, the attempts still running are cancelled (they run again, from their
    ///   journals, on the next start);
    /// - it gives up the engine's leases, so another worker on a shared store takes the
    ///   unfinished runs at once, and closes the store ([`Store::close`]): an SQLite file can
    ///   be opened again as soon as this returns. Waiting on an unfinished run of this engine
    ///   then reports [`Error::ShutDown`].
    ///
    /// Calling it again does nothing more.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::sqlite::SqliteStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("durable-doc-graceful-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("runs.db");
    /// let engine = Engine::builder(SqliteStore::open(&path)?).register(hello).build().await?;
    /// engine.start(hello, Data::new()).await?;
    /// engine.shutdown_gracefully(Duration::from_secs(10)).await?;
    /// // The file is free again.
    /// let store = SqliteStore::open(&path)?;
    /// # drop(store); std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown_gracefully(&self, grace: Duration) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + grace;
        // First stop the heartbeat, or it would claim the released runs straight back.
        let first = !self.shared.stopped.swap(true, Ordering::SeqCst);
        self.shared.journal.close();
        if !first {
            return Ok(());
        }
        // A beat in flight may be claiming runs: let it finish; later beats see `stopped`.
        drop(self.shared.beat.lock().await);
        let waiting: Vec<_> = lock(&self.shared.active)
            .values()
            .map(|run| run.outcome.clone())
            .collect();
        for mut outcome in waiting {
            // A closed channel means the task is gone already.
            if tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some))
                .await
                .is_err()
            {
                break;
            }
        }
        let active: Vec<(RunId, Active)> = lock(&self.shared.active).drain().collect();
        for (id, run) in active {
            run.task.abort();
            lock(&self.shared.stalled).insert(id.clone(), Error::ShutDown { run_id: id });
        }
        let released = self.shared.store.release_leases(&self.shared.owner).await;
        if self.shared.attached.swap(false, Ordering::SeqCst) {
            self.shared.store.detach();
        }
        self.shared.store.close();
        released.map_err(Error::from)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_failure(text: Option<&str>) -> RunFailure {
    let text = text.unwrap_or("");
    serde_json::from_str(text).unwrap_or_else(|_| RunFailure {
        steps: Vec::new(),
        message: text.to_owned(),
    })
}
