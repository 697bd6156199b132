//! Walks one run's definition tree: replays finished steps from the journal, executes the
//! rest, and journals every result before anything that depends on it starts. The journal is
//! read and written as [`Event`]s (`store/event.rs`), whose encoding lives there alone.
//!
//! # Suspension
//!
//! Any item may suspend the run: when it must wait for a time or an event that has not come
//! (a durable sleep, a signal), it journals the event that fixes what it waits for (the
//! ABSOLUTE deadline, computed once, e.g. `SleepStarted { wake_at }`; never a duration) and
//! returns [`Abort::Suspend`] with the time it wakes by itself (`None`: only an event wakes
//! it). Nothing above it handles the abort but the concurrent blocks (parallel, dag, map):
//! they let their other children finish, or suspend too, and then suspend as a whole at the
//! earliest of their children's wake times ([`Suspensions`]); a child that fails fast still
//! ends the block at once. The walk's end ([`RunTask::end`]) records the run
//! [`Finish::Suspended`] with that time: the store clears its owner and lease, and the run's
//! task ends (a suspended run holds no task, no thread, no memory beyond its row).
//!
//! A message that reaches the run's inbox after a wait looked and before that record
//! commits finds the run running, so its delivery wakes nothing. The record therefore
//! carries how far the waits saw the inbox (`inbox_seen`: the lowest last seq seen by a look
//! that found nothing), and the store, in the same transaction, leaves the run awake and
//! nobody's when a later message is there, as it does for a cancellation requested
//! meanwhile. Nothing is checked after the commit, so no crash can fall between the message
//! and the wake.
//!
//! The store makes the run claimable again when it is due (its `wake_at` passed: the next
//! claim takes it) or woken ([`Store::wake`](crate::store::Store::wake), by a signal, a
//! callback, a cancellation). The claim resumes it like any run: the walk replays its journal
//! from the top, the finished children replay, and the item that suspended looks again: a
//! sleep whose journaled `wake_at` has passed is done (nothing more is journaled, so replay is
//! deterministic: time only moves on), one not due yet suspends again with the same
//! `wake_at`, journaling nothing. An item that waits for an event reads its journaled deadline
//! the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::changes;
use crate::clock::now_millis;
use crate::definition::{Definition, Node};
use crate::error::{Error, RunFailure, StepFailure};
use crate::lease::{RunLease, Unconfirmed};
use crate::step::BoxFuture;
use crate::store::{Event, Finish, JournalEntry, Rejected, StoreError, Write};
use crate::tasks::Tasks;
use crate::writer::{CommitError, Writer};
use crate::RunId;

mod call;
mod dag;
#[cfg(test)]
mod future_size;
mod limited;
mod map;
mod parallel;
mod seq;
mod sleep;
mod step;
mod wait;
#[cfg(test)]
mod walk_ends;
mod written;

/// How a run ended, as its waiters see it.
pub(crate) type Outcome = Result<Value, Error>;

/// How a walk stopped, as the engine records it.
#[derive(Debug, Clone)]
pub(crate) enum Walked {
    /// The run finished (completed, failed or cancelled: its end is journaled), or the engine
    /// could not go on (nothing journaled; it resumes later). Its waiters' outcome.
    Ended(Outcome),
    /// The run waits for a time or an event: journaled as suspended, driven by nobody until
    /// something wakes it. Its waiters go on waiting.
    Suspended {
        /// When it wakes by itself, in milliseconds since the Unix epoch, if it does.
        until: Option<u64>,
        /// What it waits for, in words.
        reason: String,
    },
}

/// Why the walk stopped early.
enum Abort {
    /// The run failed for good; this is journaled as its failure.
    Failed(RunFailure),
    /// The engine cannot go on (store down, lease lost): nothing more is written and the run
    /// stays unfinished in the store, to be resumed.
    Engine(Error),
    /// The run waits for a time or an event (a durable sleep, a signal): journaled as
    /// suspended. See "Suspension" in the module's documentation.
    Suspend {
        /// When it wakes by itself, in milliseconds since the Unix epoch, if it does.
        until: Option<u64>,
        /// What it waits for.
        reason: String,
    },
    /// The run was cancelled: journaled as its end ([`RunTask::run_cancellable`]).
    Cancel {
        /// Why.
        reason: String,
    },
}

/// What the journal says about one step.
#[derive(Default)]
struct StepHistory {
    /// Its completion.
    completed: Option<Completion>,
    /// How many attempts failed and were to be retried.
    failed_attempts: u32,
    /// When the next attempt was due.
    retry_at: Option<u64>,
    /// Its final failure: attempts and error.
    failed: Option<(u32, String)>,
    /// Why one of its entries could not be read, if one could not.
    unreadable: Option<String>,
    /// A sleep's journaled wake time and the sequence number of that entry.
    sleep: Option<(u64, u64)>,
    /// A wait's last start: its attempt and deadline (`wait_for`, `callback`).
    waiting: Option<(u32, Option<u64>)>,
    /// The inbox message a wait took: its entry's seq, the message's inbox seq, its payload.
    received: Option<(u64, u64, String)>,
    /// A callback's token.
    token: Option<String>,
    /// A `call` item's child run id.
    child: Option<String>,
}

/// A step's (or a map block's) journaled completion.
struct Completion {
    seq: u64,
    /// The payload holds the changes against the input, not the whole output.
    changes: bool,
    payload: String,
}

/// One run being driven by this process.
pub(crate) struct RunTask {
    def: Arc<Definition>,
    run_id: RunId,
    /// The run's lease: the token its writes carry, and until when it surely holds (checked
    /// before anything of the user's starts: [`RunTask::hold_lease`]).
    lease: Arc<RunLease>,
    journal: Writer,
    /// The last sequence number used, and whether the journal still follows it; the lock also
    /// orders submission to the journal, so a run's entries commit in sequence order (the
    /// finishing order `last_wins` replays).
    seq: Mutex<Sequence>,
    history: HashMap<String, StepHistory>,
    /// Outputs of the steps' sub-operations (`fan_out` and friends) journaled so far, this
    /// process's included, so a retried attempt reuses them.
    ops: Mutex<HashMap<String, String>>,
    /// The run's last top-level node when it is a step: its completion is journaled in one
    /// commit with the run's end, saving a commit per run.
    final_step: Option<&'static str>,
    /// The inbox messages waits took (journaled, or being journaled by this process), so that
    /// no two waits take one message.
    taken: Mutex<std::collections::HashSet<u64>>,
    /// The last inbox seq seen by the looks that found nothing to take (the lowest, when
    /// several waits looked; `u64::MAX`: no such look): the suspension carries it
    /// (`Finish::Suspended`'s `inbox_seen`), and the store leaves the run awake if a later
    /// message is there. The lowest, because a message after it may be for the wait that
    /// looked first, although a later look (of another branch) saw it.
    inbox_seen: std::sync::atomic::AtomicU64,
    /// The tasks its walk spawned: its end is committed only once they are all gone.
    tasks: Arc<Tasks>,
}

/// The position of a node in the definition tree: an index per level.
type Address = Vec<usize>;

impl RunTask {
    /// A run about to start or resume, with what its journal already holds.
    pub(crate) fn new(
        def: Arc<Definition>,
        run_id: RunId,
        lease: Arc<RunLease>,
        journal: Writer,
        entries: Vec<JournalEntry>,
    ) -> Self {
        let mut history: HashMap<String, StepHistory> = HashMap::new();
        let mut ops = HashMap::new();
        let mut taken = std::collections::HashSet::new();
        let mut last_seq = 0;
        for entry in entries {
            let JournalEntry {
                seq,
                step,
                kind,
                attempt,
                payload,
                ..
            } = entry;
            last_seq = last_seq.max(seq);
            let event = match Event::decode(kind, &step, payload) {
                Ok(event) => event,
                Err(message) => {
                    // Reported when the walk reaches the step, unless it finished after all.
                    let h = history.entry(step).or_default();
                    h.unreadable.get_or_insert(message);
                    continue;
                }
            };
            match event {
                Event::StepCompleted { output } => {
                    history.entry(step).or_default().completed = Some(Completion {
                        seq,
                        changes: false,
                        payload: output,
                    })
                }
                Event::StepChanged { changes } => {
                    history.entry(step).or_default().completed = Some(Completion {
                        seq,
                        changes: true,
                        payload: changes,
                    })
                }
                Event::AttemptFailed { retry_at, .. } => {
                    let h = history.entry(step).or_default();
                    h.failed_attempts = h.failed_attempts.max(attempt);
                    h.retry_at = Some(retry_at);
                }
                Event::StepFailed { error } => {
                    history.entry(step).or_default().failed = Some((attempt, error));
                }
                Event::OpCompleted { output } => {
                    ops.insert(step, output);
                }
                // For the history only: a failed operation runs again when its step retries.
                Event::OpFailed { .. } => {}
                Event::WaitStarted { deadline } => {
                    history.entry(step).or_default().waiting = Some((attempt, deadline));
                }
                Event::Received { inbox, value } => {
                    taken.insert(inbox);
                    history.entry(step).or_default().received = Some((seq, inbox, value));
                }
                Event::CallbackCreated { token } => {
                    history.entry(step).or_default().token = Some(token);
                }
                Event::ChildStarted { child } => {
                    history.entry(step).or_default().child = Some(child);
                }
                Event::SleepStarted { wake_at } => {
                    history.entry(step).or_default().sleep = Some((wake_at, seq));
                }
                // The failed attempts before it no longer count, nor the final failure.
                Event::Resumed { .. } => {
                    let h = history.entry(step).or_default();
                    h.failed = None;
                    h.failed_attempts = 0;
                    h.retry_at = None;
                }
            }
        }
        // An optional step's failure does not finish the run, so only a required one qualifies.
        let final_step = match def.nodes().last() {
            Some(Node::Step(step)) if !step.options.optional => Some(step.name),
            _ => None,
        };
        Self {
            final_step,
            def,
            run_id,
            lease,
            journal,
            seq: Mutex::new(Sequence {
                last: last_seq,
                broken: None,
            }),
            history,
            ops: Mutex::new(ops),
            taken: Mutex::new(taken),
            inbox_seen: std::sync::atomic::AtomicU64::new(u64::MAX),
            tasks: Tasks::root(),
        }
    }

    /// Drives the run to its end (or until it suspends) and journals how it stopped.
    pub(crate) async fn run(self: Arc<Self>, input: Value) -> Walked {
        let walked = self.exec_seq(Vec::new(), input, Arc::from("")).await;
        self.end(walked).await
    }

    /// [`run`](Self::run), until `cancel` holds a reason: then the walk is dropped at once
    /// (the step attempts in flight with it: their futures are dropped, their tasks aborted),
    /// nothing more starts, and once the aborted tasks are gone ([`Tasks`]) the run is
    /// journaled cancelled with that reason. A reason there from the start cancels the run
    /// before anything runs. Should the run have finished meanwhile (its end committed), the
    /// cancellation is refused by the store and the run keeps its end.
    pub(crate) async fn run_cancellable(
        self: Arc<Self>,
        input: Value,
        mut cancel: tokio::sync::watch::Receiver<Option<String>>,
    ) -> Walked {
        let walk = crate::panic::CatchUnwind(Box::pin(Arc::clone(&self).run(input)));
        let reason = async {
            let reason = cancel
                .wait_for(Option::is_some)
                .await
                .map(|reason| reason.clone().expect("waited for a reason"));
            match reason {
                Ok(reason) => reason,
                // The engine is gone: nobody cancels any more.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            reason = reason => self.end(Err(Abort::Cancel { reason })).await,
            walked = walk => walked.unwrap_or_else(|panic| {
                Walked::Ended(Err(Error::BadState {
                    workflow: self.def.name().to_owned(),
                    run_id: self.run_id.clone(),
                    step: None,
                    message: format!(
                        "the engine failed while driving it ({panic}); it resumes on the next start"
                    ),
                }))
            }),
        }
    }

    /// Journals how the walk stopped, and says so to the engine.
    async fn end(&self, walked: Result<Done, Abort>) -> Walked {
        let (finish, outcome) = match walked {
            // The final step's commit finished the run already.
            Ok(done) if self.final_step.is_some() => return Walked::Ended(Ok(done.state)),
            Ok(done) => match crate::encode::to_text(&done.state) {
                Ok(text) => (Finish::Completed(text), Ok(done.state)),
                // A merge can nest deeper than each step it merged (`collect`).
                Err(e) => self.failed(RunFailure {
                    steps: Vec::new(),
                    message: format!("its output cannot be journaled: {e}"),
                }),
            },
            Err(Abort::Failed(failure)) => self.failed(failure),
            Err(Abort::Engine(error)) => return Walked::Ended(Err(error)),
            Err(Abort::Cancel { reason }) => {
                let error = Error::RunCancelled {
                    workflow: self.def.name().to_owned(),
                    run_id: self.run_id.clone(),
                    reason: reason.clone(),
                };
                (Finish::Cancelled(reason), Err(error))
            }
            Err(Abort::Suspend { until, reason }) => {
                // The store decides against what the waits saw, in the suspension's own
                // transaction, whether a message came meanwhile (the run then stays awake).
                let seen = self.inbox_seen.load(std::sync::atomic::Ordering::SeqCst);
                let finish = Finish::Suspended {
                    wake_at: until,
                    inbox_seen: (seen != u64::MAX).then_some(seen),
                };
                return match self.append(Vec::new(), Some(finish)).await {
                    Ok(_) => Walked::Suspended { until, reason },
                    Err(Abort::Engine(error)) => Walked::Ended(Err(error)),
                    Err(_) => unreachable!("appending only fails for the engine"),
                };
            }
        };
        // Branches, items and operations cancelled on the way here (a failure failing fast,
        // the cancellation dropping the walk) were only asked to stop: the run ends once they
        // have, so that when its waiters learn the end, none of its steps still runs.
        self.tasks.idle().await;
        match self.append(Vec::new(), Some(finish)).await {
            Ok(_) => Walked::Ended(outcome),
            Err(Abort::Engine(error)) => Walked::Ended(Err(error)),
            Err(_) => unreachable!("appending only fails for the engine"),
        }
    }

    /// The run's end and its waiters' outcome when it failed for good.
    fn failed(&self, failure: RunFailure) -> (Finish, Outcome) {
        let text = serde_json::to_string(&failure).expect("a RunFailure always encodes");
        let error = Error::RunFailed {
            workflow: self.def.name().to_owned(),
            run_id: self.run_id.clone(),
            failure,
        };
        (Finish::Failed(text), Err(error))
    }

    /// The children of the node at `address` (the top level when empty).
    fn nodes_at(&self, address: &[usize]) -> &[Node] {
        let mut nodes = self.def.nodes();
        for &i in address {
            nodes = nodes[i].children();
        }
        nodes
    }

    fn node_at(&self, address: &[usize]) -> &Node {
        let (last, parent) = address.split_last().expect("a node has an address");
        &self.nodes_at(parent)[*last]
    }

    fn exec_node(
        self: &Arc<Self>,
        address: Address,
        state: Value,
        scope: Scope,
    ) -> BoxFuture<'_, Result<Done, Abort>> {
        // Each kind of item boxes a future of its own size. One `async` block over the whole
        // `match` would be sized for the largest kind (1,344 bytes, against a step's 752):
        // past glibc's per-thread cache (1,032 bytes), so every step's allocation took an
        // arena lock, contended by the other worker (measured: seq10 on the memory store
        // 340k -> 500k steps/s, futex calls 16k -> 6k).
        match self.node_at(&address) {
            Node::Step(step) => Box::pin(async move { self.exec_step(step, state, &scope).await }),
            Node::Seq(_) => self.exec_seq(address, state, scope),
            Node::Parallel(block) => {
                Box::pin(async move { self.exec_parallel(&address, block, state, scope).await })
            }
            Node::Dag(dag) => {
                Box::pin(async move { self.exec_dag(&address, dag, state, scope).await })
            }
            Node::Map(map) => {
                Box::pin(async move { self.exec_map(&address, map, state, scope).await })
            }
            Node::Sleep(sleep) => {
                Box::pin(async move { self.exec_sleep(sleep, state, &scope).await })
            }
            Node::Wait(wait) => Box::pin(async move { self.exec_wait(wait, state, &scope).await }),
            Node::Callback(callback) => {
                Box::pin(async move { self.exec_callback(callback, state, &scope).await })
            }
            Node::Call(call) => Box::pin(async move { self.exec_call(call, state, &scope).await }),
        }
    }

    fn merge_failure(&self, block: &str, nodes: &[Node], error: String) -> Abort {
        Abort::Failed(RunFailure {
            steps: Vec::new(),
            message: format!("{block} ({}): {error}", block_names(nodes)),
        })
    }

    /// A node's journaled output, as if it had just run from `input`.
    fn replay(&self, path: &str, done: &Completion, input: Value) -> Result<Done, Abort> {
        let state = if done.changes {
            changes::apply(input, &done.payload)
        } else {
            crate::encode::decode(&done.payload).map_err(|e| format!("its journaled output {e}"))
        }
        .map_err(|message| Abort::Engine(self.bad_state(path, message)))?;
        Ok(Done {
            state,
            seq: done.seq,
            skipped: Vec::new(),
        })
    }

    /// The journal entry of `event` at `step` on `attempt`, numbered when appended.
    fn entry(&self, step: &str, attempt: u32, event: Event) -> JournalEntry {
        let (kind, payload) = event.encode();
        JournalEntry {
            seq: 0,
            step: step.to_owned(),
            kind,
            attempt,
            payload,
            at: now_millis(),
        }
    }

    /// Numbers `entries`, commits them (and the run's end, if given), and returns the last
    /// sequence number once they are durable.
    ///
    /// A run's entries are numbered one after another from the last its journal held, and
    /// submitted in that order, as the stores' contract asks. Once a write of the run failed,
    /// nothing more is numbered: the store may or may not hold that write, so the next number
    /// would be a guess (a gap, or a number taken twice). The run stops with the failure
    /// instead, and resumes from what the store holds.
    async fn append(
        &self,
        mut entries: Vec<JournalEntry>,
        finish: Option<Finish>,
    ) -> Result<u64, Abort> {
        let (ack, last) = {
            let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(error) = &seq.broken {
                return Err(Abort::Engine(error.clone()));
            }
            for entry in &mut entries {
                seq.last += 1;
                entry.seq = seq.last;
            }
            let write = Write::Append {
                run: self.run_id.clone(),
                lease_token: self.lease.token(),
                entries,
                finish,
            };
            (self.journal.submit(write), seq.last)
        };
        match ack.await {
            Ok(()) => Ok(last),
            Err(e) => {
                let error = self.commit_error(e);
                let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
                seq.broken.get_or_insert_with(|| error.clone());
                Err(Abort::Engine(error))
            }
        }
    }

    /// Makes sure the run's lease holds before something of the user's starts (a step's
    /// attempt, a sub-operation, a child run): at once while its deadline is ahead (the
    /// per-step cost: a clock read and an atomic load); past it, after showing the store still
    /// gives the run to this engine under its token. A lost lease stops the run without
    /// writing anything (see `lease.rs`). Call it with nothing awaited between it and the
    /// start it guards.
    async fn hold_lease(&self) -> Result<(), Abort> {
        if self.lease.live() {
            return Ok(());
        }
        // Boxed: the slow path's future stays out of every step's.
        Box::pin(self.lease.confirm())
            .await
            .map_err(|why| Abort::Engine(self.unconfirmed(why)))
    }

    /// The error a run stops with when it cannot show its lease.
    fn unconfirmed(&self, why: Unconfirmed) -> Error {
        let workflow = self.def.name().to_owned();
        let run_id = self.run_id.clone();
        match why {
            Unconfirmed::Lost => Error::LeaseLost { workflow, run_id },
            Unconfirmed::Store(e) => Error::Store(e.context(format_args!(
                "workflow `{workflow}` run {run_id}: showing its lease before the next step"
            ))),
        }
    }

    fn commit_error(&self, error: CommitError) -> Error {
        let workflow = self.def.name().to_owned();
        let run_id = self.run_id.clone();
        match error {
            CommitError::Rejected(Rejected::Fenced { .. })
            | CommitError::Rejected(Rejected::Finished) => Error::LeaseLost { workflow, run_id },
            CommitError::Rejected(other) => Error::Store(
                StoreError::other(format!(
                    "workflow `{workflow}` run {run_id}: the journal refused a write: {other}"
                ))
                .with_source(other),
            ),
            CommitError::Store(e) => {
                Error::Store(e.context(format_args!("workflow `{workflow}` run {run_id}")))
            }
        }
    }

    fn bad_state(&self, step: &str, message: String) -> Error {
        Error::BadState {
            workflow: self.def.name().to_owned(),
            run_id: self.run_id.clone(),
            step: Some(step.to_owned()),
            message,
        }
    }
}

/// Where a run's journal stands, as this process numbers its entries.
struct Sequence {
    /// The last sequence number used.
    last: u64,
    /// The first write of the run that failed: once set, nothing more is numbered.
    broken: Option<Error>,
}

/// What a node's walk produced.
struct Done {
    /// The state after it.
    state: Value,
    /// The highest journal sequence number it depended on (its finishing point).
    seq: u64,
    /// The optional steps in it that failed for good.
    skipped: Vec<StepFailure>,
}

/// The suspensions of a concurrent block's children (parallel branches, dag nodes, map
/// items), folded into the block's own: it wakes at the earliest time any child wakes by
/// itself (a child waiting for an event only adds no time).
#[derive(Default)]
struct Suspensions {
    /// Whether a child suspended.
    any: bool,
    /// The earliest time a child wakes by itself.
    until: Option<u64>,
    /// What the children wait for.
    reasons: Vec<String>,
}

impl Suspensions {
    /// Keeps a child's suspension and hands back any other result.
    fn keep<T>(&mut self, result: Result<T, Abort>) -> Option<Result<T, Abort>> {
        match result {
            Err(Abort::Suspend { until, reason }) => {
                self.any = true;
                self.until = match (self.until, until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.reasons.push(reason);
                None
            }
            other => Some(other),
        }
    }

    /// The block's suspension, if a child suspended.
    fn abort(self) -> Option<Abort> {
        self.any.then(|| Abort::Suspend {
            until: self.until,
            reason: self.reasons.join("; "),
        })
    }
}

/// The journal path prefix of the nodes being walked: empty at the top, `map[3]` inside
/// item 3 of map `map`, and so on down nested maps.
type Scope = Arc<str>;

/// The journal path of `name` inside `scope`.
fn path_in(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}/{name}")
    }
}

fn child(address: &[usize], i: usize) -> Address {
    let mut child = address.to_vec();
    child.push(i);
    child
}

fn describe(failure: &StepFailure) -> String {
    let attempts = if failure.attempts == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{} attempts", failure.attempts)
    };
    format!(
        "step `{}` failed after {attempts}: {}",
        failure.step, failure.error
    )
}

fn block_names(nodes: &[Node]) -> String {
    nodes.iter().map(Node::name).collect::<Vec<_>>().join(", ")
}
