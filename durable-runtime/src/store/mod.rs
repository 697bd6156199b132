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
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

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

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A step finished; the payload is its output state.
    StepCompleted,
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
            EntryKind::AttemptFailed => "attempt_failed",
            EntryKind::StepFailed => "step_failed",
        }
    }

    /// The kind named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "step_completed" => EntryKind::StepCompleted,
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
    /// The worker that starts it, which holds its first lease (token 1). Empty: nobody holds
    /// it; the run is queued for any worker to claim (a client that drives no runs starts
    /// runs this way).
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

/// Which runs [`Store::list_runs`] returns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// At most this many (newest first); all when `None`.
    pub limit: Option<usize>,
}

/// What a worker asks of [`Store::claim_runs`].
///
/// ```
/// use durable::store::Claim;
/// let claim = Claim::new("worker-1", std::time::Duration::from_secs(30)).limit(16);
/// assert_eq!((claim.owner, claim.limit), ("worker-1", 16));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The claiming worker.
    pub owner: &'a str,
    /// How long the leases it takes last.
    pub lease: Duration,
    /// At most this many runs (the worker's free capacity); oldest first.
    pub limit: usize,
    /// Only runs of these definitions, as (workflow name, fingerprint) pairs (any run when
    /// `None`). A store shared by many processes honours it, so a worker never holds a run it
    /// cannot drive (in a rolling deploy, runs started under an old definition wait for a
    /// worker that still registers it); a store one process opens may ignore it and hand over
    /// every run, so the engine can report the runs it cannot resume.
    pub workflows: Option<&'a [(&'a str, &'a str)]>,
}

impl<'a> Claim<'a> {
    /// A claim of any number of runs of any workflow.
    pub fn new(owner: &'a str, lease: Duration) -> Self {
        Self {
            owner,
            lease,
            limit: usize::MAX,
            workflows: None,
        }
    }

    /// At most `limit` runs.
    pub fn limit(self, limit: usize) -> Self {
        Self { limit, ..self }
    }

    /// Only runs of these (workflow name, fingerprint) pairs (see the field).
    pub fn workflows(self, workflows: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            workflows: Some(workflows),
            ..self
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

    /// Takes the lease of up to `claim.limit` unfinished runs, oldest first, that
    /// `claim.owner` does not hold and whose lease has expired or was released (for a store
    /// only one process can open, any unfinished run `owner` does not hold): sets `owner`,
    /// bumps the token, and returns the claimed runs with their new tokens.
    fn claim_runs<'a>(
        &'a self,
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>>;

    /// Resolves when runs may have become claimable because of another process (a run was
    /// queued, leases were released). Only a hint, to claim promptly: the engine claims on a
    /// timer as well. Stores that cannot tell never resolve (the default).
    fn work_available(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
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

    /// Runs matching `filter`, newest first.
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>>;
}
