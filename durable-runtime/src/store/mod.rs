//! The `Store` trait: the engine's only seam to storage, and one module per backend.
//!
//! The engine never talks SQL. It hands a store *batches* of writes (see [`Write`]), one
//! transaction and one fsync per batch, which is what lets the journal group-commit the steps
//! of many concurrent runs. Every write to an existing run carries the lease token of the
//! worker that holds it; a store refuses a write whose token is stale, so a worker that lost
//! its lease (a zombie) can never overwrite the journal of the worker that took over.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::step::BoxFuture;
use crate::RunId;

mod event;
mod inbox;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use event::EntryKind;
pub(crate) use event::Event;
pub use inbox::{child_end_payload, kinds as inbox_kinds, InboxMessage};

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
    /// When a [`Suspended`](RunStatus::Suspended) run wakes by itself (a durable sleep), in
    /// milliseconds since the Unix epoch; `None` for a run that is not suspended, or waits
    /// for an event only.
    pub wake_at: Option<u64>,
    /// The reason of a cancellation requested ([`Store::request_cancel`]) and not carried
    /// out yet: the worker driving the run ends it as cancelled.
    pub cancel_requested: Option<String>,
    /// The run (and its `call` step) that started this one as a child, if one did.
    pub parent: Option<ParentLink>,
}

/// The parent of a child run: the run whose `call` item started it, and that item's journal
/// path. A store keeps it with the child ([`NewRun::parent`], [`RunRecord::parent`]) and, in
/// the transaction that finishes the child, delivers the child's end to the parent's inbox
/// (kind [`child`](inbox_kinds::CHILD), named `step`), waking the parent if it is suspended;
/// a cancellation requested for the parent is requested for its unfinished children too.
///
/// ```
/// use durable::store::ParentLink;
///
/// let link = ParentLink { run: "order-7".into(), step: "charge".into() };
/// assert_eq!(link.run.as_str(), "order-7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParentLink {
    /// The parent run.
    pub run: RunId,
    /// The journal path of the parent's `call` item.
    pub step: String,
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

/// How a run finished (or stopped for now), written together with its last journal entry.
///
/// Every store must apply each variant: the status it sets is the variant's
/// ([`RunStatus::Completed`], [`Failed`](RunStatus::Failed), [`Cancelled`](RunStatus::Cancelled),
/// [`Suspended`](RunStatus::Suspended)). A suspended run keeps no lease (its owner is cleared)
/// and is not claimed by [`Store::claim_runs`] until it is due (its `wake_at` passed) or
/// [woken](Store::wake); the others are finished and refuse every later append with
/// [`Rejected::Finished`].
///
/// A suspension never sleeps through what has already come, decided in the transaction that
/// applies it: when the run's cancellation was requested ([`Store::request_cancel`]), or its
/// inbox holds a message numbered past what the suspension has seen (`inbox_seen`), the run
/// is left running with no owner (and no `wake_at`) instead, claimable at once, so the next
/// claim drives it on and takes the message (or carries the cancellation out).
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Completed with this output (JSON text).
    Completed(String),
    /// Failed with this error.
    Failed(String),
    /// Cancelled, for this reason (stored as the run's error).
    Cancelled(String),
    /// Suspended: waiting for a time or an event, which the journal records. Unfinished.
    Suspended {
        /// When it wakes by itself, in milliseconds since the Unix epoch (the earliest
        /// deadline it waits for); `None`: only an event ([`Store::wake`]) wakes it.
        wake_at: Option<u64>,
        /// The last inbox message the run's waits had seen when they looked and found
        /// nothing to take ([`InboxMessage::seq`]; 0 for an empty inbox; the lowest, when
        /// several waits looked): a message numbered past it came while the run was
        /// suspending, and leaves the run awake (see above). `None`: no wait looked at the
        /// inbox (a sleep alone), so no message concerns the suspension.
        inbox_seen: Option<u64>,
    },
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
    /// The run whose `call` item starts this one as its child, if any (see [`ParentLink`]).
    pub parent: Option<ParentLink>,
}

/// One write of a batch.
///
/// Exhaustive on purpose, as [`Finish`] is: a store must apply every write, so a new kind of
/// write is a compile error in every store rather than an arm a store could skip.
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// A run with this id exists already.
    #[error("a run with this id exists already")]
    DuplicateRun,
    /// No such run.
    #[error("no run with this id")]
    UnknownRun,
    /// The writer's lease token is stale: another worker claimed the run.
    #[error("the lease was lost: another worker claimed the run (lease token now {current})")]
    Fenced {
        /// The token the store holds.
        current: u64,
    },
    /// The run is not running: it has finished (its journal is closed) or is suspended
    /// (nothing may append until it is woken).
    #[error("the run has finished")]
    Finished,
    /// A journal entry with this sequence number exists already (it is between 1 and the
    /// run's last sequence number). After a commit that failed and was retried, this means
    /// the first try did commit.
    #[error("journal entry {seq} exists already")]
    DuplicateEntry {
        /// The sequence number.
        seq: u64,
    },
    /// A journal entry's sequence number is not the next one: it leaves a gap after the
    /// run's last entry (or after the entry before it in the same write), or it is 0.
    #[error("journal entry {got} is out of order: the next entry of the run is {expected}")]
    OutOfOrder {
        /// The sequence number the entry had to have.
        expected: u64,
        /// The one it had.
        got: u64,
    },
}

/// Checks the sequence numbers of one [`Write::Append`] against the contract of
/// [`Store`]: `seqs` must run on from `last`, the run's last sequence number (0 for an empty
/// journal), without a gap. For backends that know `last` before they write.
///
/// ```
/// use durable::store::{check_sequence, Rejected};
///
/// assert_eq!(check_sequence(2, [3, 4]), Ok(()));
/// assert_eq!(check_sequence(2, [2]), Err(Rejected::DuplicateEntry { seq: 2 }));
/// assert_eq!(check_sequence(2, [4]), Err(Rejected::OutOfOrder { expected: 3, got: 4 }));
/// assert_eq!(check_sequence(0, [1, 3]), Err(Rejected::OutOfOrder { expected: 2, got: 3 }));
/// ```
pub fn check_sequence(last: u64, seqs: impl IntoIterator<Item = u64>) -> Result<(), Rejected> {
    for (expected, got) in (last + 1..).zip(seqs) {
        if got != expected {
            return Err(if (1..=last).contains(&got) {
                Rejected::DuplicateEntry { seq: got }
            } else {
                Rejected::OutOfOrder { expected, got }
            });
        }
    }
    Ok(())
}

/// What kind of failure a [`StoreError`] is: decides whether the journal retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A failure that may pass by itself: an I/O hiccup, a busy or locked database, a dropped
    /// connection. The journal retries the batch for a while.
    Transient,
    /// The disk (or the store's size cap) is full. The journal retries the batch for a while,
    /// as space may come back; reading goes on meanwhile.
    Full,
    /// Stored data is damaged: a checksum mismatch, a row that does not decode, a file
    /// truncated behind the store's back. Retrying cannot help.
    Corrupt,
    /// The storage is not this store's: another application's database, a schema written by
    /// a newer version of durable, a file that is not a database.
    Foreign,
    /// The store (or the engine's journal writer) was closed.
    Closed,
    /// Another engine or process drives the store.
    InUse,
    /// Anything else (a bad path, no permission, a bug): not retried.
    Other,
}

impl StoreErrorKind {
    /// Whether the journal retries a commit that failed with this kind: only
    /// [`Transient`](Self::Transient) and [`Full`](Self::Full) failures may pass by themselves.
    pub fn is_retryable(self) -> bool {
        matches!(self, StoreErrorKind::Transient | StoreErrorKind::Full)
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreErrorKind::Transient => "transient",
            StoreErrorKind::Full => "full",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Foreign => "foreign",
            StoreErrorKind::Closed => "closed",
            StoreErrorKind::InUse => "in use",
            StoreErrorKind::Other => "other",
        })
    }
}

/// A failure of the store itself (I/O, corruption, a foreign file): nothing of the batch
/// was written.
///
/// It has a [`kind`](Self::kind), which decides whether the journal retries it (only
/// [transient](StoreErrorKind::Transient) and [full](StoreErrorKind::Full) failures are), a
/// message that names the store and says what went wrong (including what its cause said, so
/// printing the error alone tells everything), and the cause itself as
/// [`source`](std::error::Error::source), to walk or downcast. Cloning it shares the cause.
///
/// ```
/// use std::error::Error as _;
/// use durable::store::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "the network is down");
/// let err = StoreError::transient(format!("my store: {io}")).with_source(io);
/// assert_eq!(err.kind(), StoreErrorKind::Transient);
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "my store: the network is down");
/// let cause = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).unwrap();
/// assert_eq!(cause.kind(), std::io::ErrorKind::TimedOut);
///
/// let err = StoreError::corrupt("entry 3 does not match its checksum").context("run r1");
/// assert_eq!(err.to_string(), "run r1: entry 3 does not match its checksum");
/// assert!(!err.is_retryable());
/// ```
#[derive(Debug, Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// An error of this kind with this message and no source.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A [`Transient`](StoreErrorKind::Transient) error: retried by the journal.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Transient, message)
    }

    /// A [`Full`](StoreErrorKind::Full) error: retried by the journal.
    pub fn full(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Full, message)
    }

    /// A [`Corrupt`](StoreErrorKind::Corrupt) error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Corrupt, message)
    }

    /// A [`Foreign`](StoreErrorKind::Foreign) error.
    pub fn foreign(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Foreign, message)
    }

    /// A [`Closed`](StoreErrorKind::Closed) error.
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Closed, message)
    }

    /// An [`InUse`](StoreErrorKind::InUse) error.
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::InUse, message)
    }

    /// An [`Other`](StoreErrorKind::Other) error.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Other, message)
    }

    /// The same error with `source` as its cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The same error (kind and source kept) with `context` put before its message:
    /// `"<context>: <message>"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the journal retries a commit that failed with it (see
    /// [`StoreErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The message (what [`Display`](fmt::Display) prints).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// By hand, not derived: the source is shared (`Arc`, so that the error stays `Clone`) and
// `source()` must hand out the error inside the `Arc`, so that callers can downcast to it.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

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

    /// Resolves when the worker should ask [`version`](Self::version) again: after `poll`
    /// by default. A store told of changes (PostgreSQL, by LISTEN/NOTIFY) resolves as soon
    /// as one is, so a run started in another process is claimed at once.
    fn changed(&mut self, poll: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(poll))
    }
}

/// What a worker asks of [`Store::claim_runs`].
///
/// ```
/// use durable::store::Claim;
/// let claim = Claim::new("worker-1", std::time::Duration::from_secs(30)).limit(16);
/// assert_eq!((claim.owner, claim.limit), ("worker-1", 16));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claim<'a> {
    /// The claiming worker.
    pub owner: &'a str,
    /// How long the leases it takes last.
    pub lease: Duration,
    /// At most this many runs (the worker's free capacity); oldest first.
    pub limit: usize,
    /// Only runs of these definitions, as (workflow name, fingerprint) pairs (any run when
    /// `None`), so a worker never holds a run it cannot drive (in a rolling deploy, runs
    /// started under an old definition wait for a worker that still registers it).
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

    /// Whether the claim takes runs of this workflow started under this fingerprint.
    ///
    /// ```
    /// use durable::store::Claim;
    /// let defs = [("signup", "f1")];
    /// let claim = Claim::new("w", std::time::Duration::from_secs(30)).workflows(&defs);
    /// assert!(claim.accepts("signup", "f1"));
    /// assert!(!claim.accepts("signup", "f0"));
    /// assert!(Claim::new("w", std::time::Duration::from_secs(30)).accepts("any", "f"));
    /// ```
    pub fn accepts(&self, workflow: &str, fingerprint: &str) -> bool {
        self.workflows.is_none_or(|defs| {
            defs.iter()
                .any(|(w, f)| *w == workflow && *f == fingerprint)
        })
    }
}

/// Where runs and their journals live. One implementation per backend.
///
/// Every method is one round trip; [`commit`](Store::commit) is the hot path and must write
/// its whole batch in one transaction, durable when the future resolves.
///
/// # Journal sequence numbers
///
/// A run's journal is numbered 1, 2, 3, ... without gaps, in the order its entries were
/// committed. A store checks every [`Write::Append`] against it, after the run's existence
/// ([`Rejected::UnknownRun`]), its lease token ([`Rejected::Fenced`]) and that it is still
/// running ([`Rejected::Finished`]):
///
/// - its entries must be consecutive and start right after the run's last entry (at 1 for an
///   empty journal); the writes of one batch apply in order, so a batch may hold several
///   appends to one run;
/// - an entry whose number exists already (1 to the last) refuses the write with
///   [`Rejected::DuplicateEntry`]; any other wrong number (a gap, 0, an entry that does not
///   follow the one before it in the write) with [`Rejected::OutOfOrder`], naming the number
///   expected;
/// - a refused write leaves nothing behind: none of its entries, and the run not finished.
///
/// The engine numbers a run's entries under one lock and submits them in that order, so it
/// never sends a gap. The journal writer relies on `DuplicateEntry`: when a commit failed
/// and the retried batch finds its entries already there, the first try had committed.
///
/// # Errors
///
/// A method fails with a [`StoreError`] whose [`kind`](StoreError::kind) says what happened;
/// the journal retries a failed [`commit`](Store::commit) only when the kind
/// [is retryable](StoreErrorKind::is_retryable) (transient, or full), and fails the writes at
/// once otherwise. The suite in `durable-tests`' `conformance` module checks a backend
/// against this contract.
pub trait Store: Send + Sync + 'static {
    /// Writes a batch atomically and durably. Each write gets its own outcome: a refused write
    /// (stale lease, duplicate id) does not stop the others. An `Err` means nothing was written;
    /// the journal then retries the same batch for a while (borrowed, so it needs no copy).
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>>;

    /// How many batches the journal may commit at once; 1 (the default) for a store that
    /// commits one batch at a time anyway (one file, one writer). Batches in flight together
    /// never write to the same run, so each run's writes still commit in the order made; a
    /// store whose commits wait on a server gains by overlapping one batch's round trip and
    /// fsync with the next one's work.
    fn commits_in_flight(&self) -> usize {
        1
    }

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

    /// Takes the lease of up to `claim.limit` running runs, oldest first (by creation time,
    /// then id), that `claim.owner` does not hold and whose lease has expired or was released,
    /// or that never had an owner (a client started it); for a store only one process can
    /// open, any running run `owner` does not hold. A store shared by several processes takes
    /// only runs whose (workflow, fingerprint) the claim [accepts](Claim::accepts), so that a
    /// worker never takes a run it cannot drive away from a worker that could; a store one
    /// process drives may take any (the engine reports those it cannot drive). Sets `owner`, bumps the token, and returns the
    /// claimed runs with their new tokens. A [`Suspended`](RunStatus::Suspended) run is
    /// claimed only once it is due (its `wake_at` is now or past: it is set running again,
    /// its `wake_at` cleared), found through an index on the due time, never by reading every
    /// suspended run, or when its inbox holds a message delivered after its suspension was
    /// recorded that did not wake it (a state this contract never leaves behind, but a
    /// database written by an earlier version of durable may hold: such runs are found
    /// through an index that holds only them); otherwise it waits to be
    /// [woken](Store::wake).
    fn claim_runs<'a>(
        &'a self,
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>>;

    /// A watch on this store for runs that become claimable other than by a lease expiring:
    /// a [`Client`](crate::engine::Client) started one (a [`NewRun`] with no owner), possibly
    /// in another process, an engine released its leases, a suspended run was
    /// [woken](Store::wake), or a cancellation was [requested](Store::request_cancel). The engine's worker asks it every
    /// few tens of milliseconds and claims when its number changed, so a client's run starts
    /// at once instead of on the next heartbeat. The watch must not keep the store open (an
    /// SQLite watch has a connection of its own, without the file's lock), so a dropped
    /// engine lets go of the store at once. `None` (the default): the store cannot tell, and
    /// such runs are claimed on the heartbeat (every third of the lease).
    fn watch_claimable(&self) -> Result<Option<Box<dyn ClaimableWatch>>, StoreError> {
        Ok(None)
    }

    /// The earliest `wake_at` of a [`Suspended`](RunStatus::Suspended) run, if any: the worker
    /// sleeps until then (bounded by its heartbeat) and claims. One index lookup. The default
    /// (`None`) suits a store that never suspends runs with a due time.
    fn next_wake_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Makes a [`Suspended`](RunStatus::Suspended) run claimable now (running, no owner, its
    /// `wake_at` cleared), in one conditional write: `Ok(false)` when it was not suspended
    /// (unknown, running or finished), so of two wakers only one wakes it. A watch
    /// ([`watch_claimable`](Store::watch_claimable)) reports the run claimable. For a waker
    /// without a message: signals, callbacks and children wake their run in
    /// [`deliver`](Store::deliver)'s transaction, and a cancellation in
    /// [`request_cancel`](Store::request_cancel)'s. The default refuses: the store cannot wake
    /// runs.
    fn wake<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = run;
        Box::pin(std::future::ready(Err(StoreError::other(
            "this store cannot wake suspended runs",
        ))))
    }

    /// Requests that an unfinished run be cancelled for `reason`: records the request on the
    /// run (kept if one was recorded already), and [wakes](Store::wake) it if it is
    /// suspended, in one transaction. The worker driving it (or the next to claim it) ends
    /// it with [`Finish::Cancelled`]. Refuses an unknown run ([`Rejected::UnknownRun`]) and a
    /// finished one ([`Rejected::Finished`]). The default refuses: the store cannot cancel.
    fn request_cancel<'a>(
        &'a self,
        run: &'a RunId,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        let _ = (run, reason);
        Box::pin(std::future::ready(Err(StoreError::other(
            "this store cannot cancel runs",
        ))))
    }

    /// The running runs `owner` holds whose cancellation was requested, with the reasons:
    /// the worker asks when its watch changed and on its heartbeat, and cancels them. Costs
    /// what it returns (an index on the requests). The default: none.
    fn cancel_requests<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RunId, String)>, StoreError>> {
        let _ = owner;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Reopens a [`Failed`](RunStatus::Failed) run to go on from where it failed: appends
    /// `entries` (numbered on from the run's last entry, as [`commit`](Store::commit)
    /// checks), sets the run running with no owner and clears its error, in one conditional
    /// transaction, for the next claim to take. Refuses an unknown run
    /// ([`Rejected::UnknownRun`]), one that is not failed ([`Rejected::Finished`]) and
    /// wrongly numbered entries, leaving nothing behind. The default refuses: the store
    /// cannot reopen runs.
    fn reopen<'a>(
        &'a self,
        run: &'a RunId,
        entries: &'a [JournalEntry],
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        let _ = (run, entries);
        Box::pin(std::future::ready(Err(StoreError::other(
            "this store cannot reopen failed runs",
        ))))
    }

    /// Extends the leases `owner` holds (its running runs) to the store's now plus `lease`;
    /// returns how many it still holds. The expiry must count from no earlier than the
    /// request was made, as a claim's and a created run's: a worker counts each lease from
    /// just before it sent the request, and starts steps only until then plus four fifths of
    /// the lease (see "Fencing" in ARCHITECTURE.md).
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

    /// Appends a message to `run`'s inbox (see [`InboxMessage`]), in one transaction: refuses
    /// an unknown run ([`Rejected::UnknownRun`]) or a finished one ([`Rejected::Finished`]),
    /// and a second [callback](inbox_kinds::CALLBACK) message with the same `name` (token) for
    /// the run ([`Rejected::DuplicateEntry`] naming the first one's sequence number); appends
    /// the message with the run's next inbox sequence number (from 1), which it returns; and
    /// if the run is [suspended](RunStatus::Suspended), wakes it: it becomes running with no
    /// owner, claimable at once (and the [watch](Store::watch_claimable) says so). A refused
    /// message leaves nothing behind. Called from any process (a
    /// [`Client`](crate::engine::Client) beside the engine), so it must work without the
    /// engine's lease. The default refuses: the store has no inbox.
    fn deliver<'a>(
        &'a self,
        run: &'a RunId,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, Result<Result<u64, Rejected>, StoreError>> {
        let _ = (run, kind, name, payload);
        Box::pin(std::future::ready(Err(StoreError::other(
            "this store has no inbox: it cannot take signals or callback completions",
        ))))
    }

    /// `run`'s inbox, in sequence order (empty for an unknown run). A store that writes
    /// messages somewhere they can be damaged or edited (a file, a server) keeps a checksum
    /// with each and refuses one that does not match it with a
    /// [`Corrupt`](StoreErrorKind::Corrupt) error naming the run and the message, rather than
    /// hand a run a payload nobody sent. The default: empty.
    fn load_inbox<'a>(
        &'a self,
        run: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, StoreError>> {
        let _ = run;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// Writes the crate's unit tests commit: a run held by `me` and a one-entry append to it.
/// For a test store wrapping another in field `$inner`: the `Store` methods it has to provide
/// besides `commit`, forwarded.
#[cfg(test)]
macro_rules! forward_store_reads {
    ($inner:ident) => {
        fn load_run<'a>(
            &'a self,
            id: &'a $crate::RunId,
        ) -> $crate::step::BoxFuture<
            'a,
            Result<Option<$crate::store::RunRecord>, $crate::store::StoreError>,
        > {
            self.$inner.load_run(id)
        }
        fn load_journal<'a>(
            &'a self,
            id: &'a $crate::RunId,
        ) -> $crate::step::BoxFuture<
            'a,
            Result<Vec<$crate::store::JournalEntry>, $crate::store::StoreError>,
        > {
            self.$inner.load_journal(id)
        }
        fn claim_runs<'a>(
            &'a self,
            claim: $crate::store::Claim<'a>,
        ) -> $crate::step::BoxFuture<
            'a,
            Result<Vec<$crate::store::RunRecord>, $crate::store::StoreError>,
        > {
            self.$inner.claim_runs(claim)
        }
        fn renew_leases<'a>(
            &'a self,
            owner: &'a str,
            lease: std::time::Duration,
        ) -> $crate::step::BoxFuture<'a, Result<usize, $crate::store::StoreError>> {
            self.$inner.renew_leases(owner, lease)
        }
        fn release_leases<'a>(
            &'a self,
            owner: &'a str,
        ) -> $crate::step::BoxFuture<'a, Result<(), $crate::store::StoreError>> {
            self.$inner.release_leases(owner)
        }
        fn list_runs(
            &self,
            filter: $crate::store::RunFilter,
        ) -> $crate::step::BoxFuture<
            '_,
            Result<Vec<$crate::store::RunRecord>, $crate::store::StoreError>,
        > {
            self.$inner.list_runs(filter)
        }
    };
}
#[cfg(test)]
pub(crate) use forward_store_reads;

#[cfg(test)]
pub(crate) mod test_writes {
    use super::{EntryKind, Finish, JournalEntry, NewRun, Write};

    /// A new run `id` of workflow `wf`, held by `me` with a lease far in the future.
    pub(crate) fn create(id: &str) -> Write {
        Write::CreateRun(NewRun {
            id: id.into(),
            workflow: "wf".into(),
            fingerprint: "f".into(),
            input: "{}".into(),
            owner: "me".into(),
            lease_expires_at: u64::MAX / 2,
            parent: None,
        })
    }

    /// Entry `seq` (step `s<seq>`, completed) appended to `id` under lease token 1.
    pub(crate) fn append(id: &str, seq: u64, finish: Option<Finish>) -> Write {
        Write::Append {
            run: id.into(),
            lease_token: 1,
            entries: vec![JournalEntry {
                seq,
                step: format!("s{seq}"),
                kind: EntryKind::StepCompleted,
                attempt: 1,
                payload: "{}".into(),
                at: seq,
            }],
            finish,
        }
    }
}
