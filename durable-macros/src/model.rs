//! The workflow as `validate` hands it to `expand`: every option resolved to a checked value.
//!
//! Keeping this apart from [`crate::ast`] means `expand` never re-interprets user tokens and
//! cannot meet an invalid value.

use proc_macro2::Span;
use syn::{Attribute, ExprPath, Ident, Type, Visibility};

/// A checked workflow.
pub struct Workflow {
    /// The user's doc comments, re-emitted on the struct.
    pub docs: Vec<Attribute>,
    /// The doc comments as one string, for `Definition::description`.
    pub description: String,
    /// The struct's visibility.
    pub vis: Visibility,
    /// The struct's name; its unraw form is the workflow's name.
    pub name: Ident,
    /// `state = T`, or `None` for the default `Data`.
    pub state: Option<Type>,
    /// The body, in declaration order.
    pub items: Vec<Item>,
}

/// A checked item.
pub enum Item {
    /// A step.
    Step(Step),
    /// A parallel block.
    Parallel(Parallel),
    /// A named sequence.
    Seq(Seq),
    /// A dependency graph.
    Dag(Dag),
    /// A map block.
    Map(Map),
    /// A durable sleep.
    Sleep(Sleep),
    /// A `wait_for`.
    Wait(Wait),
    /// A `callback`.
    Callback(Callback),
    /// A `call`.
    Call(Call),
}

/// A checked `wait_for name(...)`.
pub struct Wait {
    /// The signal's name (unraw).
    pub name: String,
    /// The name as written, with its span: a typed state must have this field.
    pub ident: Ident,
    /// The retry policy of its timeouts, as for a step.
    pub retry: Option<Retry>,
    /// `timeout = ...` in milliseconds, at least 1; `None`: waits for ever.
    pub timeout_ms: Option<u64>,
    /// `optional`.
    pub optional: bool,
}

/// A checked `call name = workflow(...)`.
pub struct Call {
    /// The item's name (unraw).
    pub name: String,
    /// The name as written, with its span: a typed state must have this field, of the
    /// child's state type.
    pub ident: Ident,
    /// The child workflow's path.
    pub workflow: ExprPath,
    /// `timeout = ...` in milliseconds, at least 1; `None`: waits for ever.
    pub timeout_ms: Option<u64>,
    /// `optional`.
    pub optional: bool,
}

/// A checked `callback name = submit(...)`.
pub struct Callback {
    /// The callback's name (unraw).
    pub name: String,
    /// The name as written, with its span: a typed state must have this field.
    pub ident: Ident,
    /// The submit function.
    pub func: ExprPath,
    /// The retry policy of the submit function.
    pub retry: Option<Retry>,
    /// `timeout = ...` in milliseconds, at least 1; `None`: waits for ever.
    pub timeout_ms: Option<u64>,
    /// `optional`.
    pub optional: bool,
}

/// A checked `sleep name(for = ...)` or `sleep name(until = field)`.
pub struct Sleep {
    /// The sleep's name (unraw).
    pub name: String,
    /// How long, or until when.
    pub wake: Wake,
}

/// When a sleep ends.
pub enum Wake {
    /// `for = 10m`, in milliseconds.
    ForMs(u64),
    /// `until = field`: the field as written (with its span, for the typed-state check).
    Until(Ident),
}

/// A checked step.
pub struct Step {
    /// The step's name as the journal records it (unraw).
    pub name: String,
    /// The function to call, with the user's spans.
    pub func: ExprPath,
    /// The retry policy: the step's `retry(...)` over the workflow's, field by field; `None`
    /// when neither was given.
    pub retry: Option<Retry>,
    /// `timeout = ...`, in milliseconds, at least 1.
    pub timeout_ms: Option<u64>,
    /// `optional`.
    pub optional: bool,
    /// Where `optional` was written, when it was (`optional = false` included).
    pub optional_at: Option<Span>,
}

/// `retry(...)`: the options given; the others keep `RetryPolicy::default()`'s values.
#[derive(Default, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub max_attempts: Option<u32>,
    /// How the wait grows.
    pub backoff: Option<Backoff>,
    /// The first wait, in milliseconds.
    pub initial_ms: Option<u64>,
    /// The growth factor, finite and at least 1.
    pub multiplier: Option<f64>,
    /// The longest wait, in milliseconds.
    pub max_interval_ms: Option<u64>,
    /// Whether to randomise the waits.
    pub jitter: Option<bool>,
}

impl Retry {
    /// The options of `self`, each falling back to `defaults`' when not given.
    pub fn or(self, defaults: Retry) -> Retry {
        Retry {
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            backoff: self.backoff.or(defaults.backoff),
            initial_ms: self.initial_ms.or(defaults.initial_ms),
            multiplier: self.multiplier.or(defaults.multiplier),
            max_interval_ms: self.max_interval_ms.or(defaults.max_interval_ms),
            jitter: self.jitter.or(defaults.jitter),
        }
    }
}

/// Mirrors `durable::Backoff`.
#[derive(Clone, Copy)]
pub enum Backoff {
    /// `constant`
    Constant,
    /// `linear`
    Linear,
    /// `exponential`
    Exponential,
}

/// Mirrors `durable::Merge`.
#[allow(clippy::enum_variant_names)] // Named like the runtime's variants.
#[derive(Clone, Copy, Default)]
pub enum Merge {
    /// `deep_merge`, the default.
    #[default]
    DeepMerge,
    /// `last_wins`
    LastWins,
    /// `collect`
    Collect,
}

/// Mirrors `durable::OnError`.
#[derive(Clone, Copy, Default)]
pub enum OnError {
    /// `fail_fast`, the default.
    #[default]
    FailFast,
    /// `complete_all`
    CompleteAll,
}

/// A checked parallel block.
pub struct Parallel {
    /// `parallel name(...)` (unraw): its batch result's key in the state; required with a
    /// completion policy.
    pub name: Option<String>,
    /// Where the name was written, when it was.
    pub name_at: Option<Span>,
    /// Concurrency and completion policy, with a map's meaning.
    pub options: MapOptions,
    /// How the branches' results combine.
    pub merge: Merge,
    /// What a failed branch does to the others.
    pub on_error: OnError,
    /// Where the merge strategy was written, when it was.
    pub merge_at: Option<Span>,
    /// The branches, never empty.
    pub branches: Vec<Item>,
}

/// A checked `seq name { ... }`.
pub struct Seq {
    /// The sequence's name (unraw).
    pub name: String,
    /// Its nodes, never empty.
    pub items: Vec<Item>,
}

/// A checked `dag { ... }`: every `after` names another node of the same dag, without cycles.
pub struct Dag {
    /// The nodes in declaration order, each with the names of the nodes it comes after.
    pub nodes: Vec<(Item, Vec<String>)>,
}

/// A checked `map name(over = field, ...) { ... }` or `map name(over = [...], ...) { ... }`.
pub struct Map {
    /// The block's name (unraw): its batch result's key in the state.
    pub name: String,
    /// The name as written, with its span.
    pub ident: Ident,
    /// What the map runs over.
    pub over: Over,
    /// `item = T`: the state of the steps inside; `None` for the default `Data`.
    pub item: Option<Type>,
    /// Concurrency and completion policy.
    pub options: MapOptions,
    /// The nodes each element runs, never empty.
    pub items: Vec<Item>,
}

/// What a map runs over.
pub enum Over {
    /// `over = field`: the state's field holding the array (unraw).
    Field(String),
    /// `over = [1, "a", ...]`: the items, as the text of a JSON array.
    Items(String),
}

/// Mirrors `durable::definition::MapOptions`, each option as given (valid).
#[derive(Default, Clone, Copy)]
pub struct MapOptions {
    /// At least 1.
    pub max_concurrency: Option<usize>,
    /// At least 1.
    pub min_successful: Option<usize>,
    /// Any count, zero included.
    pub tolerated_failures: Option<usize>,
    /// From 0 to 100.
    pub tolerated_failure_percentage: Option<f64>,
}

impl MapOptions {
    /// Whether a completion policy is given, not only a concurrency limit.
    pub fn has_policy(&self) -> bool {
        self.min_successful.is_some()
            || self.tolerated_failures.is_some()
            || self.tolerated_failure_percentage.is_some()
    }
}
