//! `seq name(options) { ... }`: nodes that run one after another, as one branch of a
//! `parallel` block or one node of a `dag`.

use super::{empty, Node};
use crate::ast;
use crate::model;
use crate::validate::{Parent, Walk};

/// The options a seq takes, for "did you mean".
const SEQ_OPTIONS: &[&str] = &["after"];

impl<'a> Walk<'a> {
    /// A seq: its name and its nodes.
    pub(super) fn seq(&mut self, seq: &'a ast::Seq, parent: Parent) -> Node<'a> {
        let name = self.define(&seq.name, "seq");
        let after = self.after_only(seq.options.as_ref(), "seq option", SEQ_OPTIONS);
        let after = self.placed(after, parent);
        if seq.body.items.is_empty() {
            let (keyword, ident) = (&seq.keyword, &seq.name);
            empty(
                self.cx,
                quote::quote!(#keyword #ident),
                &seq.body,
                format_args!(
                    "seq `{name}` is empty; give it at least one node, as in \
                     `seq {name} {{ step a; step b; }}`"
                ),
            );
        }
        let items = self.items(
            &seq.body.items,
            Parent::Seq {
                name: &seq.name,
                in_dag: matches!(parent, Parent::Dag),
            },
        );
        Node {
            item: model::Item::Seq(model::Seq {
                name: name.clone(),
                items,
            }),
            after,
            name: Some(name),
            kind: "seq",
        }
    }
}
