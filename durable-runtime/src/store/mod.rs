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

mod event;
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use event::EntryKind;
pub(crate) use event::Event;

/// The state of a run as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Started and not finished: running now, or waiting to be resumed.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
}

impl RunStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }

    /// The status named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
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
    /// Running, completed or failed.
    pub status: RunStatus,
    /// The input, as JSON text.
    pub input: String,
    /// The output, as JSON text, once completed.
    pub output: Option<String>,
    /// The error, once failed.
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
    /// JSON text; its shape depends on `kind` (see [`EntryKind`]). A store keeps it as it is.
    pub payload: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// How a run finished, written together with its last journal entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Completed with this output (JSON text).
    Completed(String),
    /// Failed with this error.
    Failed(String),
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
    /// The worker that starts it, which holds its first lease (token 1).
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
    /// The run has finished; its journal is closed.
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

    /// Takes the lease of every unfinished run that `owner` does not hold and whose lease has
    /// expired or was released (for a store only one process can open, every unfinished run
    /// `owner` does not hold): sets `owner`, bumps the token, and returns the claimed runs
    /// with their new tokens.
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
