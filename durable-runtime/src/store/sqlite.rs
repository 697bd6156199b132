//! The embedded default store: one SQLite file, WAL, `synchronous=FULL`.
//!
//! One process drives a file at a time: opening takes an exclusive lock on it, so every lease
//! found in the file belongs to a process that is gone, and [`claim_runs`](Store::claim_runs)
//! takes every unfinished run at once (no waiting for leases to expire after a crash). Writes
//! go through one connection on a blocking thread, a whole batch per transaction; reads use a
//! second connection, which WAL lets run beside the writer.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::{
    Claim, Finish, JournalEntry, Rejected, RunFilter, RunRecord, RunStatus, Store, StoreError,
    Write,
};
use crate::clock::now_millis;
use crate::step::BoxFuture;
use crate::RunId;

/// The schema version this code writes and reads.
const SCHEMA_VERSION: i64 = 1;

/// How hard SQLite works to make each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    path: PathBuf,
    _lock: File,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with `synchronous=FULL`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the store at `path`.
    ///
    /// Fails with a clear error when the file is not an SQLite database, is the database of
    /// another application, was written by a newer version of this crate, or is open in
    /// another engine.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let err = |what: String| StoreError(format!("sqlite store `{shown}`: {what}"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(format!("cannot open the file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(err(
                    "the file is open in another durable engine; one process drives an SQLite \
                     store at a time (use the PostgreSQL store for many workers)"
                        .into(),
                ))
            }
            Err(TryLockError::Error(e)) => return Err(err(format!("cannot lock the file: {e}"))),
        }
        check_header(&lock).map_err(err)?;
        // Check what the file is before any pragma (WAL mode rewrites the header).
        let probe = Connection::open(&path).map_err(|e| err(e.to_string()))?;
        prepare_schema(&probe).map_err(err)?;
        drop(probe);
        let writer = connect(&path, options.synchronous).map_err(|e| err(e.to_string()))?;
        let reader = connect(&path, options.synchronous).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                path,
                _lock: lock,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        StoreError(format!("sqlite store `{}`: {e}", self.inner.path.display()))
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
                f(&mut lock(conn))
            })
            .await
            .map_err(|e| {
                StoreError(format!(
                    "sqlite store `{shown}`: the database thread died: {e}"
                ))
            })?
            .map_err(|e| StoreError(format!("sqlite store `{shown}`: {e}")))
        })
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic inside a transaction rolls it back when the connection is next used, so a
    // poisoned connection is still consistent.
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// Refuses a file that is neither empty nor an SQLite database, before SQLite touches it.
fn check_header(mut file: &File) -> Result<(), String> {
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("cannot read the file: {e}")),
        }
    }
    if read == 0 || header == *b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(
            "the file is not an SQLite database, so not a durable store; point the store at a \
             new path or at a file it created"
                .into(),
        )
    }
}

fn connect(path: &Path, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
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
fn prepare_schema(conn: &Connection) -> Result<(), String> {
    let db = |e: rusqlite::Error| e.to_string();
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
            Some(Ok(v)) if v > SCHEMA_VERSION => Err(format!(
                "the file has schema version {v}, written by a newer version of durable; this \
                 one reads version {SCHEMA_VERSION}: upgrade durable"
            )),
            other => Err(format!(
                "the file's durable_meta table is damaged (schema version {other:?}); the \
                 journal was not touched"
            )),
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
        return Err(format!(
            "the file is an SQLite database of another application ({tables} tables, none of \
             them durable's); point the store at a new path"
        ));
    }
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE durable_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
         INSERT INTO durable_meta VALUES ('schema', '{SCHEMA_VERSION}');
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
         COMMIT;"
    ))
    .map_err(db)
}

const RUN_COLUMNS: &str = "id, workflow, fingerprint, status, input, output, error, owner, \
                           lease_token, created_at, updated_at";

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
                     lease_token, lease_expires_at, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, 'running', ?4, ?5, 1, ?6, ?7, ?7) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    new.id.as_str(),
                    new.workflow,
                    new.fingerprint,
                    new.input,
                    (!new.owner.is_empty()).then_some(&new.owner),
                    new.lease_expires_at as i64,
                    now
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
            let current: Option<(i64, String)> = tx
                .prepare_cached("SELECT lease_token, status FROM durable_runs WHERE id = ?1")?
                .query_row([run.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((current, status)) = current else {
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
            // A savepoint only when several entries must stand or fall together.
            let grouped = entries.len() > 1;
            if grouped {
                tx.execute_batch("SAVEPOINT entries")?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO durable_journal (run_id, seq, step, kind, attempt, payload, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            )?;
            for entry in entries {
                let inserted = insert.execute(params![
                    run.as_str(),
                    entry.seq as i64,
                    entry.step,
                    entry.kind.as_str(),
                    entry.attempt,
                    entry.payload,
                    entry.at as i64
                ])?;
                if inserted == 0 {
                    if grouped {
                        tx.execute_batch("ROLLBACK TO entries; RELEASE entries")?;
                    }
                    return Ok(Err(Rejected::DuplicateEntry { seq: entry.seq }));
                }
            }
            if grouped {
                tx.execute_batch("RELEASE entries")?;
            }
            // Only a run's end touches its row: a step's commit writes one journal page.
            let (status, output, error) = match finish {
                Some(Finish::Completed(output)) => (RunStatus::Completed, Some(output), None),
                Some(Finish::Failed(error)) => (RunStatus::Failed, None, Some(error)),
                None => return Ok(Ok(())),
            };
            tx.prepare_cached(
                "UPDATE durable_runs SET status = ?2, output = ?3, error = ?4, updated_at = ?5 \
                 WHERE id = ?1",
            )?
            .execute(params![run.as_str(), status.as_str(), output, error, now])?;
            Ok(Ok(()))
        }
    }
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
        // Only the journal's single writer task commits. On a multi-thread runtime it commits
        // right here, holding its worker for the batch (one fsync, ~0.2 ms) while the other
        // workers run steps: that saves two thread hand-offs per commit, a third of a lone
        // run's latency (measured: median 3.2 -> 2.3 ms for ten steps). On a current-thread
        // runtime that would stall every task, so the batch goes to the blocking pool.
        if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            let result =
                commit_batch(&mut lock(&self.inner.writer), batch).map_err(|e| self.error(e));
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
        self.blocking(false, move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM durable_runs WHERE id = ?1"
            ))?
            .query_row([id.as_str()], run_from_row)
            .optional()
        })
    }

    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let id = id.clone();
        self.blocking(false, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, step, kind, attempt, payload, at FROM durable_journal \
                 WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id.as_str()], |r| {
                let kind: String = r.get(2)?;
                Ok(JournalEntry {
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
                })
            })?;
            rows.collect()
        })
    }

    fn claim_runs<'a>(
        &'a self,
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        let owner = claim.owner.to_owned();
        let (lease, limit) = (claim.lease, i64::try_from(claim.limit).unwrap_or(i64::MAX));
        self.blocking(true, move |conn| {
            // This process holds the file's lock, so whoever held these leases is gone.
            let until = (now_millis() + lease.as_millis() as u64) as i64;
            let mut stmt = conn.prepare(&format!(
                "UPDATE durable_runs SET owner = ?1, lease_token = lease_token + 1, \
                 lease_expires_at = ?2 \
                 WHERE rowid IN (SELECT rowid FROM durable_runs WHERE status = 'running' \
                 AND (owner IS NULL OR owner != ?1) ORDER BY created_at, rowid LIMIT ?3) \
                 RETURNING {RUN_COLUMNS}"
            ))?;
            let rows = stmt.query_map(params![owner, until, limit], run_from_row)?;
            let mut runs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            runs.sort_by_key(|r| (r.created_at, r.id.clone()));
            Ok(runs)
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

    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.blocking(false, move |conn| {
            let limit = filter.limit.map_or(-1, |l| l as i64);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM durable_runs \
                 WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2) \
                 ORDER BY created_at DESC, rowid DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![filter.workflow, filter.status.map(RunStatus::as_str), limit],
                run_from_row,
            )?;
            rows.collect()
        })
    }
}
