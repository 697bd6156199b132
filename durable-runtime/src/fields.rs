//! Compile-time checks `workflow!` emits for typed states: the fields the engine writes into
//! the state must exist there, in a type that holds what is written. Not a public API.
//!
//! The macro names `state.field` (so a missing field is a compiler error at the user's block)
//! and passes it to one of the functions below, whose bounds reject a field type that would
//! drop part of what the engine writes.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::batch::BatchResult;
use crate::Data;

/// A field type that holds a `parallel(merge = collect)` block's results: per step, the
/// JSON object of its changes.
#[diagnostic::on_unimplemented(
    message = "the state's `parallel_results` field is a `{Self}`, which cannot hold the results of a `parallel(merge = collect)` block",
    label = "this block writes each branch's changes under `parallel_results.<step>`",
    note = "declare the field as `parallel_results: Option<serde_json::Value>`, or a `HashMap<String, serde_json::Value>` or `BTreeMap<String, serde_json::Value>` (in an `Option` if inputs may lack it)"
)]
pub trait ResultsField {}

impl ResultsField for Value {}
impl ResultsField for Map<String, Value> {}
impl ResultsField for Data {}
impl<H> ResultsField for HashMap<String, Value, H> {}
impl ResultsField for BTreeMap<String, Value> {}
impl<H> ResultsField for HashMap<String, Data, H> {}
impl ResultsField for BTreeMap<String, Data> {}
impl<T: ResultsField> ResultsField for Option<T> {}

/// A field type that holds the failures of optional steps: per step, its error text.
#[diagnostic::on_unimplemented(
    message = "the state's `parallel_errors` field is a `{Self}`, which cannot hold the failures of optional steps",
    label = "when this optional step fails for good, its error goes under `parallel_errors.<step>`",
    note = "declare the field as `parallel_errors: Option<HashMap<String, String>>` (or a `BTreeMap<String, String>`, or `serde_json::Value`)"
)]
pub trait ErrorsField {}

impl ErrorsField for Value {}
impl ErrorsField for Map<String, Value> {}
impl ErrorsField for Data {}
impl<H> ErrorsField for HashMap<String, String, H> {}
impl ErrorsField for BTreeMap<String, String> {}
impl<H> ErrorsField for HashMap<String, Value, H> {}
impl ErrorsField for BTreeMap<String, Value> {}
impl<T: ErrorsField> ErrorsField for Option<T> {}

/// A field type that holds the batch result of a map whose items are `T`s.
#[diagnostic::on_unimplemented(
    message = "the state's field for this map is a `{Self}`, which cannot hold the map's batch result",
    label = "this map writes its `durable::batch::BatchResult<{T}>` into the state under its name",
    note = "declare the field as `Option<durable::batch::BatchResult<{T}>>` (or `serde_json::Value`), named like the map"
)]
pub trait BatchField<T> {}

impl<T> BatchField<T> for BatchResult<T> {}
impl<T> BatchField<T> for Value {}
impl<T, F: BatchField<T>> BatchField<T> for Option<F> {}

/// A field that can hold a named parallel block's batch result: one item per branch, its
/// result the branch's changes to the state.
#[diagnostic::on_unimplemented(
    message = "the field `{Self}` cannot hold a parallel block's batch result",
    label = "this parallel block writes its `durable::batch::BatchResult<serde_json::Value>` into the state under its name",
    note = "declare the field as `Option<durable::batch::BatchResult<serde_json::Value>>` (or `serde_json::Value`), named like the block"
)]
pub trait ParallelBatchField {}

impl ParallelBatchField for BatchResult<Value> {}
impl ParallelBatchField for Value {}
impl<F: ParallelBatchField> ParallelBatchField for Option<F> {}

/// Requires `field` to hold a named parallel block's batch result.
pub fn parallel_batch<F: ParallelBatchField>(field: &F) -> &F {
    field
}

/// Requires `field` to hold a collect block's results.
pub fn parallel_results<F: ResultsField>(field: &F) -> &F {
    field
}

/// Requires `field` to hold optional steps' failures.
pub fn parallel_errors<F: ErrorsField>(field: &F) -> &F {
    field
}

/// Requires `field` to hold the batch result of a map over `T`s.
pub fn map_result<T, F: BatchField<T>>(field: &F) -> &F {
    field
}

/// A `call NAME = W;` item of a typed state: the field `NAME` holds the child's input and
/// output, so it must be of `W`'s state type (the compiler reports a mismatch at the field).
pub fn child_state<W: crate::Workflow>(_child: &W, _field: &W::State) {}

/// The node of `call name = child;`, named by the child's [`Workflow::NAME`](crate::Workflow::NAME).
pub fn call_node<W: crate::Workflow>(
    name: &'static str,
    _child: W,
    definition: fn() -> crate::Definition,
    options: crate::definition::StepOptions,
) -> crate::definition::Node {
    crate::definition::Node::call(name, W::NAME, definition, options)
}
