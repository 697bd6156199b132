//! Checks of a parsed workflow, and its translation into [`crate::model`].
//!
//! Every check runs even after one fails: errors are collected in a `Ctxt` and reported
//! together, each at the token it is about. The model is built from whatever is valid, so that
//! `expand` can still emit the workflow's struct and spare the user follow-on errors.
//!
//! The pass is split the way serde_derive splits the reading of each level's attributes from
//! its one list of cross-cutting checks:
//! - this module: the entry point, and the walk over the items with what it carries
//!   (`Walk`, `Parent`, `After`);
//! - `header`: the workflow's own doc comments and options;
//! - `items`: one file per DSL item (`step`, `parallel`, `dag`, `seq`, `map`), each holding
//!   the item's option table, the reading of its options, its own checks and its lowering
//!   into the model, and `items/mod.rs` the one `match` that dispatches to them;
//! - `checks`: the workflow-wide checks, which no single item can make: names unique in the
//!   whole workflow, where `after` may be written, and every dag's `after`s (unknown names,
//!   cycles), checked once every name is known;
//! - `options`: the values that options take (retry policies, durations, counts, flags,
//!   choices, `after` lists), shared by every item;
//! - `ctxt`: the error collector.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::Ident;

use crate::ast;
use crate::model::{self, Retry};

mod checks;
mod ctxt;
mod header;
mod items;
mod options;

use checks::DagEntry;
use ctxt::Ctxt;

/// Checks `workflow`. Returns the model built from its valid parts, and every error found.
pub fn validate(workflow: &ast::Workflow) -> (model::Workflow, syn::Result<()>) {
    let mut cx = Ctxt::default();
    let (docs, description) = header::docs(&mut cx, &workflow.attrs);
    let header = header::workflow_options(&mut cx, workflow.options.as_ref());
    if workflow.body.items.is_empty() {
        cx.error_at(
            workflow.body.brace.span.join(),
            format_args!(
                "workflow `{}` has no steps; add at least one, as in `{} {{ step first; }}`",
                workflow.name, workflow.name
            ),
        );
    }
    let mut walk = Walk {
        cx: &mut cx,
        workflow: &workflow.name,
        default_retry: header.retry,
        names: HashMap::new(),
        order: Vec::new(),
        dags: Vec::new(),
    };
    let items = walk.items(&workflow.body.items, Parent::Workflow);
    walk.check_dags();
    let model = model::Workflow {
        docs,
        description,
        vis: workflow.vis.clone(),
        name: workflow.name.clone(),
        state: header.state,
        items,
    };
    (model, cx.finish())
}

/// Where an item is, which decides whether it may have `after`.
#[derive(Clone, Copy)]
enum Parent<'a> {
    /// The workflow's body.
    Workflow,
    /// A branch of a `parallel` block.
    Parallel,
    /// A node of a `dag`: the only place `after` is allowed.
    Dag,
    /// A node of `seq name`, which is itself a node of a dag or not.
    Seq { name: &'a Ident, in_dag: bool },
    /// A node of `map name`, which is itself a node of a dag or not.
    Map { name: &'a Ident, in_dag: bool },
}

/// `after = [a, b]`, as written.
struct After<'a> {
    /// The `after` key.
    key: &'a Ident,
    /// The names in the list, each once.
    names: Vec<Ident>,
}

/// The walk over the items, which checks names across the whole workflow.
struct Walk<'a> {
    cx: &'a mut Ctxt,
    workflow: &'a Ident,
    /// The workflow's `retry(...)`, which every step's falls back to.
    default_retry: Option<Retry>,
    /// Every step, seq and map name seen so far, with where it was defined and its kind.
    names: HashMap<String, (Span, &'static str)>,
    /// Every step, seq and map name in the order the walk met them (duplicates included).
    order: Vec<String>,
    /// The nodes of every dag, checked once every name of the workflow is known.
    dags: Vec<Vec<DagEntry>>,
}

impl<'a> Walk<'a> {
    /// The items of a block, checked and lowered in order; those that did not parse are
    /// reported and left out.
    fn items(&mut self, items: &'a [ast::Item], parent: Parent<'a>) -> Vec<model::Item> {
        let mut checked = Vec::new();
        for item in items {
            if let Some(node) = self.node(item, parent) {
                checked.push(node.item);
            }
        }
        checked
    }
}
