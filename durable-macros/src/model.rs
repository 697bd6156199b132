//! The workflow as `validate` hands it to `expand`: every option resolved to a checked value.
//!
//! Keeping this apart from [`crate::ast`] means `expand` never re-interprets user tokens and
//! cannot meet an invalid value.

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
}

/// A checked step.
pub struct Step {
    /// The step's name as the journal records it (unraw).
    pub name: String,
    /// The function to call, with the user's spans.
    pub func: ExprPath,
    /// The retry policy, if `retry(...)` was given.
    pub retry: Option<Retry>,
}

/// `retry(...)`: the options given; the others keep `RetryPolicy::default()`'s values.
#[derive(Default)]
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
    /// How the branches' results combine.
    pub merge: Merge,
    /// What a failed branch does to the others.
    pub on_error: OnError,
    /// The branches, never empty.
    pub branches: Vec<Item>,
}
