//! `wait_for name(options);`: the run waits for signal `name`; its payload goes into the
//! state under `name`. The options a wait and a callback share are read here.

use super::Node;
use crate::ast::{self, OptValue, Options};
use crate::model::{self, Retry};
use crate::suggest;
use crate::validate::options::{after_list, duration, flag, retry, unique, RETRY_OPTIONS};
use crate::validate::{After, Parent, Walk};

/// The options a `wait_for` and a `callback` take, for "did you mean".
pub(super) const WAIT_OPTIONS: &[&str] = &["timeout", "retry", "optional", "after"];
const CALL_OPTIONS: &[&str] = &["timeout", "optional", "after"];

/// A wait's options, read.
pub(super) struct WaitOptions<'a> {
    pub(super) retry: Option<Retry>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) optional: bool,
    pub(super) after: Option<After<'a>>,
}

impl<'a> Walk<'a> {
    /// A `wait_for`: its options and its `;`.
    pub(super) fn wait_for(&mut self, wait: &'a ast::WaitFor, parent: Parent<'a>) -> Node<'a> {
        let name = self.define(&wait.name, "wait_for");
        let options = self.wait_options(wait.options.as_ref(), "wait_for", &name);
        let after = self.placed(options.after, parent);
        if wait.semi.is_none() {
            self.cx.error_at(
                wait.end_span(),
                format_args!("expected `;` after `wait_for {name}(...)`"),
            );
        }
        Node {
            item: model::Item::Wait(model::Wait {
                name: name.clone(),
                ident: wait.name.clone(),
                retry: options.retry,
                timeout_ms: options.timeout_ms,
                optional: options.optional,
            }),
            after,
            name: Some(name),
            kind: "wait_for",
        }
    }

    /// The options of a `wait_for` or a `callback` (`kind`) named `name`.
    pub(super) fn wait_options(
        &mut self,
        options: Option<&'a Options>,
        kind: &str,
        name: &str,
    ) -> WaitOptions<'a> {
        let mut own_retry = None;
        let mut read = WaitOptions {
            retry: None,
            timeout_ms: None,
            optional: false,
            after: None,
        };
        for opt in unique(self.cx, options) {
            match opt.key.to_string().as_str() {
                "timeout" => {
                    let ms = duration(self.cx, opt, "timeout = 1h");
                    match (ms, &opt.value) {
                        (Some(0), OptValue::Value(_, tokens)) => self.cx.error(
                            tokens,
                            format_args!(
                                "a timeout of zero would time `{name}` out before anything could \
                                 arrive; give the longest it may wait, as in `timeout = 1h`, or \
                                 remove `timeout` to wait without a limit"
                            ),
                        ),
                        (ms, _) => read.timeout_ms = ms,
                    }
                }
                "retry" => {
                    let missing = match self.default_retry {
                        Some(_) => None,
                        None => Some(format!(
                            "`retry(...)` needs `max_attempts`, the number of attempts in all: \
                             write `{kind} {name}(retry(max_attempts = 3, ...))`, or give a \
                             default in the workflow's header, as in \
                             `{}(retry(max_attempts = 3)) {{ ... }}`",
                            self.workflow
                        )),
                    };
                    own_retry = retry(self.cx, opt, missing.as_deref());
                }
                "optional" => {
                    read.optional = flag(self.cx, opt, "optional = true").unwrap_or(false);
                }
                "after" => read.after = after_list(self.cx, opt),
                key if RETRY_OPTIONS.contains(&key) => self.cx.error(
                    &opt.key,
                    format_args!(
                        "`{key}` is a retry option: put it inside `retry(...)`, as in \
                         `retry({key} = ...)`"
                    ),
                ),
                key => self.cx.error(
                    &opt.key,
                    suggest::unknown(
                        &format!("{kind} option"),
                        key,
                        // A call has no retry (see `call.rs`).
                        if kind == "call" {
                            CALL_OPTIONS
                        } else {
                            WAIT_OPTIONS
                        },
                    ),
                ),
            }
        }
        read.retry = match (own_retry, self.default_retry) {
            (Some(own), Some(default)) => Some(own.or(default)),
            (own, default) => own.or(default),
        };
        read
    }
}
