//! Shared helpers of the integration tests: stores to run every behaviour against, scratch
//! directories, a log of side effects to count which steps really ran, and bounded waits on
//! runs ([`wait_for_run`] and friends: every test that waits for a run's end goes through
//! one, so a lost wake-up fails the test, saying what the run waited for, instead of hanging).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::store::sqlite::SqliteStore;
use durable::Store;

mod backdoor;
mod bounded;
pub mod conformance;
pub mod gates;
pub mod thaw;

pub use backdoor::Backdoor;

pub use bounded::{
    bounded, client_wait_for_handle, client_wait_for_run, run_to_end, wait_for_handle,
    wait_for_run, within_real_time, Reader, RUN_BOUND,
};

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`MemoryStore`].
    Memory,
    /// [`SqliteStore`] in a scratch file.
    Sqlite,
    /// [`PostgresStore`] in a schema of its own, dropped when the [`TestStore`] is.
    Postgres,
}

/// The environment variable naming the PostgreSQL server the tests use, e.g.
/// `postgres://root@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "DURABLE_TEST_POSTGRES_URL";

/// The test server's URL, or `None` after printing (past the test harness's capture, so it
/// shows) that `test` was skipped and why.
pub fn postgres_url_or_skip(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test} on PostgreSQL: {POSTGRES_URL_VAR} is not set (see the README: \
                 e.g. {POSTGRES_URL_VAR}=postgres://root@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// A fresh schema name, unique to this process and call.
pub fn scratch_schema() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "durable_test_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops a PostgreSQL schema and everything in it (on a thread and runtime of its own, so it
/// works from any context, a `Drop` included).
pub fn drop_schema(url: &str, schema: &str) {
    let (url, name) = (url.to_owned(), schema.to_owned());
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(connection);
            let dropped = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await
                .map_err(|e| e.to_string());
            drop(client);
            let _ = conn.await;
            dropped
        })
    })
    .join();
    if let Ok(Err(e)) = done {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("could not drop test schema {schema}: {e}\n").as_bytes(),
        );
    }
}

/// A store a test can close and open again, as a restarted process would.
pub struct TestStore {
    backend: Backend,
    memory: MemoryStore,
    dir: PathBuf,
    /// The server URL and the schema, for the PostgreSQL backend.
    postgres: Option<(String, String)>,
}

impl TestStore {
    /// A fresh, empty store.
    pub fn new(backend: Backend) -> Self {
        let postgres = (backend == Backend::Postgres).then(|| {
            let url = std::env::var(POSTGRES_URL_VAR)
                .unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} is not set"));
            (url, scratch_schema())
        });
        Self {
            backend,
            memory: MemoryStore::new(),
            dir: if backend == Backend::Postgres {
                PathBuf::new()
            } else {
                scratch_dir()
            },
            postgres,
        }
    }

    /// The PostgreSQL URL and schema (PostgreSQL backend only).
    pub fn postgres(&self) -> Option<(&str, &str)> {
        self.postgres
            .as_ref()
            .map(|(u, s)| (u.as_str(), s.as_str()))
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The SQLite file's path (also set for the memory backend, unused there).
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("durable.db")
    }

    /// Opens the store: the same contents every time. An SQLite file still held by a
    /// previous engine (dropped, its tasks not yet gone) is waited for, up to 60 s.
    pub fn open(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Memory => Arc::new(self.memory.clone()),
            Backend::Sqlite => Arc::new(open_sqlite_retrying(&self.db_path())),
            Backend::Postgres => {
                let (url, schema) = self.postgres.as_ref().expect("set for postgres");
                let options = PostgresOptions {
                    pool_size: 4,
                    ..PostgresOptions::schema(schema.clone())
                };
                Arc::new(PostgresStore::with_options(url, options).expect("a valid URL"))
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.postgres {
            drop_schema(url, schema);
        }
    }
}

/// Opens an SQLite store, waiting (up to 60 s) for a previous engine of this process (dropped,
/// or its runtime being torn down) to let go of the file.
pub fn open_sqlite_retrying(path: &Path) -> SqliteStore {
    // A dropped engine's tasks let go of the file a moment after the drop (later still on a
    // busy machine): wait for that, not for a fixed time; any other error fails at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match SqliteStore::open(path) {
            Ok(store) => return store,
            Err(e)
                if e.kind() == durable::store::StoreErrorKind::InUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

/// A new empty directory under the target directory's tmp folder.
pub fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("durable-tests");
    let dir = base.join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `f` on a fresh multi-threaded runtime and drops the runtime afterwards, which cancels
/// every task it still has: in-process, the closest thing to a process that stops.
pub fn in_runtime<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(f);
    rt.shutdown_timeout(Duration::from_secs(5));
    out
}

/// An in-memory record of which steps ran, in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Records an event.
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// How often `event` was recorded.
    pub fn count(&self, event: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == event)
            .count()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Defines one `#[test]` per backend from a body that takes a [`TestStore`].
#[macro_export]
macro_rules! each_store {
    ($(fn $name:ident($store:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($store: $crate::TestStore) $body

                #[test]
                fn memory() {
                    body($crate::TestStore::new($crate::Backend::Memory));
                }

                #[test]
                fn sqlite() {
                    body($crate::TestStore::new($crate::Backend::Sqlite));
                }
            }
        )*
    };
}

/// Like [`each_store!`], plus a test on PostgreSQL (in a schema of its own, dropped after),
/// which prints that it was skipped, and why, when [`POSTGRES_URL_VAR`] is not set.
#[macro_export]
macro_rules! each_store_and_postgres {
    ($(fn $name:ident($store:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($store: $crate::TestStore) $body

                #[test]
                fn memory() {
                    body($crate::TestStore::new($crate::Backend::Memory));
                }

                #[test]
                fn sqlite() {
                    body($crate::TestStore::new($crate::Backend::Sqlite));
                }

                #[test]
                fn postgres() {
                    let test = concat!(module_path!(), "::postgres");
                    if $crate::postgres_url_or_skip(test).is_some() {
                        body($crate::TestStore::new($crate::Backend::Postgres));
                    }
                }
            }
        )*
    };
}

/// Side effects recorded by steps, per run, so tests running at once do not mix them.
static EVENTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records that `what` happened in the run of `ctx`.
pub fn note(ctx: &durable::StepContext, what: impl Into<String>) {
    EVENTS
        .lock()
        .unwrap()
        .push((ctx.run_id().to_string(), what.into()));
}

/// Everything recorded for `run`, in order.
pub fn events(run: &durable::RunId) -> Vec<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _)| r == run.as_str())
        .map(|(_, e)| e.clone())
        .collect()
}

/// How often `what` was recorded for `run`.
pub fn count(run: &durable::RunId, what: &str) -> usize {
    events(run).iter().filter(|e| *e == what).count()
}

/// Waits until a second step of the same run calls this too, failing after 5 s: two steps
/// that both call it finish only if they run at the same time. One barrier per run, so tests
/// running side by side never meet each other's steps.
pub async fn meet_another_step(ctx: &durable::StepContext) -> Result<(), durable::StepError> {
    static BARRIERS: Mutex<Vec<(String, Arc<tokio::sync::Barrier>)>> = Mutex::new(Vec::new());
    let barrier = {
        let mut all = BARRIERS.lock().unwrap();
        let run = ctx.run_id().to_string();
        match all.iter().find(|(r, _)| *r == run) {
            Some((_, b)) => Arc::clone(b),
            None => {
                let b = Arc::new(tokio::sync::Barrier::new(2));
                all.push((run, Arc::clone(&b)));
                b
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), barrier.wait())
        .await
        .map(drop)
        .map_err(|_| durable::StepError::terminal("the other branch never ran at the same time"))
}

/// The engine's wall clock in milliseconds since the Unix epoch: the system's, moved by how
/// far a paused tokio clock was advanced (as durable's own clock is), so a test on a paused
/// clock reads the times the engine journals.
pub fn now_ms() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (tokio_now, real_now) = (
        tokio::time::Instant::now().into_std(),
        std::time::Instant::now(),
    );
    let wall = match tokio_now.checked_duration_since(real_now) {
        Some(ahead) => wall + ahead,
        None => wall.saturating_sub(real_now.duration_since(tokio_now)),
    };
    wall.as_millis() as u64
}

/// Runs `f` on a current-thread runtime whose clock is paused: a `tokio::time::sleep` of an
/// hour passes at once, and durable's wall clock moves with it (no real sleeping).
pub fn in_paused_runtime<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let out = rt.block_on(f);
    rt.shutdown_timeout(Duration::from_secs(5));
    out
}
