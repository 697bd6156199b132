//! Blocks whose children run concurrently: parallel blocks and dags.

use super::*;

/// The field types suggested when a typed state lacks what a block writes.
const RESULTS_HINT: &str = "Option<serde_json::Value>";
const ERRORS_HINT: &str = "Option<std::collections::HashMap<String, String>>";

impl RunTask {
    pub(super) async fn exec_parallel(
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
        Ok(Done {
            state: merged,
            seq,
            skipped,
        })
    }

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
