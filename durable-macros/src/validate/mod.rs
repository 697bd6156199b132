//! Checks of a parsed workflow, and its translation into [`crate::model`].
//!
//! Every check runs even after one fails: errors are collected in a [`Ctxt`] and reported
//! together, each at the token it is about. The model is built from whatever is valid, so that
//! `expand` can still emit the workflow's struct and spare the user follow-on errors.

use std::collections::HashMap;
use std::fmt::{Display, Write as _};

use proc_macro2::{Delimiter, Group, Literal, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Error, Expr, ExprLit, ExprPath, Ident, Lit, Meta, Token, Type};

use crate::ast::{self, Opt, OptValue, Options};
use crate::model::{self, Backoff, Merge, OnError, Retry};
use crate::suggest;

mod dag;
mod options;
mod over;

use options::*;
use over::*;

/// Collects errors so that all of them are reported, not just the first.
#[derive(Default)]
pub struct Ctxt {
    errors: Vec<Error>,
}

impl Ctxt {
    /// Records an error spanning `tokens`.
    fn error(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(Error::new_spanned(tokens, message));
    }

    /// Records an error found earlier, such as a parse error of a lenient parse.
    fn push(&mut self, error: Error) {
        self.errors.push(error);
    }

    /// Records an error at `span`.
    fn error_at(&mut self, span: Span, message: impl Display) {
        self.errors.push(Error::new(span, message));
    }

    /// How many errors so far, to tell whether a check added any.
    fn count(&self) -> usize {
        self.errors.len()
    }

    /// All errors combined into one, or `Ok` when there are none.
    fn finish(self) -> syn::Result<()> {
        let mut errors = self.errors.into_iter();
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                for error in errors {
                    first.combine(error);
                }
                Err(first)
            }
        }
    }
}

const WORKFLOW_OPTIONS: &[&str] = &["state", "retry"];
const STEP_OPTIONS: &[&str] = &["retry", "timeout", "optional", "after"];
const RETRY_OPTIONS: &[&str] = &[
    "max_attempts",
    "backoff",
    "initial",
    "multiplier",
    "max_interval",
    "jitter",
];
const PARALLEL_OPTIONS: &[&str] = &[
    "merge",
    "on_error",
    "max_concurrency",
    "min_successful",
    "tolerated_failures",
    "tolerated_failure_percentage",
    "after",
];
const DAG_OPTIONS: &[&str] = &["after"];
const SEQ_OPTIONS: &[&str] = &["after"];
const MAP_OPTIONS: &[&str] = &[
    "over",
    "item",
    "max_concurrency",
    "min_successful",
    "tolerated_failures",
    "tolerated_failure_percentage",
    "after",
];
const BACKOFFS: &[(&str, Backoff)] = &[
    ("constant", Backoff::Constant),
    ("linear", Backoff::Linear),
    ("exponential", Backoff::Exponential),
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
const DURATION_UNITS: &[(&str, u128)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Checks `workflow`. Returns the model built from its valid parts, and every error found.
pub fn validate(workflow: &ast::Workflow) -> (model::Workflow, syn::Result<()>) {
    let mut cx = Ctxt::default();
    let (docs, description) = docs(&mut cx, &workflow.attrs);
    let header = workflow_options(&mut cx, workflow.options.as_ref());
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

/// The doc attributes and the description they make: one line per `///`, without the space
/// that follows `///`.
fn docs(cx: &mut Ctxt, attrs: &[Attribute]) -> (Vec<Attribute>, String) {
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
struct Header {
    /// `state = Type`.
    state: Option<Type>,
    /// `retry(...)`, the default of every step. `Some` even when invalid, so that the steps
    /// are not also told to give `max_attempts`.
    retry: Option<Retry>,
}

/// `(state = Type, retry(...))`.
fn workflow_options(cx: &mut Ctxt, options: Option<&Options>) -> Header {
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

/// A node of a dag, as the check of the dag's `after`s needs it.
struct DagEntry {
    /// The node's name; `None` for a `parallel` or `dag` block, which has none.
    name: Option<String>,
    /// `step`, `seq`, `map`, `parallel` or `dag`.
    kind: &'static str,
    /// The names in its `after`, with their spans.
    after: Vec<Ident>,
    /// The names of the steps, seqs and maps nested inside it.
    inner: Vec<String>,
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
    fn items(&mut self, items: &'a [ast::Item], parent: Parent<'a>) -> Vec<model::Item> {
        let mut checked = Vec::new();
        for item in items {
            if let Some((node, _)) = self.node(item, parent) {
                checked.push(node);
            }
        }
        checked
    }

    /// One item and its `after`, if it has one and `parent` is a dag; `None` for an item that
    /// did not parse.
    fn node(
        &mut self,
        item: &'a ast::Item,
        parent: Parent<'a>,
    ) -> Option<(model::Item, Option<After<'a>>)> {
        Some(match item {
            ast::Item::Step(step) => {
                let (step, after) = self.step(step, parent);
                (model::Item::Step(step), after)
            }
            ast::Item::Parallel(block) => {
                let (block, after) = self.parallel(block, parent);
                (model::Item::Parallel(block), after)
            }
            ast::Item::Dag(block) => {
                let (block, after) = self.dag(block, parent);
                (model::Item::Dag(block), after)
            }
            ast::Item::Seq(seq) => {
                let (seq, after) = self.seq(seq, parent);
                (model::Item::Seq(seq), after)
            }
            ast::Item::Map(map) => {
                let (map, after) = self.map(map, parent);
                (model::Item::Map(map), after)
            }
            ast::Item::Error(error) => {
                self.cx.push(error.clone());
                return None;
            }
        })
    }

    /// `after`, if given and allowed: reported when the node is not directly in a dag.
    fn placed(&mut self, after: Option<After<'a>>, parent: Parent) -> Option<After<'a>> {
        let key = after.as_ref()?.key;
        let why = match parent {
            Parent::Dag => return after,
            Parent::Workflow => "the workflow's items run in order, each after the one before \
                                 it: remove `after`, or put this node and the ones it comes \
                                 after in a `dag { ... }`"
                .to_owned(),
            Parent::Parallel => "the branches of a `parallel` block all start together: remove \
                                 `after`, or make the block a `dag { ... }`"
                .to_owned(),
            Parent::Seq { name, in_dag: true } => format!(
                "the nodes of seq `{name}` run in order, each after the one before it; to make \
                 the whole seq wait, give it the `after`, as in `seq {name}(after = [...]) {{ ... }}`"
            ),
            Parent::Seq { name, in_dag: false } => format!(
                "the nodes of seq `{name}` run in order, each after the one before it: remove \
                 `after`, or make the seq a `dag {{ ... }}`"
            ),
            Parent::Map { name, in_dag: true } => format!(
                "the nodes of map `{name}` run in order for each item, each after the one \
                 before it; to make the whole map wait, give it the `after`, as in \
                 `map {name}(over = ..., after = [...]) {{ ... }}`"
            ),
            Parent::Map { name, in_dag: false } => format!(
                "the nodes of map `{name}` run in order for each item, each after the one \
                 before it: remove `after`, or put them in a `dag {{ ... }}` inside the map"
            ),
        };
        self.cx.error(
            key,
            format_args!("`after` only works on a node directly inside a `dag {{ … }}`; {why}"),
        );
        None
    }

    /// Records the name of a step, seq or map, reporting it if it is taken.
    fn define(&mut self, ident: &Ident, kind: &'static str) -> String {
        let name = ident.unraw().to_string();
        self.order.push(name.clone());
        match self.names.get(&name) {
            Some(&(first, "step")) if kind == "step" => self.cx.error(
                ident,
                format_args!(
                    "step `{name}` is already defined {}; step names must be unique because \
                     the journal is keyed by them: rename one",
                    where_is(first)
                ),
            ),
            Some(&(first, first_kind)) => self.cx.error(
                ident,
                format_args!(
                    "`{name}` is already the name of the {first_kind} {}; steps, seqs and maps \
                     share one namespace, unique in the whole workflow, because the journal \
                     and `after` refer to them by name: rename one",
                    where_is(first)
                ),
            ),
            None => {
                self.names.insert(name.clone(), (ident.span(), kind));
            }
        }
        name
    }

    fn step(&mut self, step: &'a ast::Step, parent: Parent) -> (model::Step, Option<After<'a>>) {
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
            name,
            func,
            retry,
            timeout_ms,
            optional,
            optional_at,
        };
        (step, after)
    }

    fn parallel(
        &mut self,
        block: &'a ast::Parallel,
        parent: Parent,
    ) -> (model::Parallel, Option<After<'a>>) {
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
            name,
            name_at: block.name.as_ref().map(|ident| ident.span()),
            options,
            merge,
            on_error,
            merge_at,
            branches: self.items(&block.body.items, Parent::Parallel),
        };
        (block, after)
    }

    fn dag(&mut self, block: &'a ast::Dag, parent: Parent) -> (model::Dag, Option<After<'a>>) {
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
            let Some((node, after)) = self.node(item, Parent::Dag) else {
                continue;
            };
            let (name, kind) = match &node {
                model::Item::Step(step) => (Some(step.name.clone()), "step"),
                model::Item::Seq(seq) => (Some(seq.name.clone()), "seq"),
                model::Item::Map(map) => (Some(map.name.clone()), "map"),
                model::Item::Parallel(block) => (block.name.clone(), "parallel"),
                model::Item::Dag(_) => (None, "dag"),
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
        (model::Dag { nodes }, after)
    }

    fn seq(&mut self, seq: &'a ast::Seq, parent: Parent) -> (model::Seq, Option<After<'a>>) {
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
        (model::Seq { name, items }, after)
    }

    fn map(&mut self, map: &'a ast::Map, parent: Parent) -> (model::Map, Option<After<'a>>) {
        let name = self.define(&map.name, "map");
        let (keyword, ident) = (&map.keyword, &map.name);
        let mut over = None;
        let mut over_given = false;
        let mut over_misspelled = false;
        let mut item = None;
        let mut item_given = false;
        let mut options = model::MapOptions::default();
        let mut min_successful = None;
        let mut after = None;
        for opt in unique(self.cx, map.options.as_ref()) {
            let key = opt.key.to_string();
            match key.as_str() {
                "over" => {
                    over_given = true;
                    over = self::over(self.cx, opt);
                }
                "item" => {
                    item_given = true;
                    if let Some(tokens) = value(self.cx, opt, "item = LineItem") {
                        match syn::parse2::<Type>(tokens.clone()) {
                            Ok(ty) => item = Some(ty),
                            Err(_) => self.cx.error(
                                tokens,
                                "expected the type of the array's elements, the state of the \
                                 steps inside the map, as in `item = LineItem`",
                            ),
                        }
                    }
                }
                "max_concurrency" => {
                    options.max_concurrency = count(
                        self.cx,
                        opt,
                        "max_concurrency = 4",
                        Some(
                            "`max_concurrency = 0` would never start an item, so the map could \
                             never finish; give the most items that may run at once, at least \
                             1, as in `max_concurrency = 4`, or remove it to run every item at \
                             once",
                        ),
                    )
                }
                "min_successful" => {
                    options.min_successful = count(
                        self.cx,
                        opt,
                        "min_successful = 4",
                        Some(
                            "`min_successful = 0` would make the map succeed before any item \
                             ran; give how many items must succeed, at least 1, as in \
                             `min_successful = 4`, or remove it to wait for every item",
                        ),
                    );
                    min_successful = options.min_successful.zip(value_tokens(opt));
                }
                "tolerated_failures" => {
                    options.tolerated_failures = count(self.cx, opt, "tolerated_failures = 2", None)
                }
                "tolerated_failure_percentage" => {
                    options.tolerated_failure_percentage = percentage(self.cx, opt)
                }
                "after" => after = after_list(self.cx, opt),
                key if STEP_OPTIONS.contains(&key) => self.cx.error(
                    &opt.key,
                    format_args!(
                        "{}; `{key}` is a step option: give it to the steps inside",
                        suggest::unknown("map option", key, MAP_OPTIONS)
                    ),
                ),
                key => {
                    over_misspelled |= suggest::closest(key, MAP_OPTIONS) == Some("over");
                    self.cx
                        .error(&opt.key, suggest::unknown("map option", key, MAP_OPTIONS))
                }
            }
        }
        // After a typo such as `ovr = items`, the unknown-option error already says what to fix.
        if !over_given && !over_misspelled {
            self.cx.error(
                quote::quote!(#keyword #ident),
                format_args!(
                    "map `{name}` needs `over`, the state's field holding the array whose \
                     elements it runs over: write `over = items`, as in \
                     `map {name}(over = items) {{ ... }}`, or list the items themselves, as in \
                     `over = [1, 2, 3]`"
                ),
            );
        }
        if let Some(Over::List(list)) = &over {
            if let Some((k, tokens)) = min_successful.filter(|(k, _)| *k > list.len) {
                let (len, items) = (list.len, if list.len == 1 { "item" } else { "items" });
                self.cx.error(
                    tokens,
                    format_args!(
                        "`min_successful = {k}` can never be reached: this map has only {len} \
                         {items}; write at most `min_successful = {len}`"
                    ),
                );
            }
            // The default item type, `Data`, is a JSON object, which no literal is.
            if !item_given {
                let ty = list.item_type;
                self.cx.error(
                    list.tokens,
                    format_args!(
                        "the steps inside map `{name}` take its items, which are not JSON \
                         objects, so they cannot be the default `Data`: give the items' type, \
                         as in `map {name}(over = [...], item = {ty})`"
                    ),
                );
            }
        }
        let after = self.placed(after, parent);
        if map.body.items.is_empty() {
            empty(
                self.cx,
                quote::quote!(#keyword #ident),
                &map.body,
                format_args!(
                    "map `{name}` is empty; give it the nodes each item runs, at least one, as \
                     in `map {name}(over = items) {{ step process_item; }}`"
                ),
            );
        }
        let items = self.items(
            &map.body.items,
            Parent::Map {
                name: &map.name,
                in_dag: matches!(parent, Parent::Dag),
            },
        );
        let over = match over {
            Some(Over::Field(field)) => model::Over::Field(field),
            Some(Over::List(list)) => model::Over::Items(list.json),
            None => model::Over::Field(String::new()),
        };
        let map = model::Map {
            name,
            ident: map.name.clone(),
            over,
            item,
            options,
            items,
        };
        (map, after)
    }

    /// The options of a block whose only option is `after`.
    fn after_only(
        &mut self,
        options: Option<&'a Options>,
        kind: &str,
        valid: &[&str],
    ) -> Option<After<'a>> {
        let mut after = None;
        for opt in unique(self.cx, options) {
            match opt.key.to_string().as_str() {
                "after" => after = after_list(self.cx, opt),
                key if STEP_OPTIONS.contains(&key) => self.cx.error(
                    &opt.key,
                    format_args!(
                        "{}; `{key}` is a step option: give it to the steps inside",
                        suggest::unknown(kind, key, valid)
                    ),
                ),
                key => self.cx.error(&opt.key, suggest::unknown(kind, key, valid)),
            }
        }
        after
    }
}

/// Reports an empty block, underlining it from `head` to its closing brace.
fn empty(cx: &mut Ctxt, head: TokenStream, body: &ast::Block, message: impl Display) {
    let mut braces = Group::new(Delimiter::Brace, TokenStream::new());
    braces.set_span(body.brace.span.join());
    cx.error(quote::quote!(#head #braces), message);
}

#[cfg(test)]
mod tests {
    use super::{exact_millis, json_string, over, Ctxt, Over};
    use crate::ast::Opt;

    /// The JSON text of `over = <list>`, or the error messages.
    fn list(tokens: &str) -> Result<String, Vec<String>> {
        let opt: Opt = syn::parse_str(&format!("over = {tokens}")).unwrap();
        let mut cx = Ctxt::default();
        let json = match over(&mut cx, &opt) {
            Some(Over::List(list)) => Some(list.json),
            _ => None,
        };
        match (json, cx.finish()) {
            (Some(json), Ok(())) => Ok(json),
            (_, Err(errors)) => Err(errors.into_iter().map(|e| e.to_string()).collect()),
            (None, Ok(())) => panic!("`{tokens}` is no list"),
        }
    }

    #[test]
    fn lists_become_json_arrays() {
        assert_eq!(list("[1, 2, 3]").unwrap(), "[1,2,3]");
        assert_eq!(list("[1, 2, 3,]").unwrap(), "[1,2,3]");
        assert_eq!(list("[-1, - 2, 0x10, 1_000]").unwrap(), "[-1,-2,16,1000]");
        assert_eq!(
            list("[1.0, -2.5, 1e3, 0.1, 1e300]").unwrap(),
            "[1.0,-2.5,1000.0,0.1,1e300]"
        );
        assert_eq!(
            list(r#"[true, false, "eu", r"a\b"]"#).unwrap(),
            r#"[true,false,"eu","a\\b"]"#
        );
        assert_eq!(
            list("[18446744073709551615, -9223372036854775808]").unwrap(),
            "[18446744073709551615,-9223372036854775808]"
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_string("plain é ☃"), r#""plain é ☃""#);
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(
            json_string("\n\t\u{0}\u{1f}\u{7f}"),
            r#""\u000a\u0009\u0000\u001f\u007f""#
        );
        assert_eq!(list(r#"["a\"b", "c"]"#).unwrap(), r#"["a\"b","c"]"#);
    }

    #[test]
    fn bad_items_are_each_reported() {
        let errors = list("[a, [1], {}, 1u8, 'x', -true, 2.5f32, b\"x\", 1 2]").unwrap_err();
        assert_eq!(errors.len(), 9, "{errors:#?}");
        assert!(errors[0].starts_with("`a` is a name, not a literal"));
        assert!(errors[1].starts_with("lists cannot be nested"));
        assert!(errors[2].starts_with("objects cannot be written here"));
        assert!(errors[3].starts_with("write `1` without the suffix `u8`"));
        assert!(errors[4].starts_with("`'x'` is a character; write it as a string, `\"x\"`"));
        assert!(errors[5].starts_with("only a number can be negative"));
        assert!(errors[6].starts_with("write `2.5` without the suffix `f32`"));
        assert!(errors[7].starts_with("`b\"x\"` cannot be an item"));
        assert!(errors[8].starts_with("expected `,` between the items"));
        assert!(list("[]").unwrap_err()[0].starts_with("a map over an empty list does nothing"));
        assert!(list("[1e400]").unwrap_err()[0].contains("must be finite"));
        assert!(list("[18446744073709551616]").unwrap_err()[0].contains("too large"));
        assert!(list("[-9223372036854775809]").unwrap_err()[0].contains("too large"));
        assert!(list("[1, , 2]").unwrap_err()[0].starts_with("expected an item before"));
    }

    #[test]
    fn durations_are_exact() {
        assert_eq!(exact_millis("500", 1), Ok(500));
        assert_eq!(exact_millis("1.5", 1_000), Ok(1_500));
        assert_eq!(exact_millis("1.1", 1_000), Ok(1_100));
        assert_eq!(exact_millis("2e3", 1), Ok(2_000));
        assert_eq!(exact_millis("0.25", 60_000), Ok(15_000));
        assert!(exact_millis("0.0001", 1_000).is_err());
        assert!(exact_millis("1e40", 1).is_err());
    }
}
