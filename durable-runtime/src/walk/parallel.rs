//! Parallel blocks: branches from one snapshot of the state, under an optional concurrency
//! limit and completion policy, merged as the block says.

use std::sync::Arc;

use serde_json::Value;

use crate::batch::{BatchStatus, CompletionReason, Policy};
use crate::definition::{Node, ParallelNode};
use crate::error::{RunFailure, StepFailure};
use crate::merge::{changes, merge, BranchResult, Merge, OnError};
use crate::store::Event;

use super::written::ERRORS_HINT;
use super::{block_names, child, describe, path_in, written, Abort, Done, RunTask, Scope};

/// The field type suggested when a typed state lacks a collect block's results.
const RESULTS_HINT: &str = "Option<serde_json::Value>";

impl RunTask {
    /// Runs the branches from one snapshot of the state, at most `max_concurrency` at once in
    /// declaration order. Without a completion policy, `on_error` decides what a failed branch
    /// does; with one, the policy decides when the block is done, and the successful branches
    /// are merged. A named block stores its batch result under its name and journals its
    /// output as its own entry, so a replay decides identically.
    pub(super) async fn exec_parallel(
        self: &Arc<Self>,
        address: &[usize],
        block: &ParallelNode,
        snapshot: Value,
        scope: Scope,
    ) -> Result<Done, Abort> {
        let path = block.name.map(|name| path_in(&scope, name));
        if let Some(path) = &path {
            if let Some(done) = self.history.get(path).and_then(|h| h.completed.as_ref()) {
                return self.replay(path, done, snapshot);
            }
        }
        let total = block.branches.len();
        let options = &block.options;
        let policy = options.has_policy().then(|| {
            Policy::new(
                total,
                options.min_successful,
                options.tolerated_failures,
                options.tolerated_failure_percentage,
            )
        });
        let keep_failures = policy.is_some() || block.on_error == OnError::CompleteAll;
        let (tally, decision) = self
            .run_limited(
                path.as_deref().unwrap_or("parallel"),
                total,
                options.max_concurrency.unwrap_or(total),
                keep_failures,
                |i| {
                    let run = Arc::clone(self);
                    let (child, state, scope) =
                        (child(address, i), snapshot.clone(), Arc::clone(&scope));
                    // Every branch starts from the same snapshot of the whole state.
                    async move { run.exec_node(child, state, scope).await }
                },
                |tally| {
                    policy
                        .as_ref()
                        .and_then(|p| p.decided(tally.succeeded, tally.failed))
                },
            )
            .await?;
        if policy.is_none() && tally.failed > 0 {
            // complete_all: every failure, in declaration order whatever order they came in.
            let failures: Vec<&RunFailure> = tally
                .outcomes
                .iter()
                .filter_map(|o| o.as_ref().and_then(|o| o.as_ref().err()))
                .collect();
            // A branch's failure names its failed steps; one of a nested block (a merge that
            // cannot be done) may name none, so its message stands for it.
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
            let steps = failures.iter().flat_map(|f| f.steps.clone()).collect();
            return Err(Abort::Failed(RunFailure { steps, message }));
        }
        // The successful branches, in declaration order.
        let mut done: Vec<(usize, &Done)> = tally
            .outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((i, o.as_ref()?.as_ref().ok()?)))
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
            .map_err(|e| self.branch_merge_failure(&block.branches, &scope, &named, e))?;
        let mut seq = done.iter().map(|(_, d)| d.seq).max().unwrap_or(0);
        let skipped: Vec<StepFailure> = done.iter().flat_map(|(_, d)| d.skipped.clone()).collect();
        // Optional steps that failed are recorded where the workflow can see them.
        written::record_skipped(&mut merged, &skipped);
        let names = || block_names(&block.branches);
        if block.merge == Merge::Collect {
            let name = || format!("the `parallel(merge = collect)` block ({})", names());
            let hint = || RESULTS_HINT.to_owned();
            self.check_written(address, &scope, &merged, "parallel_results", name, hint)?;
        }
        if !skipped.is_empty() {
            let name = || format!("the parallel block ({})", names());
            let hint = || ERRORS_HINT.to_owned();
            self.check_written(address, &scope, &merged, "parallel_errors", name, hint)?;
        }
        if let (Some(path), Some(name)) = (&path, block.name) {
            // Without a policy, every branch succeeded (a failure returned above).
            let decision =
                decision.unwrap_or((BatchStatus::Completed, CompletionReason::AllCompleted));
            let batch = tally.into_batch(
                decision,
                |_, done| changes(&snapshot, &done.state),
                |i| Some(block.branches[i].name().to_owned()),
            );
            let Value::Object(fields) = &mut merged else {
                unreachable!("a merged state is a JSON object")
            };
            fields.insert(
                name.to_owned(),
                serde_json::to_value(&batch).expect("a batch result encodes"),
            );
            let block_name = || format!("parallel block `{name}`");
            let hint = || "Option<durable::batch::BatchResult<serde_json::Value>>".to_owned();
            self.check_written(address, &scope, &merged, name, block_name, hint)?;
            let text = crate::encode::to_text(&merged).map_err(|e| {
                Abort::Failed(RunFailure {
                    steps: Vec::new(),
                    message: format!(
                        "parallel block `{name}`: its batch result cannot be journaled: {e}"
                    ),
                })
            })?;
            let entry = self.entry(path, 1, Event::StepCompleted { output: text });
            seq = seq.max(self.append(vec![entry], None).await?);
        }
        Ok(Done {
            state: merged,
            seq,
            skipped,
        })
    }

    /// A merge that cannot be done, blaming the branch whose output cannot be merged, if any
    /// (`attempts` is 0 there: the step itself succeeded).
    fn branch_merge_failure(
        &self,
        nodes: &[Node],
        scope: &str,
        branches: &[BranchResult<'_>],
        error: String,
    ) -> Abort {
        let Abort::Failed(mut failure) = self.merge_failure("parallel block", nodes, error) else {
            unreachable!("a merge failure fails the run")
        };
        failure.steps = branches
            .iter()
            .filter(|b| !b.output.is_object())
            .take(1)
            .map(|b| StepFailure {
                step: path_in(scope, b.name),
                attempts: 0,
                error: failure.message.clone(),
            })
            .collect();
        Abort::Failed(failure)
    }
}
