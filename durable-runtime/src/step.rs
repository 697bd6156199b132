//! What a step is: the function signature, the context it may take, and the error it returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::data::State;
use crate::RunId;

/// A boxed, sendable future, the currency of the type-erased parts of the engine.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a step returns: the new state, or why it failed.
pub type StepResult<S> = Result<S, StepError>;

/// Facts about the step attempt being run, passed to step functions that ask for it.
///
/// A step function that takes a `StepContext` before its state gets the run id, the step's path
/// in the workflow, the attempt number and an idempotency key that stays the same across retries
/// and restarts: hand it to the service the step calls so a repeated call is recognised.
///
/// ```
/// use durable::{Data, StepContext, StepError};
///
/// async fn charge_card(ctx: StepContext, data: Data) -> Result<Data, StepError> {
///     // The same key on every attempt and after a crash: the payment provider deduplicates.
///     let key = ctx.idempotency_key();
///     Ok(data.assign("charge_key", key).assign("attempt", ctx.attempt()))
/// }
/// ```
#[derive(Clone)]
pub struct StepContext {
    inner: Arc<ContextInner>,
    attempt: u32,
}

struct ContextInner {
    workflow: &'static str,
    run_id: RunId,
    path: Arc<str>,
    /// Where sub-operations (`fan_out` and friends) are journaled; none outside an engine.
    ops: Option<Arc<dyn OpJournal>>,
    /// How many sub-operation calls this attempt made: names the next one.
    calls: std::sync::atomic::AtomicU32,
}

/// The journal as a step's sub-operations see it.
pub(crate) trait OpJournal: Send + Sync {
    /// Whether the run's lease surely holds now (see `lease.rs`): checked right before each
    /// sub-operation starts.
    fn lease_live(&self) -> bool;
    /// Shows the run's lease live again after its deadline passed, or fails (the lease is
    /// lost, or the store failed): the sub-operation must not start then.
    fn confirm_lease(&self) -> BoxFuture<'static, Result<(), StepError>>;
    /// The journaled output of a finished sub-operation.
    fn finished(&self, path: &str) -> Option<String>;
    /// Journals a sub-operation's outcome (`Ok(output)` or `Err(error)`), durably.
    fn record(
        &self,
        path: String,
        attempt: u32,
        outcome: Result<String, String>,
    ) -> BoxFuture<'static, Result<(), StepError>>;
    /// The run's group of spawned tasks, for the operations' tasks to nest in.
    fn tasks(&self) -> Arc<crate::tasks::Tasks>;
}

impl StepContext {
    #[doc(hidden)]
    pub fn new(workflow: &'static str, run_id: RunId, path: Arc<str>, attempt: u32) -> Self {
        Self::with_journal(workflow, run_id, path, attempt, None)
    }

    pub(crate) fn with_journal(
        workflow: &'static str,
        run_id: RunId,
        path: Arc<str>,
        attempt: u32,
        ops: Option<Arc<dyn OpJournal>>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                workflow,
                run_id,
                path,
                ops,
                calls: Default::default(),
            }),
            attempt,
        }
    }

    /// The journal path prefix of this step's next sub-operation call.
    pub(crate) fn next_call(&self, kind: &str) -> String {
        let n = self
            .inner
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        format!("{}/{kind}#{n}", self.inner.path)
    }

    pub(crate) fn ops(&self) -> Option<&Arc<dyn OpJournal>> {
        self.inner.ops.as_ref()
    }

    /// The name of the workflow this step belongs to.
    pub fn workflow(&self) -> &'static str {
        self.inner.workflow
    }

    /// The run this attempt belongs to.
    pub fn run_id(&self) -> &RunId {
        &self.inner.run_id
    }

    /// The step's path in the workflow (its name; inside collections, the name with the item).
    pub fn step(&self) -> &str {
        &self.inner.path
    }

    /// The attempt number, starting at 1; it counts journaled failed attempts, so it survives
    /// a restart.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key unique to this run and step and identical on every attempt of it: `run_id/step`.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.inner.run_id, self.inner.path)
    }
}

impl fmt::Debug for StepContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("workflow", &self.inner.workflow)
            .field("run_id", &self.inner.run_id)
            .field("step", &self.inner.path)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Why a step attempt failed.
///
/// Any `std::error::Error` converts into a `StepError` with `?`, as a retryable failure: the
/// step is tried again while its retry policy allows. A step may also return
/// `anyhow::Result<S>` (cargo feature `anyhow`, on by default): its error is a retryable
/// failure too, keeping the whole chain. Errors that are only `Display` convert with
/// `.map_err(StepError::retryable)`. [`StepError::terminal`] fails the step at once, whatever
/// retries remain (a card declined, a request the far side rejects as malformed).
///
/// The journal keeps the failure's text (with every cause in the chain); the error itself
/// stays reachable through [`source`](StepError::source), for code that calls the step
/// function directly (a test, a wrapper) to downcast:
///
/// ```
/// use durable::StepError;
///
/// let err: StepError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
/// let io = err.source().and_then(|e| e.downcast_ref::<std::io::Error>()).unwrap();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// ```
///
/// ```
/// use durable::StepError;
///
/// let transient: StepError = std::io::Error::other("connection reset").into();
/// assert!(!transient.is_terminal());
/// let fatal = StepError::terminal("card declined");
/// assert!(fatal.is_terminal());
/// assert_eq!(fatal.to_string(), "card declined");
/// ```
pub struct StepError {
    message: String,
    terminal: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StepError {
    /// A retryable failure with this message.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            terminal: false,
            source: None,
        }
    }

    /// A failure that no retry can mend: the step fails at once.
    pub fn terminal(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            terminal: true,
            source: None,
        }
    }

    /// Whether retries are skipped for this failure.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure caused by `source` (the message is kept as it is).
    ///
    /// ```
    /// use durable::StepError;
    ///
    /// let io = std::io::Error::other("connection refused");
    /// let err = StepError::terminal("the payment service refused the card").with_source(io);
    /// assert!(err.source().unwrap().is::<std::io::Error>());
    /// ```
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The error this failure was made from: the error a `?` converted, or the one given to
    /// [`with_source`](Self::with_source). (`StepError` is not itself a
    /// `std::error::Error`, so that every error converts into it with `?`.)
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(error: E) -> Self {
        // Keep the whole chain of causes: the journal stores text, not the error value.
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retryable(message).with_source(error)
    }
}

#[cfg(feature = "anyhow")]
impl StepError {
    /// A retryable failure made from an `anyhow::Error`, as a step returning
    /// `anyhow::Result<S>` fails: the message holds every cause in the chain (`{:#}`), and
    /// [`source`](Self::source) is the error `anyhow` holds, so a downcast reaches the error a
    /// `?` converted.
    ///
    /// (`StepError` cannot implement `From<anyhow::Error>` beside its `From` for every
    /// `std::error::Error`; a step returning `anyhow::Result` needs neither.)
    ///
    /// ```
    /// use durable::StepError;
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
    /// let err = StepError::from_anyhow(anyhow::Error::new(io).context("calling the CRM"));
    /// assert_eq!(err.message(), "calling the CRM: slow");
    /// assert!(!err.is_terminal());
    /// ```
    pub fn from_anyhow(error: anyhow::Error) -> Self {
        Self::retryable(format!("{error:#}")).with_boxed_source(error.into())
    }

    fn with_boxed_source(mut self, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("message", &self.message)
            .field("terminal", &self.terminal)
            .field("source", &self.source)
            .finish()
    }
}

/// Marker for step functions that take only the state.
#[doc(hidden)]
pub struct StateOnly;
/// Marker for step functions that take a [`StepContext`] and the state.
#[doc(hidden)]
pub struct ContextAndState;
/// Marker for step functions that take only the state and return `anyhow::Result`.
#[doc(hidden)]
#[cfg(feature = "anyhow")]
pub struct StateOnlyAnyhow;
/// Marker for step functions that take a [`StepContext`] and the state and return
/// `anyhow::Result`.
#[doc(hidden)]
#[cfg(feature = "anyhow")]
pub struct ContextAndStateAnyhow;

/// An async function usable as a step of a workflow whose state is `S`.
///
/// Implemented for `async fn(S) -> Result<S, E>` and `async fn(StepContext, S) -> Result<S, E>`
/// where `E` converts into [`StepError`] (any `std::error::Error + Send + Sync + 'static`, or
/// `StepError` itself) or is `anyhow::Error` (feature `anyhow`). You never implement it
/// yourself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a step of a workflow whose state is `{S}`",
    label = "this step's function has the wrong signature",
    note = "write it as `async fn(state: {S}) -> Result<{S}, StepError>` or `async fn(ctx: StepContext, state: {S}) -> Result<{S}, StepError>`",
    note = "the error type may be `StepError`, `anyhow::Error` or any `std::error::Error + Send + Sync + 'static` (not `String`: use `StepError::retryable(..)`)",
    note = "the future must be `Send`: hold no `Rc`, `RefCell` borrow or `std::sync::MutexGuard` across an `.await`"
)]
pub trait StepFn<S, Marker>: Send + Sync + 'static {
    /// Runs one attempt.
    fn call(&self, ctx: StepContext, state: S) -> BoxFuture<'static, Result<S, StepError>>;
}

impl<S, F, Fut, E> StepFn<S, StateOnly> for F
where
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<StepError>,
{
    fn call(&self, _ctx: StepContext, state: S) -> BoxFuture<'static, Result<S, StepError>> {
        let fut = self(state);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

impl<S, F, Fut, E> StepFn<S, ContextAndState> for F
where
    F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<StepError>,
{
    fn call(&self, ctx: StepContext, state: S) -> BoxFuture<'static, Result<S, StepError>> {
        let fut = self(ctx, state);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(feature = "anyhow")]
impl<S, F, Fut> StepFn<S, StateOnlyAnyhow> for F
where
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<S>> + Send + 'static,
{
    fn call(&self, _ctx: StepContext, state: S) -> BoxFuture<'static, Result<S, StepError>> {
        let fut = self(state);
        Box::pin(async move { fut.await.map_err(StepError::from_anyhow) })
    }
}

#[cfg(feature = "anyhow")]
impl<S, F, Fut> StepFn<S, ContextAndStateAnyhow> for F
where
    F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<S>> + Send + 'static,
{
    fn call(&self, ctx: StepContext, state: S) -> BoxFuture<'static, Result<S, StepError>> {
        let fut = self(ctx, state);
        Box::pin(async move { fut.await.map_err(StepError::from_anyhow) })
    }
}

/// A step with its state type erased to JSON, as the engine runs it.
pub type ErasedStep =
    Arc<dyn Fn(StepContext, Value) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync>;

/// Wraps a typed step function into an [`ErasedStep`].
///
/// The state is decoded from and encoded to JSON around the call; a state that does not decode
/// into `S` is a terminal failure, since no retry would change it.
pub fn erase<S, M, F>(f: F) -> ErasedStep
where
    S: State,
    F: StepFn<S, M>,
{
    let f = Arc::new(f);
    Arc::new(move |ctx: StepContext, input: Value| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let state = S::from_json(input).map_err(|e| {
                StepError::terminal(format!(
                    "the state does not decode into `{}`: {e}",
                    std::any::type_name::<S>()
                ))
            })?;
            let output = f.call(ctx, state).await?;
            output.into_json().map_err(|e| {
                StepError::terminal(format!("the step's output does not encode as JSON: {e}"))
            })
        }) as BoxFuture<'static, _>
    })
}

/// Runs blocking code from a step on tokio's blocking thread pool: a synchronous client,
/// CPU-heavy work, `std::thread::sleep`, a `std::sync::Mutex` held for long. Await it inside
/// the step; a panic in `f` is a failed (retryable) attempt.
///
/// A step must not block the thread it runs on (see "What a step may not do" in the `durable`
/// crate's guide `durable::guide::engine`): blocked, that thread runs none of the engine's
/// other tasks, so other runs' steps and commits may wait for it, and the step's `timeout`
/// cannot fire until it returns. Through
/// `blocking` the step only awaits, so `timeout` fails the attempt on time. The blocking
/// thread itself cannot be stopped: it finishes `f` in the background and its result is
/// dropped, so make `f` safe to run again (the next attempt runs it anew).
///
/// ```
/// use durable::step::blocking;
/// use durable::{Data, StepError};
///
/// async fn checksum(data: Data) -> Result<Data, StepError> {
///     let text: String = data.get("text").unwrap_or_default();
///     // Pretend this is a slow synchronous library call.
///     let sum = blocking(move || text.bytes().map(u64::from).sum::<u64>()).await?;
///     Ok(data.assign("sum", sum))
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let out = checksum(Data::new().assign("text", "ab")).await.unwrap();
/// # assert_eq!(out.get::<u64>("sum"), Some(97 + 98));
/// # }
/// ```
pub async fn blocking<T, F>(f: F) -> Result<T, StepError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_panic() {
            let message = crate::panic::panic_message(e.into_panic().as_ref());
            StepError::retryable(format!("the blocking code panicked: {message}"))
        } else {
            StepError::retryable(format!("the blocking code was cancelled: {e}"))
        }
    })
}
