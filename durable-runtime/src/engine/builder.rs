//! Configures an [`Engine`]: its store, workflows, versions, lease and commit retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{worker, Client, Engine, Shared, DEFAULT_COMMIT_RETRY, DEFAULT_LEASE};
use crate::definition::{Definition, Workflow};
use crate::error::Error;
use crate::store::Store;
use crate::writer::Writer;
use crate::RunId;

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
    /// finish on it while new runs start on the current one (see "Versioning" in the `durable`
    /// crate's guide `durable::guide::guarantees`). Usually the old `workflow!` kept in a
    /// module of its own:
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
    /// its leases expire. The engine renews its leases every third of it, and starts a step
    /// only within four fifths of it after the claim or renewal that last showed the run its
    /// own; past that (a paused process, failed renewals) it renews and reads the run back
    /// first. Keep it well above the store's round trip.
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
    /// whose leases expired) when nothing tells it sooner (default: a third of the lease).
    /// A store that can tell when runs are queued (see
    /// [`Store::watch_claimable`](crate::store::Store::watch_claimable); PostgreSQL, by
    /// LISTEN/NOTIFY) has them claimed at once, so this is only a floor for missed news.
    ///
    /// ```
    /// # use durable::store::memory::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let engine = durable::Engine::builder(MemoryStore::new())
    ///     .poll_interval(std::time::Duration::from_millis(200))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = Some(every);
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
        let leases =
            crate::lease::Leases::new(Arc::downgrade(&self.store), owner.clone(), self.lease);
        let shared = Arc::new(Shared {
            journal: Writer::spawn(Arc::downgrade(&self.store), self.commit_retry),
            client: Client::new(Arc::clone(&self.store)),
            store: self.store,
            workflows,
            versions,
            owner,
            lease: self.lease,
            leases,
            active: Arc::default(),
            stalled: Arc::default(),
            resumed: Mutex::default(),
            stopped: Default::default(),
            attached: std::sync::atomic::AtomicBool::new(true),
            beat: tokio::sync::Mutex::new(()),
            changed: Default::default(),
            timer: Default::default(),
            health: Arc::default(),
            max_runs: self.max_runs,
            slots: (self.max_runs < tokio::sync::Semaphore::MAX_PERMITS)
                .then(|| Arc::new(tokio::sync::Semaphore::new(self.max_runs))),
            poll: self
                .poll
                .unwrap_or(self.lease / 3)
                .max(Duration::from_millis(1)),
            wake: Arc::default(),
            backlog: Arc::default(),
        });
        // A store that cannot claim now (a full disk) still lets the engine read runs; the
        // heartbeat claims them once the store takes writes again. The error is reported.
        if let Err(error) = shared.recover().await {
            shared.report("claiming the unfinished runs at start", None, &error);
        }
        worker::spawn(&shared);
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
}
