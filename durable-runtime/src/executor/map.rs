//! Map blocks: the same nodes once per item, under a concurrency limit and a completion
//! policy.

use super::*;

impl RunTask {
    /// Runs the block's nodes once per element of the state's array `over`, under the
    /// concurrency limit and completion policy, and stores the batch result under the block's
    /// name. The result is journaled as the block's own entry, so a replay takes the same
    /// decision even if items would finish in another order.
    pub(super) async fn exec_map(
        self: &Arc<Self>,
        address: &[usize],
        map: &MapNode,
        state: Value,
        scope: Scope,
    ) -> Result<Done, Abort> {
        let path = path_in(&scope, map.name);
        if let Some(done) = self.history.get(&path).and_then(|h| h.completed.as_ref()) {
            return self.replay(&path, done, state);
        }
        let literal = map
            .items
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let items = match literal.as_ref().or_else(|| state.get(map.over)) {
            // Borrowed: each item is cloned only when it starts, so at most `max_concurrency`
            // copies are alive besides the state's own array, and a finished item leaves only
            // its result behind.
            Some(Value::Array(items)) => items,
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
        let mut items = items.iter();
        let mut running = JoinSet::new();
        let decision = loop {
            if let Some(decision) = policy.decided(succeeded, failed) {
                // Returning the decision drops nothing yet: cancel what still runs below.
                break decision;
            }
            while running.len() < limit && next < total {
                let item = items.next().expect("one item per index").clone();
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
        let batch = serde_json::to_value(&batch).expect("a batch result encodes");
        // Only the batch's key changed: journal just that, unless the state held an object
        // there already (the journaled change would merge into it instead of replacing it).
        let (kind, payload) = match fields.get(map.name) {
            Some(Value::Object(_)) => (EntryKind::StepCompleted, None),
            _ => {
                let mut changes = serde_json::to_string(map.name).expect("a key encodes");
                changes.insert(0, '{');
                changes.push(':');
                changes.push_str(&batch.to_string());
                changes.push('}');
                (EntryKind::StepChanged, Some(changes))
            }
        };
        fields.insert(map.name.to_owned(), batch);
        let payload = payload.unwrap_or_else(|| output.to_string());
        let entry = self.entry(&path, kind, 1, payload);
        let seq = seq.max(self.append(vec![entry], None).await?);
        Ok(Done {
            state: output,
            seq,
            skipped: Vec::new(),
        })
    }
}
