//! `callback name = submit(options);`: `submit` hands a token out; the run waits for the
//! callback's completion, whose payload goes into the state under `name`.

use super::Node;
use crate::ast;
use crate::model;
use crate::validate::{Parent, Walk};

impl<'a> Walk<'a> {
    /// A `callback`: its options, its function and its `;`.
    pub(super) fn callback(&mut self, callback: &'a ast::Callback, parent: Parent<'a>) -> Node<'a> {
        let name = self.define(&callback.name, "callback");
        let func = &callback.func;
        if func.qself.is_none() && func.path.is_ident(self.workflow) {
            self.cx.error(
                func,
                format_args!(
                    "callback `{name}` calls `{}`, the workflow's own name: `workflow!` defines a \
                     struct named like the workflow, which clashes with a function of that name; \
                     rename the workflow, as in `{}_workflow`",
                    self.workflow, self.workflow
                ),
            );
        }
        let options = self.wait_options(callback.options.as_ref(), "callback", &name);
        let after = self.placed(options.after, parent);
        if callback.semi.is_none() {
            self.cx.error_at(
                callback.end_span(),
                format_args!("expected `;` after callback `{name}`"),
            );
        }
        Node {
            item: model::Item::Callback(model::Callback {
                name: name.clone(),
                ident: callback.name.clone(),
                func: func.clone(),
                retry: options.retry,
                timeout_ms: options.timeout_ms,
                optional: options.optional,
            }),
            after,
            name: Some(name),
            kind: "callback",
        }
    }
}
