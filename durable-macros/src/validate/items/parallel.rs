//! `parallel name(options) { ... }`, the name optional: branches that run together.

use super::{empty, Node};
use crate::ast::{self, OptValue};
use crate::model::{self, Merge, OnError};
use crate::suggest;
use crate::validate::options::{after_list, choice, count, percentage, unique, value_tokens};
use crate::validate::{Parent, Walk};

/// The options a parallel block takes, for "did you mean".
const PARALLEL_OPTIONS: &[&str] = &[
    "merge",
    "on_error",
    "max_concurrency",
    "min_successful",
    "tolerated_failures",
    "tolerated_failure_percentage",
    "after",
];
const MERGES: &[(&str, Merge)] = &[
    ("deep_merge", Merge::DeepMerge),
    ("last_wins", Merge::LastWins),
    ("collect", Merge::Collect),
];
const ON_ERRORS: &[(&str, OnError)] = &[
    ("fail_fast", OnError::FailFast),
    ("complete_all", OnError::CompleteAll),
];

impl<'a> Walk<'a> {
    /// A parallel block: its strategies and completion policy, checked against its number of
    /// branches, and the branches.
    pub(super) fn parallel(&mut self, block: &'a ast::Parallel, parent: Parent) -> Node<'a> {
        let name = block
            .name
            .as_ref()
            .map(|ident| self.define(ident, "parallel"));
        let branches = block.body.items.len();
        let mut merge = Merge::default();
        let mut on_error = OnError::default();
        let mut on_error_key = None;
        let mut options = model::MapOptions::default();
        let mut min_successful = None;
        let mut tolerated = None;
        let mut merge_at = None;
        let mut after = None;
        for opt in unique(self.cx, block.options.as_ref()) {
            match opt.key.to_string().as_str() {
                "merge" => {
                    merge = choice(self.cx, opt, "merge strategy", MERGES).unwrap_or_default();
                    merge_at = match &opt.value {
                        OptValue::Value(_, tokens) => tokens.clone().into_iter().next(),
                        _ => None,
                    }
                    .map(|token| token.span());
                }
                "on_error" => {
                    on_error_key = Some(&opt.key);
                    on_error =
                        choice(self.cx, opt, "on_error strategy", ON_ERRORS).unwrap_or_default()
                }
                "max_concurrency" => {
                    options.max_concurrency = count(
                        self.cx,
                        opt,
                        "max_concurrency = 2",
                        Some(
                            "`max_concurrency = 0` would never start a branch, so the block \
                             could never finish; give the most branches that may run at once, \
                             at least 1, as in `max_concurrency = 2`, or remove it to start \
                             every branch at once",
                        ),
                    )
                }
                "min_successful" => {
                    options.min_successful = count(
                        self.cx,
                        opt,
                        "min_successful = 1",
                        Some(
                            "`min_successful = 0` would make the block succeed before any \
                             branch ran; give how many branches must succeed, at least 1, as \
                             in `min_successful = 1`, or remove it to wait for every branch",
                        ),
                    );
                    min_successful = options.min_successful.zip(value_tokens(opt));
                }
                "tolerated_failures" => {
                    options.tolerated_failures =
                        count(self.cx, opt, "tolerated_failures = 1", None);
                    tolerated = options.tolerated_failures.zip(value_tokens(opt));
                }
                "tolerated_failure_percentage" => {
                    options.tolerated_failure_percentage = percentage(self.cx, opt)
                }
                "after" => after = after_list(self.cx, opt),
                key => self.cx.error(
                    &opt.key,
                    suggest::unknown("parallel option", key, PARALLEL_OPTIONS),
                ),
            }
        }
        let (len, plural) = (branches, if branches == 1 { "branch" } else { "branches" });
        if let Some((k, tokens)) = min_successful.filter(|(k, _)| *k > branches && branches > 0) {
            self.cx.error(
                tokens,
                format_args!(
                    "`min_successful = {k}` can never be reached: this parallel block has only \
                     {len} {plural}; write at most `min_successful = {len}`"
                ),
            );
        }
        // The most failures that still leave `min_successful` reachable: a tolerance at or
        // above it never decides anything.
        let reachable = branches.saturating_sub(options.min_successful.unwrap_or(0));
        let min_reachable = options.min_successful.is_none_or(|k| k <= branches);
        if let Some((f, tokens)) =
            tolerated.filter(|(f, _)| *f >= reachable && branches > 0 && min_reachable)
        {
            let why = match options.min_successful {
                Some(k) => format!(
                    "with `min_successful = {k}` of {len} {plural}, the block fails once more \
                     than {reachable} failed anyway"
                ),
                None => format!(
                    "this parallel block has only {len} {plural}, so even every one failing \
                     would not fail it"
                ),
            };
            let fix = match reachable {
                0 => "remove it".to_owned(),
                n => format!(
                    "write at most `tolerated_failures = {}`, or remove it",
                    n - 1
                ),
            };
            self.cx.error(
                tokens,
                format_args!("`tolerated_failures = {f}` changes nothing: {why}; {fix}"),
            );
        }
        if options.has_policy() {
            if name.is_none() {
                let keyword = &block.keyword;
                self.cx.error(
                    keyword,
                    "a parallel block with a completion policy stores its batch result in the \
                     state under its name, and journals its decision there: name it, as in \
                     `parallel fetched(min_successful = 1) { ... }`",
                );
            }
            if let Some(key) = on_error_key {
                self.cx.error(
                    key,
                    "`on_error` does not apply with a completion policy: the policy decides \
                     when failed branches fail the block, and the workflow goes on either way; \
                     remove `on_error`, or remove `min_successful`, `tolerated_failures` and \
                     `tolerated_failure_percentage` to let `on_error` decide",
                );
            }
        }
        let after = self.placed(after, parent);
        if block.body.items.is_empty() {
            let keyword = &block.keyword;
            empty(
                self.cx,
                quote::quote!(#keyword),
                &block.body,
                "this `parallel` block is empty; give it at least one branch, as in \
                 `parallel { step a; step b; }`",
            );
        }
        let block = model::Parallel {
            name: name.clone(),
            name_at: block.name.as_ref().map(|ident| ident.span()),
            options,
            merge,
            on_error,
            merge_at,
            branches: self.items(&block.body.items, Parent::Parallel),
        };
        Node {
            item: model::Item::Parallel(block),
            after,
            name,
            kind: "parallel",
        }
    }
}
