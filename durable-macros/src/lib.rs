//! The `workflow!` macro of the `durable` crate. Use it through `durable::workflow`.
//!
//! The macro runs in three passes, each in its own module: `parse` reads the DSL into the
//! syntax tree of `ast`, `validate` checks it (collecting every error) and lowers it into
//! `model`, and `expand` generates the code.

mod ast;
mod expand;
mod model;
mod parse;
mod suggest;
mod validate;

use proc_macro::TokenStream;
use syn::parse_macro_input;

/// Declares a durable workflow: a unit struct named like the workflow that implements
/// `durable::Workflow`, whose definition lists the workflow's steps and blocks.
///
/// # Syntax
///
/// ```text
/// workflow! {
///     /// Doc comments become the workflow's description.
///     pub onboard_user(state = User) {
///         step create_user;
///         step send_welcome(retry(max_attempts = 3, backoff = exponential, initial = 500ms,
///                                 multiplier = 2.0, max_interval = 60s, jitter = true));
///         parallel(merge = deep_merge, on_error = fail_fast) {
///             step set_up_billing;
///             step set_up_storage(retry(max_attempts = 2)) = storage::set_up;
///         }
///         step finish = billing::finish;
///     }
/// }
/// ```
///
/// **The workflow**: doc comments (optional; they become `Definition::description`, one line
/// per `///`), a visibility (optional), the name, `(state = Type)` (optional; the state passed
/// from step to step, a serde type, `durable::Data` by default), then the body in braces. The
/// generated struct has the workflow's name, visibility and docs; `Workflow::NAME` is the
/// name as a string.
///
/// **A step** is `step name;`, `step name = path::to::function;`, `step name(options);` or,
/// with both, `step name(options) = path::to::function;` (options first). It calls the async
/// function `name`, or the function at the path, which must be `async fn(S) -> Result<S, E>`
/// or `async fn(StepContext, S) -> Result<S, E>` with `S` the workflow's state and
/// `E: Into<StepError>`. The name identifies the step in the journal, so names are unique in
/// the whole workflow, nested blocks included.
///
/// **Step options**: `retry(...)`, with
/// - `max_attempts = N`: attempts in all, the first included, at least 1. Required in
///   `retry(...)`, since without it the step is never retried;
/// - `backoff = constant | linear | exponential` (default `exponential`);
/// - `initial = DURATION`: the first wait (default `1s`);
/// - `multiplier = NUMBER`: the growth factor of exponential backoff, at least 1.0
///   (default `2.0`);
/// - `max_interval = DURATION`: the longest wait (default `60s`);
/// - `jitter = true | false`, or just `jitter`: randomise each wait (default `false`).
///
/// A duration is a number with a unit: `500ms`, `2s`, `1.5s`, `5m`, `1h`; it must come to a
/// whole number of milliseconds.
///
/// **A parallel block** is `parallel { ... }` or `parallel(options) { ... }` with the options
/// `merge = deep_merge | last_wins | collect` (default `deep_merge`) and
/// `on_error = fail_fast | complete_all` (default `fail_fast`). Its branches are the items in
/// its braces, at least one; a branch may itself be a `parallel` block.
///
/// # Errors
///
/// Mistakes are reported at the offending token, all at once: duplicate step names, unknown
/// items, options and values (with a "did you mean"), empty blocks, `max_attempts = 0`,
/// malformed durations, a missing `;`. A step function that does not exist, or whose signature
/// is wrong, is reported by the compiler at the step's function in the `workflow!`.
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    let workflow = parse_macro_input!(input as ast::Workflow);
    let (model, checked) = validate::validate(&workflow);
    expand::expand(&model, checked).into()
}
