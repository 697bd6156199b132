//! The public entry point: register workflows, start runs, wait for them, read their state,
//! and resume every unfinished run when the engine starts.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::clock::now_millis;
use crate::data::State;
use crate::definition::{Definition, Workflow};
use crate::error::{Error, RunFailure};
use crate::executor::{Outcome, RunTask};
use crate::journal::{CommitError, Journal};
use crate::panic::CatchUnwind;
use crate::store::{
    Claim, JournalEntry, NewRun, Rejected, RunFilter, RunRecord, RunStatus, Store, StoreError,
    Write,
};
use crate::RunId;

mod records;

pub use records::{RunHandle, RunInfo, StepEvent, StepRecord};

/// How long a worker's claim on a run lasts without a heartbeat.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How long the journal retries a failing store before it fails the writes.
const DEFAULT_COMMIT_RETRY: Duration = Duration::from_secs(30);
/// How often a waiter polls the store for a run another worker drives.
const POLL: Duration = Duration::from_millis(50);

/// Runs workflows durably over a [`Store`].
///
/// Build one with [`Engine::builder`], registering every workflow whose runs it should drive;
/// [`build`](EngineBuilder::build) resumes every unfinished run of those workflows.
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
    journal: Journal,
    /// The current definition of each workflow: new runs start on it.
    workflows: HashMap<&'static str, Arc<Definition>>,
    /// Every registered definition, current and older, by workflow and fingerprint: a run
    /// resumes on the definition it started under.
    versions: HashMap<(&'static str, String), Arc<Definition>>,
    owner: String,
    lease: Duration,
    /// Runs this engine drives now, with the channel their outcome arrives on.
    active: Mutex<HashMap<RunId, Active>>,
    /// Runs this engine claimed but cannot drive, and runs it stopped driving, with why.
    stalled: Mutex<HashMap<RunId, Error>>,
    /// Runs this engine resumed (claimed unfinished from the store), in order.
    resumed: Mutex<Vec<RunId>>,
    /// Set by [`Engine::shutdown`]: the heartbeat stops renewing and claiming.
    stopped: std::sync::atomic::AtomicBool,
    /// The most runs this engine drives at once.
    max_runs: usize,
    /// One permit per run this engine may drive (`None`: no limit). A run driven holds one;
    /// taken atomically, so a claim and a local start cannot both spend the last one.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    /// How often the engine looks for runs to claim when nothing wakes it.
    poll: Duration,
    /// Wakes the claimer (a run finished while the last claim filled the capacity).
    wake: Arc<tokio::sync::Notify>,
    /// Set when the last claim took as many runs as it could: more may be waiting.
    backlog: std::sync::atomic::AtomicBool,
}

struct Active {
    workflow: &'static str,
    outcome: watch::Receiver<Option<Outcome>>,
    task: AbortHandle,
}

/// Configures and builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    workflows: Vec<Definition>,
    older: Vec<Definition>,
    lease: Duration,
    commit_retry: Duration,
    max_runs: usize,
    poll: Option<Duration>,
}

impl EngineBuilder {
    /// Registers a workflow, so runs of it can start and unfinished ones resume.
    pub fn register<W: Workflow>(mut self, workflow: W) -> Self {
        self.workflows.push(workflow.definition());
        self
    }

    /// Registers a definition built by hand.
    pub fn register_definition(mut self, definition: Definition) -> Self {
        self.workflows.push(definition);
        self
    }

    /// Keeps an older definition of a registered workflow, so that runs started under it
    /// finish on it while new runs start on the current one (see the README's versioning
    /// rule). Usually the old `workflow!` kept in a module of its own:
    ///
    /// ```
    /// # use durable::{Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn a(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # async fn b(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// mod v1 {
    ///     use super::*;
    ///     durable::workflow! { pub signup { step a; } }
    /// }
    /// mod v2 {
    ///     use super::*;
    ///     durable::workflow! { pub signup { step a; step b; } }
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let engine = Engine::builder(MemoryStore::new())
    ///     .register(v2::signup)
    ///     .register_version(v1::signup)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn register_version<W: Workflow>(mut self, workflow: W) -> Self {
        self.older.push(workflow.definition());
        self
    }

    /// How long this engine's claim on a run lasts without a heartbeat (default 30s). Only
    /// stores shared by several processes use it: a dead worker's runs are taken over when
    /// its leases expire.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// // Two workers on one store: either takes over the other's runs 10s after it dies.
    /// for _ in 0..2 {
    ///     Engine::builder_shared(store.clone())
    ///         .register(hello)
    ///         .lease_duration(std::time::Duration::from_secs(10))
    ///         .build()
    ///         .await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long the journal retries a failing store (a disk hiccup, a locked file) before it
    /// gives up on the writes (default 30s). Runs whose writes failed stop with
    /// [`Error::Store`]; the engine drives them again from their last committed step on a
    /// heartbeat (every third of the lease) once the store answers again.
    ///
    /// ```
    /// # use durable::store::memory::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let engine = durable::Engine::builder(MemoryStore::new())
    ///     .commit_retry(std::time::Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn commit_retry(mut self, retry_for: Duration) -> Self {
        self.commit_retry = retry_for;
        self
    }

    /// The most runs this engine drives at once (default: no limit). A worker claims
    /// unfinished runs only up to this capacity, so one worker of many cannot hoard the queue;
    /// a run started while the engine is full is queued in the store for whichever worker is
    /// free (this one too, once a run finishes). `max_runs(0)` makes a pure client: it starts
    /// runs, waits for them and reads them, and other workers drive them.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let store = std::sync::Arc::new(MemoryStore::new());
    /// let client = Engine::builder_shared(store.clone()).register(hello).max_runs(0).build().await?;
    /// let worker = Engine::builder_shared(store.clone())
    ///     .register(hello)
    ///     .max_runs(16)
    ///     .poll_interval(std::time::Duration::from_millis(20))
    ///     .build()
    ///     .await?;
    /// let run = client.start(hello, Data::new()).await?; // queued: the client drives nothing
    /// assert_eq!(run.wait().await?.get::<bool>("hi"), Some(true)); // the worker ran it
    /// # drop(worker); Ok(()) }
    /// ```
    pub fn max_runs(mut self, max_runs: usize) -> Self {
        self.max_runs = max_runs;
        self
    }

    /// How often the engine looks for runs to claim (queued ones, and those of workers
    /// whose leases expired) when nothing wakes it sooner (default: a third of the lease).
    /// A store that can tell when runs are queued (PostgreSQL, by LISTEN/NOTIFY) wakes it at
    /// once, so this is only a floor for missed notifications.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = Some(every);
        self
    }

    /// Starts the engine: claims every unfinished run in the store and resumes those whose
    /// workflow is registered. Must be called inside a tokio runtime.
    ///
    /// Runs it cannot resume (workflow not registered, definition changed) stay untouched in
    /// the store; [`Engine::wait`] and [`Engine::status`] report why.
    pub async fn build(self) -> Result<Engine, Error> {
        let mut workflows = HashMap::new();
        let mut versions = HashMap::new();
        // Older versions first, so a current definition is never shadowed by one of them.
        for def in self.older.into_iter().chain(self.workflows) {
            let def = Arc::new(def);
            versions.insert((def.name(), def.fingerprint().to_owned()), Arc::clone(&def));
            workflows.insert(def.name(), def);
        }
        let owner = format!("{}-{}", std::process::id(), RunId::generate());
        let shared = Arc::new(Shared {
            journal: Journal::spawn(Arc::clone(&self.store), self.commit_retry),
            store: self.store,
            workflows,
            versions,
            owner,
            lease: self.lease,
            active: Mutex::default(),
            stalled: Mutex::default(),
            resumed: Mutex::default(),
            stopped: Default::default(),
            max_runs: self.max_runs,
            slots: (self.max_runs < tokio::sync::Semaphore::MAX_PERMITS)
                .then(|| Arc::new(tokio::sync::Semaphore::new(self.max_runs))),
            poll: self
                .poll
                .unwrap_or(self.lease / 3)
                .max(Duration::from_millis(1)),
            wake: Arc::default(),
            backlog: Default::default(),
        });
        shared.recover().await?;
        tokio::spawn(heartbeat(
            Arc::downgrade(&shared),
            Arc::clone(&shared.store),
            Arc::clone(&shared.wake),
        ));
        Ok(Engine { shared })
    }
}

impl Engine {
    /// Starts configuring an engine over `store`.
    pub fn builder(store: impl Store) -> EngineBuilder {
        Self::builder_shared(Arc::new(store))
    }

    /// Starts configuring an engine over a store that is shared already.
    pub fn builder_shared(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            workflows: Vec::new(),
            older: Vec::new(),
            lease: DEFAULT_LEASE,
            commit_retry: DEFAULT_COMMIT_RETRY,
            max_runs: usize::MAX,
            poll: None,
        }
    }

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
        let def =
            self.shared
                .workflows
                .get(W::NAME)
                .cloned()
                .ok_or_else(|| Error::UnknownWorkflow {
                    workflow: W::NAME.to_owned(),
                    run_id: id.clone(),
                })?;
        let input = input.into_json().map_err(|e| Error::BadState {
            workflow: W::NAME.to_owned(),
            run_id: id.clone(),
            step: None,
            message: format!("the input does not encode as JSON: {e}"),
        })?;
        // At capacity (or a pure client): queue the run for whichever worker is free.
        let slot = match &self.shared.slots {
            None => Ok(None),
            Some(slots) => Arc::clone(slots).try_acquire_owned().map(Some),
        };
        let drive = slot.is_ok();
        let write = Write::CreateRun(NewRun {
            id: id.clone(),
            workflow: W::NAME.to_owned(),
            fingerprint: def.fingerprint().to_owned(),
            input: input.to_string(),
            owner: if drive {
                self.shared.owner.clone()
            } else {
                String::new()
            },
            lease_expires_at: now_millis() + self.shared.lease.as_millis() as u64,
        });
        match self.shared.journal.write(write).await {
            Ok(()) => {}
            Err(CommitError::Rejected(Rejected::DuplicateRun)) => {
                return Err(Error::RunExists { run_id: id })
            }
            Err(CommitError::Rejected(other)) => {
                return Err(Error::Store(StoreError(format!(
                    "run {id}: the store refused it: {other}"
                ))))
            }
            Err(CommitError::Store(e)) => return Err(Error::Store(e)),
        }
        if drive {
            let slot = slot.ok().flatten();
            self.shared
                .spawn_run(def, id.clone(), 1, Vec::new(), input, slot);
        } else {
            // Claim it here too as soon as a run of this engine finishes.
            self.shared
                .backlog
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.shared.wake.notify_one();
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
        let (workflow, output) = self.wait_json(id).await?;
        S::from_json(output).map_err(|e| Error::BadState {
            workflow,
            run_id: id.clone(),
            step: None,
            message: format!(
                "its output does not decode into `{}`: {e}",
                std::any::type_name::<S>()
            ),
        })
    }

    /// Waits for a run to finish; returns its workflow's name and its output as JSON.
    async fn wait_json(&self, id: &RunId) -> Result<(String, Value), Error> {
        loop {
            let local = lock(&self.shared.active)
                .get(id)
                .map(|a| (a.workflow, a.outcome.clone()));
            if let Some((workflow, mut rx)) = local {
                // A closed channel means the task was aborted (shutdown): fall through to the store.
                if let Ok(outcome) = rx.wait_for(Option::is_some).await {
                    let outcome = outcome.clone().expect("waited for Some");
                    return outcome.map(|v| (workflow.to_owned(), v));
                }
            }
            if let Some(error) = lock(&self.shared.stalled).get(id) {
                return Err(error.clone());
            }
            let run = self.load(id).await?;
            match run.status {
                RunStatus::Completed => {
                    let output = run.output.as_deref().unwrap_or("null");
                    let value = serde_json::from_str(output).map_err(|e| Error::BadState {
                        workflow: run.workflow.clone(),
                        run_id: id.clone(),
                        step: None,
                        message: format!("its stored output is not valid JSON: {e}"),
                    })?;
                    return Ok((run.workflow, value));
                }
                RunStatus::Failed => {
                    return Err(Error::RunFailed {
                        failure: parse_failure(run.error.as_deref()),
                        workflow: run.workflow,
                        run_id: id.clone(),
                    })
                }
                RunStatus::Running
                    if !self.shared.workflows.contains_key(run.workflow.as_str()) =>
                {
                    return Err(Error::UnknownWorkflow {
                        workflow: run.workflow,
                        run_id: id.clone(),
                    })
                }
                // Driven by another worker (or about to be registered as active here).
                RunStatus::Running => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn load(&self, id: &RunId) -> Result<RunRecord, Error> {
        self.shared
            .store
            .load_run(id)
            .await?
            .ok_or_else(|| Error::RunNotFound { run_id: id.clone() })
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
        let run = self.load(id).await?;
        let stalled = lock(&self.shared.stalled).get(id).cloned();
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
        self.load(id).await?;
        let entries = self.shared.store.load_journal(id).await?;
        Ok(entries.into_iter().map(StepRecord::from_entry).collect())
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
        let stalled = lock(&self.shared.stalled);
        Ok(runs
            .into_iter()
            .map(|r| {
                let s = stalled.get(&r.id).cloned();
                RunInfo::from_record(r, s)
            })
            .collect())
    }

    /// The runs this engine resumed: those unfinished when it was built, and those it took
    /// over since from workers whose leases expired.
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

    /// Stops driving every run (they stay unfinished in the store and resume on the next
    /// start) and gives up this engine's leases so another worker can take them at once.
    ///
    /// ```
    /// # use durable::{workflow, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let engine = Engine::builder(MemoryStore::new()).register(hello).build().await?;
    /// engine.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        // First stop the heartbeat, or it would claim the released runs straight back.
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let active: Vec<(RunId, Active)> = lock(&self.shared.active).drain().collect();
        for (id, run) in active {
            run.task.abort();
            lock(&self.shared.stalled).insert(id.clone(), Error::ShutDown { run_id: id });
        }
        self.shared.store.release_leases(&self.shared.owner).await?;
        Ok(())
    }
}

impl Shared {
    /// Claims the unfinished runs no live worker holds and resumes those it can.
    async fn recover(self: &Arc<Self>) -> Result<(), Error> {
        // Reserve the free capacity first, so a local start meanwhile cannot spend it too.
        let (free, mut reserved) = match &self.slots {
            None => (usize::MAX, None),
            Some(slots) => {
                let free = slots
                    .available_permits()
                    .saturating_sub(self.stalled_held());
                let free = u32::try_from(free).unwrap_or(u32::MAX);
                match Arc::clone(slots).try_acquire_many_owned(free) {
                    Ok(permits) if free > 0 => (free as usize, Some(permits)),
                    _ => (0, None),
                }
            }
        };
        if free > 0 {
            // Only runs this engine can drive: a registered workflow, under a registered
            // definition (the current one or a kept version).
            let definitions: Vec<(&str, &str)> = self
                .versions
                .keys()
                .map(|(name, fingerprint)| (*name, fingerprint.as_str()))
                .collect();
            let claim = Claim::new(&self.owner, self.lease)
                .limit(free)
                .workflows(&definitions);
            let claimed = self.store.claim_runs(claim).await?;
            self.backlog.store(
                reserved.is_some() && claimed.len() == free,
                std::sync::atomic::Ordering::SeqCst,
            );
            for run in claimed {
                let slot = reserved.as_mut().and_then(|permits| permits.split(1));
                self.resume_or_retry(run, slot).await;
            }
            // Whatever was not claimed goes back with `reserved`.
        }
        // Runs this engine stopped driving because the store failed: drive them again now
        // that it answers (the store calls above succeeded), from their journals.
        let failed: Vec<RunId> = lock(&self.stalled)
            .iter()
            .filter(|(_, error)| matches!(error, Error::Store(_)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in failed {
            match self.store.load_run(&id).await? {
                Some(run)
                    if run.status == RunStatus::Running
                        && run.owner.as_deref() == Some(self.owner.as_str()) =>
                {
                    let slot = match &self.slots {
                        None => None,
                        Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                            Ok(slot) => Some(slot),
                            Err(_) => continue, // at capacity: on a later beat
                        },
                    };
                    lock(&self.stalled).remove(&id);
                    self.resume_or_retry(run, slot).await;
                }
                // Finished meanwhile, or taken over by another worker: nothing to drive here.
                _ => {
                    lock(&self.stalled).remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Runs this engine holds but does not drive (they cannot resume here, or the store
    /// failed under them): they count against its capacity while it holds their leases.
    fn stalled_held(&self) -> usize {
        if self.max_runs == usize::MAX {
            return 0;
        }
        lock(&self.stalled)
            .values()
            .filter(|e| !matches!(e, Error::ShutDown { .. } | Error::LeaseLost { .. }))
            .count()
    }

    /// [`resume`](Self::resume), and if the store fails meanwhile (a dropped connection),
    /// keeps the run, which this engine now holds, for the next heartbeat to drive: never
    /// a claimed run that nobody drives.
    async fn resume_or_retry(self: &Arc<Self>, run: RunRecord, slot: Slot) {
        let id = run.id.clone();
        if let Err(error) = self.resume(run, slot).await {
            let error = match error {
                Error::Store(e) => Error::Store(e),
                other => Error::Store(StoreError(other.to_string())),
            };
            lock(&self.stalled).insert(id, error);
        }
    }

    /// Drives a claimed run again from its journal, or records why it cannot be.
    async fn resume(self: &Arc<Self>, run: RunRecord, slot: Slot) -> Result<(), Error> {
        let def = match self.check_resumable(&run) {
            Ok(def) => def,
            Err(error) => {
                lock(&self.stalled).insert(run.id.clone(), error);
                return Ok(());
            }
        };
        let input = match serde_json::from_str::<Value>(&run.input) {
            Ok(input) => input,
            Err(e) => {
                let error = Error::BadState {
                    workflow: run.workflow,
                    run_id: run.id.clone(),
                    step: None,
                    message: format!("its stored input is not valid JSON: {e}"),
                };
                lock(&self.stalled).insert(run.id, error);
                return Ok(());
            }
        };
        let journal = self.store.load_journal(&run.id).await?;
        lock(&self.resumed).push(run.id.clone());
        self.spawn_run(def, run.id, run.lease_token, journal, input, slot);
        Ok(())
    }

    fn check_resumable(&self, run: &RunRecord) -> Result<Arc<Definition>, Error> {
        let def =
            self.workflows
                .get(run.workflow.as_str())
                .ok_or_else(|| Error::UnknownWorkflow {
                    workflow: run.workflow.clone(),
                    run_id: run.id.clone(),
                })?;
        // The run resumes on the definition it started under, current or kept as a version.
        match self.versions.get(&(def.name(), run.fingerprint.clone())) {
            Some(version) => Ok(Arc::clone(version)),
            None => Err(Error::DefinitionChanged {
                workflow: run.workflow.clone(),
                run_id: run.id.clone(),
                started_under: run.fingerprint.clone(),
                registered: def.fingerprint().to_owned(),
            }),
        }
    }

    fn spawn_run(
        self: &Arc<Self>,
        def: Arc<Definition>,
        id: RunId,
        token: u64,
        journal: Vec<JournalEntry>,
        input: Value,
        slot: Slot,
    ) {
        let (tx, rx) = watch::channel(None);
        let workflow = def.name();
        let task = Arc::new(RunTask::new(
            def,
            id.clone(),
            token,
            self.journal.clone(),
            journal,
        ));
        // Hold the lock across the spawn so the task cannot finish (and remove itself)
        // before it is listed.
        let mut active = lock(&self.active);
        let shared = Arc::downgrade(self);
        let run_id = id.clone();
        let handle = tokio::spawn(async move {
            // A panic of the engine itself (never a step's: those are caught per attempt) must
            // still reach the waiters, or they would wait for a run nobody drives.
            let outcome = CatchUnwind(Box::pin(task.run(input)))
                .await
                .unwrap_or_else(|panic| {
                    Err(Error::BadState {
                        workflow: workflow.to_owned(),
                        run_id: run_id.clone(),
                        step: None,
                        message: format!(
                            "the engine failed while driving it ({panic}); it resumes on the next start"
                        ),
                    })
                });
            if let Some(shared) = shared.upgrade() {
                if let Err(error) = &outcome {
                    if !matches!(error, Error::RunFailed { .. }) {
                        // Not journaled as finished: remember why, for later waiters.
                        lock(&shared.stalled).insert(run_id.clone(), error.clone());
                    }
                }
                lock(&shared.active).remove(&run_id);
                drop(slot);
                if shared.backlog.load(std::sync::atomic::Ordering::SeqCst) {
                    // Capacity freed while runs wait: claim the next one now.
                    shared.wake.notify_one();
                }
            }
            let _ = tx.send(Some(outcome));
        });
        active.insert(
            id,
            Active {
                workflow,
                outcome: rx,
                task: handle.abort_handle(),
            },
        );
    }
}

/// Renews this engine's leases every third of the lease, and claims runs (queued ones, and
/// those of workers that died) every poll interval, or at once when the store says runs were
/// queued or a finished run freed capacity while runs wait.
async fn heartbeat(
    shared: std::sync::Weak<Shared>,
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
) {
    let Some((lease, poll)) = shared.upgrade().map(|s| (s.lease, s.poll)) else {
        return;
    };
    let beat = (lease / 3).max(Duration::from_millis(10));
    let mut renew_at = tokio::time::Instant::now() + beat;
    loop {
        let until = (tokio::time::Instant::now() + poll).min(renew_at);
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = store.work_available() => {}
            () = wake.notified() => {}
        }
        let Some(s) = shared.upgrade() else { return };
        if s.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if tokio::time::Instant::now() >= renew_at {
            // A failed renewal is retried on the next beat; the fencing token protects the
            // journal if a lease expires in between.
            let _ = s.store.renew_leases(&s.owner, s.lease).await;
            renew_at = tokio::time::Instant::now() + beat;
        }
        // Take over queued runs and the runs of workers that died (their leases expired).
        let _ = s.recover().await;
    }
}

/// A permit to drive one run (see `Shared::slots`); `None` when capacity is unlimited.
type Slot = Option<tokio::sync::OwnedSemaphorePermit>;

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
