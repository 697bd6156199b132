//! What a step changed, as journaled in a [`StepChanged`](crate::store::EntryKind::StepChanged)
//! entry: the journal holds a step's changes against its input instead of its whole output,
//! so a step that sets one field of a large state writes a few bytes. Replay applies the
//! changes to the input the step is given, which on replay is the same input as the first time.
//!
//! The payload is JSON in one of two shapes:
//! - an object: the keys the step set or changed, with their new values; where both the input
//!   and the output hold an object under a key, only that object's changes, recursively (so
//!   applying a change object merges into an object and replaces anything else);
//! - `[changes, removed]` when the step also removed keys, where `removed` lists each removed
//!   key as its path from the top: `[["temp"], ["profile", "old"]]`.
//!
//! A state that is not a JSON object (a typed state may serialize to an array or a scalar) has
//! no keys to diff: such a step is journaled whole, as a `step_completed` entry.

use serde_json::{Map, Value};

use crate::merge::{deep_merge_into, kind};

/// The payload journaling `after` as changes against `before`, or `None` when either is not
/// a JSON object (the caller then journals `after` whole). The changes are encoded like any
/// state (see [`crate::encode`]): what could not be read back is an error.
pub(crate) fn encode(before: &Value, after: &Value) -> Option<Result<String, String>> {
    let (Value::Object(before), Value::Object(after)) = (before, after) else {
        return None;
    };
    let mut removed = Vec::new();
    let changes = diff(before, after, &mut Vec::new(), &mut removed);
    Some(if removed.is_empty() {
        crate::encode::to_text(&changes)
    } else {
        crate::encode::to_text(&(changes, removed))
    })
}

/// Applies a payload written by [`encode`] to `input`, the state the step started from.
pub(crate) fn apply(input: Value, payload: &str) -> Result<Value, String> {
    let parsed = crate::encode::decode(payload).map_err(|e| format!("its journaled output {e}"))?;
    let (changes, removed) = match parsed {
        Value::Object(changes) => (changes, Vec::new()),
        Value::Array(mut pair) if pair.len() == 2 => match (pair.pop(), pair.pop()) {
            (Some(Value::Array(removed)), Some(Value::Object(changes))) => (changes, removed),
            _ => return Err(malformed()),
        },
        _ => return Err(malformed()),
    };
    let Value::Object(mut state) = input else {
        return Err(format!(
            "its journaled changes apply to an object, but its input is {}",
            kind(&input)
        ));
    };
    for path in removed {
        let Value::Array(path) = path else {
            return Err(malformed());
        };
        remove(&mut state, &path)?;
    }
    deep_merge_into(&mut state, changes);
    Ok(Value::Object(state))
}

fn malformed() -> String {
    "its journaled changes are neither an object nor [changes, removed keys]".to_owned()
}

/// The changes from `before` to `after`; removed keys are pushed to `removed` as paths
/// (`prefix` is the path of the objects being compared).
fn diff<'a>(
    before: &'a Map<String, Value>,
    after: &'a Map<String, Value>,
    prefix: &mut Vec<&'a str>,
    removed: &mut Vec<Vec<&'a str>>,
) -> Map<String, Value> {
    let mut changes = Map::new();
    for (key, new) in after {
        match (before.get(key), new) {
            // Objects are walked once: comparing them first would walk a changed one twice.
            (Some(Value::Object(old)), Value::Object(new)) => {
                prefix.push(key);
                let inner = diff(old, new, prefix, removed);
                prefix.pop();
                if !inner.is_empty() {
                    changes.insert(key.clone(), Value::Object(inner));
                }
            }
            (Some(old), _) if old == new => {}
            _ => {
                changes.insert(key.clone(), new.clone());
            }
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            let mut path = prefix.clone();
            path.push(key);
            removed.push(path);
        }
    }
    changes
}

/// Removes the key at `path` (a JSON array of keys) from `state`.
fn remove(state: &mut Map<String, Value>, path: &[Value]) -> Result<(), String> {
    let missing = || {
        format!(
            "its journaled changes remove {}, which its input does not hold",
            Value::Array(path.to_vec())
        )
    };
    let (last, parents) = path.split_last().ok_or_else(malformed)?;
    let mut target = state;
    for key in parents {
        target = match key.as_str().and_then(|k| target.get_mut(k)) {
            Some(Value::Object(inner)) => inner,
            _ => return Err(missing()),
        };
    }
    let key = last.as_str().ok_or_else(malformed)?;
    target.remove(key).map(drop).ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Encodes, checks the payload, and checks that applying it to `before` gives `after`.
    fn round_trip(before: Value, after: Value, payload: Value) {
        let text = encode(&before, &after).expect("objects diff").unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), payload);
        assert_eq!(apply(before, &text).unwrap(), after);
    }

    #[test]
    fn a_set_field_is_all_that_is_written() {
        let big = "x".repeat(10_000);
        round_trip(
            json!({"blob": big, "n": 1}),
            json!({"blob": big, "n": 2, "new": true}),
            json!({"n": 2, "new": true}),
        );
    }

    #[test]
    fn nested_objects_keep_only_their_changed_leaves() {
        round_trip(
            json!({"p": {"name": "ada", "age": 1}, "q": {"a": 1}}),
            json!({"p": {"name": "ada", "age": 2}, "q": {"a": 1}}),
            json!({"p": {"age": 2}}),
        );
    }

    #[test]
    fn removed_keys_are_listed_by_path() {
        round_trip(
            json!({"temp": 1, "p": {"old": true, "age": 1}, "keep": 0}),
            json!({"p": {"age": 2}, "keep": 0}),
            json!([{"p": {"age": 2}}, [["p", "old"], ["temp"]]]),
        );
        // An object emptied of every key.
        round_trip(
            json!({"p": {"a": 1}}),
            json!({"p": {}}),
            json!([{}, [["p", "a"]]]),
        );
    }

    #[test]
    fn a_value_changing_shape_is_replaced_whole() {
        round_trip(
            json!({"a": {"x": 1}, "b": 5, "c": [1, 2]}),
            json!({"a": 3, "b": {"y": 1}, "c": [1, 2, 3]}),
            json!({"a": 3, "b": {"y": 1}, "c": [1, 2, 3]}),
        );
    }

    #[test]
    fn an_unchanged_state_writes_an_empty_object() {
        round_trip(json!({"a": 1}), json!({"a": 1}), json!({}));
    }

    #[test]
    fn non_object_states_are_not_diffed() {
        assert_eq!(encode(&json!([1]), &json!([1, 2])), None);
        assert_eq!(encode(&json!({"a": 1}), &json!(3)), None);
        assert_eq!(encode(&json!(null), &json!({"a": 1})), None);
    }

    #[test]
    fn changes_that_do_not_fit_the_input_are_errors() {
        let err = apply(json!([1]), "{}").unwrap_err();
        assert_eq!(
            err,
            "its journaled changes apply to an object, but its input is an array"
        );
        let err = apply(json!({}), r#"[{}, [["gone"]]]"#).unwrap_err();
        assert!(
            err.contains(r#"remove ["gone"], which its input does not hold"#),
            "{err}"
        );
        let err = apply(json!({}), "3").unwrap_err();
        assert!(err.contains("neither an object nor"), "{err}");
        assert!(apply(json!({}), "{")
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
