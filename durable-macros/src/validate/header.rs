//! The workflow's own settings: its doc comments and its options, `state` and `retry`.

use syn::{Attribute, Expr, ExprLit, Lit, Meta, Type};

use super::ctxt::Ctxt;
use super::options::{retry, unique, value};
use crate::ast::Options;
use crate::model::Retry;
use crate::suggest;

/// The options a workflow takes, for "did you mean".
const WORKFLOW_OPTIONS: &[&str] = &["state", "retry"];

/// The doc attributes and the description they make: one line per `///`, without the space
/// that follows `///`.
pub(super) fn docs(cx: &mut Ctxt, attrs: &[Attribute]) -> (Vec<Attribute>, String) {
    let mut docs = Vec::new();
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            cx.error(
                attr,
                "only doc comments (`///`) can go on a workflow; remove this attribute",
            );
            continue;
        }
        match &attr.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(text),
                    ..
                }) => {
                    let text = text.value();
                    lines.push(text.strip_prefix(' ').unwrap_or(&text).to_owned());
                    docs.push(attr.clone());
                }
                _ => cx.error(
                    attr,
                    "write the workflow's description as `///` doc comments",
                ),
            },
            _ => cx.error(
                attr,
                "write the workflow's description as `///` doc comments",
            ),
        }
    }
    (docs, lines.join("\n"))
}

/// The workflow's options, as far as they are valid.
pub(super) struct Header {
    /// `state = Type`.
    pub(super) state: Option<Type>,
    /// `retry(...)`, the default of every step. `Some` even when invalid, so that the steps
    /// are not also told to give `max_attempts`.
    pub(super) retry: Option<Retry>,
}

/// `(state = Type, retry(...))`.
pub(super) fn workflow_options(cx: &mut Ctxt, options: Option<&Options>) -> Header {
    let mut header = Header {
        state: None,
        retry: None,
    };
    for opt in unique(cx, options) {
        match opt.key.to_string().as_str() {
            "state" => {
                if let Some(tokens) = value(cx, opt, "state = MyState") {
                    match syn::parse2::<Type>(tokens.clone()) {
                        Ok(ty) => header.state = Some(ty),
                        Err(_) => {
                            cx.error(tokens, "expected the state's type, as in `state = Order`")
                        }
                    }
                }
            }
            "retry" => {
                let missing = "`retry(...)` needs `max_attempts`, the number of attempts in all: \
                               without it no step is ever retried; write \
                               `retry(max_attempts = 3, ...)`";
                header.retry = Some(retry(cx, opt, Some(missing)).unwrap_or_default());
            }
            key => cx.error(
                &opt.key,
                suggest::unknown("workflow option", key, WORKFLOW_OPTIONS),
            ),
        }
    }
    header
}
