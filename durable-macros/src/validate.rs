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
const PARALLEL_OPTIONS: &[&str] = &["merge", "on_error", "after"];
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
                "optional" => optional = flag(self.cx, opt, "optional = true").unwrap_or(false),
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
        };
        (step, after)
    }

    fn parallel(
        &mut self,
        block: &'a ast::Parallel,
        parent: Parent,
    ) -> (model::Parallel, Option<After<'a>>) {
        let mut merge = Merge::default();
        let mut on_error = OnError::default();
        let mut after = None;
        for opt in unique(self.cx, block.options.as_ref()) {
            match opt.key.to_string().as_str() {
                "merge" => {
                    merge = choice(self.cx, opt, "merge strategy", MERGES).unwrap_or_default()
                }
                "on_error" => {
                    on_error =
                        choice(self.cx, opt, "on_error strategy", ON_ERRORS).unwrap_or_default()
                }
                "after" => after = after_list(self.cx, opt),
                key => self.cx.error(
                    &opt.key,
                    suggest::unknown("parallel option", key, PARALLEL_OPTIONS),
                ),
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
            merge,
            on_error,
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
                model::Item::Parallel(_) => (None, "parallel"),
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

    /// Checks every dag's `after`s against the dag's nodes: each names another node of the
    /// same dag, and they form no cycle.
    fn check_dags(&mut self) {
        for entries in std::mem::take(&mut self.dags) {
            // `edges[i]`: the nodes `i` comes after, each with the name that says so.
            let mut edges: Vec<Vec<(usize, &Ident)>> = vec![Vec::new(); entries.len()];
            for (i, entry) in entries.iter().enumerate() {
                for dep in &entry.after {
                    let name = dep.unraw().to_string();
                    match entries
                        .iter()
                        .position(|e| e.name.as_deref() == Some(&*name))
                    {
                        Some(j) if j == i => self.cx.error(
                            dep,
                            format_args!(
                                "{} `{name}` comes after itself, so it could never start; \
                                 remove `{name}` from its `after`",
                                entry.kind
                            ),
                        ),
                        Some(j) => {
                            if entries.iter().any(|e| e.name.is_none() && e.kind == name) {
                                self.cx.error(
                                    dep,
                                    format_args!(
                                        "`{name}` names both the {} `{name}` and a `{name}` \
                                         block of this dag, which the runtime cannot tell \
                                         apart: rename the {}",
                                        entries[j].kind, entries[j].kind
                                    ),
                                );
                            }
                            edges[i].push((j, dep));
                        }
                        None => self.unresolved(&entries, i, dep, &name),
                    }
                }
            }
            self.cycles(&entries, &edges);
        }
    }

    /// Reports a name in `entries[i]`'s `after` that is no node of its dag.
    fn unresolved(&mut self, entries: &[DagEntry], i: usize, dep: &Ident, name: &str) {
        let holder = entries
            .iter()
            .position(|e| e.inner.iter().any(|inner| inner == name));
        let others: Vec<&str> = entries
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .filter_map(|(_, e)| e.name.as_deref())
            .collect();
        let others_are = match others.as_slice() {
            [] => "this dag has no other named node".to_owned(),
            [only] => format!("the only other node of this dag is `{only}`"),
            _ => format!(
                "the other nodes of this dag are {}",
                suggest::all_of(&others)
            ),
        };
        let message = match holder {
            Some(j) if j == i => format!(
                "`{name}` is inside this {} itself: a node cannot come after its own steps; \
                 remove `{name}` from `after`",
                entries[i].kind
            ),
            Some(j) => match &entries[j].name {
                Some(holder) => format!(
                    "`{name}` is inside {} `{holder}`, not directly in this dag, and `after` \
                     names only the dag's own nodes: name `{holder}` instead, to come after the \
                     whole of it",
                    entries[j].kind
                ),
                None => format!(
                    "`{name}` is inside a `{}` block of this dag, not directly in the dag, and \
                     the block has no name to come after: wrap the block in \
                     `seq name {{ ... }}` and write `after = [name]`",
                    entries[j].kind
                ),
            },
            None => match self.names.get(name) {
                Some((_, kind)) => format!(
                    "`{name}` is a {kind} of this workflow but not of this dag: `after` names \
                     only the nodes directly inside the same `dag {{ ... }}`; {others_are}"
                ),
                None if entries.iter().any(|e| e.name.is_none() && e.kind == name) => format!(
                    "a `{name}` block has no name, so `after` cannot refer to it: wrap the \
                     block in `seq name {{ ... }}` and write `after = [name]`"
                ),
                None => match suggest::closest(name, &others) {
                    Some(close) => format!(
                        "unknown name `{name}` in `after`; did you mean `{close}`? {}",
                        suggest::capitalize(&others_are)
                    ),
                    None => format!(
                        "unknown name `{name}` in `after`: no step, seq or map has this name; \
                         {others_are}"
                    ),
                },
            },
        };
        self.cx.error(dep, message);
    }

    /// Reports each cycle of `edges`, once per strongly connected group of nodes.
    fn cycles(&mut self, entries: &[DagEntry], edges: &[Vec<(usize, &Ident)>]) {
        let n = entries.len();
        // `reach[i][j]`: `i` comes after `j`, directly or not.
        let mut reach = vec![vec![false; n]; n];
        for (i, row) in reach.iter_mut().enumerate() {
            let mut stack: Vec<usize> = edges[i].iter().map(|&(j, _)| j).collect();
            while let Some(j) = stack.pop() {
                if !row[j] {
                    row[j] = true;
                    stack.extend(edges[j].iter().map(|&(k, _)| k));
                }
            }
        }
        let mut reported = vec![false; n];
        for start in 0..n {
            if reported[start] || !reach[start][start] {
                continue;
            }
            let group: Vec<usize> = (0..n)
                .filter(|&j| reach[start][j] && reach[j][start])
                .collect();
            for &j in &group {
                reported[j] = true;
            }
            // The shortest cycle through `start`, in the order the nodes would run: a
            // breadth-first search from `start` to the nodes that come after it.
            let mut previous: Vec<Option<usize>> = vec![None; n];
            let mut queue = std::collections::VecDeque::from([start]);
            let mut last = None;
            'search: while let Some(node) = queue.pop_front() {
                for &next in &group {
                    if edges[next].iter().any(|&(d, _)| d == node) {
                        if next == start {
                            last = Some(node);
                            break 'search;
                        }
                        if previous[next].is_none() {
                            previous[next] = Some(node);
                            queue.push_back(next);
                        }
                    }
                }
            }
            let Some(last) = last else { continue };
            let mut path = vec![last];
            while let Some(&node) = path.last() {
                if node == start {
                    break;
                }
                match previous[node] {
                    Some(before) => path.push(before),
                    None => break,
                }
            }
            path.reverse();
            path.push(start);
            let names: Vec<String> = path
                .iter()
                .map(|&j| {
                    format!(
                        "`{}`",
                        entries[j].name.as_deref().unwrap_or(entries[j].kind)
                    )
                })
                .collect();
            // Pointed at the `after` that closes the cycle: `start` coming after `last`.
            let Some(&(_, dep)) = edges[start].iter().find(|&&(d, _)| d == last) else {
                continue;
            };
            self.cx.error(
                dep,
                format_args!(
                    "these `after`s form a cycle: {} (each comes after the one before it), so \
                     none of them can ever start; remove one of these dependencies",
                    names.join(" -> ")
                ),
            );
        }
    }
}

/// Reports an empty block, underlining it from `head` to its closing brace.
fn empty(cx: &mut Ctxt, head: TokenStream, body: &ast::Block, message: impl Display) {
    let mut braces = Group::new(Delimiter::Brace, TokenStream::new());
    braces.set_span(body.brace.span.join());
    cx.error(quote::quote!(#head #braces), message);
}

/// `retry(...)`: its options as far as they are valid. `missing` is the error to report when
/// `max_attempts` is not given, if it is required.
fn retry(cx: &mut Ctxt, opt: &Opt, missing: Option<&str>) -> Option<Retry> {
    let OptValue::List(options) = &opt.value else {
        cx.error(
            &opt.key,
            "`retry` takes its options in parentheses, as in `retry(max_attempts = 3)`",
        );
        return None;
    };
    let errors = cx.count();
    let mut retry = Retry::default();
    for opt in unique(cx, Some(options)) {
        match opt.key.to_string().as_str() {
            "max_attempts" => retry.max_attempts = max_attempts(cx, opt),
            "backoff" => retry.backoff = choice(cx, opt, "backoff", BACKOFFS),
            "initial" => retry.initial_ms = duration(cx, opt, "initial = 500ms"),
            "multiplier" => retry.multiplier = multiplier(cx, opt),
            "max_interval" => retry.max_interval_ms = duration(cx, opt, "max_interval = 60s"),
            "jitter" => retry.jitter = flag(cx, opt, "jitter = true"),
            key => cx.error(
                &opt.key,
                suggest::unknown("retry option", key, RETRY_OPTIONS),
            ),
        }
    }
    // Without `max_attempts` the policy keeps its single attempt and every other retry
    // option is dead. Said only when the list is otherwise clean: after a typo such as
    // `max_atempts` the unknown-option error already says what to fix.
    if let Some(missing) = missing {
        if retry.max_attempts.is_none() && cx.count() == errors {
            cx.error(&opt.key, missing);
        }
    }
    Some(retry)
}

/// `timeout = DURATION`, which must be more than zero.
fn timeout(cx: &mut Ctxt, opt: &Opt) -> Option<u64> {
    let ms = duration(cx, opt, "timeout = 30s")?;
    if ms == 0 {
        if let OptValue::Value(_, tokens) = &opt.value {
            cx.error(
                tokens,
                "a timeout of zero would cancel every attempt at once; give the longest one \
                 attempt may run, as in `timeout = 30s`, or remove `timeout` for no limit",
            );
        }
        return None;
    }
    Some(ms)
}

/// What `over` runs over, as written.
enum Over<'a> {
    /// `over = field`: the state's field holding the array (unraw).
    Field(String),
    /// `over = [1, 2, 3]`: the items themselves, all valid.
    List(List<'a>),
}

/// A valid `over = [...]` list of literals.
struct List<'a> {
    /// The brackets and what they hold, where errors about the whole list point.
    tokens: &'a TokenStream,
    /// The items as a JSON array, as `Node::map_items` takes them.
    json: String,
    /// How many items.
    len: usize,
    /// A type every item decodes into, for the error of a list without `item = T`.
    item_type: &'static str,
}

/// What the literals in `over = [...]` may be: they become JSON values.
const LIST_ITEMS: &str = "a list in `over` holds literals only: integers, floats, strings, \
                          `true` or `false`, as in `over = [1, 2, 3]` or \
                          `over = [\"eu\", \"us\"]`";

/// `over = field` or `over = [literal, ...]`.
fn over<'a>(cx: &mut Ctxt, opt: &'a Opt) -> Option<Over<'a>> {
    let tokens = value(cx, opt, "over = items")?;
    if let Ok(field) = Ident::parse_any.parse2(tokens.clone()) {
        return Some(Over::Field(field.unraw().to_string()));
    }
    let mut trees = tokens.clone().into_iter();
    let message = match (trees.next(), trees.next()) {
        (Some(TokenTree::Group(group)), None) if group.delimiter() == Delimiter::Bracket => {
            return over_list(cx, tokens, &group).map(Over::List);
        }
        (Some(TokenTree::Literal(_)), _) => match literal(tokens) {
            Some(Lit::Str(text)) => format!(
                "`over` takes the field's name without quotes: write `over = {}`",
                text.value()
            ),
            _ => "expected the name of the state's field holding the array, as in \
                  `over = items`, or a list of items in brackets, as in `over = [1, 2, 3]`"
                .to_owned(),
        },
        _ => "expected the name of a field of the state, the one holding the array, as in \
              `over = items`; a nested field cannot be named: give the state a top-level one"
            .to_owned(),
    };
    cx.error(tokens, message);
    None
}

/// The kind of a literal item, which decides the `item` type suggested for the list.
#[derive(Clone, Copy, PartialEq)]
enum ItemKind {
    Integer,
    Float,
    String,
    Bool,
}

/// `[literal, ...]`: every item checked (each bad one reported), then the JSON array.
fn over_list<'a>(cx: &mut Ctxt, tokens: &'a TokenStream, group: &Group) -> Option<List<'a>> {
    // Split at the commas of this level: a nested group is one token tree, commas included.
    let mut elements: Vec<Vec<TokenTree>> = vec![Vec::new()];
    let mut commas = Vec::new();
    for tt in group.stream() {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => {
                commas.push(p.span());
                elements.push(Vec::new());
            }
            _ => elements.last_mut().expect("never empty").push(tt),
        }
    }
    // A trailing comma ends the list.
    if elements.len() > 1 && elements.last().is_some_and(Vec::is_empty) {
        elements.pop();
    }
    if elements.len() == 1 && elements[0].is_empty() {
        cx.error(
            tokens,
            "a map over an empty list does nothing; give it at least one item, as in \
             `over = [1, 2, 3]`",
        );
        return None;
    }
    let single = elements.len() == 1;
    let errors = cx.count();
    let mut json = String::from("[");
    let mut kinds = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        if element.is_empty() {
            cx.error_at(commas[i], "expected an item before this `,`");
            continue;
        }
        if let Some((text, kind)) = list_item(cx, element, single) {
            if !kinds.is_empty() {
                json.push(',');
            }
            json.push_str(&text);
            kinds.push(kind);
        }
    }
    json.push(']');
    if cx.count() > errors {
        return None;
    }
    let all = |kind| kinds.iter().all(|k| *k == kind);
    let item_type = if all(ItemKind::Integer) {
        "i64"
    } else if kinds
        .iter()
        .all(|k| matches!(k, ItemKind::Integer | ItemKind::Float))
    {
        "f64"
    } else if all(ItemKind::String) {
        "String"
    } else if all(ItemKind::Bool) {
        "bool"
    } else {
        "serde_json::Value"
    };
    Some(List {
        tokens,
        json,
        len: kinds.len(),
        item_type,
    })
}

/// One item of `over = [...]` as JSON text, or `None` once its error is reported. `single`
/// when it is the list's only item, so that `[items]` can be read as a misplaced field name.
fn list_item(cx: &mut Ctxt, element: &[TokenTree], single: bool) -> Option<(String, ItemKind)> {
    // A `$x:literal` forwarded by a `macro_rules!` macro comes in an invisible group.
    if let [TokenTree::Group(g)] = element {
        if g.delimiter() == Delimiter::None {
            let inner: Vec<TokenTree> = g.stream().into_iter().collect();
            return list_item(cx, &inner, single);
        }
    }
    let spanned: TokenStream = element.iter().cloned().collect();
    let (negative, rest) = match element {
        [TokenTree::Punct(p), rest @ ..] if p.as_char() == '-' => (true, rest),
        _ => (false, element),
    };
    let message = match rest {
        [TokenTree::Literal(lit)] => match Lit::new(lit.clone()) {
            Lit::Int(n) if n.suffix().is_empty() => {
                let digits = format!("{}{}", if negative { "-" } else { "" }, n.base10_digits());
                let fits = digits.parse::<i64>().is_ok() || digits.parse::<u64>().is_ok();
                if fits {
                    // `-0` is `0` to JSON, so no sign needs dropping.
                    return Some((digits, ItemKind::Integer));
                }
                format!(
                    "`{spanned}` is too large: an integer item is from {} to {}",
                    i64::MIN,
                    u64::MAX
                )
            }
            Lit::Float(f) if f.suffix().is_empty() => match f.base10_parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    let x = if negative { -x } else { x };
                    // `{:?}` keeps the fraction (`1.0`, `1e300`): the item stays a float.
                    return Some((format!("{x:?}"), ItemKind::Float));
                }
                _ => format!(
                    "`{spanned}` is too large: a float item must be finite, at most about \
                     `1.8e308`"
                ),
            },
            Lit::Int(n) => format!(
                "write `{}{}` without the suffix `{}`: the items become JSON numbers, which \
                 have no Rust type",
                if negative { "-" } else { "" },
                n.base10_digits(),
                n.suffix()
            ),
            Lit::Float(f) => format!(
                "write `{}{}` without the suffix `{}`: the items become JSON numbers, which \
                 have no Rust type",
                if negative { "-" } else { "" },
                f.base10_digits(),
                f.suffix()
            ),
            Lit::Str(s) if !negative && s.suffix().is_empty() => {
                return Some((json_string(&s.value()), ItemKind::String));
            }
            Lit::Char(c) if !negative => format!(
                "`{spanned}` is a character; write it as a string, `{}`",
                Literal::string(&c.value().to_string())
            ),
            _ if negative => format!("only a number can be negative; {LIST_ITEMS}"),
            _ => format!("`{spanned}` cannot be an item; {LIST_ITEMS}"),
        },
        [TokenTree::Ident(ident)] if !negative && (ident == "true" || ident == "false") => {
            return Some((ident.to_string(), ItemKind::Bool));
        }
        [TokenTree::Ident(ident)] if !negative => {
            let field = if single {
                format!(
                    "; to run over the state's field `{}`, write it without brackets: \
                     `over = {}`",
                    ident.unraw(),
                    ident
                )
            } else {
                String::new()
            };
            format!("`{ident}` is a name, not a literal; {LIST_ITEMS}{field}")
        }
        [TokenTree::Group(g)] if !negative && g.delimiter() == Delimiter::Bracket => {
            format!("lists cannot be nested; {LIST_ITEMS}")
        }
        [TokenTree::Group(g)] if !negative && g.delimiter() == Delimiter::Brace => {
            format!("objects cannot be written here; {LIST_ITEMS}")
        }
        [TokenTree::Literal(_) | TokenTree::Ident(_), TokenTree::Literal(_) | TokenTree::Ident(_), ..] => {
            "expected `,` between the items, as in `over = [1, 2, 3]`".to_owned()
        }
        _ if negative => format!("only a number can be negative; {LIST_ITEMS}"),
        _ => format!("expected a literal; {LIST_ITEMS}"),
    };
    cx.error(spanned, message);
    None
}

/// `text` as a JSON string, quotes included.
fn json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
    json
}

/// A count of items such as `min_successful = 4`: a whole number, more than zero when `zero`
/// (the error for zero) is given.
fn count(cx: &mut Ctxt, opt: &Opt, example: &str, zero: Option<&str>) -> Option<usize> {
    let tokens = value(cx, opt, example)?;
    let n = match literal(tokens) {
        Some(Lit::Int(n)) if n.suffix().is_empty() => n,
        _ => {
            cx.error(
                tokens,
                format_args!("expected a whole number of items, as in `{example}`"),
            );
            return None;
        }
    };
    if n.base10_digits().starts_with('-') {
        cx.error(
            tokens,
            format_args!(
                "`{}` counts items, so it cannot be negative; write a whole number, as in \
                 `{example}`",
                opt.key
            ),
        );
        return None;
    }
    match (n.base10_parse::<usize>(), zero) {
        (Ok(0), Some(zero)) => {
            cx.error(tokens, zero);
            None
        }
        (Ok(n), _) => Some(n),
        (Err(_), _) => {
            cx.error(
                tokens,
                format_args!("`{}` must be at most {}", opt.key, usize::MAX),
            );
            None
        }
    }
}

/// `tolerated_failure_percentage = P`, a number from 0 to 100.
fn percentage(cx: &mut Ctxt, opt: &Opt) -> Option<f64> {
    const EXAMPLE: &str = "tolerated_failure_percentage = 10";
    let tokens = value(cx, opt, EXAMPLE)?;
    let ends_with_percent = matches!(
        tokens.clone().into_iter().last(),
        Some(TokenTree::Punct(p)) if p.as_char() == '%'
    );
    let parsed = match literal(tokens) {
        Some(Lit::Float(f)) if f.suffix().is_empty() => f.base10_parse::<f64>().ok(),
        Some(Lit::Int(i)) if i.suffix().is_empty() => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    let problem = match parsed {
        Some(p) if (0.0..=100.0).contains(&p) => return Some(p),
        Some(p) if p < 0.0 => format!(
            "a percentage of failed items cannot be negative; give it from 0 to 100, as in \
             `{EXAMPLE}` (`0` tolerates no failure)"
        ),
        Some(_) => format!(
            "a percentage of the items is at most 100; give it from 0 to 100, as in \
             `{EXAMPLE}` (`100` tolerates every failure)"
        ),
        None if ends_with_percent => {
            format!("write the percentage as a number without `%`, as in `{EXAMPLE}`")
        }
        None => format!("expected a percentage from 0 to 100, as in `{EXAMPLE}`"),
    };
    cx.error(tokens, problem);
    None
}

/// `after = [a, b]`: the names, each once.
fn after_list<'a>(cx: &mut Ctxt, opt: &'a Opt) -> Option<After<'a>> {
    const EXAMPLE: &str = "as in `after = [a, b]`";
    let tokens = value(cx, opt, "after = [a, b]")?;
    let mut trees = tokens.clone().into_iter();
    let group = match (trees.next(), trees.next()) {
        (Some(TokenTree::Group(group)), None) if group.delimiter() == Delimiter::Bracket => group,
        _ => {
            cx.error(
                tokens,
                format_args!(
                    "`after` takes the names of the nodes this one comes after, in brackets, \
                     {EXAMPLE}"
                ),
            );
            return None;
        }
    };
    let parser = |input: ParseStream| {
        let mut names: Vec<Ident> = Vec::new();
        while !input.is_empty() {
            let name = input.call(Ident::parse_any).map_err(|e| {
                Error::new(
                    e.span(),
                    format_args!("expected the name of a step, seq or map, {EXAMPLE}"),
                )
            })?;
            names.push(name);
            if !input.is_empty() {
                input.parse::<Token![,]>().map_err(|e| {
                    Error::new(
                        e.span(),
                        format_args!("expected `,` between the names, {EXAMPLE}"),
                    )
                })?;
            }
        }
        Ok(names)
    };
    let written = match parser.parse2(group.stream()) {
        Ok(names) => names,
        Err(error) => {
            cx.push(error);
            return None;
        }
    };
    let mut names: Vec<Ident> = Vec::new();
    for name in written {
        if names.iter().any(|n| n.unraw() == name.unraw()) {
            cx.error(
                &name,
                format_args!("`{}` is listed twice in `after`; keep one", name.unraw()),
            );
        } else {
            names.push(name);
        }
    }
    Some(After {
        key: &opt.key,
        names,
    })
}

/// "on line 12" where the compiler tells lines, else "in this workflow".
fn where_is(span: Span) -> String {
    // `unwrap` panics outside a procedural macro, as in this crate's unit tests.
    if proc_macro::is_available() {
        format!("on line {}", span.unwrap().line())
    } else {
        "in this workflow".to_owned()
    }
}

/// The options of a list, each key once: a repeated key is reported and skipped.
fn unique<'a>(cx: &mut Ctxt, options: Option<&'a Options>) -> Vec<&'a Opt> {
    let mut seen: Vec<&'a Opt> = Vec::new();
    for opt in options.map_or(&[][..], |o| &o.list) {
        if seen.iter().any(|s| s.key == opt.key) {
            cx.error(
                &opt.key,
                format_args!("`{}` is given twice; keep one", opt.key),
            );
        } else {
            seen.push(opt);
        }
    }
    seen
}

/// The tokens after `key =`; a flag or a list is reported with an example of the right form.
fn value<'a>(cx: &mut Ctxt, opt: &'a Opt, example: &str) -> Option<&'a TokenStream> {
    match &opt.value {
        OptValue::Value(_, tokens) => Some(tokens),
        _ => {
            cx.error(
                &opt.key,
                format_args!("`{}` needs a value, as in `{example}`", opt.key),
            );
            None
        }
    }
}

/// The tokens after `key =`, if any, without reporting anything.
fn value_tokens(opt: &Opt) -> Option<&TokenStream> {
    match &opt.value {
        OptValue::Value(_, tokens) => Some(tokens),
        _ => None,
    }
}

/// The value as a literal, if it is one.
fn literal(tokens: &TokenStream) -> Option<Lit> {
    syn::parse2(tokens.clone()).ok()
}

fn max_attempts(cx: &mut Ctxt, opt: &Opt) -> Option<u32> {
    let tokens = value(cx, opt, "max_attempts = 3")?;
    let n = match literal(tokens) {
        Some(Lit::Int(n)) if n.suffix().is_empty() => n,
        _ => {
            cx.error(
                tokens,
                "expected a whole number of attempts, as in `max_attempts = 3`",
            );
            return None;
        }
    };
    match n.base10_parse::<u32>() {
        _ if n.base10_digits().starts_with('-') || n.base10_digits() == "0" => {
            cx.error(
                tokens,
                "`max_attempts` counts every attempt, the first included, so it must be at \
                 least 1; write `max_attempts = 1` for no retry",
            );
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            cx.error(
                tokens,
                format_args!("`max_attempts` must be at most {}", u32::MAX),
            );
            None
        }
    }
}

fn multiplier(cx: &mut Ctxt, opt: &Opt) -> Option<f64> {
    let tokens = value(cx, opt, "multiplier = 2.0")?;
    let parsed = match literal(tokens) {
        Some(Lit::Float(f)) if f.suffix().is_empty() => f.base10_parse::<f64>().ok(),
        Some(Lit::Int(i)) if i.suffix().is_empty() => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(m) if m.is_finite() && m >= 1.0 => Some(m),
        Some(_) => {
            cx.error(tokens, "the multiplier must be at least 1.0 (a smaller one would shorten each wait), as in `multiplier = 2.0`");
            None
        }
        None => {
            cx.error(tokens, "expected a number, as in `multiplier = 2.0`");
            None
        }
    }
}

/// A boolean option: `key = true`, `key = false`, or just `key` for `true`.
fn flag(cx: &mut Ctxt, opt: &Opt, example: &str) -> Option<bool> {
    if let OptValue::Flag = opt.value {
        return Some(true);
    }
    let tokens = value(cx, opt, example)?;
    match literal(tokens) {
        Some(Lit::Bool(b)) => Some(b.value),
        _ => {
            cx.error(
                tokens,
                format_args!("expected `true` or `false`, as in `{example}`"),
            );
            None
        }
    }
}

/// A value that names one of `table`'s entries, such as `merge = deep_merge`.
fn choice<T: Copy>(cx: &mut Ctxt, opt: &Opt, kind: &str, table: &[(&str, T)]) -> Option<T> {
    let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
    let tokens = value(cx, opt, &format!("{} = {}", opt.key, names[0]))?;
    let Ok(word) = syn::parse2::<Ident>(tokens.clone()) else {
        cx.error(
            tokens,
            format_args!(
                "expected a {kind}; the {} are {}",
                suggest::plural(kind),
                suggest::all_of(&names)
            ),
        );
        return None;
    };
    let found = table.iter().find(|(name, _)| word == name);
    if found.is_none() {
        cx.error(&word, suggest::unknown(kind, &word.to_string(), &names));
    }
    found.map(|(_, value)| *value)
}

/// A duration such as `500ms`, `1.5s`, `5m` or `1h`, in whole milliseconds.
fn duration(cx: &mut Ctxt, opt: &Opt, example: &str) -> Option<u64> {
    let tokens = value(cx, opt, example)?;
    let (digits, suffix) = match literal(tokens) {
        Some(Lit::Int(n)) => (n.base10_digits().to_owned(), n.suffix().to_owned()),
        Some(Lit::Float(f)) => (f.base10_digits().to_owned(), f.suffix().to_owned()),
        _ => {
            cx.error(
                tokens,
                format_args!("expected a duration: a number and a unit, as in `{example}`"),
            );
            return None;
        }
    };
    let units: Vec<&str> = DURATION_UNITS.iter().map(|(unit, _)| *unit).collect();
    let Some(&(_, unit_ms)) = DURATION_UNITS.iter().find(|(unit, _)| *unit == suffix) else {
        let message = if suffix.is_empty() {
            format!(
                "`{digits}` has no unit; write `{digits}ms`, `{digits}s`, `{digits}m` or `{digits}h`"
            )
        } else {
            unknown_unit(&suffix, &units)
        };
        cx.error(tokens, message);
        return None;
    };
    if digits.starts_with('-') {
        cx.error(tokens, "a duration cannot be negative");
        return None;
    }
    match exact_millis(&digits, unit_ms) {
        Ok(ms) => Some(ms),
        Err(problem) => {
            cx.error(tokens, problem);
            None
        }
    }
}

/// The message for a duration unit that is not one of `units`, with the usual spellings of
/// the units (`sec`, `min`, ...) mapped to the DSL's.
fn unknown_unit(suffix: &str, units: &[&str]) -> String {
    const SPELLINGS: &[(&str, &[&str])] = &[
        ("ms", &["msec", "msecs", "millis", "milliseconds"]),
        ("s", &["sec", "secs", "second", "seconds"]),
        ("m", &["min", "mins", "minute", "minutes"]),
        ("h", &["hr", "hrs", "hour", "hours"]),
    ];
    let valid = format!("the duration units are {}", suggest::all_of(units));
    match SPELLINGS
        .iter()
        .find(|(_, spellings)| spellings.contains(&suffix))
    {
        Some((unit, _)) => {
            format!("unknown duration unit `{suffix}`; write `{unit}` instead ({valid})")
        }
        None => format!("unknown duration unit `{suffix}`; {valid}"),
    }
}

/// `digits` (such as `1.5` or `2e3`) times `unit_ms`, computed exactly: a float would make
/// `1.1s` 1100.0000000000002 ms.
fn exact_millis(digits: &str, unit_ms: u128) -> Result<u64, &'static str> {
    const TOO_LONG: &str = "this duration is too long";
    let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| TOO_LONG)?),
        None => (digits, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let number: u128 = format!("{whole}{fraction}").parse().map_err(|_| TOO_LONG)?;
    let scale = exponent - i32::try_from(fraction.len()).map_err(|_| TOO_LONG)?;
    let power = |n: i32| 10u128.checked_pow(n.unsigned_abs()).ok_or(TOO_LONG);
    let ms = number.checked_mul(unit_ms).ok_or(TOO_LONG)?;
    let ms = if scale >= 0 {
        ms.checked_mul(power(scale)?).ok_or(TOO_LONG)?
    } else {
        let divisor = power(scale)?;
        if ms % divisor != 0 {
            return Err("durations are whole milliseconds; the smallest is `1ms`");
        }
        ms / divisor
    };
    u64::try_from(ms).map_err(|_| TOO_LONG)
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
