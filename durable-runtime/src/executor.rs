//! Walks one run's definition tree: replays finished steps from the journal, executes the
//! rest, and journals every result before anything that depends on it starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::batch::{BatchItem, BatchResult, ItemStatus, Policy};
use crate::clock::now_millis;
use crate::definition::{DagNode, Definition, MapNode, Node, ParallelNode, StepNode};
use crate::error::{Error, RunFailure, StepFailure};
use crate::journal::{CommitError, Journal};
use crate::merge::{merge, BranchResult, Merge, OnError};
use crate::panic::CatchUnwind;
use crate::step::{BoxFuture, OpJournal, StepContext, StepError};
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
    /// Outputs of the steps' sub-operations (`fan_out` and friends) journaled so far, this
    /// process's included, so a retried attempt reuses them.
    ops: Mutex<HashMap<String, String>>,
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
        let mut ops = HashMap::new();
        let mut last_seq = 0;
        for entry in entries {
            if entry.kind == EntryKind::StepCompleted && entry.step.contains('#') {
                ops.insert(entry.step.clone(), entry.payload.clone());
            }
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
        // An optional step's failure does not finish the run, so only a required one qualifies.
        let final_step = match def.nodes().last() {
            Some(Node::Step(step)) if !step.options.optional => Some(step.name),
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
            ops: Mutex::new(ops),
        }
    }

    /// Drives the run to its end and journals how it ended.
    pub(crate) async fn run(self: Arc<Self>, input: Value) -> Outcome {
        let walked = self.exec_seq(Vec::new(), input, Arc::from("")).await;
        let (finish, outcome) = match walked {
            // The final step's commit finished the run already.
            Ok(done) if self.final_step.is_some() => return Ok(done.state),
            Ok(done) => (Finish::Completed(done.state.to_string()), Ok(done.state)),
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

    /// Runs the children of `address` (the top level when empty) one after another.
    fn exec_seq(
        self: &Arc<Self>,
        address: Address,
        state: Value,
        scope: Scope,
    ) -> BoxFuture<'_, Result<Done, Abort>> {
        Box::pin(async move {
            let mut done = Done {
                state,
                seq: 0,
                skipped: Vec::new(),
            };
            for i in 0..self.nodes_at(&address).len() {
                let next = self
                    .exec_node(child(&address, i), done.state, Arc::clone(&scope))
                    .await?;
                done = Done {
                    state: next.state,
                    seq: done.seq.max(next.seq),
                    skipped: [done.skipped, next.skipped].concat(),
                };
            }
            Ok(done)
        })
    }

    fn exec_node(
        self: &Arc<Self>,
        address: Address,
        state: Value,
        scope: Scope,
    ) -> BoxFuture<'_, Result<Done, Abort>> {
        Box::pin(async move {
            match self.node_at(&address) {
                Node::Step(step) => self.exec_step(step, state, &scope).await,
                Node::Seq(_) => self.exec_seq(address, state, scope).await,
                Node::Parallel(block) => self.exec_parallel(&address, block, state, scope).await,
                Node::Dag(dag) => self.exec_dag(&address, dag, state, scope).await,
                Node::Map(map) => self.exec_map(&address, map, state, scope).await,
            }
        })
    }

    async fn exec_step(
        self: &Arc<Self>,
        step: &StepNode,
        input: Value,
        scope: &str,
    ) -> Result<Done, Abort> {
        let path = path_in(scope, step.name);
        let name = path.as_str();
        let optional = step.options.optional;
        let history = self.history.get(name);
        if let Some(h) = history {
            if let Some((seq, output)) = &h.completed {
                return self.replay(name, *seq, output);
            }
            if let Some((attempts, error)) = &h.failed {
                let failure = StepFailure {
                    step: name.to_owned(),
                    attempts: *attempts,
                    error: error.clone(),
                };
                return skip_or_fail(optional, failure, input, 0);
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
            // Keep the input while another attempt may need it, or an optional step may hand it on.
            let last = attempt >= policy.max_attempts;
            let state = if last && !optional {
                input.take()
            } else {
                input.clone()
            }
            .expect("input kept");
            let ops: Arc<dyn OpJournal> = Arc::new(Ops(Arc::clone(self)));
            let ctx = StepContext::with_journal(
                self.def.name(),
                self.run_id.clone(),
                Arc::clone(&path),
                attempt,
                Some(ops),
            );
            let result = run_attempt(step, ctx, state).await;
            match result {
                Ok(output) => {
                    let text = output.to_string();
                    let finish =
                        (self.final_step == Some(name)).then(|| Finish::Completed(text.clone()));
                    let entry = self.entry(name, EntryKind::StepCompleted, attempt, text);
                    let seq = self.append(vec![entry], finish).await?;
                    return Ok(Done {
                        state: output,
                        seq,
                        skipped: Vec::new(),
                    });
                }
                Err(error) if error.is_terminal() || last => {
                    let payload = json!({ "error": error.message() }).to_string();
                    let entry = self.entry(name, EntryKind::StepFailed, attempt, payload);
                    let seq = self.append(vec![entry], None).await?;
                    let failure = StepFailure {
                        step: name.to_owned(),
                        attempts: attempt,
                        error: error.message().to_owned(),
                    };
                    return skip_or_fail(optional, failure, input.unwrap_or(Value::Null), seq);
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
        scope: Scope,
    ) -> Result<Done, Abort> {
        let mut branches = JoinSet::new();
        for i in 0..block.branches.len() {
            let run = Arc::clone(self);
            let (child, state, scope) = (child(address, i), snapshot.clone(), Arc::clone(&scope));
            // Every branch starts from the same snapshot of the whole state.
            branches.spawn(async move { (i, run.exec_node(child, state, scope).await) });
        }
        let mut results: Vec<Option<Done>> = (0..block.branches.len()).map(|_| None).collect();
        let mut failures: Vec<RunFailure> = Vec::new();
        while let Some(joined) = branches.join_next().await {
            let (i, result) = joined.map_err(|e| {
                Abort::Engine(self.bad_state("parallel", format!("a branch task died: {e}")))
            })?;
            match result {
                Ok(done) => results[i] = Some(done),
                Err(Abort::Failed(failure)) if block.on_error == OnError::CompleteAll => {
                    failures.push(failure)
                }
                // fail_fast: returning drops the JoinSet, which aborts the other branches now.
                Err(abort) => return Err(abort),
            }
        }
        if !failures.is_empty() {
            // A branch's failure names its failed steps; one of a nested block (a merge that
            // cannot be done) names none, so its message stands for it.
            let message = format!(
                "parallel block ({}) failed: {}",
                block_names(&block.branches),
                failures
                    .iter()
                    .flat_map(|f| match f.steps.is_empty() {
                        true => vec![f.message.clone()],
                        false => f.steps.iter().map(describe).collect(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let steps = failures.into_iter().flat_map(|f| f.steps).collect();
            return Err(Abort::Failed(RunFailure { steps, message }));
        }
        let mut done: Vec<(usize, Done)> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i, r.expect("every branch finished")))
            .collect();
        if block.merge == Merge::LastWins {
            // The journal's order of completion is the finishing order, on replay too.
            done.sort_by_key(|(_, d)| d.seq);
        }
        let named: Vec<BranchResult<'_>> = done
            .iter()
            .map(|(i, d)| BranchResult {
                name: block.branches[*i].name(),
                output: &d.state,
            })
            .collect();
        let mut merged = merge(block.merge, &snapshot, &named)
            .map_err(|e| self.merge_failure("parallel block", &block.branches, e))?;
        let seq = done.iter().map(|(_, d)| d.seq).max().unwrap_or(0);
        let skipped: Vec<StepFailure> = done.into_iter().flat_map(|(_, d)| d.skipped).collect();
        // Optional steps that failed are recorded where the workflow can see them.
        if let (false, Value::Object(state)) = (skipped.is_empty(), &mut merged) {
            let errors = state.entry("parallel_errors").or_insert_with(|| json!({}));
            if !errors.is_object() {
                *errors = json!({});
            }
            for failure in &skipped {
                errors[failure.step.as_str()] = Value::String(failure.error.clone());
            }
        }
        Ok(Done {
            state: merged,
            seq,
            skipped,
        })
    }

    /// Starts each node as soon as every node it comes after has finished; its input is the
    /// block's input with its dependencies' changes deep-merged in declaration order.
    async fn exec_dag(
        self: &Arc<Self>,
        address: &[usize],
        dag: &DagNode,
        snapshot: Value,
        scope: Scope,
    ) -> Result<Done, Abort> {
        let deps = dag.dependencies();
        let n = dag.nodes.len();
        let mut results: Vec<Option<Done>> = (0..n).map(|_| None).collect();
        let mut started = vec![false; n];
        let mut running = JoinSet::new();
        loop {
            for i in 0..n {
                if started[i] || !deps[i].iter().all(|&d| results[d].is_some()) {
                    continue;
                }
                let inputs: Vec<BranchResult<'_>> = deps[i]
                    .iter()
                    .map(|&d| BranchResult {
                        name: dag.nodes[d].name(),
                        output: &results[d].as_ref().expect("finished").state,
                    })
                    .collect();
                let input = merge(Merge::DeepMerge, &snapshot, &inputs)
                    .map_err(|e| self.merge_failure("dag", &dag.nodes, e))?;
                started[i] = true;
                let (run, child, scope) = (Arc::clone(self), child(address, i), Arc::clone(&scope));
                running.spawn(async move { (i, run.exec_node(child, input, scope).await) });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, result) = joined.map_err(|e| {
                Abort::Engine(self.bad_state("dag", format!("a node task died: {e}")))
            })?;
            // A failure returns at once; dropping the JoinSet cancels the nodes still running.
            results[i] = Some(result?);
        }
        let done: Vec<Done> = results
            .into_iter()
            .map(|r| r.expect("every node finished"))
            .collect();
        let named: Vec<BranchResult<'_>> = done
            .iter()
            .zip(&dag.nodes)
            .map(|(d, node)| BranchResult {
                name: node.name(),
                output: &d.state,
            })
            .collect();
        let merged = merge(Merge::DeepMerge, &snapshot, &named)
            .map_err(|e| self.merge_failure("dag", &dag.nodes, e))?;
        let seq = done.iter().map(|d| d.seq).max().unwrap_or(0);
        Ok(Done {
            state: merged,
            seq,
            skipped: done.into_iter().flat_map(|d| d.skipped).collect(),
        })
    }

    /// Runs the block's nodes once per element of the state's array `over`, under the
    /// concurrency limit and completion policy, and stores the batch result under the block's
    /// name. The result is journaled as the block's own entry, so a replay takes the same
    /// decision even if items would finish in another order.
    async fn exec_map(
        self: &Arc<Self>,
        address: &[usize],
        map: &MapNode,
        state: Value,
        scope: Scope,
    ) -> Result<Done, Abort> {
        let path = path_in(&scope, map.name);
        if let Some((seq, output)) = self.history.get(&path).and_then(|h| h.completed.as_ref()) {
            return self.replay(&path, *seq, output);
        }
        let literal = map
            .items
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let items = match literal.as_ref().or_else(|| state.get(map.over)) {
            Some(Value::Array(items)) => items.clone(),
            other => {
                let found = other.map_or("nothing".to_owned(), |v| format!("{v}"));
                let message = format!(
                    "map `{}` runs over the state's array `{}`, but the state holds {found} there",
                    map.name, map.over
                );
                return Err(Abort::Failed(RunFailure {
                    steps: Vec::new(),
                    message,
                }));
            }
        };
        let options = &map.options;
        let total = items.len();
        let policy = Policy::new(
            total,
            options.min_successful,
            options.tolerated_failures,
            options.tolerated_failure_percentage,
        );
        let limit = options.max_concurrency.unwrap_or(total).max(1);
        let mut statuses = vec![ItemStatus::NotStarted; total];
        let mut outcomes: Vec<Option<Result<Value, String>>> = (0..total).map(|_| None).collect();
        let (mut next, mut succeeded, mut failed, mut seq) = (0, 0, 0, 0);
        let mut items = items.into_iter();
        let mut running = JoinSet::new();
        let decision = loop {
            if let Some(decision) = policy.decided(succeeded, failed) {
                // Returning the decision drops nothing yet: cancel what still runs below.
                break decision;
            }
            while running.len() < limit && next < total {
                let item = items.next().expect("one item per index");
                let item_scope: Scope = Arc::from(format!("{path}[{next}]"));
                let (run, address, i) = (Arc::clone(self), address.to_vec(), next);
                statuses[i] = ItemStatus::Cancelled;
                running.spawn(async move { (i, run.exec_seq(address, item, item_scope).await) });
                next += 1;
            }
            let Some(joined) = running.join_next().await else {
                unreachable!("an undecided batch has items left to run")
            };
            let (i, result) = joined.map_err(|e| {
                Abort::Engine(self.bad_state(&path, format!("an item task died: {e}")))
            })?;
            match result {
                Ok(done) => {
                    seq = seq.max(done.seq);
                    statuses[i] = ItemStatus::Succeeded;
                    outcomes[i] = Some(Ok(done.state));
                    succeeded += 1;
                }
                Err(Abort::Failed(failure)) => {
                    statuses[i] = ItemStatus::Failed;
                    outcomes[i] = Some(Err(failure.message));
                    failed += 1;
                }
                Err(abort) => return Err(abort),
            }
        };
        // Items still running are cancelled now; those never started stay `not_started`.
        running.abort_all();
        let started = statuses
            .iter()
            .filter(|s| **s != ItemStatus::NotStarted)
            .count();
        let batch = BatchResult {
            status: decision.0,
            completion_reason: decision.1,
            total_count: total,
            started_count: started,
            success_count: succeeded,
            failure_count: failed,
            items: statuses
                .into_iter()
                .zip(outcomes)
                .enumerate()
                .map(|(index, (status, outcome))| {
                    let (result, error) = match outcome {
                        Some(Ok(value)) => (Some(value), None),
                        Some(Err(error)) => (None, Some(error)),
                        None => (None, None),
                    };
                    BatchItem {
                        index,
                        status,
                        result,
                        error,
                    }
                })
                .collect(),
        };
        let mut output = state;
        let Value::Object(fields) = &mut output else {
            let message = format!(
                "map `{}` stores its batch result in the state, which must be a JSON object",
                map.name
            );
            return Err(Abort::Failed(RunFailure {
                steps: Vec::new(),
                message,
            }));
        };
        fields.insert(
            map.name.to_owned(),
            serde_json::to_value(&batch).expect("a batch result encodes"),
        );
        let entry = self.entry(&path, EntryKind::StepCompleted, 1, output.to_string());
        let seq = seq.max(self.append(vec![entry], None).await?);
        Ok(Done {
            state: output,
            seq,
            skipped: Vec::new(),
        })
    }

    fn merge_failure(&self, block: &str, nodes: &[Node], error: String) -> Abort {
        Abort::Failed(RunFailure {
            steps: Vec::new(),
            message: format!("{block} ({}): {error}", block_names(nodes)),
        })
    }

    /// A node's journaled output, as if it had just run.
    fn replay(&self, path: &str, seq: u64, output: &str) -> Result<Done, Abort> {
        let state = serde_json::from_str(output).map_err(|e| {
            Abort::Engine(
                self.bad_state(path, format!("its journaled output is not valid JSON: {e}")),
            )
        })?;
        Ok(Done {
            state,
            seq,
            skipped: Vec::new(),
        })
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

/// The journal of a run as its steps' sub-operations use it.
struct Ops(Arc<RunTask>);

impl OpJournal for Ops {
    fn finished(&self, path: &str) -> Option<String> {
        self.0
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    fn record(
        &self,
        path: String,
        attempt: u32,
        outcome: Result<String, String>,
    ) -> BoxFuture<'static, Result<(), StepError>> {
        let run = Arc::clone(&self.0);
        Box::pin(async move {
            let entry = match &outcome {
                Ok(output) => run.entry(&path, EntryKind::StepCompleted, attempt, output.clone()),
                // Journaled for the history only: a failed operation runs again on a retry.
                Err(error) => run.entry(
                    &path,
                    EntryKind::AttemptFailed,
                    attempt,
                    json!({ "error": error, "retry_at": 0 }).to_string(),
                ),
            };
            run.append(vec![entry], None)
                .await
                .map_err(|abort| match abort {
                    Abort::Engine(error) => StepError::retryable(error),
                    Abort::Failed(failure) => StepError::retryable(failure.message),
                })?;
            if let Ok(output) = outcome {
                run.ops
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path, output);
            }
            Ok(())
        })
    }
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

/// Runs one attempt of a step: panics and timeouts become failed attempts.
async fn run_attempt(step: &StepNode, ctx: StepContext, state: Value) -> Result<Value, StepError> {
    let attempt = CatchUnwind((step.func)(ctx, state));
    let result = match step.options.timeout {
        // Dropping the attempt's future on timeout cancels it.
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => {
                return Err(StepError::retryable(format!(
                    "the attempt timed out after {limit:?}"
                )))
            }
        },
        None => attempt.await,
    };
    result.unwrap_or_else(|panic| Err(StepError::retryable(panic)))
}

/// A step's final failure: the run fails, unless the step is optional, when the workflow goes
/// on with the step's input.
fn skip_or_fail(
    optional: bool,
    failure: StepFailure,
    input: Value,
    seq: u64,
) -> Result<Done, Abort> {
    if optional {
        Ok(Done {
            state: input,
            seq,
            skipped: vec![failure],
        })
    } else {
        Err(Abort::Failed(RunFailure {
            message: describe(&failure),
            steps: vec![failure],
        }))
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

async fn sleep_until(due_millis: u64) {
    let now = now_millis();
    if due_millis > now {
        tokio::time::sleep(Duration::from_millis(due_millis - now)).await;
    }
}
