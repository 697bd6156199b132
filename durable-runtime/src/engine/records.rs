//! What the engine tells about runs: typed handles, run summaries and journal records.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use super::{parse_failure, Engine};
use crate::definition::{Definition, Node, Workflow};
use crate::error::{Error, RunFailure};
use crate::store::{Cursor, EntryKind, Event, JournalEntry, RunRecord, RunStatus};
use crate::RunId;

/// A started run: its id, and a way to wait for its typed output.
pub struct RunHandle<W: Workflow> {
    pub(super) engine: Engine,
    pub(super) id: RunId,
    pub(super) workflow: PhantomData<fn() -> W>,
}

impl<W: Workflow> RunHandle<W> {
    /// The run's id: keep it to ask about the run later, from this process or another.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// Waits for the run's output.
    pub async fn wait(&self) -> Result<W::State, Error> {
        self.engine.wait(&self.id).await
    }
}

/// What the store knows of a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunInfo {
    /// Its id.
    pub id: RunId,
    /// Its workflow.
    pub workflow: String,
    /// Running, suspended, completed, failed or cancelled.
    pub status: RunStatus,
    /// Its input.
    pub input: Value,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Why it failed, once failed.
    pub failure: Option<RunFailure>,
    /// Why this engine does not drive the run although it is unfinished, as
    /// [`Engine::wait`](crate::Engine::wait) reports it: its workflow, or the definition it
    /// started under, is not registered here; its journal or stored input cannot be read
    /// (damaged, changed outside durable, nested too deep); the store failed under it, or
    /// another worker took its lease over; this engine shut down. The engine stalls such a
    /// run alone and drives the others. A run whose record itself cannot be read has no
    /// `RunInfo`: [`Engine::status`](crate::Engine::status) fails with that cause, as `wait`
    /// does. Always `None` from a [`Client`](crate::Client), which drives nothing.
    pub stalled: Option<Error>,
    /// The definition fingerprint it started under.
    pub fingerprint: String,
    /// Created, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Last changed, in milliseconds since the Unix epoch.
    pub updated_at: u64,
    /// The run whose `call` item started this one, and that item's path, for a child run.
    pub parent: Option<crate::store::ParentLink>,
}

impl RunInfo {
    pub(super) fn from_record(run: RunRecord, stalled: Option<Error>) -> Self {
        let json =
            |s: &str| crate::encode::decode(s).unwrap_or_else(|_| Value::String(s.to_owned()));
        RunInfo {
            input: json(&run.input),
            output: run.output.as_deref().map(json),
            failure: (run.status == RunStatus::Failed).then(|| parse_failure(run.error.as_deref())),
            stalled,
            id: run.id,
            workflow: run.workflow,
            status: run.status,
            fingerprint: run.fingerprint,
            created_at: run.created_at,
            updated_at: run.updated_at,
            parent: run.parent,
        }
    }
}

/// A page of [`Engine::list_page`](crate::Engine::list_page).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<RunInfo>,
    /// Where the next page starts (set it as the filter's `after`), if there are more runs.
    pub next: Option<Cursor>,
}

/// One entry of a run's history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepRecord {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// The step's path.
    pub step: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// What happened.
    pub event: StepEvent,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// What happened to a step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StepEvent {
    /// It finished with this output.
    Completed {
        /// What the journal holds: the state it returned, or, for a step journaled as its
        /// changes (a step whose input and output are objects), only those: an object of the
        /// keys it set or changed (nested objects narrowed to their changed keys), or
        /// `[changes, removed key paths]` when it also removed keys.
        output: Value,
    },
    /// An attempt failed; another was due at `retry_at`.
    AttemptFailed {
        /// The attempt's error.
        error: String,
        /// When the next attempt was due, in milliseconds since the Unix epoch.
        retry_at: u64,
    },
    /// It failed for good.
    Failed {
        /// The last error.
        error: String,
        /// Whether the item is `optional` (a step, a `wait_for`, a `callback`, whose submit
        /// function's failure at `NAME/submit` is the callback's, a `call`), so the workflow
        /// went on without its output; when `false` the failure failed the run (or, inside a
        /// map, the item). Taken from the
        /// definition the run started under, or when that is not registered here, from the
        /// run's record: a failure the run's own failure does not list did not fail it.
        optional: bool,
    },
    /// A `wait_for` or `callback` item started waiting (once per attempt).
    Waiting {
        /// When the wait times out, in milliseconds since the Unix epoch; `None`: never.
        deadline: Option<u64>,
    },
    /// A `wait_for` or `callback` item took a signal or the callback's completion.
    Received {
        /// The message's number in the run's inbox.
        inbox: u64,
        /// Its payload, which went into the state under the item's name.
        value: Value,
    },
    /// A `callback` item made its token, before its submit function ran.
    CallbackCreated {
        /// The token, as the submit function received it.
        token: String,
    },
    /// A durable sleep started (`sleep NAME(...)`); it ends at `wake_at`.
    SleepStarted {
        /// When it ends, in milliseconds since the Unix epoch.
        wake_at: u64,
    },
    /// The failed run was resumed here ([`Engine::resume_failed`]): the step starts again
    /// with a fresh attempt budget.
    Resumed {
        /// How many attempts had failed before.
        attempts: u32,
    },
    /// A `call` item started its child run (or attached to it): the child's id.
    ChildStarted {
        /// The child run, a run of its own (its status and history are its own).
        child: RunId,
    },
}

impl StepRecord {
    /// The record of `entry`; `optional` tells whether a step path names an optional step.
    pub(super) fn from_entry(entry: JournalEntry, optional: &dyn Fn(&str) -> bool) -> Self {
        let JournalEntry {
            seq,
            step,
            kind,
            attempt,
            payload,
            at,
        } = entry;
        let output = |text: String| crate::encode::decode(&text).unwrap_or(Value::String(text));
        let event = match Event::decode(kind, &step, payload) {
            Ok(Event::StepCompleted { output: text })
            | Ok(Event::StepChanged { changes: text })
            | Ok(Event::OpCompleted { output: text }) => StepEvent::Completed {
                output: output(text),
            },
            Ok(Event::AttemptFailed { error, retry_at }) => {
                StepEvent::AttemptFailed { error, retry_at }
            }
            // An operation's failure reads as a failed attempt of it.
            Ok(Event::OpFailed { error }) => StepEvent::AttemptFailed { error, retry_at: 0 },
            Ok(Event::StepFailed { error }) => StepEvent::Failed {
                error,
                optional: optional(&step),
            },
            Ok(Event::SleepStarted { wake_at }) => StepEvent::SleepStarted { wake_at },
            Ok(Event::Resumed { attempts }) => StepEvent::Resumed { attempts },
            Ok(Event::WaitStarted { deadline }) => StepEvent::Waiting { deadline },
            Ok(Event::Received { inbox, value }) => StepEvent::Received {
                inbox,
                value: output(value),
            },
            Ok(Event::CallbackCreated { token }) => StepEvent::CallbackCreated { token },
            Ok(Event::ChildStarted { child }) => StepEvent::ChildStarted {
                child: RunId::from(child),
            },
            // The history shows what it can of an entry it cannot read.
            Err(message) => {
                let error = format!("its journal entry {message}");
                match kind {
                    EntryKind::StepFailed => StepEvent::Failed {
                        error,
                        optional: optional(&step),
                    },
                    _ => StepEvent::AttemptFailed { error, retry_at: 0 },
                }
            }
        };
        StepRecord {
            seq,
            step,
            attempt,
            event,
            at,
        }
    }
}

/// Whether a journal path names an optional step of `run`'s workflow: from the definition the
/// run started under when registered, else from the run's record (a failed run lists the
/// steps that failed it; a completed run went on past every failure).
pub(super) fn optional_steps<'a>(
    versions: &'a HashMap<(&'static str, String), Arc<Definition>>,
    run: &'a RunRecord,
) -> impl Fn(&str) -> bool + 'a {
    let definition = versions
        .iter()
        .find(|((name, fingerprint), _)| *name == run.workflow && *fingerprint == run.fingerprint)
        .map(|(_, def)| def);
    let failure = (run.status == RunStatus::Failed).then(|| parse_failure(run.error.as_deref()));
    move |path: &str| match definition {
        Some(def) => is_optional(def.nodes(), item_named(path)),
        None => match &failure {
            Some(failure) => !failure.steps.iter().any(|s| s.step == path),
            None => run.status == RunStatus::Completed,
        },
    }
}

/// The name of the item whose failure a journal path records. Item names are unique in a
/// workflow, and only maps add a level to a path (`map[i]/step`), so it is the last segment;
/// except for a callback's submit function, `NAME/submit`, the one path whose last segment
/// follows a segment that is no map item: its failure is the callback's.
fn item_named(path: &str) -> &str {
    let mut segments = path.rsplit('/');
    let last = segments.next().unwrap_or(path);
    match segments.next() {
        Some(callback) if !callback.ends_with(']') => callback,
        _ => last,
    }
}

/// Whether the item `name` is `optional`: every kind of item that can be.
fn is_optional(nodes: &[Node], name: &str) -> bool {
    nodes.iter().any(|node| match node {
        Node::Step(step) => step.name == name && step.options.optional,
        Node::Wait(wait) => wait.name == name && wait.options.optional,
        Node::Callback(cb) => cb.name == name && cb.options.optional,
        Node::Call(call) => call.name == name && call.options.optional,
        Node::Sleep(_) => false,
        Node::Seq(_) | Node::Parallel(_) | Node::Dag(_) | Node::Map(_) => {
            is_optional(node.children(), name)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::item_named;

    #[test]
    fn a_path_names_its_item_and_a_submit_function_its_callback() {
        assert_eq!(item_named("email"), "email");
        assert_eq!(item_named("sends[3]/send"), "send");
        assert_eq!(item_named("tenants[0]/users[2]/sync"), "sync");
        // A step may be named `submit`; a callback's submit function is under the callback.
        assert_eq!(item_named("submit"), "submit");
        assert_eq!(item_named("sends[1]/submit"), "submit");
        assert_eq!(item_named("paid/submit"), "paid");
        assert_eq!(item_named("sends[1]/paid/submit"), "paid");
    }
}
