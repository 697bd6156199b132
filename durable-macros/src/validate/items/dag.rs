//! `dag(options) { ... }`: nodes that each start once the nodes of their `after` have
//! finished. Its `after`s are checked in `checks`, once every name of the workflow is known.

use syn::ext::IdentExt;

use super::{empty, Node};
use crate::ast;
use crate::model;
use crate::validate::checks::DagEntry;
use crate::validate::{Parent, Walk};

/// The options a dag takes, for "did you mean".
const DAG_OPTIONS: &[&str] = &["after"];

impl<'a> Walk<'a> {
    /// A dag: its nodes, each with its `after`, kept for `check_dags`.
    pub(super) fn dag(&mut self, block: &'a ast::Dag, parent: Parent) -> Node<'a> {
        let after = self.after_only(block.options.as_ref(), "dag option", DAG_OPTIONS);
        let after = self.placed(after, parent);
        if block.body.items.is_empty() {
            let keyword = &block.keyword;
            empty(
                self.cx,
                quote::quote!(#keyword),
                &block.body,
                "this `dag` is empty; give it at least one node, as in \
                 `dag { step a; step b(after = [a]); }`",
            );
        }
        let mut nodes = Vec::new();
        let mut entries = Vec::new();
        for item in &block.body.items {
            let first = self.order.len();
            let Some(Node {
                item: node,
                after,
                name,
                kind,
            }) = self.node(item, Parent::Dag)
            else {
                continue;
            };
            let inner = self.order[first..]
                .iter()
                .filter(|inner| Some(*inner) != name.as_ref())
                .cloned()
                .collect();
            let after = after.map(|after| after.names).unwrap_or_default();
            nodes.push((node, after.iter().map(|a| a.unraw().to_string()).collect()));
            entries.push(DagEntry {
                name,
                kind,
                after,
                inner,
            });
        }
        self.dags.push(entries);
        Node {
            item: model::Item::Dag(model::Dag { nodes }),
            after,
            name: None,
            kind: "dag",
        }
    }
}
