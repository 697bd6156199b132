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
/// The whole reference (every item, its options and defaults, what blocks write into the
/// state, and every compile-time error) is the `durable` crate's DSL guide, `durable::guide::dsl`
/// (the file `durable/docs/dsl.md`), kept in one place so the two cannot drift apart.
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    let workflow = parse_macro_input!(input as ast::Workflow);
    let (model, checked) = validate::validate(&workflow);
    expand::expand(&model, checked).into()
}
