//! The engine's errors. Each names the workflow, the run and, where one is to blame, the step.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::RunId;

/// Why a run failed, as journaled with the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunFailure {
    /// The failed steps: one for a sequential step or a fail-fast block, every failed branch
    /// for a `complete_all` block; none when the engine itself could not go on.
    pub steps: Vec<StepFailure>,
    /// What went wrong, in one sentence.
    pub message: String,
}

/// One step's final failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepFailure {
    /// The step's path.
    pub step: String,
    /// The attempts it had; 0 when the step succeeded but its output could not be merged into
    /// its parallel block's state.
    pub attempts: u32,
    /// Its last error.
    pub error: String,
}

/// An error of the engine or of a run.
///
/// The cause of a store failure is its [`StoreError`] (whose own source is what the backend
/// reported, such as an SQLite or I/O error): walk the chain to it, or downcast.
///
/// ```
/// use std::error::Error as _;
/// use durable::store::{StoreError, StoreErrorKind};
/// use durable::Error;
///
/// let io = std::io::Error::other("disk I/O error");
/// let err = Error::from(StoreError::transient("my store: disk I/O error").with_source(io));
/// let store = err.source().and_then(|s| s.downcast_ref::<StoreError>()).unwrap();
/// assert_eq!(store.kind(), StoreErrorKind::Transient);
/// assert!(store.source().unwrap().downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The run failed; its journal holds every attempt.
    #[error("workflow `{workflow}` run {run_id} failed: {}", failure.message)]
    RunFailed {
        /// The workflow.
        workflow: String,
        /// The run.
        run_id: RunId,
        /// What failed.
        failure: RunFailure,
    },
    /// A run's workflow is not registered with this engine, so it cannot be resumed or awaited
    /// here. Its journal is untouched.
    #[error(
        "run {run_id} belongs to workflow `{workflow}`, which is not registered with this engine: \
         register it (Engine::builder().register(..)) to resume the run"
    )]
    UnknownWorkflow {
        /// The workflow the run belongs to.
        workflow: String,
        /// The run.
        run_id: RunId,
    },
    /// A run of a workflow this engine has not registered was asked to start: nothing was
    /// written.
    #[error(
        "cannot start a run of workflow `{workflow}`: it is not registered with this engine \
         (register it: Engine::builder(store).register({workflow}))"
    )]
    NotRegistered {
        /// The workflow.
        workflow: String,
    },
    /// The run started under another definition of its workflow (steps added, removed, renamed
    /// or reordered since). Its journal is untouched; register the old definition to finish it.
    #[error(
        "workflow `{workflow}` run {run_id} started under definition {started_under}, but the \
         registered definition is {registered}: its steps changed while the run was unfinished; \
         register the old definition to finish it"
    )]
    DefinitionChanged {
        /// The workflow.
        workflow: String,
        /// The run.
        run_id: RunId,
        /// The fingerprint the run started under.
        started_under: String,
        /// The fingerprint of the registered definition.
        registered: String,
    },
    /// No run with this id.
    #[error("no run {run_id} in the store")]
    RunNotFound {
        /// The id asked for.
        run_id: RunId,
    },
    /// A run with this id exists already.
    #[error("a run with id {run_id} exists already")]
    RunExists {
        /// The id.
        run_id: RunId,
    },
    /// The input or a journaled value does not fit the workflow's state type, or a block
    /// wrote a field into a typed state that the type would drop (the run then stays
    /// unfinished, to resume once the type holds the field).
    #[error("{}", bad_state(workflow, run_id, step.as_deref(), message))]
    BadState {
        /// The workflow.
        workflow: String,
        /// The run.
        run_id: RunId,
        /// The step whose state it is, if any.
        step: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Another worker took over the run (its lease was lost); this engine stopped driving it.
    #[error(
        "workflow `{workflow}` run {run_id}: another worker claimed the run, so this engine \
         stopped driving it"
    )]
    LeaseLost {
        /// The workflow.
        workflow: String,
        /// The run.
        run_id: RunId,
    },
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The run was cancelled: it finished without an output, and nothing drives it again.
    #[error("workflow `{workflow}` run {run_id} was cancelled: {reason}")]
    RunCancelled {
        /// The workflow.
        workflow: String,
        /// The run.
        run_id: RunId,
        /// Why it was cancelled.
        reason: String,
    },
    /// The engine was shut down while the run was in flight; it resumes on the next start.
    #[error("the engine shut down while run {run_id} was in flight; it resumes on the next start")]
    ShutDown {
        /// The run.
        run_id: RunId,
    },
    /// A run id outside the limits (see [`RunId::check`]): nothing was started or looked up.
    #[error(
        "invalid run id {id}: {reason}; a run id is 1 to {max} bytes of text without control \
         characters",
        max = RunId::MAX_LEN
    )]
    InvalidRunId {
        /// The id, quoted and escaped, cut after 64 characters.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`EngineBuilder::build`](crate::EngineBuilder::build) on a store that another engine
    /// of this process drives already (an SQLite store is driven by one engine at a time), or
    /// that a shut-down engine closed. The message names the store.
    #[error("cannot build the engine: {0}")]
    StoreInUse(#[source] StoreError),
    /// A run was started on an engine that was shut down: build a new engine.
    #[error(
        "cannot start a run of workflow `{workflow}`: this engine was shut down; build a new \
         engine (Engine::builder(store)...build()) to start runs"
    )]
    EngineShutDown {
        /// The workflow the run was to be of.
        workflow: String,
    },
    /// A signal was refused, and nothing was stored: the run is unknown or finished, or its
    /// workflow never waits for a signal of this name.
    #[error("{}", signal_refused(workflow.as_deref(), run_id, signal, reason))]
    SignalRefused {
        /// The run's workflow, when the run exists.
        workflow: Option<String>,
        /// The run.
        run_id: RunId,
        /// The signal's name.
        signal: String,
        /// Why, in words.
        reason: String,
    },
    /// A callback's completion (or failure) was refused, and nothing was stored: the token is
    /// no token, its run is unknown or finished, the run made no such token, the token was
    /// used already, or the payload does not encode as JSON.
    #[error("{}", callback_refused(workflow.as_deref(), run_id.as_ref(), step.as_deref(), reason))]
    CallbackRefused {
        /// The run's workflow, when the run exists.
        workflow: Option<String>,
        /// The run the token routes to (a token names its run), when it reads as a token.
        run_id: Option<RunId>,
        /// The callback's step, when the run made this token (finished or not); `None` for a
        /// token the run never made, whose secret tells nothing of the step it imitates.
        step: Option<String>,
        /// Why, in words.
        reason: String,
    },
    /// [`Engine::cancel`](crate::Engine::cancel) or
    /// [`Engine::resume_failed`](crate::Engine::resume_failed) of a run whose state does not
    /// allow it: cancelling a finished run, resuming a run that has not failed. Nothing was
    /// changed.
    #[error("{}", not_in_state(workflow, run_id, *status, action))]
    RunNotInState {
        /// The workflow.
        workflow: String,
        /// The run.
        run_id: RunId,
        /// Its status.
        status: crate::store::RunStatus,
        /// What was asked: `cancel`, `resume`.
        action: &'static str,
    },
}

// The messages whose shape depends on which fields are known.

fn bad_state(workflow: &str, run_id: &RunId, step: Option<&str>, message: &str) -> String {
    match step {
        Some(step) => format!("workflow `{workflow}` run {run_id} step `{step}`: {message}"),
        None => format!("workflow `{workflow}` run {run_id}: {message}"),
    }
}

fn not_in_state(
    workflow: &str,
    run_id: &RunId,
    status: crate::store::RunStatus,
    action: &str,
) -> String {
    match action {
        "cancel" => format!(
            "cannot cancel workflow `{workflow}` run {run_id}: it has finished ({}); only a \
             running or suspended run can be cancelled",
            status.as_str()
        ),
        _ => format!(
            "cannot {action} workflow `{workflow}` run {run_id}: it is {}, not failed; only a \
             failed run can be resumed",
            status.as_str()
        ),
    }
}

fn signal_refused(workflow: Option<&str>, run_id: &RunId, signal: &str, reason: &str) -> String {
    match workflow {
        Some(workflow) => {
            format!("cannot send signal `{signal}` to workflow `{workflow}` run {run_id}: {reason}")
        }
        None => format!("cannot send signal `{signal}` to run {run_id}: {reason}"),
    }
}

fn callback_refused(
    workflow: Option<&str>,
    run_id: Option<&RunId>,
    step: Option<&str>,
    reason: &str,
) -> String {
    let mut text = String::from("cannot complete the callback");
    if let Some(workflow) = workflow {
        text.push_str(&format!(" of workflow `{workflow}`"));
    }
    if let Some(run_id) = run_id {
        text.push_str(&format!(" run {run_id}"));
    }
    if let Some(step) = step {
        text.push_str(&format!(" step `{step}`"));
    }
    format!("{text}: {reason}")
}
