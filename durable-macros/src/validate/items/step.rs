//! `step name(options) = path;`: a call of the user's function, journaled under `name`.

use syn::ExprPath;

use super::Node;
use crate::ast::{self, OptValue};
use crate::model;
use crate::suggest;
use crate::validate::options::{after_list, flag, retry, timeout, unique, RETRY_OPTIONS};
use crate::validate::{Parent, Walk};

/// The options a step takes, for "did you mean"; the blocks' errors also tell a step option
/// given to a block.
pub(super) const STEP_OPTIONS: &[&str] = &["retry", "timeout", "optional", "after"];

impl<'a> Walk<'a> {
    /// A step: its options, its function and its `;`.
    pub(super) fn step(&mut self, step: &'a ast::Step, parent: Parent) -> Node<'a> {
        let name = self.define(&step.name, "step");
        let func = match &step.func {
            Some((_, path)) => path.clone(),
            None => ExprPath {
                attrs: Vec::new(),
                qself: None,
                path: step.name.clone().into(),
            },
        };
        if func.qself.is_none() && func.path.is_ident(self.workflow) {
            self.cx.error(
                &func,
                format_args!(
                    "step `{name}` calls `{}`, the workflow's own name: `workflow!` defines a \
                     struct named like the workflow, which clashes with a function of that \
                     name; rename the workflow, as in `{}_workflow`",
                    self.workflow, self.workflow
                ),
            );
        }
        let mut own_retry = None;
        let mut timeout_ms = None;
        let mut optional = false;
        let mut optional_at = None;
        let mut after = None;
        for opt in unique(self.cx, step.options.as_ref()) {
            let key = opt.key.to_string();
            match key.as_str() {
                "retry" => {
                    let missing = match self.default_retry {
                        Some(_) => None,
                        None => Some(format!(
                            "`retry(...)` needs `max_attempts`, the number of attempts in all: \
                             without it the step is tried once and never retried; write \
                             `retry(max_attempts = 3, ...)`, or give every step a default in \
                             the workflow's header, as in \
                             `{}(retry(max_attempts = 3)) {{ ... }}`",
                            self.workflow
                        )),
                    };
                    own_retry = retry(self.cx, opt, missing.as_deref());
                }
                "timeout" => timeout_ms = timeout(self.cx, opt),
                "optional" => {
                    optional = flag(self.cx, opt, "optional = true").unwrap_or(false);
                    optional_at = Some(opt.key.span());
                }
                "after" => after = after_list(self.cx, opt),
                key if RETRY_OPTIONS.contains(&key) => {
                    let written = match &opt.value {
                        OptValue::Value(_, tokens) => format!("{key} = {tokens}"),
                        _ => key.to_owned(),
                    };
                    self.cx.error(
                        &opt.key,
                        format_args!(
                            "`{key}` is a retry option: put it inside `retry(...)`, as in \
                             `retry({written})`"
                        ),
                    )
                }
                key => self
                    .cx
                    .error(&opt.key, suggest::unknown("step option", key, STEP_OPTIONS)),
            }
        }
        let after = self.placed(after, parent);
        if step.semi.is_none() {
            self.cx.error_at(
                step.end_span(),
                format_args!("expected `;` after step `{name}`"),
            );
        }
        // The step's own options first, then the workflow's, field by field.
        let retry = match (own_retry, self.default_retry) {
            (Some(own), Some(default)) => Some(own.or(default)),
            (own, default) => own.or(default),
        };
        let step = model::Step {
            name: name.clone(),
            func,
            retry,
            timeout_ms,
            optional,
            optional_at,
        };
        Node {
            item: model::Item::Step(step),
            after,
            name: Some(name),
            kind: "step",
        }
    }
}
