//! Dag blocks: each node starts as soon as the nodes it comes after have finished.

use std::sync::Arc;

use serde_json::Value;
use tokio::task::JoinSet;

use crate::definition::DagNode;
use crate::error::StepFailure;
use crate::merge::{merge, BranchResult, Merge};
use crate::tasks::Tasks;

use super::written::ERRORS_HINT;
use super::{block_names, child, written, Abort, Done, RunTask, Scope, Suspensions};

impl RunTask {
    /// Starts each node as soon as every node it comes after has finished; its input is the
    /// block's input with its dependencies' changes deep-merged in declaration order.
    pub(super) async fn exec_dag(
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
        let group = Tasks::nested(&self.tasks);
        let mut running = JoinSet::new();
        // A node that suspends starts none of its dependents; the others go on.
        let mut suspended = Suspensions::default();
        let ended = 'nodes: loop {
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
                let input = match merge(Merge::DeepMerge, &snapshot, &inputs) {
                    Ok(input) => input,
                    Err(e) => break 'nodes Err(self.merge_failure("dag", &dag.nodes, e)),
                };
                started[i] = true;
                let (run, child, scope) = (Arc::clone(self), child(address, i), Arc::clone(&scope));
                running.spawn(
                    group.task(async move { (i, run.exec_node(child, input, scope).await) }),
                );
            }
            let Some(joined) = running.join_next().await else {
                break Ok(());
            };
            let (i, result) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    let message = format!("a node task died: {e}");
                    break Err(Abort::Engine(self.bad_state("dag", message)));
                }
            };
            let Some(result) = suspended.keep(result) else {
                continue;
            };
            match result {
                Ok(done) => results[i] = Some(done),
                // A failure ends the block at once, cancelling the nodes still running.
                Err(abort) => break Err(abort),
            }
        };
        // Cancelled nodes are gone before the failure goes on.
        running.shutdown().await;
        group.idle().await;
        ended?;
        if let Some(suspend) = suspended.abort() {
            return Err(suspend);
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
        let mut merged = merge(Merge::DeepMerge, &snapshot, &named)
            .map_err(|e| self.merge_failure("dag", &dag.nodes, e))?;
        let seq = done.iter().map(|d| d.seq).max().unwrap_or(0);
        let skipped: Vec<StepFailure> = done.into_iter().flat_map(|d| d.skipped).collect();
        // Like a parallel block's: the workflow sees which optional nodes failed.
        written::record_skipped(&mut merged, &skipped);
        if !skipped.is_empty() {
            let name = || format!("the dag ({})", block_names(&dag.nodes));
            let hint = || ERRORS_HINT.to_owned();
            self.check_written(address, &scope, &merged, "parallel_errors", name, hint)?;
        }
        Ok(Done {
            state: merged,
            seq,
            skipped,
        })
    }
}
