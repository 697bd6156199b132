//! Map blocks: the same nodes once per item, under a concurrency limit and a completion
//! policy.

use std::sync::Arc;

use serde_json::Value;

use crate::batch::Policy;
use crate::definition::MapNode;
use crate::error::RunFailure;
use crate::store::Event;

use super::{path_in, Abort, Done, RunTask, Scope};

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
        let limit = options.max_concurrency.unwrap_or(total);
        let mut items = items.iter();
        let (tally, decision) = self
            .run_limited(
                &path,
                total,
                limit,
                true,
                |i| {
                    let item = items.next().expect("one item per index").clone();
                    let item_scope: Scope = Arc::from(format!("{path}[{i}]"));
                    let (run, address) = (Arc::clone(self), address.to_vec());
                    async move { run.exec_seq(address, item, item_scope).await }
                },
                |tally| policy.decided(tally.succeeded, tally.failed),
            )
            .await?;
        let decision = decision.expect("a batch whose items all finished is decided");
        let seq = tally
            .outcomes
            .iter()
            .filter_map(|o| o.as_ref().and_then(|o| o.as_ref().ok()))
            .map(|done| done.seq)
            .max()
            .unwrap_or(0);
        // Items still running were cancelled; those never started stay `not_started`.
        let batch = tally.into_batch(decision, |_, done| done.state, |_| None);
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
        let replaces_object = matches!(fields.get(map.name), Some(Value::Object(_)));
        fields.insert(map.name.to_owned(), batch);
        let name = || format!("map `{}`", map.name);
        let hint = || {
            let item = map.item_state.map_or("durable::Data", |t| t.name());
            format!("Option<durable::batch::BatchResult<{item}>>")
        };
        self.check_written(address, &scope, &output, map.name, name, hint)?;
        let event = if replaces_object {
            crate::encode::to_text(&output).map(|output| Event::StepCompleted { output })
        } else {
            let changes: std::collections::BTreeMap<&str, &Value> =
                [(map.name, &output[map.name])].into();
            crate::encode::to_text(&changes).map(|changes| Event::StepChanged { changes })
        };
        let event = event.map_err(|e| {
            Abort::Failed(RunFailure {
                steps: Vec::new(),
                message: format!(
                    "map `{}`: its batch result cannot be journaled: {e}",
                    map.name
                ),
            })
        })?;
        let entry = self.entry(&path, 1, event);
        let seq = seq.max(self.append(vec![entry], None).await?);
        Ok(Done {
            state: output,
            seq,
            skipped: Vec::new(),
        })
    }
}
