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
    Cursor, JournalEntry, NewRun, Rejected, RunFilter, RunRecord, RunStatus, Store, StoreError,
    Write,
};
use crate::RunId;

mod records;

pub use records::{RunHandle, RunInfo, RunPage, StepEvent, StepRecord};

/// How long a worker's claim on a run lasts without a heartbeat.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How long the journal retries a failing store before it fails the writes.
const DEFAULT_COMMIT_RETRY: Duration = Duration::from_secs(30);
/// How often a waiter polls the store for a run another worker drives.
const POLL: Duration = Duration::from_millis(50);

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
    journal: Journal,
    /// The current definition of each workflow: new runs start on it.
    workflows: HashMap<&'static str, Arc<Definition>>,
    /// Every registered definition, current and older, by workflow and fingerprint: a run
    /// resumes on the definition it started under.
    versions: HashMap<(&'static str, String), Arc<Definition>>,
    owner: String,
    lease: Duration,
    /// Runs this engine drives now, with the channel their outcome arrives on. Shared with
    /// the run tasks, which never hold the engine itself (so dropping it lets go of the store).
    active: Arc<Mutex<HashMap<RunId, Active>>>,
    /// Runs this engine claimed but cannot drive, and runs it stopped driving, with why.
    stalled: Arc<Mutex<HashMap<RunId, Error>>>,
    /// Runs this engine resumed (claimed unfinished from the store), in order.
    resumed: Mutex<Vec<RunId>>,
    /// Set by [`Engine::shutdown`]: the heartbeat stops renewing and claiming, and no run
    /// starts.
    stopped: std::sync::atomic::AtomicBool,
    /// This engine is attached to its store (see [`Store::attach`]) and must detach once.
    attached: std::sync::atomic::AtomicBool,
    /// Held by the heartbeat while it renews and claims, so a shutdown can wait for a beat in
    /// flight (which could claim runs again) before it gives up the leases.
    beat: tokio::sync::Mutex<()>,
}

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
}

impl EngineBuilder {
    /// Registers a workflow, so runs of it can start and unfinished ones resume.
    pub fn register<W: Workflow>(mut self, workflow: W) -> Self {
        // A typed state: what blocks write into it is checked against the type.
        self.workflows
            .push(workflow.definition().with_state::<W::State>());
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
        self.older
            .push(workflow.definition().with_state::<W::State>());
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

    /// Starts the engine: claims every unfinished run in the store and resumes those whose
    /// workflow is registered. Must be called inside a tokio runtime.
    ///
    /// Runs it cannot resume (workflow not registered, definition changed) stay untouched in
    /// the store; [`Engine::wait`] and [`Engine::status`] report why.
    ///
    /// A store that cannot be written (a full disk) does not stop the build: runs can be
    /// listed and read, writes fail with [`Error::Store`], and the heartbeat claims and drives
    /// the unfinished runs once the store takes writes again.
    ///
    /// Fails with [`Error::StoreInUse`] when another engine of this process drives the store
    /// and the store allows only one (an SQLite store and its clones): share that engine, or
    /// shut it down first.
    ///
    /// ```
    /// # use durable::{Engine, Error};
    /// # use durable::store::sqlite::SqliteStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("durable-doc-build-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let store = SqliteStore::open(dir.join("runs.db"))?;
    /// let engine = Engine::builder(store.clone()).build().await?;
    /// let second = Engine::builder(store.clone()).build().await;
    /// assert!(matches!(second, Err(Error::StoreInUse(_))));
    /// drop(engine);
    /// // Once the first engine is gone, another may drive the store.
    /// let _again = Engine::builder(store).build().await?;
    /// # drop(_again); std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn build(self) -> Result<Engine, Error> {
        self.store.attach().map_err(Error::StoreInUse)?;
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
            journal: Journal::spawn(Arc::downgrade(&self.store), self.commit_retry),
            store: self.store,
            workflows,
            versions,
            owner,
            lease: self.lease,
            active: Arc::default(),
            stalled: Arc::default(),
            resumed: Mutex::default(),
            stopped: Default::default(),
            attached: std::sync::atomic::AtomicBool::new(true),
            beat: tokio::sync::Mutex::new(()),
        });
        // A store that cannot claim now (a full disk) still lets the engine read runs; the
        // heartbeat claims them once the store takes writes again.
        let _ = shared.recover().await;
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
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
        let text = crate::encode::to_text(&input).map_err(|e| Error::BadState {
            workflow: W::NAME.to_owned(),
            run_id: id.clone(),
            step: None,
            message: format!("the input cannot be journaled: {e}"),
        })?;
        let write = Write::CreateRun(NewRun {
            id: id.clone(),
            workflow: W::NAME.to_owned(),
            fingerprint: def.fingerprint().to_owned(),
            input: text,
            owner: self.shared.owner.clone(),
            lease_expires_at: now_millis() + self.shared.lease.as_millis() as u64,
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
        self.shared.spawn_run(def, id.clone(), 1, Vec::new(), input);
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
        id.check()?;
        loop {
            let local = lock(&self.shared.active)
                .get(id)
                .map(|a| (a.workflow, a.outcome.clone()));
            if let Some((workflow, mut rx)) = local {
                // A closed channel means the task was aborted (shutdown): fall through to the store.
                if let Ok(outcome) = rx.wait_for(Option::is_some).await {
                    let outcome = outcome.clone().expect("waited for Some");
                    match outcome {
                        // Another worker took the run over: learn its outcome from the store.
                        Err(Error::LeaseLost { .. }) => {}
                        outcome => return outcome.map(|v| (workflow.to_owned(), v)),
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
            let run = self.load(id).await?;
            match run.status {
                RunStatus::Completed => {
                    let output = run.output.as_deref().unwrap_or("null");
                    let value = crate::encode::decode(output).map_err(|e| Error::BadState {
                        workflow: run.workflow.clone(),
                        run_id: id.clone(),
                        step: None,
                        message: format!("its stored output {e}"),
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
                // Stopped here by a store outage: the heartbeat drives it again later.
                RunStatus::Running if matches!(stalled, Some(Error::Store(_))) => {
                    return Err(stalled.expect("matched"))
                }
                RunStatus::Running => match self.shared.check_resumable(&run) {
                    // Not driven here, and this engine could not drive it: say why.
                    Err(error) => return Err(error),
                    // Driven by another worker (or about to be registered as active here).
                    Ok(_) => tokio::time::sleep(POLL).await,
                },
            }
        }
    }

    async fn load(&self, id: &RunId) -> Result<RunRecord, Error> {
        id.check()?;
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
        let run = self.load(id).await?;
        let entries = self.shared.store.load_journal(id).await?;
        let optional = records::optional_steps(&self.shared.versions, &run);
        Ok(entries
            .into_iter()
            .map(|entry| StepRecord::from_entry(entry, &optional))
            .collect())
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
    pub async fn list_page(&self, mut filter: RunFilter) -> Result<RunPage, Error> {
        let limit = filter.limit;
        filter.limit = limit.map(|l| l.saturating_add(1));
        let mut runs = self.shared.store.list_runs(filter).await?;
        let next = match limit {
            Some(limit) if runs.len() > limit => {
                runs.truncate(limit);
                runs.last().map(Cursor::after)
            }
            _ => None,
        };
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

impl Shared {
    /// Why this engine does not drive `run`, unless the run has finished (then whatever
    /// stopped this engine is stale, and forgotten).
    fn stalled_for(&self, run: &RunRecord) -> Option<Error> {
        let mut stalled = lock(&self.stalled);
        if run.status == RunStatus::Running {
            // Not claimed here because this engine cannot drive it: say why all the same.
            return stalled
                .get(&run.id)
                .cloned()
                .or_else(|| self.check_resumable(run).err());
        }
        match stalled.get(&run.id) {
            Some(Error::ShutDown { .. }) | None => None,
            Some(_) => {
                stalled.remove(&run.id);
                None
            }
        }
    }

    /// Claims the unfinished runs no live worker holds and resumes those it can.
    async fn recover(self: &Arc<Self>) -> Result<(), Error> {
        // Only runs this engine can drive: another worker may know the others.
        let can_drive = |workflow: &str, fingerprint: &str| {
            self.versions
                .keys()
                .any(|(name, fp)| *name == workflow && fp == fingerprint)
        };
        for run in self
            .store
            .claim_runs_for(&self.owner, self.lease, &can_drive)
            .await?
        {
            self.resume(run).await?;
        }
        // Runs this engine stopped driving because the store failed: drive them again now
        // that it answers (the store calls above succeeded), from their journals.
        let failed: Vec<RunId> = lock(&self.stalled)
            .iter()
            .filter(|(_, error)| matches!(error, Error::Store(_)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in failed {
            match self.store.load_run(&id).await {
                Ok(Some(run))
                    if run.status == RunStatus::Running
                        && run.owner.as_deref() == Some(self.owner.as_str()) =>
                {
                    lock(&self.stalled).remove(&id);
                    self.resume(run).await?;
                }
                // Finished meanwhile, or taken over by another worker: nothing to drive here.
                Ok(_) => {
                    lock(&self.stalled).remove(&id);
                }
                // Its record cannot be read (damaged, or the store failing again): it stays
                // stalled with the error it has, and the others go on.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Drives a claimed run again from its journal, or records why it cannot be.
    async fn resume(self: &Arc<Self>, run: RunRecord) -> Result<(), Error> {
        let def = match self.check_resumable(&run) {
            Ok(def) => def,
            Err(error) => {
                lock(&self.stalled).insert(run.id.clone(), error);
                return Ok(());
            }
        };
        let input = match crate::encode::decode(&run.input) {
            Ok(input) => input,
            Err(e) => {
                let error = Error::BadState {
                    workflow: run.workflow,
                    run_id: run.id.clone(),
                    step: None,
                    message: format!("its stored input {e}"),
                };
                lock(&self.stalled).insert(run.id, error);
                return Ok(());
            }
        };
        let journal = match self.store.load_journal(&run.id).await {
            Ok(journal) => journal,
            Err(e) => {
                // A damaged journal (or a store failing now) stops this run only: it stays
                // unfinished in the store, is retried on the heartbeat, and the others go on.
                let error = Error::Store(e.context(format_args!(
                    "workflow `{}` run {}: cannot load its journal",
                    run.workflow, run.id
                )));
                lock(&self.stalled).insert(run.id, error);
                return Ok(());
            }
        };
        lock(&self.resumed).push(run.id.clone());
        self.spawn_run(def, run.id, run.lease_token, journal, input);
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
        // Driven again: whatever stopped it before no longer holds.
        lock(&self.stalled).remove(&id);
        // Hold the lock across the spawn so the task cannot finish (and remove itself)
        // before it is listed.
        let mut active = lock(&self.active);
        let (all_active, stalled) = (Arc::clone(&self.active), Arc::clone(&self.stalled));
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
            if let Err(error) = &outcome {
                if !matches!(error, Error::RunFailed { .. }) {
                    // Not journaled as finished: remember why, for later waiters.
                    lock(&stalled).insert(run_id.clone(), error.clone());
                }
            }
            lock(&all_active).remove(&run_id);
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

async fn heartbeat(shared: std::sync::Weak<Shared>) {
    loop {
        let lease = match shared.upgrade() {
            Some(s) => s.lease,
            None => return,
        };
        tokio::time::sleep((lease / 3).max(Duration::from_millis(10))).await;
        let Some(s) = shared.upgrade() else { return };
        let _beat = s.beat.lock().await;
        if s.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // A failed renewal or claim is retried on the next beat; the fencing token protects
        // the journal if a lease expires in between.
        let _ = s.store.renew_leases(&s.owner, s.lease).await;
        // Take over the runs of workers that died (their leases expired).
        let _ = s.recover().await;
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
