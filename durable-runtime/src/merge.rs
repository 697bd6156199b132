//! How the results of parallel branches are combined into one state.
//!
//! Every strategy works on each branch's *changes* against the snapshot the branches started
//! from (keys a branch added or whose value it changed), never on its whole result: otherwise
//! a branch that left a key alone would undo another branch's change to it.

use serde_json::{Map, Value};

/// How a parallel block combines its branches' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Merge {
    /// Merge every branch's changes recursively into the snapshot, in declaration order; on a
    /// conflict between two non-objects the later-declared branch wins. The default.
    #[default]
    DeepMerge,
    /// Apply every branch's changed top-level keys onto the snapshot in the order the branches
    /// finished (journaled, so a replay merges identically): the last to finish wins.
    LastWins,
    /// Keep the snapshot and put each branch's changes under `parallel_results.<step>`.
    Collect,
}

/// What a parallel block does when a branch fails for good (its retries spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnError {
    /// Cancel the other branches at once and fail the block with that error. The default.
    #[default]
    FailFast,
    /// Let every branch run to its end, then fail the block listing every failed step.
    CompleteAll,
}

impl Merge {
    /// The name used in the DSL and the fingerprint.
    pub fn as_str(self) -> &'static str {
        match self {
            Merge::DeepMerge => "deep_merge",
            Merge::LastWins => "last_wins",
            Merge::Collect => "collect",
        }
    }
}

impl OnError {
    /// The name used in the DSL and the fingerprint.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::FailFast => "fail_fast",
            OnError::CompleteAll => "complete_all",
        }
    }
}

/// A branch's result, named by its step, ready to merge.
#[derive(Debug, Clone)]
pub struct BranchResult<'a> {
    /// The branch's name (the step's name).
    pub name: &'a str,
    /// The state it returned.
    pub output: &'a Value,
}

/// Merges branch results onto `snapshot`.
///
/// `branches` must come in declaration order for [`Merge::DeepMerge`] and [`Merge::Collect`],
/// and in finishing order for [`Merge::LastWins`]. Fails when the snapshot or a branch result
/// is not a JSON object, the only shape these strategies can merge.
///
/// ```
/// use durable::merge::{merge, BranchResult, Merge};
/// use serde_json::json;
///
/// let snapshot = json!({"user": 1});
/// let a = json!({"user": 1, "settings": {"notifications": true}});
/// let b = json!({"user": 1, "settings": {"theme": "dark"}});
/// let merged = merge(Merge::DeepMerge, &snapshot, &[
///     BranchResult { name: "a", output: &a },
///     BranchResult { name: "b", output: &b },
/// ]).unwrap();
/// assert_eq!(merged, json!({"user": 1, "settings": {"notifications": true, "theme": "dark"}}));
/// ```
pub fn merge(
    strategy: Merge,
    snapshot: &Value,
    branches: &[BranchResult<'_>],
) -> Result<Value, String> {
    let base = snapshot.as_object().ok_or_else(|| {
        format!(
            "`{}` needs the state to be a JSON object, but it is {}",
            strategy.as_str(),
            kind(snapshot)
        )
    })?;
    let mut out = base.clone();
    for branch in branches {
        let result = branch.output.as_object().ok_or_else(|| {
            format!(
                "`{}` needs step `{}` to return a JSON object, but it returned {}",
                strategy.as_str(),
                branch.name,
                kind(branch.output)
            )
        })?;
        // deep_merge needs only the changed leaves; the others replace whole top-level values.
        let changes = diff(base, result, strategy == Merge::DeepMerge);
        match strategy {
            Merge::DeepMerge => deep_merge_into(&mut out, changes),
            Merge::LastWins => out.extend(changes),
            Merge::Collect => {
                let slot = out
                    .entry("parallel_results")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(results) = slot {
                    results.insert(branch.name.to_owned(), Value::Object(changes));
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// A branch's changes against the snapshot it started from: the top-level keys it added or
/// changed (what `collect` keeps); its whole output when either is not a JSON object.
pub(crate) fn changes(snapshot: &Value, output: &Value) -> Value {
    match (snapshot, output) {
        (Value::Object(before), Value::Object(after)) => Value::Object(diff(before, after, false)),
        _ => output.clone(),
    }
}

/// The keys of `after` that are new or changed against `before`. With `deep`, objects are
/// compared recursively so that only the changed leaves are kept.
fn diff(before: &Map<String, Value>, after: &Map<String, Value>, deep: bool) -> Map<String, Value> {
    let mut changes = Map::new();
    for (key, new) in after {
        match (before.get(key), new) {
            (Some(old), _) if old == new => {}
            (Some(Value::Object(old)), Value::Object(new)) if deep => {
                changes.insert(key.clone(), Value::Object(diff(old, new, true)));
            }
            _ => {
                changes.insert(key.clone(), new.clone());
            }
        }
    }
    changes
}

/// Merges `changes` into `target`: objects recursively, anything else replaced.
pub(crate) fn deep_merge_into(target: &mut Map<String, Value>, changes: Map<String, Value>) {
    for (key, new) in changes {
        match (target.get_mut(&key), new) {
            (Some(Value::Object(old)), Value::Object(new)) => deep_merge_into(old, new),
            (_, new) => {
                target.insert(key, new);
            }
        }
    }
}

/// What a JSON value is, for error messages: "an object", "a number", ...
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(strategy: Merge, snapshot: Value, branches: &[(&str, Value)]) -> Value {
        let results: Vec<_> = branches
            .iter()
            .map(|(name, output)| BranchResult { name, output })
            .collect();
        merge(strategy, &snapshot, &results).unwrap()
    }

    #[test]
    fn deep_merge_keeps_changes_a_later_branch_did_not_touch() {
        let snap = json!({"count": 1, "s": {"x": 1}});
        let out = run(
            Merge::DeepMerge,
            snap,
            &[
                ("a", json!({"count": 2, "s": {"x": 1}})),
                ("b", json!({"count": 1, "s": {"x": 1, "y": 2}})),
            ],
        );
        assert_eq!(out, json!({"count": 2, "s": {"x": 1, "y": 2}}));
    }

    #[test]
    fn deep_merge_later_declared_branch_wins_scalar_conflicts() {
        let out = run(
            Merge::DeepMerge,
            json!({}),
            &[("a", json!({"k": "a"})), ("b", json!({"k": "b"}))],
        );
        assert_eq!(out, json!({"k": "b"}));
    }

    #[test]
    fn last_wins_is_shallow_and_ordered() {
        let out = run(
            Merge::LastWins,
            json!({"s": {"x": 1}}),
            &[
                ("b", json!({"s": {"x": 1, "y": 1}})),
                ("a", json!({"s": {"z": 1}})),
            ],
        );
        assert_eq!(out, json!({"s": {"z": 1}}));
        let out = run(
            Merge::LastWins,
            json!({"s": {"x": 1}}),
            &[
                ("a", json!({"s": {"z": 1}})),
                ("b", json!({"s": {"x": 1, "y": 1}})),
            ],
        );
        assert_eq!(out, json!({"s": {"x": 1, "y": 1}}));
    }

    #[test]
    fn collect_keeps_same_named_keys_apart() {
        let out = run(
            Merge::Collect,
            json!({"id": 7}),
            &[
                ("orders", json!({"id": 7, "count": 10})),
                ("users", json!({"id": 7, "count": 5})),
            ],
        );
        assert_eq!(
            out,
            json!({"id": 7, "parallel_results": {"orders": {"count": 10}, "users": {"count": 5}}})
        );
    }

    #[test]
    fn non_object_state_is_a_clear_error() {
        let err = merge(Merge::DeepMerge, &json!([1]), &[]).unwrap_err();
        assert_eq!(
            err,
            "`deep_merge` needs the state to be a JSON object, but it is an array"
        );
        let out = json!(3);
        let err = merge(
            Merge::Collect,
            &json!({}),
            &[BranchResult {
                name: "s",
                output: &out,
            }],
        )
        .unwrap_err();
        assert!(
            err.contains("step `s` to return a JSON object, but it returned a number"),
            "{err}"
        );
    }
}
