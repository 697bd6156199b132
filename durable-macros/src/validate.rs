//! Checks of a parsed workflow, and its translation into [`crate::model`].
//!
//! Every check runs even after one fails: errors are collected in a [`Ctxt`] and reported
//! together, each at the token it is about. The model is built from whatever is valid, so that
//! `expand` can still emit the workflow's struct and spare the user follow-on errors.

use std::collections::HashMap;
use std::fmt::Display;

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Attribute, Error, Expr, ExprLit, ExprPath, Ident, Lit, Meta, Type};

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

const WORKFLOW_OPTIONS: &[&str] = &["state"];
const STEP_OPTIONS: &[&str] = &["retry"];
const RETRY_OPTIONS: &[&str] = &[
    "max_attempts",
    "backoff",
    "initial",
    "multiplier",
    "max_interval",
    "jitter",
];
const PARALLEL_OPTIONS: &[&str] = &["merge", "on_error"];
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
    let state = workflow_options(&mut cx, workflow.options.as_ref());
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
        steps: HashMap::new(),
    };
    let items = walk.items(&workflow.body.items);
    let model = model::Workflow {
        docs,
        description,
        vis: workflow.vis.clone(),
        name: workflow.name.clone(),
        state,
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

/// `(state = Type)`: the state type, if given and valid.
fn workflow_options(cx: &mut Ctxt, options: Option<&Options>) -> Option<Type> {
    let mut state = None;
    for opt in unique(cx, options) {
        match opt.key.to_string().as_str() {
            "state" => {
                if let Some(tokens) = value(cx, opt, "state = MyState") {
                    match syn::parse2::<Type>(tokens.clone()) {
                        Ok(ty) => state = Some(ty),
                        Err(_) => {
                            cx.error(tokens, "expected the state's type, as in `state = Order`")
                        }
                    }
                }
            }
            key => cx.error(
                &opt.key,
                suggest::unknown("workflow option", key, WORKFLOW_OPTIONS),
            ),
        }
    }
    state
}

/// The walk over the items, which checks step names across the whole workflow.
struct Walk<'a> {
    cx: &'a mut Ctxt,
    workflow: &'a Ident,
    /// Every step name seen so far, with where it was defined.
    steps: HashMap<String, Span>,
}

impl Walk<'_> {
    fn items(&mut self, items: &[ast::Item]) -> Vec<model::Item> {
        let mut checked = Vec::new();
        for item in items {
            match item {
                ast::Item::Step(step) => checked.push(model::Item::Step(self.step(step))),
                ast::Item::Parallel(block) => {
                    checked.push(model::Item::Parallel(self.parallel(block)))
                }
                ast::Item::Error(error) => self.cx.push(error.clone()),
            }
        }
        checked
    }

    fn step(&mut self, step: &ast::Step) -> model::Step {
        let name = step.name.unraw().to_string();
        match self.steps.get(&name) {
            Some(first) => self.cx.error(
                &step.name,
                format_args!(
                    "step `{name}` is already defined {}; step names must be unique because \
                     the journal is keyed by them: rename one",
                    where_is(*first)
                ),
            ),
            None => {
                self.steps.insert(name.clone(), step.name.span());
            }
        }
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
        let mut retry = None;
        for opt in unique(self.cx, step.options.as_ref()) {
            let key = opt.key.to_string();
            match key.as_str() {
                "retry" => match &opt.value {
                    OptValue::List(options) => retry = Some(self.retry(&opt.key, options)),
                    _ => self.cx.error(
                        &opt.key,
                        "`retry` takes its options in parentheses, as in `retry(max_attempts = 3)`",
                    ),
                },
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
        if step.semi.is_none() {
            self.cx.error_at(
                step.end_span(),
                format_args!("expected `;` after step `{name}`"),
            );
        }
        model::Step { name, func, retry }
    }

    fn retry(&mut self, keyword: &Ident, options: &Options) -> Retry {
        let errors = self.cx.count();
        let cx = &mut *self.cx;
        let mut retry = Retry::default();
        for opt in unique(cx, Some(options)) {
            match opt.key.to_string().as_str() {
                "max_attempts" => retry.max_attempts = max_attempts(cx, opt),
                "backoff" => retry.backoff = choice(cx, opt, "backoff", BACKOFFS),
                "initial" => retry.initial_ms = duration(cx, opt, "initial = 500ms"),
                "multiplier" => retry.multiplier = multiplier(cx, opt),
                "max_interval" => retry.max_interval_ms = duration(cx, opt, "max_interval = 60s"),
                "jitter" => retry.jitter = jitter(cx, opt),
                key => cx.error(
                    &opt.key,
                    suggest::unknown("retry option", key, RETRY_OPTIONS),
                ),
            }
        }
        // Without `max_attempts` the policy keeps its single attempt and every other retry
        // option is dead. Said only when the list is otherwise clean: after a typo such as
        // `max_atempts` the unknown-option error already says what to fix.
        if retry.max_attempts.is_none() && cx.count() == errors {
            cx.error(
                keyword,
                "`retry(...)` needs `max_attempts`, the number of attempts in all: without it \
                 the step is tried once and never retried; write `retry(max_attempts = 3, ...)`",
            );
        }
        retry
    }

    fn parallel(&mut self, block: &ast::Parallel) -> model::Parallel {
        let mut merge = Merge::default();
        let mut on_error = OnError::default();
        for opt in unique(self.cx, block.options.as_ref()) {
            match opt.key.to_string().as_str() {
                "merge" => {
                    merge = choice(self.cx, opt, "merge strategy", MERGES).unwrap_or_default()
                }
                "on_error" => {
                    on_error =
                        choice(self.cx, opt, "on_error strategy", ON_ERRORS).unwrap_or_default()
                }
                key => self.cx.error(
                    &opt.key,
                    suggest::unknown("parallel option", key, PARALLEL_OPTIONS),
                ),
            }
        }
        if block.body.items.is_empty() {
            // Underline the whole `parallel ... {}`, from the keyword to the closing brace.
            let mut braces = Group::new(Delimiter::Brace, TokenStream::new());
            braces.set_span(block.body.brace.span.join());
            let keyword = &block.keyword;
            self.cx.error(
                quote::quote!(#keyword #braces),
                "this `parallel` block is empty; give it at least one branch, as in \
                 `parallel { step a; step b; }`",
            );
        }
        model::Parallel {
            merge,
            on_error,
            branches: self.items(&block.body.items),
        }
    }
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

fn jitter(cx: &mut Ctxt, opt: &Opt) -> Option<bool> {
    if let OptValue::Flag = opt.value {
        return Some(true);
    }
    let tokens = value(cx, opt, "jitter = true")?;
    match literal(tokens) {
        Some(Lit::Bool(b)) => Some(b.value),
        _ => {
            cx.error(tokens, "expected `true` or `false`, as in `jitter = true`");
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
    use super::exact_millis;

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
