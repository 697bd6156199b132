//! Walks one run's definition tree: replays finished steps from the journal, executes the
//! rest, and journals every result before anything that depends on it starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::clock::now_millis;
use crate::definition::{Definition, Node, ParallelNode, StepNode};
use crate::error::{Error, RunFailure, StepFailure};
use crate::journal::{CommitError, Journal};
use crate::merge::{merge, BranchResult, Merge, OnError};
use crate::panic::CatchUnwind;
use crate::step::{BoxFuture, StepContext, StepError};
use crate::store::{EntryKind, Finish, JournalEntry, Rejected, StoreError, Write};
use crate::RunId;

/// How a run ended, as its waiters see it.
pub(crate) type Outcome = Result<Value, Error>;

/// Why the walk stopped early.
enum Abort {
    /// The run failed for good; this is journaled as its failure.
    Failed(RunFailure),
    /// The engine cannot go on (store down, lease lost): nothing more is written and the run
    /// stays unfinished in the store, to be resumed.
    Engine(Error),
}

/// What the journal says about one step.
#[derive(Default)]
struct StepHistory {
    /// Sequence number and output of its completion.
    completed: Option<(u64, String)>,
    /// How many attempts failed and were to be retried.
    failed_attempts: u32,
    /// When the next attempt was due.
    retry_at: Option<u64>,
    /// Its final failure: attempts and error.
    failed: Option<(u32, String)>,
}

/// One run being driven by this process.
pub(crate) struct RunTask {
    def: Arc<Definition>,
    run_id: RunId,
    lease_token: u64,
    journal: Journal,
    /// The last sequence number used; the lock also orders submission to the journal, so a
    /// run's entries commit in sequence order (the finishing order `last_wins` replays).
    seq: Mutex<u64>,
    history: HashMap<String, StepHistory>,
    /// The run's last top-level node when it is a step: its completion is journaled in one
    /// commit with the run's end, saving a commit per run.
    final_step: Option<&'static str>,
}

/// The position of a node in the definition tree: an index per level.
type Address = Vec<usize>;

impl RunTask {
    /// A run about to start or resume, with what its journal already holds.
    pub(crate) fn new(
        def: Arc<Definition>,
        run_id: RunId,
        lease_token: u64,
        journal: Journal,
        entries: Vec<JournalEntry>,
    ) -> Self {
        let mut history: HashMap<String, StepHistory> = HashMap::new();
        let mut last_seq = 0;
        for entry in entries {
            last_seq = last_seq.max(entry.seq);
            let h = history.entry(entry.step).or_default();
            match entry.kind {
                EntryKind::StepCompleted => h.completed = Some((entry.seq, entry.payload)),
                EntryKind::AttemptFailed => {
                    h.failed_attempts = h.failed_attempts.max(entry.attempt);
                    h.retry_at = serde_json::from_str::<Value>(&entry.payload)
                        .ok()
                        .and_then(|p| p.get("retry_at").and_then(Value::as_u64));
                }
                EntryKind::StepFailed => {
                    let error = serde_json::from_str::<Value>(&entry.payload)
                        .ok()
                        .and_then(|p| p.get("error").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or(entry.payload);
                    h.failed = Some((entry.attempt, error));
                }
            }
        }
        let final_step = match def.nodes().last() {
            Some(Node::Step(step)) => Some(step.name),
            _ => None,
        };
        Self {
            final_step,
            def,
            run_id,
            lease_token,
            journal,
            seq: Mutex::new(last_seq),
            history,
        }
    }

    /// Drives the run to its end and journals how it ended.
    pub(crate) async fn run(self: Arc<Self>, input: Value) -> Outcome {
        let walked = self.exec_seq(Vec::new(), input).await;
        let (finish, outcome) = match walked {
            // The final step's commit finished the run already.
            Ok((output, _)) if self.final_step.is_some() => return Ok(output),
            Ok((output, _)) => (Finish::Completed(output.to_string()), Ok(output)),
            Err(Abort::Failed(failure)) => {
                let text = serde_json::to_string(&failure).expect("a RunFailure always encodes");
                let error = Error::RunFailed {
                    workflow: self.def.name().to_owned(),
                    run_id: self.run_id.clone(),
                    failure,
                };
                (Finish::Failed(text), Err(error))
            }
            Err(Abort::Engine(error)) => return Err(error),
        };
        match self.append(Vec::new(), Some(finish)).await {
            Ok(_) => outcome,
            Err(Abort::Engine(error)) => Err(error),
            Err(Abort::Failed(_)) => unreachable!("appending never fails a run"),
        }
    }

    fn nodes_at(&self, address: &[usize]) -> &[Node] {
        let mut nodes = self.def.nodes();
        for &i in address {
            nodes = match &nodes[i] {
                Node::Parallel(block) => &block.branches,
                Node::Step(_) => unreachable!("a step has no children"),
            };
        }
        nodes
    }

    /// Runs the children of `address` (the top level when empty) one after another.
    /// Returns the final state and the highest journal sequence number it depended on.
    fn exec_seq(
        self: &Arc<Self>,
        address: Address,
        mut state: Value,
    ) -> BoxFuture<'_, Result<(Value, u64), Abort>> {
        Box::pin(async move {
            let mut last = 0;
            for i in 0..self.nodes_at(&address).len() {
                let mut child = address.clone();
                child.push(i);
                let (next, seq) = self.exec_node(child, state).await?;
                state = next;
                last = last.max(seq);
            }
            Ok((state, last))
        })
    }

    fn exec_node(
        self: &Arc<Self>,
        address: Address,
        state: Value,
    ) -> BoxFuture<'_, Result<(Value, u64), Abort>> {
        Box::pin(async move {
            let (last, parent) = address.split_last().expect("a node has an address");
            match &self.nodes_at(parent)[*last] {
                Node::Step(step) => self.exec_step(step, state).await,
                Node::Parallel(block) => self.exec_parallel(&address, block, state).await,
            }
        })
    }

    async fn exec_step(&self, step: &StepNode, input: Value) -> Result<(Value, u64), Abort> {
        let name = step.name;
        let history = self.history.get(name);
        if let Some(h) = history {
            if let Some((seq, output)) = &h.completed {
                let output =
                    serde_json::from_str(output).map_err(|e| {
                        Abort::Engine(self.bad_state(
                            name,
                            format!("its journaled output is not valid JSON: {e}"),
                        ))
                    })?;
                return Ok((output, *seq));
            }
            if let Some((attempts, error)) = &h.failed {
                return Err(Abort::Failed(step_failure(name, *attempts, error)));
            }
        }
        let policy = &step.options.retry;
        let mut attempt = history.map_or(0, |h| h.failed_attempts) + 1;
        if let Some(due) = history.and_then(|h| h.retry_at) {
            // The backoff survives a restart: wait only what is left of it.
            sleep_until(due).await;
        }
        let path: Arc<str> = Arc::from(name);
        let mut input = Some(input);
        loop {
            let last = attempt >= policy.max_attempts;
            let state =
                if last { input.take() } else { input.clone() }.expect("input kept for retries");
            let ctx = StepContext::new(
                self.def.name(),
                self.run_id.clone(),
                Arc::clone(&path),
                attempt,
            );
            let result = match CatchUnwind((step.func)(ctx, state)).await {
                Ok(result) => result,
                Err(panic) => Err(StepError::retryable(panic)),
            };
            match result {
                Ok(output) => {
                    let text = output.to_string();
                    let finish =
                        (self.final_step == Some(name)).then(|| Finish::Completed(text.clone()));
                    let entry = self.entry(name, EntryKind::StepCompleted, attempt, text);
                    let seq = self.append(vec![entry], finish).await?;
                    return Ok((output, seq));
                }
                Err(error) if error.is_terminal() || last => {
                    let payload = json!({ "error": error.message() }).to_string();
                    let entry = self.entry(name, EntryKind::StepFailed, attempt, payload);
                    self.append(vec![entry], None).await?;
                    return Err(Abort::Failed(step_failure(name, attempt, error.message())));
                }
                Err(error) => {
                    let delay = policy.jittered_delay_after(attempt);
                    let retry_at = now_millis() + delay.as_millis() as u64;
                    let payload =
                        json!({ "error": error.message(), "retry_at": retry_at }).to_string();
                    let entry = self.entry(name, EntryKind::AttemptFailed, attempt, payload);
                    self.append(vec![entry], None).await?;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn exec_parallel(
        self: &Arc<Self>,
        address: &[usize],
        block: &ParallelNode,
        snapshot: Value,
    ) -> Result<(Value, u64), Abort> {
        let mut branches = JoinSet::new();
        for i in 0..block.branches.len() {
            let run = Arc::clone(self);
            let mut child = address.to_vec();
            child.push(i);
            // Every branch starts from the same snapshot of the whole state.
            let state = snapshot.clone();
            branches.spawn(async move { (i, run.exec_node(child, state).await) });
        }
        let mut results: Vec<Option<(Value, u64)>> = vec![None; block.branches.len()];
        let mut failures = Vec::new();
        while let Some(joined) = branches.join_next().await {
            let (i, result) = joined.map_err(|e| {
                // Steps' panics are caught where they run; this is the engine's own failure.
                Abort::Engine(self.bad_state("parallel", format!("a branch task died: {e}")))
            })?;
            match result {
                Ok(done) => results[i] = Some(done),
                Err(Abort::Failed(failure)) if block.on_error == OnError::CompleteAll => {
                    failures.extend(failure.steps);
                }
                // fail_fast: returning drops the JoinSet, which aborts the other branches now.
                Err(abort) => return Err(abort),
            }
        }
        if !failures.is_empty() {
            let message = format!(
                "parallel block ({}) failed: {}",
                block_names(block),
                failures.iter().map(describe).collect::<Vec<_>>().join("; ")
            );
            return Err(Abort::Failed(RunFailure {
                steps: failures,
                message,
            }));
        }
        let mut done: Vec<(usize, Value, u64)> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let (value, seq) = r.expect("every branch finished");
                (i, value, seq)
            })
            .collect();
        if block.merge == Merge::LastWins {
            // The journal's order of completion is the finishing order, on replay too.
            done.sort_by_key(|(_, _, seq)| *seq);
        }
        let last = done.iter().map(|(_, _, seq)| *seq).max().unwrap_or(0);
        let named: Vec<BranchResult<'_>> = done
            .iter()
            .map(|(i, value, _)| BranchResult {
                name: block.branches[*i].name(),
                output: value,
            })
            .collect();
        let merged = merge(block.merge, &snapshot, &named).map_err(|e| {
            Abort::Failed(RunFailure {
                steps: Vec::new(),
                message: format!("parallel block ({}): {e}", block_names(block)),
            })
        })?;
        Ok((merged, last))
    }

    fn entry(&self, step: &str, kind: EntryKind, attempt: u32, payload: String) -> JournalEntry {
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
    async fn append(
        &self,
        mut entries: Vec<JournalEntry>,
        finish: Option<Finish>,
    ) -> Result<u64, Abort> {
        let (ack, last) = {
            let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
            for entry in &mut entries {
                *seq += 1;
                entry.seq = *seq;
            }
            let write = Write::Append {
                run: self.run_id.clone(),
                lease_token: self.lease_token,
                entries,
                finish,
            };
            (self.journal.submit(write), *seq)
        };
        ack.await
            .map(|()| last)
            .map_err(|e| Abort::Engine(self.commit_error(e)))
    }

    fn commit_error(&self, error: CommitError) -> Error {
        let workflow = self.def.name().to_owned();
        let run_id = self.run_id.clone();
        match error {
            CommitError::Rejected(Rejected::Fenced { .. })
            | CommitError::Rejected(Rejected::Finished) => Error::LeaseLost { workflow, run_id },
            CommitError::Rejected(other) => Error::Store(StoreError(format!(
                "workflow `{workflow}` run {run_id}: the journal refused a write: {other}"
            ))),
            CommitError::Store(e) => Error::Store(StoreError(format!(
                "workflow `{workflow}` run {run_id}: {e}"
            ))),
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

fn step_failure(step: &str, attempts: u32, error: &str) -> RunFailure {
    let failure = StepFailure {
        step: step.to_owned(),
        attempts,
        error: error.to_owned(),
    };
    RunFailure {
        message: describe(&failure),
        steps: vec![failure],
    }
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

fn block_names(block: &ParallelNode) -> String {
    block
        .branches
        .iter()
        .map(Node::name)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn sleep_until(due_millis: u64) {
    let now = now_millis();
    if due_millis > now {
        tokio::time::sleep(Duration::from_millis(due_millis - now)).await;
    }
}
