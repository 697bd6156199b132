//! The embedded default store: one SQLite file, WAL, `synchronous=FULL`.
//!
//! One process drives a file at a time: opening takes an exclusive lock on it, so every lease
//! found in the file belongs to a process that is gone, and [`claim_runs`](Store::claim_runs)
//! takes every unfinished run at once (no waiting for leases to expire after a crash). For the
//! same reason one engine at a time drives a store and its clones: building a second engine
//! on it fails with [`Error::StoreInUse`](crate::Error::StoreInUse) until the first one shuts
//! down or is dropped. Writes
//! go through one connection on a blocking thread, a whole batch per transaction; reads use a
//! second connection, which WAL lets run beside the writer.
//!
//! Each journal entry is stored with a checksum (CRC-32C of its sequence number, step, kind,
//! attempt, payload and time) that [`load_journal`](Store::load_journal) verifies: an entry
//! damaged on disk or edited by hand is refused with an error naming its run and step,
//! instead of coming back as a valid, wrong output. A run's input and its output (or error)
//! carry a checksum too, verified by [`load_run`](Store::load_run) (so by `wait` and `status`)
//! and, for the input, when the run's journal is loaded to resume it; listing runs does not
//! verify. Each inbox message carries one too (of its number, kind, name, payload and time),
//! verified by [`load_inbox`](Store::load_inbox). Rows keep the checksum they were written
//! with, each algorithm in columns of its own (`sqlite/checksum.rs` says what each covers):
//! CRC-32C from schema version 8, 64-bit FNV-1a in rows versions 3 to 7 wrote, none in rows
//! from before checksums existed (schema version 1, and inbox messages before version 7,
//! migrated in place on open; read as they are). A row is intact when every checksum it
//! carries matches, so none is ever checked with the wrong algorithm.
//!
//! A run's row keeps the number of its last inbox message (`inbox_last`, set by every
//! delivery) and how far its last suspension had seen (`inbox_seen`): a suspension whose waits
//! did not see the last message leaves the run awake, in the batch's transaction, and a claim
//! wakes any suspended run with `inbox_last > inbox_seen` (only a file an older version wrote
//! holds one) through a partial index of those alone.
//!
//! A [`Client`](crate::engine::Client) in another process (a CLI, a dashboard) opens the file
//! beside the engine with [`SqliteStore::open_client`]: without the exclusive lock, under
//! SQLite's own locking (WAL lets it read beside the engine's writer). It reads runs,
//! starts them by inserting a run row with no owner, and sends signals and completes
//! callbacks by appending to a run's inbox ([`Store::deliver`], which also sets a suspended
//! run running with no owner); the engine's worker notices either within tens of
//! milliseconds ([`Store::watch_claimable`], from `PRAGMA data_version`) and claims the run;
//! only the engine drives runs. The shortcut above stays true: a client holds no
//! lease, so every lease in the file is the engine's own or a dead process's.
//!
//! Beside the file the store keeps a marker, `<file>.durable-marker`, written when the store
//! is created. A store file found empty while its marker exists was truncated or replaced:
//! opening it is refused rather than silently starting a new, empty store. A file that is gone
//! (deleted on purpose, with its `-wal` and `-shm`) starts a new store.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::{
    check_sequence, child_end_payload, inbox_kinds, Claim, ClaimableWatch, Finish, InboxMessage,
    JournalEntry, ParentLink, Rejected, RunFilter, RunRecord, RunStatus, Store, StoreError,
    StoreErrorKind, Write,
};
use crate::clock::now_millis;
use crate::step::BoxFuture;
use crate::RunId;

mod checksum;

use checksum::{Fields, Stored};

/// The schema version this code writes and reads. A file of an older version is migrated in
/// place when opened (see [`migrate`]).
const SCHEMA_VERSION: i64 = 8;

/// How hard SQLite works to make each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync the WAL on every commit: a committed step survives a power cut. The default.
    #[default]
    Full,
    /// fsync only at checkpoints: a committed step survives a process crash, but a power cut
    /// may lose the last commits.
    Normal,
    /// Never fsync: for throwaway data only.
    Off,
}

/// Options of [`SqliteStore::open_with`].
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    /// Durability of each commit.
    pub synchronous: Synchronous,
}

/// A store in one SQLite file.
///
/// ```
/// use durable::store::sqlite::SqliteStore;
///
/// let dir = std::env::temp_dir().join(format!("durable-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteStore::open(dir.join("runs.db"))?;
/// // A second store on the same file is refused while the first is open.
/// assert!(SqliteStore::open(dir.join("runs.db")).is_err());
/// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), durable::store::StoreError>(())
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order is drop order: the connections close before the lock is released.
    // `None` once the store is closed.
    writer: Mutex<Option<Connection>>,
    reader: Mutex<Option<Connection>>,
    path: PathBuf,
    lock: Mutex<Option<File>>,
    /// An engine drives this store (see [`Store::attach`]).
    attached: AtomicBool,
    /// Opened by [`SqliteStore::open_client`]: no file lock, and no engine may attach.
    client: bool,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with `synchronous=FULL`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the store at `path`.
    ///
    /// Fails with a clear error when the file is not an SQLite database, is the database of
    /// another application, was written by a newer version of this crate, is open in
    /// another engine, or is empty although its marker says a store was created there
    /// (see the [module documentation](self)).
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let context = format!("sqlite store `{shown}`");
        let err =
            |kind: StoreErrorKind, what: String| StoreError::new(kind, what).context(&context);
        let io = |what: &str, e: std::io::Error| {
            StoreError::new(io_kind(&e), format!("{what}: {e}"))
                .with_source(e)
                .context(&context)
        };
        // A file deleted on purpose starts a new store; one found empty was truncated.
        let existed = path.exists();
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("cannot open the file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(err(
                    StoreErrorKind::InUse,
                    "the file is open in another durable engine (another process, or another \
                     SqliteStore::open in this one); one engine drives an SQLite store at a \
                     time: stop the other one, or share one engine"
                        .into(),
                ))
            }
            Err(TryLockError::Error(e)) => return Err(io("cannot lock the file", e)),
        }
        let marker = marker_path(&path);
        let empty = lock
            .metadata()
            .map_err(|e| io("cannot read the file's size", e))?
            .len()
            == 0;
        if existed && empty && marker.exists() {
            return Err(err(
                StoreErrorKind::Corrupt,
                format!(
                    "the file is empty, but `{}` says a durable store was created here: the file \
                 was truncated or replaced, and its runs are gone from it. Restore it from a \
                 backup, or delete the marker to start a new, empty store at this path",
                    marker.display()
                ),
            ));
        }
        check_header(&lock).map_err(|e| e.context(&context))?;
        // Check what the file is before any pragma (WAL mode rewrites the header).
        let probe = Connection::open(&path).map_err(|e| db_error(e).context(&context))?;
        prepare_schema(&probe).map_err(|e| e.context(&context))?;
        drop(probe);
        if !marker.exists() {
            std::fs::write(
                &marker,
                format!(
                    "`{}` beside this file is a durable store. If that file is ever found empty, \
                     durable refuses to open it instead of starting a new store; delete this \
                     marker to start anew.\n",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
            )
            .map_err(|e| {
                io(
                    &format!("cannot write the marker `{}`", marker.display()),
                    e,
                )
            })?;
        }
        let writer =
            connect(&path, options.synchronous).map_err(|e| db_error(e).context(&context))?;
        let reader =
            connect(&path, options.synchronous).map_err(|e| db_error(e).context(&context))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(Some(reader)),
                path,
                lock: Mutex::new(Some(lock)),
                attached: AtomicBool::new(false),
                client: false,
            }),
        })
    }

    /// Opens the store at `path` for a [`Client`](crate::engine::Client), beside the engine
    /// that drives it (in this process or another): without the file's exclusive lock, so it
    /// works while an engine holds the file, and under SQLite's own locking (each write waits
    /// up to 5s for the engine's). The file must be a store already, of this version's schema
    /// (the engine creates and migrates it). No engine can be built on the returned store
    /// ([`Error::StoreInUse`](crate::Error::StoreInUse)): a client only reads runs, starts
    /// them and delivers signals and callback completions, for the engine to claim.
    ///
    /// ```
    /// use durable::store::sqlite::SqliteStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("durable-doc-client-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let engine_side = SqliteStore::open(dir.join("runs.db"))?;
    /// // The engine's store holds the file; a client opens it all the same.
    /// let client_side = SqliteStore::open_client(dir.join("runs.db"))?;
    /// // A file that is no store yet is refused.
    /// assert!(SqliteStore::open_client(dir.join("missing.db")).is_err());
    /// # drop((engine_side, client_side)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), durable::store::StoreError>(())
    /// ```
    pub fn open_client(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let context = format!("sqlite store `{shown}` (client)");
        let file = File::open(&path).map_err(|e| {
            StoreError::new(
                io_kind(&e),
                format!(
                    "cannot open the file: {e}; a client opens a store an engine created (build \
                     an engine on it first)"
                ),
            )
            .with_source(e)
            .context(&context)
        })?;
        check_header(&file).map_err(|e| e.context(&context))?;
        drop(file);
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let connect = || -> Result<Connection, StoreError> {
            let conn = Connection::open_with_flags(&path, flags)
                .map_err(|e| db_error(e).context(&context))?;
            conn.execute_batch("PRAGMA busy_timeout = 5000;")
                .map_err(|e| db_error(e).context(&context))?;
            // As the engine's connections do (see `connect`): no recompiling per bound id.
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(|e| db_error(e).context(&context))?;
            Ok(conn)
        };
        let writer = connect()?;
        let version: Option<String> = writer
            .query_row(
                "SELECT value FROM durable_meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| {
                StoreError::foreign(format!("not a durable store ({e})"))
                    .with_source(e)
                    .context(&context)
            })
            .map(Some)?;
        if version.as_deref() != Some(SCHEMA_VERSION.to_string().as_str()) {
            return Err(StoreError::foreign(format!(
                "the file has schema version {}, this client reads version {SCHEMA_VERSION}: \
                 open it with an engine of this version first (it migrates the file), or use \
                 a client of the file's version",
                version.unwrap_or_default()
            ))
            .context(&context));
        }
        let reader = connect()?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(Some(reader)),
                path,
                lock: Mutex::new(None),
                attached: AtomicBool::new(false),
                client: true,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Caps the file at about `bytes` (rounded down to whole pages): a write that would grow
    /// it past that fails as on a full disk, while reading goes on. Keeps a runaway journal
    /// from filling the disk, and lets a test see what a full disk does. Applies to this
    /// store and its clones until they are closed.
    ///
    /// ```
    /// use durable::store::sqlite::SqliteStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("durable-doc-cap-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = SqliteStore::open(dir.join("runs.db"))?;
    /// store.set_max_size(64 * 1024 * 1024)?;
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), durable::store::StoreError>(())
    /// ```
    pub fn set_max_size(&self, bytes: u64) -> Result<(), StoreError> {
        let mut writer = lock(&self.inner.writer);
        let conn = writer.as_mut().ok_or_else(|| self.closed())?;
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| self.error(e))?;
        let pages = (bytes / page.max(1) as u64).max(1);
        // SQLite never lowers the cap below the file's current size; that is fine here.
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        db_error(e).context(format_args!("sqlite store `{}`", self.inner.path.display()))
    }

    fn closed(&self) -> StoreError {
        closed_error(&self.inner.path)
    }

    /// Runs `f` with one of the connections on the blocking pool.
    fn blocking<T, F>(&self, writer: bool, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let shown = inner.path.display().to_string();
            tokio::task::spawn_blocking(move || {
                let conn = if writer { &inner.writer } else { &inner.reader };
                match lock(conn).as_mut() {
                    Some(conn) => Ok(f(conn)),
                    None => Err(closed_error(&inner.path)),
                }
            })
            .await
            .map_err(|e| {
                StoreError::other(format!(
                    "sqlite store `{shown}`: the database thread died: {e}"
                ))
                .with_source(e)
            })??
            .map_err(|e| db_error(e).context(format_args!("sqlite store `{shown}`")))
        })
    }
}

/// The marker kept beside a store file: `<file>.durable-marker`.
fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".durable-marker");
    PathBuf::from(name)
}

/// A journal entry's fields as its checksums cover them, with its kind as stored.
fn entry_fields<'a>(entry: &'a JournalEntry, kind: &'a str) -> Fields<'a> {
    Fields::Entry {
        seq: entry.seq,
        step: &entry.step,
        kind,
        attempt: entry.attempt,
        payload: &entry.payload,
        at: entry.at,
    }
}

fn damaged_run(id: &RunId, what: &str) -> String {
    format!(
        "run {id}: {what} does not match its checksum, so the file was damaged or changed \
         outside durable; the run is left as it is: restore the file from a backup"
    )
}

fn lock<T>(conn: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a transaction rolls it back when the connection is next used, so a
    // poisoned connection is still consistent.
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed_error(path: &Path) -> StoreError {
    StoreError::closed(format!(
        "sqlite store `{}`: the store was closed (its engine shut down); open the file again",
        path.display()
    ))
}

/// The kind of an SQLite failure: busy, locked and I/O errors may pass (transient), a full
/// disk or a reached size cap is full, a damaged file or a row that does not decode is
/// corrupt; the rest (a read-only file, no permission, a bug) is other.
fn sqlite_kind(e: &rusqlite::Error) -> StoreErrorKind {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::SchemaChanged
            | ErrorCode::OutOfMemory => StoreErrorKind::Transient,
            ErrorCode::DiskFull => StoreErrorKind::Full,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Other,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Other,
    }
}

/// An SQLite failure as a store error of its kind, with the failure as its source.
fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::new(sqlite_kind(&e), e.to_string()).with_source(e)
}

/// The kind of a failure of the file itself.
fn io_kind(e: &std::io::Error) -> StoreErrorKind {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StoreErrorKind::Full,
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            StoreErrorKind::Transient
        }
        _ => StoreErrorKind::Other,
    }
}

/// Refuses a file that is neither empty nor an SQLite database, before SQLite touches it.
fn check_header(mut file: &File) -> Result<(), StoreError> {
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => {
                return Err(
                    StoreError::new(io_kind(&e), format!("cannot read the file: {e}"))
                        .with_source(e),
                )
            }
        }
    }
    if read == 0 || header == *b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(StoreError::foreign(
            "the file is not an SQLite database, so not a durable store; point the store at a \
             new path or at a file it created",
        ))
    }
}

fn connect(path: &Path, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Plans must not depend on bound values. Without this, SQLite compares each `col = ?`
    // with the partial indexes' conditions (`parent_run IS NOT NULL`, ...) using the value
    // bound, and so recompiles a statement every time a new value is bound: every commit
    // re-parsed its `WHERE id = ?1` statements, half of seq10's time.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
        Synchronous::Off => "OFF",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
    ))?;
    Ok(conn)
}

/// Creates the schema in a new file; checks it in an existing one.
fn prepare_schema(conn: &Connection) -> Result<(), StoreError> {
    let db = db_error;
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'durable_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db)?
        > 0;
    if has_meta {
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM durable_meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        return match version.as_deref().map(str::parse::<i64>) {
            Some(Ok(SCHEMA_VERSION)) => Ok(()),
            Some(Ok(v)) if (1..SCHEMA_VERSION).contains(&v) => migrate(conn, v),
            Some(Ok(v)) if v > SCHEMA_VERSION => Err(StoreError::foreign(format!(
                "the file has schema version {v}, written by a newer version of durable; this \
                 one reads version {SCHEMA_VERSION}: upgrade durable"
            ))),
            other => Err(StoreError::corrupt(format!(
                "the file's durable_meta table is damaged (schema version {other:?}); the \
                 journal was not touched"
            ))),
        };
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if tables > 0 {
        return Err(StoreError::foreign(format!(
            "the file is an SQLite database of another application ({tables} tables, none of \
             them durable's); point the store at a new path"
        )));
    }
    // A new file gets the first schema, then every migration, like an old file would.
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE durable_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
         INSERT INTO durable_meta VALUES ('schema', '1');
         CREATE TABLE durable_runs (
             id TEXT NOT NULL UNIQUE,
             workflow TEXT NOT NULL,
             fingerprint TEXT NOT NULL,
             status TEXT NOT NULL,
             input TEXT NOT NULL,
             output TEXT,
             error TEXT,
             owner TEXT,
             lease_token INTEGER NOT NULL,
             lease_expires_at INTEGER NOT NULL,
             created_at INTEGER NOT NULL,
             updated_at INTEGER NOT NULL
         );
         CREATE INDEX durable_runs_by_status ON durable_runs (status, workflow);
         CREATE TABLE durable_journal (
             run_id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             step TEXT NOT NULL,
             kind TEXT NOT NULL,
             attempt INTEGER NOT NULL,
             payload TEXT NOT NULL,
             at INTEGER NOT NULL,
             PRIMARY KEY (run_id, seq)
         ) WITHOUT ROWID;
         COMMIT;",
    )
    .map_err(db)?;
    migrate(conn, 1)
}

/// Brings a file of schema version `from` to [`SCHEMA_VERSION`]: each migration of
/// [`MIGRATIONS`] past `from`, in order, each in a transaction of its own that also records the
/// version it reaches, so a file left between two versions by a crash resumes from the last.
fn migrate(conn: &Connection, from: i64) -> Result<(), StoreError> {
    for &(version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > from) {
        conn.execute_batch(&format!(
            "BEGIN;\n{sql}\nUPDATE durable_meta SET value = '{version}' WHERE key = 'schema';\nCOMMIT;"
        ))
        .map_err(|e| {
            db_error(e).context(format_args!("cannot migrate the file to schema version {version}"))
        })?;
    }
    Ok(())
}

/// Every migration: the version it reaches and its statements, each ending with `;`. A new
/// one goes at the end, with [`SCHEMA_VERSION`] raised to its version.
const MIGRATIONS: &[(i64, &str)] = &[
    // Version 2 indexes the runs in listing order (creation time, then id), alone and after each
    // filter `list_runs` takes, so a page costs what it returns instead of a scan and a sort of
    // every run. The index by status leads with the status as the old `(status, workflow)` index
    // did, so it serves the claims and lease renewals that index served, and replaces it.
    (
        2,
        "DROP INDEX IF EXISTS durable_runs_by_status;
         CREATE INDEX durable_runs_by_created ON durable_runs (created_at, id);
         CREATE INDEX durable_runs_by_status_created ON durable_runs (status, created_at, id);
         CREATE INDEX durable_runs_by_workflow_created ON durable_runs (workflow, created_at, id);
         CREATE INDEX durable_runs_by_workflow_status_created
             ON durable_runs (workflow, status, created_at, id);",
    ),
    // Version 3 stores a checksum with each journal entry and with a run's input and its output
    // (or error). Rows written before have none and are read as they are.
    (
        3,
        "ALTER TABLE durable_journal ADD COLUMN checksum INTEGER;
         ALTER TABLE durable_runs ADD COLUMN input_checksum INTEGER;
         ALTER TABLE durable_runs ADD COLUMN end_checksum INTEGER;",
    ),
    // Version 4 keeps when a suspended run wakes (`wake_at`, indexed with the status, so a claim
    // finds the due ones and `next_wake_at` the earliest without reading the others) and a
    // requested cancellation (`cancel_requested`, the reason; indexed only where set).
    (
        4,
        "ALTER TABLE durable_runs ADD COLUMN wake_at INTEGER;
         ALTER TABLE durable_runs ADD COLUMN cancel_requested TEXT;
         CREATE INDEX durable_runs_by_wake ON durable_runs (status, wake_at);
         CREATE INDEX durable_runs_cancel_requested ON durable_runs (owner)
             WHERE cancel_requested IS NOT NULL;",
    ),
    // Version 5 adds each run's inbox (signals, callback completions; see [`Store::deliver`]),
    // numbered per run, with a unique index that lets a callback token be used once.
    (
        5,
        "CREATE TABLE durable_inbox (
             run_id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             kind TEXT NOT NULL,
             name TEXT NOT NULL,
             payload TEXT NOT NULL,
             at INTEGER NOT NULL,
             PRIMARY KEY (run_id, seq)
         ) WITHOUT ROWID;
         CREATE UNIQUE INDEX durable_inbox_callbacks ON durable_inbox (run_id, name)
             WHERE kind = 'callback';",
    ),
    // Version 6 keeps a child run's parent (`parent_run`, and `parent_step`, the path of the
    // parent's `call` item), indexed by parent where set, so a cancellation cascades to a run's
    // children without a scan, and a child's end reaches its parent's inbox.
    (
        6,
        "ALTER TABLE durable_runs ADD COLUMN parent_run TEXT;
         ALTER TABLE durable_runs ADD COLUMN parent_step TEXT;
         CREATE INDEX durable_runs_by_parent ON durable_runs (parent_run)
             WHERE parent_run IS NOT NULL;",
    ),
    // Version 7 stores a checksum with each inbox message (those delivered before have none
    // and are read as they are), and keeps on each run the number of its last inbox message
    // (`inbox_last`, set by every delivery) and how far its last suspension had seen
    // (`inbox_seen`): a suspension with a message past what it saw leaves the run awake, and
    // a suspended run with `inbox_last > inbox_seen` slept through a message. Runs suspended
    // before this version count as having seen nothing, so each with a message in its inbox
    // is claimed once (one replay for those that had taken theirs, the release of those
    // stuck), found through an index that holds only such runs.
    (
        7,
        "ALTER TABLE durable_inbox ADD COLUMN checksum INTEGER;
         ALTER TABLE durable_runs ADD COLUMN inbox_last INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE durable_runs ADD COLUMN inbox_seen INTEGER NOT NULL DEFAULT 0;
         UPDATE durable_runs SET inbox_last =
             (SELECT max(seq) FROM durable_inbox WHERE run_id = durable_runs.id)
             WHERE id IN (SELECT run_id FROM durable_inbox);
         CREATE INDEX durable_runs_unread ON durable_runs (created_at)
             WHERE status = 'suspended' AND inbox_last > inbox_seen;",
    ),
    // Version 8 checksums new rows with CRC-32C, in columns of their own, so the column tells
    // which algorithm a row's checksum is (see `sqlite/checksum.rs`): rows written before
    // keep their FNV-1a `checksum` (or none) and are verified by it. Adding a column rewrites
    // no row, so a file of any size migrates at once.
    (
        8,
        "ALTER TABLE durable_journal ADD COLUMN crc32c INTEGER;
         ALTER TABLE durable_inbox ADD COLUMN crc32c INTEGER;
         ALTER TABLE durable_runs ADD COLUMN input_crc32c INTEGER;
         ALTER TABLE durable_runs ADD COLUMN end_crc32c INTEGER;",
    ),
];

/// The query of `list_runs` for a filter: one per combination of the filters set, each
/// served by an index in listing order (no scan of every run, no sort). Parameters: the
/// workflow `?1`, the status `?2`, the cursor `?3, ?4`, the limit `?5` (those not used are
/// not mentioned).
fn list_sql(filter: &RunFilter) -> String {
    let mut conditions = Vec::new();
    if filter.workflow.is_some() {
        conditions.push("workflow = ?1");
    }
    if filter.status.is_some() {
        conditions.push("status = ?2");
    }
    if filter.after.is_some() {
        conditions.push("(created_at, id) < (?3, ?4)");
    }
    let conditions = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", conditions.join(" AND "))
    };
    format!(
        "SELECT {RUN_COLUMNS} FROM durable_runs {conditions}\
         ORDER BY created_at DESC, id DESC LIMIT ?5"
    )
}

const RUN_COLUMNS: &str = "id, workflow, fingerprint, status, input, output, error, owner, \
                           lease_token, created_at, updated_at, wake_at, cancel_requested, \
                           parent_run, parent_step";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let status: String = row.get(3)?;
    Ok(RunRecord {
        id: RunId::from(row.get::<_, String>(0)?),
        workflow: row.get(1)?,
        fingerprint: row.get(2)?,
        status: RunStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("unknown run status `{status}`").into(),
            )
        })?,
        input: row.get(4)?,
        output: row.get(5)?,
        error: row.get(6)?,
        owner: row.get(7)?,
        lease_token: row.get::<_, i64>(8)? as u64,
        created_at: row.get::<_, i64>(9)? as u64,
        updated_at: row.get::<_, i64>(10)? as u64,
        wake_at: row.get::<_, Option<i64>>(11)?.map(|at| at as u64),
        cancel_requested: row.get(12)?,
        parent: match (row.get::<_, Option<String>>(13)?, row.get(14)?) {
            (Some(run), Some(step)) => Some(ParentLink {
                run: RunId::from(run),
                step,
            }),
            _ => None,
        },
    })
}

/// Applies one write inside the batch's transaction.
fn apply(
    tx: &rusqlite::Transaction<'_>,
    write: &Write,
    now: i64,
) -> rusqlite::Result<Result<(), Rejected>> {
    match write {
        Write::CreateRun(new) => {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO durable_runs (id, workflow, fingerprint, status, input, owner, \
                     lease_token, lease_expires_at, created_at, updated_at, input_crc32c, \
                     parent_run, parent_step) \
                     VALUES (?1, ?2, ?3, 'running', ?4, ?5, 1, ?6, ?7, ?7, ?8, ?9, ?10) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    new.id.as_str(),
                    new.workflow,
                    new.fingerprint,
                    new.input,
                    // No owner: a client's run, for the engine to claim.
                    (!new.owner.is_empty()).then_some(new.owner.as_str()),
                    new.lease_expires_at as i64,
                    now,
                    Fields::Text(&new.input).crc32c(),
                    new.parent.as_ref().map(|p| p.run.as_str()),
                    new.parent.as_ref().map(|p| p.step.as_str())
                ])?;
            Ok(if inserted == 1 {
                Ok(())
            } else {
                Err(Rejected::DuplicateRun)
            })
        }
        Write::Append {
            run,
            lease_token,
            entries,
            finish,
        } => {
            // The run's last sequence number comes with its row: one lookup in the journal's
            // primary key, no second statement.
            let current: Option<(i64, String, i64)> = tx
                .prepare_cached(
                    "SELECT lease_token, status, (SELECT coalesce(max(seq), 0) FROM \
                     durable_journal WHERE run_id = ?1) FROM durable_runs WHERE id = ?1",
                )?
                .query_row([run.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((current, status, last)) = current else {
                return Ok(Err(Rejected::UnknownRun));
            };
            if current as u64 != *lease_token {
                return Ok(Err(Rejected::Fenced {
                    current: current as u64,
                }));
            }
            if status != RunStatus::Running.as_str() {
                return Ok(Err(Rejected::Finished));
            }
            // Checked before anything is written, so a refused write leaves nothing behind.
            if let Err(rejected) = check_sequence(last as u64, entries.iter().map(|e| e.seq)) {
                return Ok(Err(rejected));
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO durable_journal (run_id, seq, step, kind, attempt, payload, at, \
                 crc32c) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for entry in entries {
                let kind = entry.kind.as_str();
                let sum = entry_fields(entry, kind).crc32c();
                insert.execute(params![
                    run.as_str(),
                    entry.seq as i64,
                    entry.step,
                    kind,
                    entry.attempt,
                    entry.payload,
                    entry.at as i64,
                    sum
                ])?;
            }
            // Only a run's end touches its row: a step's commit writes one journal page.
            let (status, output, error, end) = match finish {
                Some(Finish::Completed(output)) => {
                    (RunStatus::Completed, Some(output), None, output)
                }
                Some(Finish::Failed(error)) => (RunStatus::Failed, None, Some(error), error),
                Some(Finish::Cancelled(reason)) => {
                    (RunStatus::Cancelled, None, Some(reason), reason)
                }
                Some(Finish::Suspended {
                    wake_at,
                    inbox_seen,
                }) => {
                    // Unfinished, and nobody's: no lease until something wakes it. A run
                    // whose cancellation was asked for, or that has an inbox message past
                    // what its waits saw, before the suspension landed (after its worker last
                    // looked) stays awake instead, for whichever worker claims it next to
                    // carry the cancellation out or take the message. Either way it has seen
                    // its inbox up to here.
                    tx.prepare_cached(
                        "UPDATE durable_runs SET status = CASE WHEN cancel_requested IS NULL \
                             AND (?5 IS NULL OR inbox_last <= ?5) THEN ?2 ELSE status END, \
                             wake_at = CASE WHEN cancel_requested IS NULL \
                             AND (?5 IS NULL OR inbox_last <= ?5) THEN ?4 END, \
                             owner = NULL, lease_expires_at = 0, updated_at = ?3, \
                             inbox_seen = inbox_last WHERE id = ?1",
                    )?
                    .execute(params![
                        run.as_str(),
                        RunStatus::Suspended.as_str(),
                        now,
                        wake_at.map(|at| at.min(i64::MAX as u64) as i64),
                        inbox_seen.map(|seen| seen.min(i64::MAX as u64) as i64)
                    ])?;
                    return Ok(Ok(()));
                }
                None => return Ok(Ok(())),
            };
            tx.prepare_cached(
                "UPDATE durable_runs SET status = ?2, output = ?3, error = ?4, updated_at = ?5, \
                 end_crc32c = ?6, end_checksum = NULL, cancel_requested = NULL WHERE id = ?1",
            )?
            .execute(params![
                run.as_str(),
                status.as_str(),
                output,
                error,
                now,
                Fields::Text(end).crc32c()
            ])?;
            // A child's end reaches its parent's inbox in this same transaction.
            let parent: Option<(String, String)> = tx
                .prepare_cached(
                    "SELECT parent_run, parent_step FROM durable_runs WHERE id = ?1 \
                     AND parent_run IS NOT NULL",
                )?
                .query_row([run.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((parent, step)) = parent {
                let payload = finish
                    .as_ref()
                    .and_then(child_end_payload)
                    .expect("a run's end has a payload");
                // A parent that finished (or vanished) meanwhile has nobody to tell.
                let _ = deliver_in(
                    tx,
                    &RunId::from(parent),
                    inbox_kinds::CHILD,
                    &step,
                    &payload,
                    now,
                )?;
            }
            Ok(Ok(()))
        }
    }
}

/// The watch of [`Store::watch_claimable`]: `PRAGMA data_version` on a connection of its
/// own changes only when another connection (a client's, or the engine's writer) commits, and
/// only then does a query look for running runs without an owner (through the status index).
struct Watch {
    conn: Connection,
    path: PathBuf,
    data_version: Option<i64>,
    version: u64,
}

impl ClaimableWatch for Watch {
    fn version(&mut self) -> Result<u64, StoreError> {
        let path = &self.path;
        let error = |e: rusqlite::Error| {
            db_error(e).context(format_args!("sqlite store `{}`", path.display()))
        };
        let data_version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(error)?;
        if self.data_version != Some(data_version) {
            self.data_version = Some(data_version);
            let unowned: bool = self
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM durable_runs \
                     WHERE status = 'running' AND owner IS NULL) \
                     OR EXISTS (SELECT 1 FROM durable_runs INDEXED BY durable_runs_cancel_requested \
                     WHERE cancel_requested IS NOT NULL AND owner IS NOT NULL \
                     AND status = 'running')",
                )
                .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
                .map_err(error)?;
            if unowned {
                self.version += 1;
            }
        }
        Ok(self.version)
    }
}

/// Sets the suspended runs due at `?1` running again, unowned, for the claim that follows:
/// a range of the `(status, wake_at)` index, never a read of the other suspended runs.
const WAKE_DUE_SQL: &str = "UPDATE durable_runs SET status = 'running', wake_at = NULL, \
                            owner = NULL, lease_expires_at = 0 \
                            WHERE status = 'suspended' AND wake_at <= ?1";

/// Sets the suspended runs that slept through a message running again, unowned, for the
/// claim that follows (runs a version before 7 suspended with a message already there; this
/// version never leaves one so): the whole of the `durable_runs_unread` index, which holds
/// only them, so it costs nothing when there are none.
const WAKE_UNREAD_SQL: &str = "UPDATE durable_runs INDEXED BY durable_runs_unread \
                               SET status = 'running', wake_at = NULL, \
                               owner = NULL, lease_expires_at = 0 \
                               WHERE status = 'suspended' AND inbox_last > inbox_seen";

/// The earliest due time of a suspended run: the first row of the same index range.
const NEXT_WAKE_SQL: &str = "SELECT wake_at FROM durable_runs WHERE status = 'suspended' \
                             AND wake_at IS NOT NULL ORDER BY wake_at LIMIT 1";

/// Sets a suspended run running, unowned, claimable (the watch sees a running run without
/// an owner); whether it was suspended.
fn wake_run(conn: &Connection, run: &RunId) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "UPDATE durable_runs SET status = 'running', wake_at = NULL, owner = NULL, \
         lease_expires_at = 0 WHERE id = ?1 AND status = 'suspended'",
    )?
    .execute([run.as_str()])
    .map(|changed| changed == 1)
}

/// Appends a message to `run`'s inbox inside `tx`, and wakes the run if it is suspended
/// (see [`Store::deliver`]); nothing is written when it is refused.
fn deliver_in(
    tx: &Connection,
    run: &RunId,
    kind: &str,
    name: &str,
    payload: &str,
    now: i64,
) -> rusqlite::Result<Result<u64, Rejected>> {
    let found: Option<(String, i64)> = tx
        .prepare_cached(
            "SELECT status, (SELECT coalesce(max(seq), 0) FROM durable_inbox WHERE run_id = ?1) \
             FROM durable_runs WHERE id = ?1",
        )?
        .query_row([run.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((status, last)) = found else {
        return Ok(Err(Rejected::UnknownRun));
    };
    if RunStatus::parse(&status).is_none_or(RunStatus::is_finished) {
        return Ok(Err(Rejected::Finished));
    }
    if kind == inbox_kinds::CALLBACK {
        let first: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM durable_inbox WHERE run_id = ?1 AND name = ?2 \
                 AND kind = 'callback'",
            )?
            .query_row([run.as_str(), name], |r| r.get(0))
            .optional()?;
        if let Some(seq) = first {
            return Ok(Err(Rejected::DuplicateEntry { seq: seq as u64 }));
        }
    }
    let seq = last + 1;
    let sum = Fields::Message {
        seq: seq as u64,
        kind,
        name,
        payload,
        at: now as u64,
    }
    .crc32c();
    tx.prepare_cached(
        "INSERT INTO durable_inbox (run_id, seq, kind, name, payload, at, crc32c) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![run.as_str(), seq, kind, name, payload, now, sum])?;
    // The run's row knows its last message (a suspension compares what it saw against it),
    // and a suspended run wakes: running, nobody's, claimable at once.
    tx.prepare_cached(
        "UPDATE durable_runs SET inbox_last = ?3, \
         owner = CASE WHEN status = 'suspended' THEN NULL ELSE owner END, \
         lease_expires_at = CASE WHEN status = 'suspended' THEN 0 ELSE lease_expires_at END, \
         wake_at = CASE WHEN status = 'suspended' THEN NULL ELSE wake_at END, \
         updated_at = CASE WHEN status = 'suspended' THEN ?2 ELSE updated_at END, \
         status = CASE WHEN status = 'suspended' THEN 'running' ELSE status END \
         WHERE id = ?1",
    )?
    .execute(params![run.as_str(), now, seq])?;
    Ok(Ok(seq as u64))
}

/// Writes a batch in one transaction.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Write],
) -> rusqlite::Result<Vec<Result<(), Rejected>>> {
    let now = now_millis() as i64;
    let tx = conn.transaction()?;
    let outcomes = batch
        .iter()
        .map(|write| apply(&tx, write, now))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(outcomes)
}

impl Store for SqliteStore {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        // One batch commits at a time (`commits_in_flight` is 1): the journal's writer task
        // or, when it is idle, the run task committing its own write. On a multi-thread
        // runtime it commits right here, holding its worker for the batch (one fsync, ~0.2 ms)
        // while the other workers run steps: that saves two thread hand-offs per commit, a
        // third of a lone run's latency (measured: median 3.2 -> 2.3 ms for ten steps). On a
        // current-thread runtime that would stall every task, so the batch goes to the
        // blocking pool.
        if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            let result = match lock(&self.inner.writer).as_mut() {
                Some(conn) => commit_batch(conn, batch).map_err(|e| self.error(e)),
                None => Err(self.closed()),
            };
            return Box::pin(std::future::ready(result));
        }
        let batch = batch.to_vec();
        self.blocking(true, move |conn| commit_batch(conn, &batch))
    }

    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        let id = id.clone();
        let path = self.inner.path.display().to_string();
        let loaded = self.blocking(false, move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS}, input_crc32c, input_checksum, end_crc32c, end_checksum \
                 FROM durable_runs WHERE id = ?1"
            ))?
            .query_row([id.as_str()], |r| {
                let run = run_from_row(r)?;
                let input_sum = Stored {
                    crc32c: r.get(15)?,
                    fnv1a: r.get(16)?,
                };
                let end_sum = Stored {
                    crc32c: r.get(17)?,
                    fnv1a: r.get(18)?,
                };
                let intact = |text: &str, sum: Stored| sum.matches(Fields::Text(text));
                let damaged = if !intact(&run.input, input_sum) {
                    Some("its stored input")
                } else if !run.output.as_deref().is_none_or(|o| intact(o, end_sum)) {
                    Some("its stored output")
                } else if !run.error.as_deref().is_none_or(|e| intact(e, end_sum)) {
                    Some("its stored error")
                } else {
                    None
                };
                Ok(match damaged {
                    Some(what) => Err(damaged_run(&run.id, what)),
                    None => Ok(run),
                })
            })
            .optional()
        });
        Box::pin(async move {
            match loaded.await? {
                Some(Err(e)) => Err(StoreError::corrupt(format!("sqlite store `{path}`: {e}"))),
                Some(Ok(run)) => Ok(Some(run)),
                None => Ok(None),
            }
        })
    }

    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let id = id.clone();
        let path = self.inner.path.display().to_string();
        let loaded = self.blocking(false, move |conn| {
            // The journal is loaded to resume the run: its input must be intact too.
            let input: Option<(String, Stored)> = conn
                .prepare_cached(
                    "SELECT input, input_crc32c, input_checksum FROM durable_runs WHERE id = ?1",
                )?
                .query_row([id.as_str()], |r| {
                    let sum = Stored {
                        crc32c: r.get(1)?,
                        fnv1a: r.get(2)?,
                    };
                    Ok((r.get(0)?, sum))
                })
                .optional()?;
            if let Some((input, sum)) = input {
                if !sum.matches(Fields::Text(&input)) {
                    return Ok(Err(damaged_run(&id, "its stored input")));
                }
            }
            let mut stmt = conn.prepare_cached(
                "SELECT seq, step, kind, attempt, payload, at, crc32c, checksum \
                 FROM durable_journal WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id.as_str()], |r| {
                let kind: String = r.get(2)?;
                let entry = JournalEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    step: r.get(1)?,
                    kind: super::EntryKind::parse(&kind).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            2,
                            rusqlite::types::Type::Text,
                            format!("unknown journal entry kind `{kind}`").into(),
                        )
                    })?,
                    attempt: r.get(3)?,
                    payload: r.get(4)?,
                    at: r.get::<_, i64>(5)? as u64,
                };
                let stored = Stored {
                    crc32c: r.get(6)?,
                    fnv1a: r.get(7)?,
                };
                // The kind as stored, so a changed kind is caught as a mismatch too.
                let intact = stored.matches(entry_fields(&entry, &kind));
                Ok((entry, intact))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (entry, intact) = row?;
                if !intact {
                    return Ok(Err(format!(
                        "run {id} step `{}` (journal entry {}): the entry does not match its \
                         checksum, so the file was damaged or changed outside durable; the run \
                         is left as it is: restore the file from a backup",
                        entry.step, entry.seq
                    )));
                }
                entries.push(entry);
            }
            Ok(Ok(entries))
        });
        Box::pin(async move {
            loaded
                .await?
                .map_err(|e| StoreError::corrupt(format!("sqlite store `{path}`: {e}")))
        })
    }

    fn claim_runs<'a>(
        &'a self,
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        let owner = claim.owner.to_owned();
        let (lease, limit) = (claim.lease, i64::try_from(claim.limit).unwrap_or(i64::MAX));
        self.blocking(true, move |conn| {
            let now = now_millis();
            let until = (now + lease.as_millis() as u64) as i64;
            let tx = conn.transaction()?;
            // The due sleepers first, through the (status, wake_at) index, and any run that
            // slept through a message: running again.
            tx.prepare_cached(WAKE_DUE_SQL)?
                .execute([now.min(i64::MAX as u64) as i64])?;
            tx.prepare_cached(WAKE_UNREAD_SQL)?.execute([])?;
            // This process holds the file's lock, so whoever held these leases is gone; a run
            // with no owner was started by a client (which drives nothing), released or woken.
            // (One process drives the file: the claim takes runs of any workflow, and the
            // engine reports those it cannot drive.)
            let mut runs = {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE durable_runs SET owner = ?1, lease_token = lease_token + 1, \
                     lease_expires_at = ?2 \
                     WHERE rowid IN (SELECT rowid FROM durable_runs WHERE status = 'running' \
                     AND (owner IS NULL OR owner != ?1) ORDER BY created_at, rowid LIMIT ?3) \
                     RETURNING {RUN_COLUMNS}"
                ))?;
                let rows = stmt.query_map(params![owner, until, limit], run_from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            runs.sort_by_key(|r| (r.created_at, r.id.clone()));
            Ok(runs)
        })
    }

    fn next_wake_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        self.blocking(false, |conn| {
            conn.prepare_cached(NEXT_WAKE_SQL)?
                .query_row([], |r| r.get::<_, i64>(0))
                .optional()
                .map(|at| at.map(|at| at.max(0) as u64))
        })
    }

    fn wake<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<bool, StoreError>> {
        let run = run.clone();
        self.blocking(true, move |conn| wake_run(conn, &run))
    }

    fn request_cancel<'a>(
        &'a self,
        run: &'a RunId,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        let (run, reason) = (run.clone(), reason.to_owned());
        self.blocking(true, move |conn| {
            let tx = conn.transaction()?;
            let status: Option<String> = tx
                .prepare_cached("SELECT status FROM durable_runs WHERE id = ?1")?
                .query_row([run.as_str()], |r| r.get(0))
                .optional()?;
            let outcome = match status.as_deref().map(RunStatus::parse) {
                None => Err(Rejected::UnknownRun),
                Some(Some(status)) if status.is_finished() => Err(Rejected::Finished),
                Some(_) => {
                    // The run, then its unfinished children, theirs, and so on (a cascade),
                    // found through the index by parent.
                    let mut todo = vec![run.clone()];
                    while let Some(id) = todo.pop() {
                        tx.prepare_cached(
                            "UPDATE durable_runs \
                             SET cancel_requested = coalesce(cancel_requested, ?2) WHERE id = ?1",
                        )?
                        .execute(params![id.as_str(), reason])?;
                        wake_run(&tx, &id)?;
                        let mut children = tx.prepare_cached(
                            "SELECT id FROM durable_runs INDEXED BY durable_runs_by_parent \
                             WHERE parent_run = ?1 AND status IN ('running', 'suspended')",
                        )?;
                        for child in children.query_map([id.as_str()], |r| r.get::<_, String>(0))? {
                            todo.push(RunId::from(child?));
                        }
                    }
                    Ok(())
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    fn cancel_requests<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RunId, String)>, StoreError>> {
        let owner = owner.to_owned();
        self.blocking(false, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, cancel_requested FROM durable_runs \
                 INDEXED BY durable_runs_cancel_requested \
                 WHERE cancel_requested IS NOT NULL AND owner = ?1 AND status = 'running'",
            )?;
            let rows = stmt.query_map([owner], |r| {
                Ok((RunId::from(r.get::<_, String>(0)?), r.get(1)?))
            })?;
            rows.collect()
        })
    }

    fn reopen<'a>(
        &'a self,
        run: &'a RunId,
        entries: &'a [JournalEntry],
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        let (run, entries) = (run.clone(), entries.to_vec());
        self.blocking(true, move |conn| {
            let now = now_millis() as i64;
            let tx = conn.transaction()?;
            let current: Option<(String, i64)> = tx
                .prepare_cached(
                    "SELECT status, (SELECT coalesce(max(seq), 0) FROM durable_journal \
                     WHERE run_id = ?1) FROM durable_runs WHERE id = ?1",
                )?
                .query_row([run.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((status, last)) = current else {
                return Ok(Err(Rejected::UnknownRun));
            };
            if status != RunStatus::Failed.as_str() {
                return Ok(Err(Rejected::Finished));
            }
            if let Err(rejected) = check_sequence(last as u64, entries.iter().map(|e| e.seq)) {
                return Ok(Err(rejected));
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO durable_journal (run_id, seq, step, kind, attempt, payload, at, \
                 crc32c) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for entry in &entries {
                let kind = entry.kind.as_str();
                let sum = entry_fields(entry, kind).crc32c();
                insert.execute(params![
                    run.as_str(),
                    entry.seq as i64,
                    entry.step,
                    kind,
                    entry.attempt,
                    entry.payload,
                    entry.at as i64,
                    sum
                ])?;
            }
            drop(insert);
            tx.prepare_cached(
                "UPDATE durable_runs SET status = 'running', error = NULL, end_crc32c = NULL, \
                 end_checksum = NULL, owner = NULL, lease_expires_at = 0, updated_at = ?2 \
                 WHERE id = ?1",
            )?
            .execute(params![run.as_str(), now])?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let owner = owner.to_owned();
        self.blocking(true, move |conn| {
            let until = (now_millis() + lease.as_millis() as u64) as i64;
            conn.prepare_cached(
                "UPDATE durable_runs SET lease_expires_at = ?2 WHERE owner = ?1 AND status = 'running'",
            )?
            .execute(params![owner, until])
        })
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let owner = owner.to_owned();
        self.blocking(true, move |conn| {
            conn.prepare_cached(
                "UPDATE durable_runs SET owner = NULL, lease_expires_at = 0 WHERE owner = ?1",
            )?
            .execute([owner])
            .map(drop)
        })
    }

    fn watch_claimable(&self) -> Result<Option<Box<dyn ClaimableWatch>>, StoreError> {
        // A connection of its own, read-only and without the file's lock: the watch never
        // keeps the store (or the lock) alive.
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.inner.path, flags)
            .and_then(|conn| {
                conn.execute_batch("PRAGMA busy_timeout = 1000;")?;
                Ok(conn)
            })
            .map_err(|e| self.error(e))?;
        Ok(Some(Box::new(Watch {
            conn,
            path: self.inner.path.clone(),
            data_version: None,
            version: 0,
        })))
    }

    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.blocking(false, move |conn| {
            let limit = filter.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
            let mut stmt = conn.prepare_cached(&list_sql(&filter))?;
            let mut bind = |index: usize, value: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
                stmt.raw_bind_parameter(index, value)
            };
            if let Some(workflow) = &filter.workflow {
                bind(1, workflow)?;
            }
            if let Some(status) = filter.status {
                bind(2, &status.as_str())?;
            }
            if let Some(cursor) = &filter.after {
                bind(3, &(cursor.created_at.min(i64::MAX as u64) as i64))?;
                bind(4, &cursor.id.as_str())?;
            }
            bind(5, &limit)?;
            let mut rows = stmt.raw_query();
            let mut runs = Vec::new();
            while let Some(row) = rows.next()? {
                runs.push(run_from_row(row)?);
            }
            Ok(runs)
        })
    }

    fn deliver<'a>(
        &'a self,
        run: &'a RunId,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, Result<Result<u64, Rejected>, StoreError>> {
        let (run, kind, name, payload) = (
            run.clone(),
            kind.to_owned(),
            name.to_owned(),
            payload.to_owned(),
        );
        // Often from a client in another process: an immediate transaction takes the write
        // lock up front, so the checks and the append see one state.
        self.blocking(true, move |conn| {
            let now = now_millis() as i64;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let outcome = deliver_in(&tx, &run, &kind, &name, &payload, now)?;
            if outcome.is_ok() {
                tx.commit()?;
            }
            Ok(outcome)
        })
    }

    fn load_inbox<'a>(
        &'a self,
        run: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, StoreError>> {
        let run = run.clone();
        let path = self.inner.path.display().to_string();
        let loaded = self.blocking(false, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, kind, name, payload, at, crc32c, checksum FROM durable_inbox \
                 WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([run.as_str()], |r| {
                let message = InboxMessage {
                    seq: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    payload: r.get(3)?,
                    at: r.get::<_, i64>(4)? as u64,
                };
                // Messages delivered before version 7 have none and are read as they are.
                let stored = Stored {
                    crc32c: r.get(5)?,
                    fnv1a: r.get(6)?,
                };
                let intact = stored.matches(Fields::Message {
                    seq: message.seq,
                    kind: &message.kind,
                    name: &message.name,
                    payload: &message.payload,
                    at: message.at,
                });
                Ok((message, intact))
            })?;
            let mut inbox = Vec::new();
            for row in rows {
                let (message, intact) = row?;
                if !intact {
                    return Ok(Err(super::inbox::damaged_message(&run, &message)));
                }
                inbox.push(message);
            }
            Ok(Ok(inbox))
        });
        Box::pin(async move {
            loaded
                .await?
                .map_err(|e| StoreError::corrupt(format!("sqlite store `{path}`: {e}")))
        })
    }

    fn attach(&self) -> Result<(), StoreError> {
        if self.inner.client {
            return Err(StoreError::in_use(format!(
                "sqlite store `{}`: opened with SqliteStore::open_client, which leaves the file \
                 to the engine that holds it: a client reads and starts runs, it drives none; \
                 open the file with SqliteStore::open to build an engine on it",
                self.inner.path.display()
            )));
        }
        if lock(&self.inner.lock).is_none() {
            return Err(self.closed());
        }
        self.inner
            .attached
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .map(drop)
            .map_err(|_| {
                StoreError::in_use(format!(
                    "sqlite store `{}`: another engine of this process drives this store (or a \
                     clone of it); one engine drives an SQLite store at a time, because its \
                     claims take every unfinished run: share that engine (Engine is Clone and \
                     can register several workflows), or shut it down first",
                    self.inner.path.display()
                ))
            })
    }

    fn detach(&self) {
        self.inner.attached.store(false, Ordering::SeqCst);
    }

    fn close(&self) {
        // Connections first (the last one checkpoints the WAL), then the file lock.
        drop(lock(&self.inner.writer).take());
        drop(lock(&self.inner.reader).take());
        drop(lock(&self.inner.lock).take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_writes::{append, create};
    use crate::store::Cursor;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("durable-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("runs.db")
    }

    /// SQLite's plan for `sql`, one detail line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        let mut details = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        details
    }

    #[test]
    fn sqlite_failures_map_to_the_kinds_the_journal_retries_or_not() {
        use rusqlite::ffi;
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        for (code, kind) in [
            (ffi::SQLITE_BUSY, StoreErrorKind::Transient),
            (ffi::SQLITE_LOCKED, StoreErrorKind::Transient),
            (ffi::SQLITE_IOERR, StoreErrorKind::Transient),
            (ffi::SQLITE_IOERR_FSYNC, StoreErrorKind::Transient),
            (ffi::SQLITE_FULL, StoreErrorKind::Full),
            (ffi::SQLITE_CORRUPT, StoreErrorKind::Corrupt),
            (ffi::SQLITE_NOTADB, StoreErrorKind::Corrupt),
            (ffi::SQLITE_READONLY, StoreErrorKind::Other),
            (ffi::SQLITE_CONSTRAINT, StoreErrorKind::Other),
        ] {
            let err = db_error(failure(code));
            assert_eq!(err.kind(), kind, "SQLite code {code}: {err}");
            let source = std::error::Error::source(&err).expect("the SQLite error");
            assert!(source.is::<rusqlite::Error>(), "{source:?}");
        }
        let undecodable = rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            "unknown journal entry kind `x`".into(),
        );
        assert_eq!(sqlite_kind(&undecodable), StoreErrorKind::Corrupt);
    }

    #[test]
    fn a_commit_reuses_its_compiled_statements_whatever_run_it_writes() {
        use rusqlite::StatementStatus;
        let path = scratch("reprepare");
        let store = SqliteStore::open(&path).unwrap();
        let mut guard = lock(&store.inner.writer);
        let conn = guard.as_mut().expect("open");
        for i in 0..20 {
            let run = format!("run-{i}");
            let create = create(&run);
            let append = append(&run, 1, Some(Finish::Completed("{}".into())));
            let outcomes = commit_batch(conn, &[create, append]).unwrap();
            assert_eq!(outcomes, [Ok(()), Ok(())]);
        }
        // Every statement a commit runs, as `apply` spells it (the cache hands out the same
        // compiled statement): none was compiled again for another run's id.
        let sql = [
            "SELECT lease_token, status, (SELECT coalesce(max(seq), 0) FROM \
             durable_journal WHERE run_id = ?1) FROM durable_runs WHERE id = ?1",
            "UPDATE durable_runs SET status = ?2, output = ?3, error = ?4, updated_at = ?5, \
             end_crc32c = ?6, end_checksum = NULL, cancel_requested = NULL WHERE id = ?1",
            "SELECT parent_run, parent_step FROM durable_runs WHERE id = ?1 \
             AND parent_run IS NOT NULL",
        ];
        for sql in sql {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{sql}");
            assert!(
                stmt.get_status(StatementStatus::Run) >= 20,
                "{sql} is not apply's"
            );
        }
        drop(guard);
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn due_sleepers_are_found_through_the_wake_index_without_a_scan() {
        let path = scratch("wake-plan");
        let store = SqliteStore::open(&path).unwrap();
        let guard = lock(&store.inner.reader);
        let conn = guard.as_ref().expect("open");
        for sql in [WAKE_DUE_SQL, NEXT_WAKE_SQL] {
            let plan = plan(conn, sql);
            assert_eq!(plan.len(), 1, "{sql}: {plan:?}");
            assert!(
                plan[0].starts_with("SEARCH durable_runs USING")
                    && plan[0].contains("INDEX durable_runs_by_wake (status=? AND wake_at"),
                "{sql}: {plan:?}"
            );
        }
        drop(guard);
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn runs_that_slept_through_a_message_are_found_through_their_own_index() {
        let path = scratch("unread-plan");
        let store = SqliteStore::open(&path).unwrap();
        let guard = lock(&store.inner.reader);
        let plan = plan(guard.as_ref().expect("open"), WAKE_UNREAD_SQL);
        assert_eq!(plan.len(), 1, "{plan:?}");
        // The whole of the partial index, which holds only those runs: no read of another.
        assert_eq!(plan[0], "SCAN durable_runs USING INDEX durable_runs_unread");
        drop(guard);
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A file version 6 left with a run suspended though its inbox held a message (the bug
    /// of version 6: a crash between its suspension and the in-memory look that would have
    /// woken it) is migrated, and the next claim takes that run, and only it: a run suspended
    /// with an empty inbox stays asleep.
    #[test]
    fn a_run_version_6_left_asleep_with_a_message_is_claimed_after_the_upgrade() {
        let path = scratch("stuck-v6");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE durable_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                 INSERT INTO durable_meta VALUES ('schema', '1');
                 CREATE TABLE durable_runs (id TEXT NOT NULL UNIQUE, workflow TEXT NOT NULL,
                     fingerprint TEXT NOT NULL, status TEXT NOT NULL, input TEXT NOT NULL,
                     output TEXT, error TEXT, owner TEXT, lease_token INTEGER NOT NULL,
                     lease_expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL,
                     updated_at INTEGER NOT NULL);
                 CREATE INDEX durable_runs_by_status ON durable_runs (status, workflow);
                 CREATE TABLE durable_journal (run_id TEXT NOT NULL, seq INTEGER NOT NULL,
                     step TEXT NOT NULL, kind TEXT NOT NULL, attempt INTEGER NOT NULL,
                     payload TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (run_id, seq))
                     WITHOUT ROWID;",
            )
            .unwrap();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 6) {
                conn.execute_batch(&format!(
                    "{sql}\nUPDATE durable_meta SET value = '{version}' WHERE key = 'schema';"
                ))
                .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO durable_runs (id, workflow, fingerprint, status, input, lease_token,
                     lease_expires_at, created_at, updated_at)
                     VALUES ('stuck', 'wf', 'f', 'suspended', '{}', 3, 0, 1, 1),
                            ('asleep', 'wf', 'f', 'suspended', '{}', 3, 0, 2, 2);
                 INSERT INTO durable_inbox (run_id, seq, kind, name, payload, at)
                     VALUES ('stuck', 1, 'signal', 'go', 'true', 5);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let claim = Claim::new("w", Duration::from_secs(30));
        let claimed = runtime.block_on(store.claim_runs(claim)).unwrap();
        let claimed: Vec<(&str, RunStatus, u64)> = claimed
            .iter()
            .map(|r| (r.id.as_str(), r.status, r.lease_token))
            .collect();
        assert_eq!(claimed, [("stuck", RunStatus::Running, 4)]);
        // The message from before the upgrade has no checksum and is read as it is.
        let inbox = runtime.block_on(store.load_inbox(&"stuck".into())).unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].payload, "true");
        // Suspended again having seen it, it stays asleep; nor does the other wake.
        let nap = Finish::Suspended {
            wake_at: None,
            inbox_seen: Some(1),
        };
        let write = Write::Append {
            run: "stuck".into(),
            lease_token: 4,
            entries: Vec::new(),
            finish: Some(nap),
        };
        let committed = runtime.block_on(async { store.commit(&[write]).await });
        assert_eq!(committed.unwrap(), [Ok(())]);
        let claim = Claim::new("w", Duration::from_secs(30));
        assert!(runtime
            .block_on(store.claim_runs(claim))
            .unwrap()
            .is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn every_listing_walks_an_index_in_order_without_a_scan_or_a_sort() {
        let path = scratch("plan");
        let store = SqliteStore::open(&path).unwrap();
        let conn = lock(&store.inner.reader);
        for workflow in [None, Some("w".to_owned())] {
            for status in [None, Some(RunStatus::Completed)] {
                for after in [
                    None,
                    Some(Cursor {
                        created_at: 5,
                        id: "r".into(),
                    }),
                ] {
                    let filter = RunFilter {
                        workflow: workflow.clone(),
                        status,
                        limit: Some(10),
                        after: after.clone(),
                    };
                    let plan = plan(conn.as_ref().expect("open"), &list_sql(&filter));
                    let shown = format!("{filter:?}: {plan:?}");
                    assert_eq!(plan.len(), 1, "{shown}");
                    assert!(plan[0].contains("USING INDEX durable_runs_by_"), "{shown}");
                    assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{shown}");
                    if after.is_some() || workflow.is_some() || status.is_some() {
                        // A range of the index, not a walk of all of it.
                        assert!(plan[0].starts_with("SEARCH"), "{shown}");
                    }
                }
            }
        }
        drop(conn);
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
