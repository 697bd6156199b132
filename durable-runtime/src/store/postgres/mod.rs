//! A store in PostgreSQL, shared by any number of worker processes on any number of machines.
//!
//! Every worker is an [`Engine`](crate::Engine) over the same database (and schema). A worker
//! claims runnable runs with `FOR UPDATE SKIP LOCKED` up to its capacity
//! ([`EngineBuilder::max_runs`](crate::engine::EngineBuilder::max_runs)), holds each by a
//! lease that its heartbeat extends, and gives the leases back on shutdown. A worker that dies
//! or hangs loses its leases when they expire, and another worker resumes its runs from the
//! journal. Every journal write carries the lease token and is checked against it under the
//! run's row lock, in the same transaction, so a worker that wakes up late is refused.
//!
//! Lease times are read from the database's clock (`clock_timestamp()`), never a worker's, so
//! clock skew between machines cannot make a live lease look expired.
//!
//! Journal writes are group-committed as on SQLite: the journal hands over a batch of writes
//! from many runs, committed in one transaction in two round trips (pipelined: `BEGIN` +
//! creates + one `SELECT … FOR UPDATE` of every run the batch appends to; then one multi-row
//! `INSERT … SELECT FROM unnest(…)` of every journal entry + one `UPDATE` of finished runs +
//! `COMMIT`), with prepared statements.
//!
//! A suspension is decided against the run's inbox under the run's row lock, in the statement
//! that records it: a message delivered after the run's waits looked leaves it awake (see
//! `schema::end_assignments`). Each inbox message carries a SHA-256 checksum the server
//! computes on insert, verified when the inbox is loaded.
//!
//! The schema lives in a PostgreSQL schema of its own (`durable` unless told otherwise), so
//! several applications, or tests, can share one database. It is created, or migrated, on
//! first use under a transaction-scoped advisory lock, so workers starting at once do not race.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio::sync::{Notify, OnceCell};
use tokio_postgres::NoTls;

use super::{
    Claim, ClaimableWatch, InboxMessage, JournalEntry, Rejected, RunFilter, RunRecord, Store,
    StoreError, StoreErrorKind, Write,
};
use crate::step::BoxFuture;
use crate::RunId;

mod claim;
mod commit;
mod listen;
mod schema;
mod suspend;
#[cfg(test)]
mod tests;

pub use schema::SCHEMA_VERSION;

/// Options of [`PostgresStore::with_options`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The PostgreSQL schema the store's tables live in (default `durable`). Letters, digits
    /// and `_`, at most 48 characters, not starting with a digit.
    pub schema: String,
    /// Connections in the pool (default 8). A worker commits through up to
    /// `commits_in_flight` of them at a time; the others serve reads, claims and heartbeats.
    pub pool_size: usize,
    /// How many batches of the journal's group commit may be committing at once (default 2),
    /// each on a connection of its own and never two writing to the same run: while one
    /// waits for its fsync, the server works on the next. Measured with seq10 on this
    /// project's 2-core machine, medians of five bursts: 1 in flight 35,300 and 35,800
    /// steps/s, 2 in flight 38,900 and 40,400. 1 commits one batch at a time; at most
    /// `pool_size - 1` are used, so one connection stays for claims and heartbeats.
    pub commits_in_flight: usize,
    /// How long connecting may take before the store gives up with an error (default 5s).
    pub connect_timeout: Duration,
    /// The longest one store operation (a commit, a claim, a read) may take before it fails
    /// with an error (default 30s), so a connection that went dead without closing (a
    /// network partition) cannot stall a worker: the journal retries a failed commit on a
    /// fresh connection, and finds out whether the first attempt landed.
    pub operation_timeout: Duration,
    /// The server ends a session of this store that sits idle inside a transaction this long
    /// (`idle_in_transaction_session_timeout`, default 10s), so a worker frozen mid-commit
    /// (SIGSTOP, a VM pause) cannot hold its runs' row locks, and stall other workers, for
    /// longer. Keep it below the lease.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "durable".into(),
            pool_size: 8,
            commits_in_flight: 2,
            connect_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresOptions {
    /// The default options with another schema.
    pub fn schema(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }
}

/// A store in a PostgreSQL database, shared by many workers.
///
/// ```no_run
/// use durable::store::postgres::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
/// let store = PostgresStore::connect("postgres://root@127.0.0.1:5432/test").await?;
/// let engine = durable::Engine::builder(store).max_runs(64).build().await?;
/// # Ok(()) }
/// ```
///
/// A store belongs to the tokio runtime it was first used on (its connections run there).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    schema: String,
    connect_timeout: Duration,
    operation_timeout: Duration,
    commits_in_flight: usize,
    sql: schema::Sql,
    /// Set once the schema is known to be current.
    ready: OnceCell<()>,
    /// Told by the listener of every NOTIFY (a run was queued or woken, leases were
    /// released, a cancellation requested).
    work: Arc<Work>,
    listening: AtomicBool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), creating or
    /// migrating the schema `durable` in it. Fails with a clear error, after at most 5s, when
    /// the server cannot be reached, and when the schema was written by a newer version of
    /// this crate.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with `options` (another schema, pool size or connect timeout).
    ///
    /// ```no_run
    /// use durable::store::postgres::{PostgresOptions, PostgresStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::store::StoreError> {
    /// let store = PostgresStore::connect_with(
    ///     "postgres://root@127.0.0.1:5432/test",
    ///     PostgresOptions::schema("billing_workflows"),
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let store = Self::with_options(url, options)?;
        store.ready().await?;
        Ok(store)
    }

    /// Builds the store without connecting: the first operation connects, and creates or
    /// migrates the schema. Fails only on a malformed URL or schema name.
    ///
    /// ```
    /// use durable::store::postgres::{PostgresOptions, PostgresStore};
    ///
    /// let store = PostgresStore::with_options(
    ///     "postgres://root@127.0.0.1:5432/test",
    ///     PostgresOptions::schema("my_app"),
    /// )?;
    /// assert_eq!(store.schema(), "my_app");
    /// assert!(PostgresStore::with_options("postgres://x/y", PostgresOptions::schema("a; drop")).is_err());
    /// # Ok::<(), durable::store::StoreError>(())
    /// ```
    pub fn with_options(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        schema::check_name(&options.schema)?;
        let err = |what: String| StoreError::other(format!("postgres store: {what}"));
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| err(format!("the URL `{url}` is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        // Generic plans (a URL's own `options` may say otherwise): each statement here is
        // planned once per connection. With custom plans PostgreSQL re-planned a lone run's
        // one-statement append at every commit (0.25 to 0.4 ms each, more than the commit's
        // fsync): a lone seq10 run took 10.5 to 13 ms against 6.3 to 6.8 ms with generic
        // plans, measured in turns in one sitting.
        let generic = "-c plan_cache_mode=force_generic_plan";
        let idle = format!(
            "-c idle_in_transaction_session_timeout={}",
            options.idle_in_transaction_timeout.as_millis().max(1)
        );
        let server_options = match config.get_options() {
            Some(given) => format!("{generic} {given} {idle}"),
            None => format!("{generic} {idle}"),
        };
        config.options(server_options);
        // A connection that went dead without closing (a network partition, a frozen peer)
        // is found by TCP keepalives within about half a minute, not the system's two hours,
        // and is then replaced by the pool.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(15));
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(5));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        if config.get_application_name().is_none() {
            config.application_name("durable");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection that died (server restart, pg_terminate_backend) is closed and
                // replaced; a live one is handed out without a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            // The connection handed back last goes out first: a lone run's commits, one after
            // another, keep to one server process that has just run, instead of waking each
            // of the pool's in turn (a lone seq10 run: 3.4 against 3.8 ms, in turns).
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .wait_timeout(Some(options.connect_timeout * 6))
            .build()
            .map_err(|e| err(format!("cannot build the connection pool: {e}")))?;
        let sql = schema::Sql::new(&options.schema);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                schema: options.schema,
                connect_timeout: options.connect_timeout,
                operation_timeout: options.operation_timeout,
                // One connection stays for claims, heartbeats and reads.
                commits_in_flight: options
                    .commits_in_flight
                    .min(options.pool_size.saturating_sub(1))
                    .max(1),
                sql,
                ready: OnceCell::new(),
                work: Arc::default(),
                listening: AtomicBool::new(false),
            }),
        })
    }

    /// The PostgreSQL schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// `op`, failing with an error past the operation timeout (a dropped future abandons its
    /// connection: see the commit's transaction guard).
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.inner.operation_timeout;
        tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
            Err(self.inner.error_kind(
                StoreErrorKind::Transient,
                format!("no answer within {limit:?}; the connection is dropped"),
            ))
        })
    }

    /// Creates or migrates the schema if that was not done yet by this store.
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner
            .ready
            .get_or_try_init(|| async {
                let timeout = self.inner.connect_timeout;
                match tokio::time::timeout(timeout * 2, schema::migrate(&self.inner)).await {
                    Ok(result) => result,
                    Err(_) => Err(self.inner.error_kind(
                        StoreErrorKind::Transient,
                        format!(
                            "the server did not answer within {timeout:?} (is PostgreSQL \
                             running and reachable at {}?)",
                            self.inner.target()
                        ),
                    )),
                }
            })
            .await
            .map(drop)
    }
}

impl Inner {
    pub(crate) fn error_text(&self, what: impl std::fmt::Display) -> StoreError {
        self.error_kind(StoreErrorKind::Other, what)
    }

    pub(crate) fn error_kind(
        &self,
        kind: StoreErrorKind,
        what: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::new(
            kind,
            format!(
                "postgres store ({}, schema `{}`): {what}",
                self.target(),
                self.schema
            ),
        )
    }

    /// A driver error, with its kind (see [`kind_of`]) and itself as the source.
    pub(crate) fn error(&self, e: tokio_postgres::Error) -> StoreError {
        self.error_kind(kind_of(&e), describe(&e)).with_source(e)
    }

    /// Where the store connects, for error messages (never the password).
    fn target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("");
        format!("{host}:{port}/{db}")
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => self
                .error_kind(kind_of(&e), format!("cannot connect: {}", describe(&e)))
                .with_source(e),
            deadpool_postgres::PoolError::Timeout(_) => self.error_kind(
                StoreErrorKind::Transient,
                format!(
                    "cannot connect: no answer within {:?} (is PostgreSQL running and \
                     reachable?)",
                    self.connect_timeout
                ),
            ),
            other => self.error_text(format!("cannot connect: {other}")),
        })
    }
}

/// What kind of failure a driver error is: a lost or refused connection, a serialization
/// failure, a deadlock, a server shutting down or out of connections may pass by themselves
/// (transient, retried); a full disk is [`Full`](StoreErrorKind::Full) (retried too); damaged
/// data is corrupt; a missing table or schema is not this store's; anything else is not
/// retried.
pub(crate) fn kind_of(e: &tokio_postgres::Error) -> StoreErrorKind {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a closed connection, a timeout: the connection's, not the data's.
        return StoreErrorKind::Transient;
    };
    let code = code.code();
    match code {
        "53100" => StoreErrorKind::Full,
        "XX001" | "XX002" => StoreErrorKind::Corrupt,
        "42P01" | "3F000" | "42703" => StoreErrorKind::Foreign,
        _ if code.starts_with("08")
            || code.starts_with("40")
            || code.starts_with("57P")
            || code.starts_with("53")
            || code == "55P03" =>
        {
            StoreErrorKind::Transient
        }
        _ => StoreErrorKind::Other,
    }
}

/// A driver error with its cause: the server's message and SQLSTATE, or the I/O error.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Store for PostgresStore {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            commit::commit(&self.inner, batch).await
        }))
    }

    fn commits_in_flight(&self) -> usize {
        self.inner.commits_in_flight
    }

    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            claim::load_run(&self.inner, id).await
        }))
    }

    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            claim::load_journal(&self.inner, id).await
        }))
    }

    fn claim_runs<'a>(
        &'a self,
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            claim::claim_runs(&self.inner, claim).await
        }))
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            claim::renew_leases(&self.inner, owner, lease).await
        }))
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            claim::release_leases(&self.inner, owner).await
        }))
    }

    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            claim::list_runs(&self.inner, filter).await
        }))
    }

    fn watch_claimable(&self) -> Result<Option<Box<dyn ClaimableWatch>>, StoreError> {
        if !self.inner.listening.swap(true, Ordering::SeqCst) {
            tokio::spawn(listen::listen(Arc::downgrade(&self.inner)));
        }
        Ok(Some(Box::new(Watch(Arc::clone(&self.inner.work)))))
    }

    fn next_wake_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::next_wake_at(&self.inner).await
        }))
    }

    fn wake<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::wake(&self.inner, run).await
        }))
    }

    fn request_cancel<'a>(
        &'a self,
        run: &'a RunId,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::request_cancel(&self.inner, run, reason).await
        }))
    }

    fn cancel_requests<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RunId, String)>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::cancel_requests(&self.inner, owner).await
        }))
    }

    fn reopen<'a>(
        &'a self,
        run: &'a RunId,
        entries: &'a [JournalEntry],
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::reopen(&self.inner, run, entries).await
        }))
    }

    fn deliver<'a>(
        &'a self,
        run: &'a RunId,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, Result<Result<u64, Rejected>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::deliver(&self.inner, run, kind, name, payload).await
        }))
    }

    fn load_inbox<'a>(
        &'a self,
        run: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, StoreError>> {
        Box::pin(self.timed(async move {
            self.ready().await?;
            suspend::load_inbox(&self.inner, run).await
        }))
    }
}

/// What the listener tells the workers: a number bumped on every NOTIFY, and a wake-up.
#[derive(Default)]
pub(crate) struct Work {
    version: AtomicU64,
    notify: Notify,
}

impl Work {
    /// Runs may have become claimable (or a cancellation was requested).
    pub(crate) fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// The watch of [`Store::watch_claimable`]: fed by LISTEN on a connection of its own, so a
/// run queued, woken or cancelled by any process is claimed at once by a free worker. Holds
/// neither the pool nor the store.
struct Watch(Arc<Work>);

impl ClaimableWatch for Watch {
    fn version(&mut self) -> Result<u64, StoreError> {
        Ok(self.0.version.load(Ordering::SeqCst))
    }

    fn changed(&mut self, poll: Duration) -> BoxFuture<'_, ()> {
        let work = Arc::clone(&self.0);
        let seen = work.version.load(Ordering::SeqCst);
        Box::pin(async move {
            let notified = work.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if work.version.load(Ordering::SeqCst) != seen {
                return;
            }
            let _ = tokio::time::timeout(poll, notified).await;
        })
    }
}
