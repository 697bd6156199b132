//! `call name = other_workflow(options);`: runs another registered workflow as a child run;
//! its output goes into the state under `name`.

use super::Node;
use crate::ast;
use crate::model;
use crate::validate::{Parent, Walk};

impl<'a> Walk<'a> {
    /// A `call`: its options, its workflow and its `;`.
    pub(super) fn call(&mut self, call: &'a ast::Call, parent: Parent<'a>) -> Node<'a> {
        let name = self.define(&call.name, "call");
        let workflow = &call.workflow;
        if let Some(retry) = call
            .options
            .iter()
            .flat_map(|o| &o.list)
            .find(|o| o.key == "retry")
        {
            self.cx.error(
                &retry.key,
                format_args!(
                    "`call {name}` takes no `retry`: the child run's steps retry themselves; put \
                     `retry(...)` on the steps of `{}`, and `optional` here to go on without it",
                    quote::ToTokens::to_token_stream(workflow)
                        .to_string()
                        .replace(' ', "")
                ),
            );
        }
        let options = self.wait_options(call.options.as_ref(), "call", &name);
        let after = self.placed(options.after, parent);
        if call.semi.is_none() {
            self.cx.error_at(
                call.end_span(),
                format_args!("expected `;` after call `{name}`"),
            );
        }
        Node {
            item: model::Item::Call(model::Call {
                name: name.clone(),
                ident: call.name.clone(),
                workflow: workflow.clone(),
                timeout_ms: options.timeout_ms,
                optional: options.optional,
            }),
            after,
            name: Some(name),
            kind: "call",
        }
    }
}
