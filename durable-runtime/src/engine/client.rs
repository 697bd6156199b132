//! A [`Client`]: starts runs and reads them, driving nothing, so it can live beside an engine
//! in another process (a CLI, a dashboard, a web handler), the way tokio's `Handle` is the
//! part of a runtime that can be passed around.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::parse_failure;
use super::records::{self, RunInfo, RunPage, StepRecord};
use crate::clock::now_millis;
use crate::data::State;
use crate::definition::Workflow;
use crate::error::Error;
use crate::store::{
    Cursor, Event, JournalEntry, NewRun, Rejected, RunFilter, RunRecord, RunStatus, Store, Write,
};
use crate::RunId;

/// How long [`Client::wait`] first sleeps between two looks at the store; it doubles up to
/// [`MAX_POLL`]. Short, because most runs are short: a 10-step run another process drives on
/// PostgreSQL ends ~5 ms after it starts, and a first look 10 ms later made its waiter wait
/// 13 ms; looks at 1, 3, 7, 15 ms... cost one indexed read each.
pub(super) const FIRST_POLL: Duration = Duration::from_millis(1);
/// The longest sleep between two looks at the store while waiting for a run.
pub(super) const MAX_POLL: Duration = Duration::from_millis(500);

/// Starts runs and reads their status, history and lists, without driving any: the engine
/// that drives the store (in this process or another) claims the runs a client starts and
/// drives them.
///
/// Open one on the store an engine drives: on a shared [`MemoryStore`] in the same process,
/// or on an SQLite file another process's engine holds, with
/// [`SqliteStore::open_client`](crate::store::sqlite::SqliteStore::open_client). An engine
/// hands out its own with [`Engine::client`](super::Engine::client).
///
/// [`MemoryStore`]: crate::store::memory::MemoryStore
///
/// ```
/// use std::sync::Arc;
/// use durable::{workflow, Client, Data, Engine, RunStatus, StepError};
/// use durable::store::memory::MemoryStore;
///
/// async fn greet(data: Data) -> Result<Data, StepError> { Ok(data.assign("hi", true)) }
/// workflow! { hello { step greet; } }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
/// let store = Arc::new(MemoryStore::new());
/// let _engine = Engine::builder_shared(store.clone()).register(hello).build().await?;
/// // Elsewhere (a web handler, say): start a run, and read it back.
/// let client = Client::new(store);
/// let id = client.start(hello, Data::new()).await?;
/// let output: Data = client.wait(&id).await?;
/// assert_eq!(output.get::<bool>("hi"), Some(true));
/// assert_eq!(client.status(&id).await?.status, RunStatus::Completed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(super) store: Arc<dyn Store>,
}

impl Client {
    /// A client of `store` (a clone of the store the engine drives, or the same file opened
    /// with [`SqliteStore::open_client`](crate::store::sqlite::SqliteStore::open_client)).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Client { store }
    }

    /// A client of `store`, taken by value.
    ///
    /// ```
    /// # use durable::Client;
    /// # use durable::store::memory::MemoryStore;
    /// let store = MemoryStore::new();
    /// let client = Client::open(store.clone());
    /// # let _ = client;
    /// ```
    pub fn open(store: impl Store) -> Self {
        Client::new(Arc::new(store))
    }

    /// Starts a run of `workflow` with `input` under a fresh id, and returns the id. The run
    /// is committed to the store, with no owner, before this returns; the engine driving the
    /// store claims it within tens of milliseconds (on its next heartbeat, for a store that
    /// cannot tell it a run appeared: see
    /// [`Store::watch_claimable`](crate::store::Store::watch_claimable)).
    pub async fn start<W: Workflow>(&self, workflow: W, input: W::State) -> Result<RunId, Error> {
        self.start_with_id(workflow, RunId::generate(), input).await
    }

    /// Starts a run under an id of the caller's choosing. A second start with the same id
    /// fails with [`Error::RunExists`], so retrying a start is safe.
    ///
    /// ```
    /// # use durable::{workflow, Client, Data, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let client = Client::open(MemoryStore::new());
    /// client.start_with_id(hello, "order-7", Data::new()).await?;
    /// let again = client.start_with_id(hello, "order-7", Data::new()).await;
    /// assert!(matches!(again, Err(durable::Error::RunExists { .. })));
    /// # Ok(()) }
    /// ```
    pub async fn start_with_id<W: Workflow>(
        &self,
        workflow: W,
        id: impl Into<RunId>,
        input: W::State,
    ) -> Result<RunId, Error> {
        let id = id.into();
        id.check()?;
        let def = workflow.definition();
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
            // No owner and no lease: the engine's claim takes it.
            owner: String::new(),
            lease_expires_at: 0,
            parent: None,
        });
        let outcome = self.store.commit(std::slice::from_ref(&write)).await?;
        match outcome.into_iter().next() {
            Some(Ok(())) => Ok(id),
            Some(Err(Rejected::DuplicateRun)) => Err(Error::RunExists { run_id: id }),
            Some(Err(other)) => Err(Error::Store(
                crate::store::StoreError::other(format!(
                    "workflow `{}` run {id}: the store refused it: {other}",
                    W::NAME
                ))
                .with_source(other),
            )),
            None => Err(Error::Store(crate::store::StoreError::other(format!(
                "workflow `{}` run {id}: the store answered nothing for its creation",
                W::NAME
            )))),
        }
    }

    /// A typed handle on a run, to wait for its output.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use durable::{workflow, Client, Data, Engine, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d.assign("hi", true)) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// # let store = Arc::new(MemoryStore::new());
    /// # let _engine = Engine::builder_shared(store.clone()).register(hello).build().await?;
    /// let client = Client::new(store);
    /// let id = client.start(hello, Data::new()).await?;
    /// let output = client.handle(hello, id).wait().await?;
    /// assert_eq!(output.get::<bool>("hi"), Some(true));
    /// # Ok(()) }
    /// ```
    pub fn handle<W: Workflow>(&self, workflow: W, id: impl Into<RunId>) -> ClientRun<W> {
        let _ = workflow;
        ClientRun {
            client: self.clone(),
            id: id.into(),
            workflow: PhantomData,
        }
    }

    /// Waits for a run to finish and decodes its output as `S`, looking at the store after
    /// 1 ms at first, then less and less often (every 500 ms at most): the client drives nothing, so
    /// nothing wakes it. A suspended run is waited for like a running one, and so is a run
    /// no engine drives yet (none has its workflow registered); a cancelled one fails with
    /// [`Error::RunCancelled`].
    pub async fn wait<S: State>(&self, id: &RunId) -> Result<S, Error> {
        let mut poll = FIRST_POLL;
        loop {
            let run = self.load(id).await?;
            if let Some(ended) = ended(&run) {
                return decode_output(id, ended);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// Loads a run, or fails with [`Error::RunNotFound`].
    pub(super) async fn load(&self, id: &RunId) -> Result<RunRecord, Error> {
        id.check()?;
        self.store
            .load_run(id)
            .await?
            .ok_or_else(|| Error::RunNotFound { run_id: id.clone() })
    }

    /// Resumes a failed run from the step that failed it, from this process or another (a
    /// CLI beside the engine that holds an SQLite file, an operator's tool on PostgreSQL):
    /// the step gets a fresh attempt budget, every step that had finished is kept, and the
    /// engine driving the store claims the run and drives it on, within its watch's delay or
    /// at most a heartbeat. See [`Engine::resume_failed`](super::Engine::resume_failed),
    /// which does the same and drives the run itself.
    ///
    /// The engine that claims the run must have registered the definition it started under;
    /// one that has not reports the run (see [`Error::UnknownWorkflow`]) and leaves its
    /// journal untouched.
    ///
    /// # Errors
    ///
    /// [`Error::RunNotFound`] for an unknown run; [`Error::RunNotInState`] for a run that has
    /// not failed (nothing is changed then).
    ///
    /// ```
    /// # use durable::{workflow, Client, Data, Error, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let client = Client::open(MemoryStore::new());
    /// let id = client.start(hello, Data::new()).await?;
    /// // Not failed (no engine drove it yet): nothing to resume.
    /// let err = client.resume_failed(&id).await.unwrap_err();
    /// assert!(matches!(err, Error::RunNotInState { .. }));
    /// # Ok(()) }
    /// ```
    pub async fn resume_failed(&self, id: &RunId) -> Result<(), Error> {
        id.check()?;
        self.reopen_failed(id, |_| Ok(())).await
    }

    /// Records that the failed run `id` resumes: a `resumed` entry for each step that failed
    /// it, and the run set running with no owner, once `check` accepts the run.
    pub(super) async fn reopen_failed(
        &self,
        id: &RunId,
        check: impl FnOnce(&RunRecord) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let run = self.load(id).await?;
        if run.status != RunStatus::Failed {
            return Err(Error::RunNotInState {
                workflow: run.workflow,
                run_id: id.clone(),
                status: run.status,
                action: "resume",
            });
        }
        check(&run)?;
        let journal = self.store.load_journal(id).await?;
        let last = journal.last().map_or(0, |e| e.seq);
        // The steps that failed the run get a fresh budget; an optional step that failed
        // before was skipped for good, and stays so (replay must go the same way).
        let failure = parse_failure(run.error.as_deref());
        let at = now_millis();
        let entries: Vec<JournalEntry> = failure
            .steps
            .iter()
            .zip(last + 1..)
            .map(|(step, seq)| {
                let (kind, payload) = Event::Resumed {
                    attempts: step.attempts,
                }
                .encode();
                JournalEntry {
                    seq,
                    step: step.step.clone(),
                    kind,
                    attempt: step.attempts,
                    payload,
                    at,
                }
            })
            .collect();
        match self.store.reopen(id, &entries).await? {
            Ok(()) => Ok(()),
            Err(Rejected::UnknownRun) => Err(Error::RunNotFound { run_id: id.clone() }),
            // Resumed (or changed) meanwhile by someone else.
            Err(_) => {
                let now = self.load(id).await?;
                Err(match now.status {
                    RunStatus::Failed => Error::BadState {
                        workflow: now.workflow.clone(),
                        run_id: id.clone(),
                        step: None,
                        message: "its journal changed while it was being resumed; try again".into(),
                    },
                    status => Error::RunNotInState {
                        workflow: now.workflow,
                        run_id: id.clone(),
                        status,
                        action: "resume",
                    },
                })
            }
        }
    }

    /// Cancels an unfinished run, from this process or another (a CLI beside the engine):
    /// records the request in the store and wakes the run if it sleeps; the engine driving
    /// it (or the next to claim it) drops its steps in flight, starts nothing more, and ends
    /// it [`Cancelled`](RunStatus::Cancelled) with `reason`, within its watch's delay (tens
    /// of milliseconds) or at most a heartbeat. Returns once the request is stored; a later
    /// request keeps the first reason. A cancelled run never resumes.
    ///
    /// # Errors
    ///
    /// [`Error::RunNotFound`] for an unknown run, [`Error::RunNotInState`] for a finished one
    /// (completed, failed or cancelled): nothing is stored then.
    ///
    /// ```
    /// # use durable::{workflow, Client, Data, StepError, RunStatus};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let client = Client::open(MemoryStore::new());
    /// let id = client.start(hello, Data::new()).await?;
    /// client.cancel(&id, "the customer withdrew").await?;
    /// // No engine drives this store yet: the first to claim the run ends it cancelled.
    /// assert!(client.cancel(&"no-such-run".into(), "why").await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: &RunId, reason: impl Into<String>) -> Result<(), Error> {
        id.check()?;
        let run = self.load(id).await?;
        let not_now = |status| Error::RunNotInState {
            workflow: run.workflow.clone(),
            run_id: id.clone(),
            status,
            action: "cancel",
        };
        if run.status.is_finished() {
            return Err(not_now(run.status));
        }
        match self.store.request_cancel(id, &reason.into()).await? {
            Ok(()) => Ok(()),
            Err(Rejected::UnknownRun) => Err(Error::RunNotFound { run_id: id.clone() }),
            // It finished meanwhile.
            Err(_) => {
                let status = self.load(id).await?.status;
                Err(not_now(status))
            }
        }
    }

    /// A run's status, input, output or failure.
    ///
    /// ```
    /// # use durable::{workflow, Client, Data, StepError, RunStatus};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let client = Client::open(MemoryStore::new());
    /// let id = client.start(hello, Data::new()).await?;
    /// // No engine drives this store: the run waits to be claimed.
    /// let info = client.status(&id).await?;
    /// assert_eq!((info.workflow.as_str(), info.status), ("hello", RunStatus::Running));
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, id: &RunId) -> Result<RunInfo, Error> {
        Ok(RunInfo::from_record(self.load(id).await?, None))
    }

    /// A run's journal: every finished step and every failed attempt, in order. Whether a
    /// failed step was optional is read from the run's record (a client has no definitions).
    pub async fn history(&self, id: &RunId) -> Result<Vec<StepRecord>, Error> {
        self.history_with(id, &HashMap::new()).await
    }

    /// [`history`](Self::history), with the definitions an engine knows.
    pub(super) async fn history_with(
        &self,
        id: &RunId,
        versions: &HashMap<(&'static str, String), Arc<crate::definition::Definition>>,
    ) -> Result<Vec<StepRecord>, Error> {
        let run = self.load(id).await?;
        let entries = self.store.load_journal(id).await?;
        let optional = records::optional_steps(versions, &run);
        Ok(entries
            .into_iter()
            .map(|entry| StepRecord::from_entry(entry, &optional))
            .collect())
    }

    /// Runs in the store, newest first.
    pub async fn list(&self, filter: RunFilter) -> Result<Vec<RunInfo>, Error> {
        Ok(self
            .store
            .list_runs(filter)
            .await?
            .into_iter()
            .map(|run| RunInfo::from_record(run, None))
            .collect())
    }

    /// One page of runs, newest first, with the cursor of the next page if there are more
    /// (see [`Engine::list_page`](super::Engine::list_page)).
    ///
    /// ```
    /// # use durable::{workflow, Client, Data, RunFilter, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// # async fn greet(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// # workflow! { hello { step greet; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let client = Client::open(MemoryStore::new());
    /// for _ in 0..3 {
    ///     client.start(hello, Data::new()).await?;
    /// }
    /// let page = client.list_page(RunFilter { limit: Some(2), ..Default::default() }).await?;
    /// assert_eq!(page.runs.len(), 2);
    /// let rest = client.list_page(RunFilter { after: page.next, ..Default::default() }).await?;
    /// assert_eq!((rest.runs.len(), rest.next), (1, None));
    /// # Ok(()) }
    /// ```
    pub async fn list_page(&self, filter: RunFilter) -> Result<RunPage, Error> {
        let (runs, next) = self.page(filter).await?;
        Ok(RunPage {
            runs: runs
                .into_iter()
                .map(|run| RunInfo::from_record(run, None))
                .collect(),
            next,
        })
    }

    /// One page of stored runs, and the cursor of the next.
    pub(super) async fn page(
        &self,
        mut filter: RunFilter,
    ) -> Result<(Vec<RunRecord>, Option<Cursor>), Error> {
        let limit = filter.limit;
        filter.limit = limit.map(|l| l.saturating_add(1));
        let mut runs = self.store.list_runs(filter).await?;
        let next = match limit {
            Some(limit) if runs.len() > limit => {
                runs.truncate(limit);
                runs.last().map(Cursor::after)
            }
            _ => None,
        };
        Ok((runs, next))
    }
}

/// A run started through a [`Client`]: its id, and a way to wait for its typed output.
pub struct ClientRun<W: Workflow> {
    client: Client,
    id: RunId,
    workflow: PhantomData<fn() -> W>,
}

impl<W: Workflow> ClientRun<W> {
    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// Waits for the run's output (see [`Client::wait`]).
    pub async fn wait(&self) -> Result<W::State, Error> {
        self.client.wait(&self.id).await
    }
}

/// How a finished run ended, from its record: its workflow and output, or its error. `None`
/// while it is unfinished (running or suspended).
pub(super) fn ended(run: &RunRecord) -> Option<Result<(String, Value), Error>> {
    match run.status {
        RunStatus::Running | RunStatus::Suspended => None,
        RunStatus::Completed => {
            let output = run.output.as_deref().unwrap_or("null");
            Some(
                crate::encode::decode(output)
                    .map(|value| (run.workflow.clone(), value))
                    .map_err(|e| Error::BadState {
                        workflow: run.workflow.clone(),
                        run_id: run.id.clone(),
                        step: None,
                        message: format!("its stored output {e}"),
                    }),
            )
        }
        RunStatus::Failed => Some(Err(Error::RunFailed {
            failure: parse_failure(run.error.as_deref()),
            workflow: run.workflow.clone(),
            run_id: run.id.clone(),
        })),
        RunStatus::Cancelled => Some(Err(Error::RunCancelled {
            workflow: run.workflow.clone(),
            run_id: run.id.clone(),
            reason: run.error.clone().unwrap_or_default(),
        })),
    }
}

/// Decodes a finished run's output as `S`.
pub(super) fn decode_output<S: State>(
    id: &RunId,
    ended: Result<(String, Value), Error>,
) -> Result<S, Error> {
    let (workflow, output) = ended?;
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
