//! The loop map blocks and parallel blocks share: children started in index order under a
//! concurrency limit until they all finished or a completion policy decided, and the batch
//! result built from what became of each.
//!
//! # Slots
//!
//! A child holds one of the `limit` slots from its start until it ends (succeeds or fails for
//! good), whatever it waits for meanwhile: a child that suspends (a callback, a signal, a
//! sleep, a child run) keeps its slot, and the batch suspends as a whole once nothing runs.
//! So at most `limit` children are ever started and unfinished, across suspensions too: a
//! limit of 3 over items that each wait for an approval keeps 3 approvals outstanding.
//!
//! Replay keeps the same children started: children start in index order, each walk starts
//! the first ones again, a finished child replays its end at once (freeing its slot for the
//! next) and a started one that still waits suspends again, holding its slot. The started
//! children are therefore always the first `min(total, finished + limit)`, whichever order
//! they finish in, so a resumed walk starts no child a live one would not have.
//!
//! # Cancellation
//!
//! When the batch is decided, or a child fails fast, the children still running are
//! cancelled, and the loop returns only once their tasks (and their own blocks' tasks) are
//! gone ([`Tasks`]): none of their steps runs past the batch's decision.

use std::future::Future;

use serde_json::Value;
use tokio::task::JoinSet;

use crate::batch::{BatchItem, BatchResult, BatchStatus, CompletionReason, ItemStatus};
use crate::error::RunFailure;
use crate::tasks::Tasks;

use super::{Abort, Done, RunTask, Suspensions};

/// How a batch ended: its status and why.
pub(super) type Decision = (BatchStatus, CompletionReason);

/// What became of each child of a batch so far.
pub(super) struct Tally {
    /// Per child, in index order: its walk's result, or its failure; `None` while it has not
    /// finished (or never will: cancelled, suspended or never started).
    pub(super) outcomes: Vec<Option<Result<Done, RunFailure>>>,
    /// Children that succeeded.
    pub(super) succeeded: usize,
    /// Children that failed for good.
    pub(super) failed: usize,
    /// Children started: always the first ones, in index order.
    pub(super) started: usize,
}

impl RunTask {
    /// Starts `start(i)` for each `i` in `0..total` in order, each holding one of `limit`
    /// slots until it ends (see "Slots" in the module's documentation). Before each start
    /// and after each finish, `decide` may end the batch: the children still running are
    /// cancelled then, those suspended count as cancelled, and the others never start. A
    /// child that fails for good is recorded when `keep_failures`; otherwise its failure is
    /// returned at once, which cancels the children still running (`fail_fast`). Once no
    /// child runs and some suspended, the batch suspends as a whole (unless `decide` decided
    /// first). Whatever it returns, the children it cancelled are gone by then.
    pub(super) async fn run_limited<Fut>(
        &self,
        path: &str,
        total: usize,
        limit: usize,
        keep_failures: bool,
        mut start: impl FnMut(usize) -> Fut,
        mut decide: impl FnMut(&Tally) -> Option<Decision>,
    ) -> Result<(Tally, Option<Decision>), Abort>
    where
        Fut: Future<Output = Result<Done, Abort>> + Send + 'static,
    {
        let limit = limit.max(1);
        let mut tally = Tally {
            outcomes: (0..total).map(|_| None).collect(),
            succeeded: 0,
            failed: 0,
            started: 0,
        };
        let group = Tasks::nested(&self.tasks);
        let mut running = JoinSet::new();
        let mut suspended = Suspensions::default();
        // Children that suspended: each still holds its slot (it ends in a later walk).
        let mut waiting = 0;
        let ended = loop {
            if let Some(decision) = decide(&tally) {
                break Ok(Some(decision));
            }
            while running.len() + waiting < limit && tally.started < total {
                let i = tally.started;
                let child = start(i);
                running.spawn(group.task(async move { (i, child.await) }));
                tally.started += 1;
            }
            let Some(joined) = running.join_next().await else {
                break Ok(None);
            };
            let (i, result) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    let message = format!("a child task died: {e}");
                    break Err(Abort::Engine(self.bad_state(path, message)));
                }
            };
            let Some(result) = suspended.keep(result) else {
                waiting += 1;
                continue;
            };
            match result {
                Ok(done) => {
                    tally.outcomes[i] = Some(Ok(done));
                    tally.succeeded += 1;
                }
                Err(Abort::Failed(failure)) if keep_failures => {
                    tally.outcomes[i] = Some(Err(failure));
                    tally.failed += 1;
                }
                Err(abort) => break Err(abort),
            }
        };
        running.shutdown().await;
        group.idle().await;
        let decision = ended?;
        match suspended.abort() {
            Some(suspend) if decision.is_none() => Err(suspend),
            _ => Ok((tally, decision)),
        }
    }
}

impl Tally {
    /// The batch result: per child its status and, with `result`, its value, or its error;
    /// `name` names a child (a parallel block's branches).
    pub(super) fn into_batch(
        self,
        decision: Decision,
        mut result: impl FnMut(usize, Done) -> Value,
        name: impl Fn(usize) -> Option<String>,
    ) -> BatchResult<Value> {
        let Tally {
            outcomes,
            succeeded,
            failed,
            started,
        } = self;
        let total = outcomes.len();
        let items = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                let mut item = BatchItem {
                    index,
                    name: name(index),
                    status: ItemStatus::NotStarted,
                    result: None,
                    error: None,
                    step: None,
                    attempts: None,
                };
                match outcome {
                    Some(Ok(done)) => {
                        item.status = ItemStatus::Succeeded;
                        item.result = Some(result(index, done));
                    }
                    Some(Err(mut failure)) => {
                        item.status = ItemStatus::Failed;
                        // One step to blame: its own message, with its path and attempts
                        // beside it. Otherwise (several, or none) the whole message.
                        match failure.steps.len() {
                            1 => {
                                let step = failure.steps.pop().expect("one step");
                                item.error = Some(step.error);
                                item.step = Some(step.step);
                                item.attempts = Some(step.attempts);
                            }
                            _ => item.error = Some(failure.message),
                        }
                    }
                    None if index < started => item.status = ItemStatus::Cancelled,
                    None => {}
                }
                item
            })
            .collect();
        BatchResult {
            status: decision.0,
            completion_reason: decision.1,
            total_count: total,
            started_count: started,
            success_count: succeeded,
            failure_count: failed,
            items,
        }
    }
}
