//! What blocks write into the state (`parallel_results`, `parallel_errors`, a map's batch
//! result) must survive the state's type, or the next step would silently lose it.

use serde_json::{json, Value};

use crate::definition::{Node, StateType};
use crate::error::{Error, StepFailure};

use super::{Abort, RunTask};

/// The field type suggested when a typed state lacks optional steps' failures.
pub(super) const ERRORS_HINT: &str = "Option<std::collections::HashMap<String, String>>";

impl RunTask {
    /// The state type the children of `address` take: the workflow's, or the `item = T` of
    /// the innermost map around them; `None` for `Data`, which holds any key.
    fn state_type_at(&self, address: &[usize]) -> Option<StateType> {
        let mut state = self.def.state_type();
        let mut nodes = self.def.nodes();
        // The block's own ancestors only: a map's result goes into the state around it.
        for &i in &address[..address.len().saturating_sub(1)] {
            let node = &nodes[i];
            if let Node::Map(map) = node {
                state = map.item_state;
            }
            nodes = node.children();
        }
        state
    }

    /// Stops the run when the block at `address` wrote `key` into `state` and the typed state
    /// around it would drop or change it. The run stays unfinished, its journal intact: once
    /// the type holds the field, it resumes without re-running a finished step. `block` names
    /// the block and `hint` the field's type to suggest, both built only for an error, so a
    /// `Data` state pays for neither.
    pub(super) fn check_written(
        &self,
        address: &[usize],
        scope: &str,
        state: &Value,
        key: &str,
        block: impl FnOnce() -> String,
        hint: impl FnOnce() -> String,
    ) -> Result<(), Abort> {
        let Some(ty) = self.state_type_at(address) else {
            return Ok(());
        };
        let written = state.get(key);
        let problem = match ty.round_trip(state) {
            Ok(kept) if kept.get(key) == written => return Ok(()),
            Ok(kept) if kept.get(key).is_none() => {
                "has no such field, so the next step would lose it".to_owned()
            }
            // Kept, but not as written: a narrower type lost part of it.
            Ok(_) => {
                "does not hold it as written, so the next step would lose part of it".to_owned()
            }
            Err(e) => format!("cannot decode it: {e}"),
        };
        let (block, hint) = (block(), hint());
        let place = if scope.is_empty() {
            String::new()
        } else {
            format!(" in `{scope}`")
        };
        Err(Abort::Engine(Error::BadState {
            workflow: self.def.name().to_owned(),
            run_id: self.run_id.clone(),
            step: None,
            message: format!(
                "{block}{place} wrote `{key}` into the state, but the state type `{}` \
                 {problem}; add the field `{key}: {hint}` to it. The run stays unfinished: it \
                 resumes from its journal once the type holds the field",
                ty.name()
            ),
        }))
    }
}

/// Records the optional steps that failed for good under `parallel_errors.<step>`, where the
/// workflow can see them.
pub(super) fn record_skipped(state: &mut Value, skipped: &[StepFailure]) {
    let (false, Value::Object(state)) = (skipped.is_empty(), state) else {
        return;
    };
    let errors = state.entry("parallel_errors").or_insert_with(|| json!({}));
    if !errors.is_object() {
        *errors = json!({});
    }
    for failure in skipped {
        errors[failure.step.as_str()] = Value::String(failure.error.clone());
    }
}
