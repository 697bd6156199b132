//! The `Store` trait: the engine's only seam to storage, and one module per backend.
//!
//! The engine never talks SQL. It hands a store *batches* of writes (see [`Write`]), one
//! transaction and one fsync per batch, which is what lets the journal group-commit the steps
//! of many concurrent runs. Every write to an existing run carries the lease token of the
//! worker that holds it; a store refuses a write whose token is stale, so a worker that lost
//! its lease (a zombie) can never overwrite the journal of the worker that took over.

use std::fmt;
use std::time::Duration;

use crate::step::BoxFuture;
use crate::RunId;

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The state of a run as the store knows it.
///
/// `Running` and `Suspended` runs are unfinished; `Completed`, `Failed` and `Cancelled` runs
/// are finished, and their journals closed. More states may come (the enum is
/// non-exhaustive): match the finished ones with [`is_finished`](Self::is_finished).
///
/// ```
/// use durable::RunStatus;
///
/// for status in [RunStatus::Running, RunStatus::Suspended, RunStatus::Completed,
///                RunStatus::Failed, RunStatus::Cancelled] {
///     assert_eq!(RunStatus::parse(status.as_str()), Some(status));
/// }
/// assert!(!RunStatus::Suspended.is_finished());
/// assert!(RunStatus::Cancelled.is_finished());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunStatus {
    /// Started and not finished: running now, or waiting to be resumed (claimed by the next
    /// engine that can drive it).
    Running,
    /// Unfinished, and waiting for a time or an event (a durable sleep, a signal): no engine
    /// claims it until something wakes it, which sets it `Running` again. Its journal says
    /// what it waits for.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Finished because it was cancelled; the reason is kept as its error.
    Cancelled,
}

impl RunStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Suspended => "suspended",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the run has finished (completed, failed or cancelled): its journal is closed
    /// and nothing drives it again.
    pub fn is_finished(self) -> bool {
        match self {
            RunStatus::Running | RunStatus::Suspended => false,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled => true,
        }
    }

    /// The status named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "suspended" => RunStatus::Suspended,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Its id.
    pub id: RunId,
    /// The workflow's name.
    pub workflow: String,
    /// The fingerprint of the definition it started under.
    pub fingerprint: String,
    /// Running, suspended, completed, failed or cancelled.
    pub status: RunStatus,
    /// The input, as JSON text.
    pub input: String,
    /// The output, as JSON text, once completed.
    pub output: Option<String>,
    /// The error, once failed; the reason, once cancelled.
    pub error: Option<String>,
    /// The worker holding the lease, if any.
    pub owner: Option<String>,
    /// Bumped on every claim; writes carry it (fencing).
    pub lease_token: u64,
    /// When the run was created, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When the run was created or finished, in milliseconds since the Unix epoch.
    pub updated_at: u64,
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A step finished; the payload is its whole output state. (Also a finished sub-operation
    /// of a step, `step/fan_out#1[3]`, with the operation's output.)
    StepCompleted,
    /// A step finished; the payload is what it changed against its input (keys set or
    /// changed, nested objects recursively, and removed keys), which replay applies to the
    /// same input. Written for steps whose input and output are JSON objects, so a step that
    /// sets one field of a large state journals a few bytes.
    StepChanged,
    /// An attempt failed and another will follow; the payload is
    /// `{"error": "...", "retry_at": <unix ms>}`.
    AttemptFailed,
    /// A step failed for good (retries spent or a terminal error); the payload is
    /// `{"error": "..."}`.
    StepFailed,
}

impl EntryKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::StepCompleted => "step_completed",
            EntryKind::StepChanged => "step_changed",
            EntryKind::AttemptFailed => "attempt_failed",
            EntryKind::StepFailed => "step_failed",
        }
    }

    /// The kind named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "step_completed" => EntryKind::StepCompleted,
            "step_changed" => EntryKind::StepChanged,
            "attempt_failed" => EntryKind::AttemptFailed,
            "step_failed" => EntryKind::StepFailed,
            _ => return None,
        })
    }
}

/// One entry of a run's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Position in the run's journal, from 1; also the order steps finished in.
    pub seq: u64,
    /// The step's path.
    pub step: String,
    /// What happened.
    pub kind: EntryKind,
    /// The attempt it happened on, from 1.
    pub attempt: u32,
    /// JSON text; its shape depends on `kind`.
    pub payload: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// How a run finished (or stopped for now), written together with its last journal entry.
///
/// Every store must apply each variant: the status it sets is the variant's
/// ([`RunStatus::Completed`], [`Failed`](RunStatus::Failed), [`Cancelled`](RunStatus::Cancelled),
/// [`Suspended`](RunStatus::Suspended)). A suspended run keeps no lease (its owner is cleared)
/// and is not claimed by [`Store::claim_runs`] until a later write sets it running again; the
/// others are finished and refuse every later append with [`Rejected::Finished`].
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Completed with this output (JSON text).
    Completed(String),
    /// Failed with this error.
    Failed(String),
    /// Cancelled, for this reason (stored as the run's error).
    Cancelled(String),
    /// Suspended: waiting for a time or an event, which the journal records. Unfinished.
    Suspended,
}

/// A new run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Its id (unique; a second run with the same id is refused).
    pub id: RunId,
    /// The workflow's name.
    pub workflow: String,
    /// The definition's fingerprint.
    pub fingerprint: String,
    /// The input, as JSON text.
    pub input: String,
    /// The worker that starts it, which holds its first lease (token 1). Empty for a run
    /// started by a [`Client`](crate::engine::Client), which drives nothing: the run is
    /// stored with no owner (and `lease_expires_at` 0), for the next engine's claim to take.
    pub owner: String,
    /// When that lease expires, in milliseconds since the Unix epoch.
    pub lease_expires_at: u64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create a run.
    CreateRun(NewRun),
    /// Append to a run's journal, and maybe finish the run, if `lease_token` is still current.
    Append {
        /// The run.
        run: RunId,
        /// The token of the lease the writer holds.
        lease_token: u64,
        /// Entries to append.
        entries: Vec<JournalEntry>,
        /// How the run finished, if it did.
        finish: Option<Finish>,
    },
}

impl Write {
    /// The run this write is about.
    pub fn run(&self) -> &RunId {
        match self {
            Write::CreateRun(new) => &new.id,
            Write::Append { run, .. } => run,
        }
    }
}

/// Why a store refused one write of a batch (the others still commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// A run with this id exists already.
    DuplicateRun,
    /// No such run.
    UnknownRun,
    /// The writer's lease token is stale: another worker claimed the run.
    Fenced {
        /// The token the store holds.
        current: u64,
    },
    /// The run is not running: it has finished (its journal is closed) or is suspended
    /// (nothing may append until it is woken).
    Finished,
    /// A journal entry with this sequence number exists already.
    DuplicateEntry {
        /// The sequence number.
        seq: u64,
    },
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::DuplicateRun => f.write_str("a run with this id exists already"),
            Rejected::UnknownRun => f.write_str("no run with this id"),
            Rejected::Fenced { current } => write!(
                f,
                "the lease was lost: another worker claimed the run (lease token now {current})"
            ),
            Rejected::Finished => f.write_str("the run has finished"),
            Rejected::DuplicateEntry { seq } => {
                write!(f, "journal entry {seq} exists already")
            }
        }
    }
}

/// A failure of the store itself (I/O, corruption, a foreign file): nothing of the batch
/// was written.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Which runs [`Store::list_runs`] returns: newest first (by creation time, then by id,
/// highest first), filtered, from a cursor on, at most `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// At most this many (newest first); all when `None`.
    pub limit: Option<usize>,
    /// Only runs after this one in the listing order (older, or as old with a lower id): the
    /// next page after a page that ended with this run.
    pub after: Option<Cursor>,
}

/// A run's place in the listing order of [`Store::list_runs`]: its creation time and id.
/// [`Engine::list_page`](crate::Engine::list_page) returns one to fetch the next page with;
/// it prints as text (`<created_at>:<id>`) and parses back, for an API to hand out.
///
/// ```
/// use durable::store::Cursor;
///
/// let cursor = Cursor { created_at: 1_700_000_000_000, id: "order-7".into() };
/// assert_eq!(cursor.to_string(), "1700000000000:order-7");
/// assert_eq!("1700000000000:order-7".parse::<Cursor>(), Ok(cursor));
/// assert!("order-7".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// The run's creation time, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// The run's id.
    pub id: RunId,
}

impl Cursor {
    /// The cursor just after `run`.
    pub fn after(run: &RunRecord) -> Self {
        Cursor {
            created_at: run.created_at,
            id: run.id.clone(),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.created_at, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once(':')
            .and_then(|(at, id)| Some((at.parse().ok()?, id)));
        match parsed {
            Some((created_at, id)) => Ok(Cursor {
                created_at,
                id: RunId::from(id),
            }),
            None => Err(format!(
                "`{s}` is not a run cursor (`<created_at>:<run id>`, as a page's `next` prints)"
            )),
        }
    }
}

/// See [`Store::watch_claimable`].
pub trait ClaimableWatch: Send + 'static {
    /// A number that changes when runs may have become claimable. Called often, on the
    /// engine's threads: it must take microseconds when nothing changed.
    fn version(&mut self) -> Result<u64, StoreError>;
}

/// Where runs and their journals live. One implementation per backend.
///
/// Every method is one round trip; [`commit`](Store::commit) is the hot path and must write
/// its whole batch in one transaction, durable when the future resolves.
pub trait Store: Send + Sync + 'static {
    /// Writes a batch atomically and durably. Each write gets its own outcome: a refused write
    /// (stale lease, duplicate id) does not stop the others. An `Err` means nothing was written;
    /// the journal then retries the same batch for a while (borrowed, so it needs no copy).
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>>;

    /// A run, if it exists.
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>>;

    /// A run's journal, in sequence order.
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>>;

    /// Takes the lease of every running run that `owner` does not hold and whose lease has
    /// expired or was released, or that never had an owner (a client started it); for a store
    /// only one process can open, every running run `owner` does not hold. Sets `owner`, bumps
    /// the token, and returns the claimed runs with their new tokens. A
    /// [`Suspended`](RunStatus::Suspended) run is never claimed: it waits to be woken.
    fn claim_runs<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>>;

    /// [`claim_runs`](Store::claim_runs), but only the runs whose workflow and fingerprint
    /// `can_drive` accepts, so that a worker never takes a run it cannot drive away from a
    /// worker that could (on a store shared by workers with different workflows registered).
    /// The default claims every run, which suits a store one engine drives at a time.
    fn claim_runs_for<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        can_drive: &'a (dyn Fn(&str, &str) -> bool + Send + Sync),
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        let _ = can_drive;
        self.claim_runs(owner, lease)
    }

    /// A watch on this store for runs that become claimable other than by a lease expiring:
    /// a [`Client`](crate::engine::Client) started one (a [`NewRun`] with no owner), possibly
    /// in another process, or an engine released its leases. The engine's worker asks it every
    /// few tens of milliseconds and claims when its number changed, so a client's run starts
    /// at once instead of on the next heartbeat. The watch must not keep the store open (an
    /// SQLite watch has a connection of its own, without the file's lock), so a dropped
    /// engine lets go of the store at once. `None` (the default): the store cannot tell, and
    /// such runs are claimed on the heartbeat (every third of the lease).
    fn watch_claimable(&self) -> Result<Option<Box<dyn ClaimableWatch>>, StoreError> {
        Ok(None)
    }

    /// Extends the leases `owner` holds; returns how many it still holds.
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Gives up the leases `owner` holds (a clean shutdown), so another worker may claim
    /// those runs at once instead of waiting for the leases to expire.
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Runs matching `filter`, newest first (by creation time, then by id, highest first).
    /// Costs what it returns: a store must not scan every run to return a page.
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>>;

    /// Called by [`EngineBuilder::build`](crate::EngineBuilder::build) before the engine
    /// touches anything. A store whose claims take every unfinished run (one driver at a
    /// time, like [`SqliteStore`](sqlite::SqliteStore)) refuses a second engine while one
    /// drives it, with an error naming the store; the default accepts any number of engines,
    /// whose leases decide who drives which run.
    fn attach(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The engine that [`attach`](Store::attach)ed stopped driving the store (it shut down or
    /// was dropped); another may attach now.
    fn detach(&self) {}

    /// Gives back what the store holds in the operating system (files, their locks), so the
    /// same database can be opened again at once; every later call fails. Called by
    /// [`Engine::shutdown_gracefully`](crate::Engine::shutdown_gracefully). The default does
    /// nothing.
    fn close(&self) {}
}
