//! The `workflow!` macro of the `durable` crate. Use it through `durable::workflow`.
//!
//! The macro runs in three passes, each in its own module: `parse` reads the DSL into the
//! syntax tree of `ast`, `validate` checks it (collecting every error) and lowers it into
//! `model`, and `expand` generates the code.

mod ast;
mod expand;
mod fields;
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
///     pub onboard_user(state = User, retry(max_attempts = 3, backoff = constant)) {
///         step create_user;
///         step send_welcome(retry(max_attempts = 5, backoff = exponential, initial = 500ms,
///                                 multiplier = 2.0, max_interval = 60s, jitter = true));
///         parallel(merge = deep_merge, on_error = fail_fast) {
///             step set_up_billing(timeout = 30s);
///             step set_up_storage(retry(max_attempts = 2)) = storage::set_up;
///             seq profile {
///                 step fetch_avatar;
///                 step resize_avatar;
///             }
///         }
///         dag {
///             step pack;
///             step bill;
///             step ship(after = [pack, bill]);
///             step email(after = [ship], optional, retry(initial = 1s));
///             seq archive(after = [bill]) {
///                 step export;
///                 step compress;
///             }
///             map notify_users(over = users, after = [ship], max_concurrency = 8) {
///                 step notify_user;
///             }
///         }
///         map ping_regions(over = ["eu", "us", "ap"], item = String, min_successful = 2) {
///             step ping = regions::ping;
///         }
///         map process_items(over = items, item = orders::LineItem, max_concurrency = 3,
///                           min_successful = 4, tolerated_failures = 1,
///                           tolerated_failure_percentage = 10) {
///             step reserve = orders::reserve;
///             parallel {
///                 step price = orders::price;
///                 step tax = orders::tax;
///             }
///         }
///         sleep cool_off(for = 10m);
///         sleep until_renewal(until = renews_at);
///         wait_for approved(timeout = 1d, retry(max_attempts = 2), optional);
///         callback paid = billing::request_payment(timeout = 1h, retry(max_attempts = 3));
///         step finish = billing::finish;
///     }
/// }
/// ```
///
/// **The workflow**: doc comments (optional; they become `Definition::description`, one line
/// per `///`), a visibility (optional), the name, options in parentheses (optional), then the
/// body in braces. The options are
/// - `state = Type`: the state passed from step to step, a serde type (`durable::Data` by
///   default);
/// - `retry(...)`: the retry policy of every step that has no `retry(...)` of its own, and the
///   fallback of those that do (see below). Here `max_attempts` is required.
///
/// The generated struct has the workflow's name, visibility and docs; `Workflow::NAME` is the
/// name as a string. The body's items run one after another.
///
/// **A step** is `step name;`, `step name = path::to::function;`, `step name(options);` or,
/// with both, `step name(options) = path::to::function;` (options first). It calls the async
/// function `name`, or the function at the path, which must be `async fn(S) -> Result<S, E>`
/// or `async fn(StepContext, S) -> Result<S, E>` with `S` the workflow's state and
/// `E: Into<StepError>`. The name identifies the step in the journal, so names are unique in
/// the whole workflow, nested blocks included; steps, seqs, maps and sleeps share this one
/// namespace. Inside a `map`, `S` is the map's item type instead (below).
///
/// **Step options**, in any order, each at most once:
/// - `retry(...)`: how a failing attempt is retried (below);
/// - `timeout = DURATION`: how long one attempt may run before it is cancelled and counted as
///   failed (more than zero; no limit by default);
/// - `optional`, or `optional = true | false`: the workflow goes on without this step when it
///   fails for good (default `false`);
/// - `after = [name, ...]`: only on a node directly inside a `dag` (below).
///
/// **Retry options**, inside `retry(...)`:
/// - `max_attempts = N`: attempts in all, the first included, at least 1. Required in a
///   step's `retry(...)`, since without it the step is never retried, unless the workflow's
///   `retry(...)` gives it;
/// - `backoff = constant | linear | exponential` (default `exponential`);
/// - `initial = DURATION`: the first wait (default `1s`);
/// - `multiplier = NUMBER`: the growth factor of exponential backoff, at least 1.0
///   (default `2.0`);
/// - `max_interval = DURATION`: the longest wait (default `60s`);
/// - `jitter = true | false`, or just `jitter`: randomise each wait (default `false`).
///
/// A step's policy takes each field from the step's own `retry(...)`, else from the
/// workflow's `retry(...)`, else from `RetryPolicy::default()`. With the workflow's
/// `retry(max_attempts = 3, backoff = constant)`, `step a;` gets 3 constant attempts and
/// `step b(retry(initial = 5s));` 3 constant attempts 5 seconds apart.
///
/// A duration is a number with a unit: `500ms`, `2s`, `1.5s`, `5m`, `1h`, `1d`; it must come
/// to a whole number of milliseconds.
///
/// **A wait** is `wait_for name;` or `wait_for name(options);`: the run waits (suspended,
/// holding nothing but its row) for signal `name`, sent with `Engine::signal(&id, "name",
/// payload)` or `Client::signal`, taking the oldest one it has not taken (a signal sent
/// before the run waits is kept); the payload goes into the state under `name`. **A callback**
/// is `callback name = path::to::submit;` or `callback name = submit(options);` (options after
/// the function): `submit` is `async fn(durable::callback::Callback, S) -> Result<S, E>`, run
/// as a step with the callback's token (`callback.token()`, the same on every attempt), which
/// it hands to an outside system; the run then waits until `Engine::complete_callback(token,
/// payload)` (the payload goes into the state under `name`) or `fail_callback(token, error)`
/// (the item fails). Their names share the steps' namespace. Their options:
/// - `timeout = DURATION`: how long the run waits (more than zero; for ever by default); a
///   wait's timeout is a failed attempt, a callback's fails it;
/// - `retry(...)`: a wait's retries after a timeout (each attempt waits anew); a callback's
///   submit function's retries;
/// - `optional`: the workflow goes on without the payload when the item fails for good;
/// - `after = [...]`, inside a dag.
///
/// With a typed state the state type must have a field `name` of a type the payload decodes
/// into (checked at compile time: a missing field is reported at the name).
///
/// **A call** is `call name = other_workflow;` or `call name = other_workflow(options);`: it
/// runs the registered workflow `other_workflow` (the unit struct its `workflow!` defines) as
/// a child run, with the state's value under `name` as its input, and waits (suspended) for
/// it; the child's output goes into the state under `name`. A failed or cancelled child fails
/// the item. Options: `timeout = DURATION` (then the child is cancelled and the item fails),
/// `optional` and `after = [...]`; no `retry` (the child's steps retry themselves). With a
/// typed state, the field `name` must be of the child's `Workflow::State` type (checked at
/// compile time).
///
/// **A parallel block** is `parallel { ... }`, `parallel(options) { ... }` or, named,
/// `parallel name(options) { ... }`, with the options
/// `merge = deep_merge | last_wins | collect` (default `deep_merge`),
/// `on_error = fail_fast | complete_all` (default `fail_fast`), a map's `max_concurrency`,
/// `min_successful`, `tolerated_failures` and `tolerated_failure_percentage` (over its
/// branches), and, inside a dag, `after`. Its branches are the items in its braces, at least
/// one, which all start together, or at most `max_concurrency` at a time in declaration
/// order. A completion policy (`min_successful` or a tolerance) needs a name, under which the
/// block's batch result goes into the state, and replaces `on_error`: giving both is an
/// error. `min_successful` is at most the number of branches, and a `tolerated_failures` that
/// could never fail the block (at least the branches minus `min_successful`) is an error. A
/// name is unique in the workflow like a step's, and a dag's `after` can name the block.
///
/// **A sequence** is `seq name { ... }`: its items, at least one, run one after another. It
/// makes several steps one branch of a `parallel` block or one node of a `dag`; it is allowed
/// anywhere. Its name is unique in the workflow like a step's, and its only option is
/// `after`, inside a dag: `seq name(after = [a]) { ... }`.
///
/// **A dag** is `dag { ... }`: each of its items, at least one, starts as soon as all the
/// nodes it comes after have finished; a node without `after` (or with `after = []`) starts
/// at once. `after = [a, b]` names steps, seqs, maps and named parallel blocks directly inside
/// the same dag, in any order of declaration; a `dag` or unnamed `parallel` block has no
/// name, so to come after one, wrap it in a `seq` (or name the parallel block). A `parallel` or `dag` block inside a dag may itself have `after`:
/// `parallel(after = [a]) { ... }`, `dag(after = [a]) { ... }`. The dag as a whole finishes
/// when all its nodes have.
///
/// **A map** is `map name(options) { ... }`: its items, at least one, run one after another
/// for every element of an array, each element as their state; the elements run
/// concurrently, and the batch result (each element's outcome, with counts and the reason the
/// map finished) goes into the state under the map's name. The inner steps' journal paths are
/// `name[i]/step`. The name is unique in the workflow like a step's. The options are
/// - `over`, required: what the map runs over, either
///   - `over = field`: the state's field holding the array, or
///   - `over = [item, ...]`: the elements themselves, written in the workflow, at least one.
///     Each is a literal: an integer (`3`, `-1`; from `i64::MIN` to `u64::MAX`), a finite float (`2.5`, `-0.5`, `1e3`), a
///     string (`"eu"`) or `true` / `false`, without type suffixes; kinds may be mixed. They
///     become a JSON array such as `[3,-1,2.5,"eu",true]`, a float keeping its fraction
///     (`1.0`) and a string its characters, JSON-escaped. Such a map needs `item`, since its
///     elements are not the JSON objects of the default `Data`:
///     `map ping_all(over = ["eu", "us"], item = String) { step ping; }`;
/// - `item = Type`: the type each element is decoded into, the state of every step inside
///   the map (nested blocks included, nested maps excepted: they have their own `item`), a
///   serde type (`durable::Data` by default, so the elements are then JSON objects);
/// - `max_concurrency = N`: at most `N` elements run at once, at least 1 (all by default);
/// - `min_successful = K`: the map succeeds as soon as `K` elements have, at least 1 (by
///   default every element must); with `over = [...]`, at most the list's length;
/// - `tolerated_failures = F`: the map fails as soon as more than `F` elements have failed;
/// - `tolerated_failure_percentage = P`: the map fails as soon as more than `P` percent of
///   all the elements have failed, a number from 0 to 100;
/// - `after = [...]`, inside a dag: a map has a name, so a dag's `after` can name it too.
///
/// **A sleep** is `sleep name(for = DURATION);` or `sleep name(until = field);`: a durable
/// timer. The first time the run reaches it, the absolute time it ends is computed once and
/// journaled under `name`; the run then suspends (it holds no task, no thread and no memory
/// beyond its row in the store) and goes on with its state unchanged once that time has
/// passed: an engine's worker claims it on time, and an engine started after the time passed
/// claims it at once. `for` is a duration as for `timeout` (`500ms`, `30s`, `10m`, `1h`);
/// `until` names a field of the state holding the time to wake at, either Unix milliseconds
/// (an integer) or an RFC 3339 date and time (a string such as `"2030-01-31T09:00:00Z"` or
/// `"2030-01-31T10:00:00.5+01:00"`); a time already past ends the sleep at once, and a
/// missing or malformed field fails the run, naming the sleep. With a typed state, the field
/// must exist (checked at compile time). Exactly one of `for` and `until` is given; the only
/// other option is `after`, inside a dag. A sleep inside a `parallel`, `dag` or `map` lets
/// the other branches finish first; the run then suspends until its earliest wake time.
///
/// Blocks nest freely: a `parallel` inside a `dag` inside a `parallel`, a `dag` inside a
/// `seq`, a `map` inside a `map`, and so on.
///
/// **What blocks write into the state.** A `parallel(merge = collect)` block writes
/// `parallel_results`; a `parallel` block or `dag` holding an `optional` step (directly or in
/// a `seq`, not inside a nested `map`) writes `parallel_errors` when that step fails; a `map`
/// writes its batch result under its name into the state around it. With a typed state (the
/// workflow's `state = T`, or a map's `item = T` for the blocks inside that map) `T` must
/// have these fields, in a type that holds what is written:
/// `parallel_results: Option<serde_json::Value>`,
/// `parallel_errors: Option<HashMap<String, String>>` and, for `map name(item = I)`,
/// `name: Option<durable::batch::BatchResult<I>>` (`BatchResult<Data>` without `item`).
/// `Data` holds any key and is not checked.
///
/// # Errors
///
/// Mistakes are reported at the offending token, all at once: duplicate step, seq, map, sleep,
/// `wait_for` or `callback` names, a sleep with neither or both of `for` and `until`, `wait_for` with `= function`, a callback's options before
/// its `=`, unknown items, options and values (with a "did you mean"), empty blocks,
/// `max_attempts = 0`, malformed durations, a zero `timeout`, a missing `;`, a map without
/// `over`, an empty `over = []` or one holding something other than the literals above (each
/// such element reported), `over = [...]` without `item`, `max_concurrency = 0`,
/// `min_successful = 0` or (with `over = [...]`) more than the list's length, a percentage
/// outside 0 to 100, and in a dag:
/// an `after` naming an unknown node (with a "did you mean"), a node outside this dag, the
/// node itself, or the same node twice, `after` outside a dag, and cycles (the error names the
/// whole cycle, as in "`b` -> `c` -> `d` -> `b`"). A step function that does not exist, or
/// whose signature is wrong (for a step inside a map: does not take the map's item type), is
/// reported by the compiler at the step's function in the `workflow!`. A typed state without
/// a field a block writes is reported at the block (at `collect`, at `optional`, at the map's
/// name) as a missing field, and one whose type cannot hold what is written with the type to
/// write instead.
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    let workflow = parse_macro_input!(input as ast::Workflow);
    let (model, checked) = validate::validate(&workflow);
    expand::expand(&model, checked).into()
}
