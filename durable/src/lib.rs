//! Durable workflows as a Rust macro. You write a workflow as a [`workflow!`] block of steps
//! (plain `async fn`s), parallel blocks, maps, sleeps and waits; the [`Engine`] journals every
//! finished step, so a process that crashes or is killed resumes where it stopped and never
//! runs a finished step again. There is no server: the engine is a library inside your program,
//! keeping its runs in an embedded SQLite file by default, or in PostgreSQL, where many worker
//! processes on many machines share them.
//!
//! # Install
//!
//! ```sh
//! cargo add durable
//! cargo add tokio --features macros,rt-multi-thread
//! cargo add anyhow    # if your steps return anyhow::Result, as one below does
//! ```
//!
//! | cargo feature | default | what it brings |
//! | --- | --- | --- |
//! | `sqlite` | yes | [`SqliteStore`](store::sqlite::SqliteStore): runs in one SQLite file (SQLite is bundled: a C compiler builds it) |
//! | `anyhow` | yes | steps may return `anyhow::Result<S>`: `?` on any error, with no `map_err`, the chain of causes journaled |
//! | `postgres` | no | [`PostgresStore`](store::postgres::PostgresStore): many worker processes sharing runs in PostgreSQL |
//!
//! ```sh
//! cargo add durable --features postgres                                   # SQLite and PostgreSQL
//! cargo add durable --no-default-features --features postgres,anyhow     # PostgreSQL only
//! ```
//!
//! A typed state (`workflow! { name(state = T) { ... } }`) is a serde type:
//! `cargo add serde --features derive`.
//!
//! The minimum supported Rust version is 1.95.
//!
//! # A first workflow
//!
//! ```no_run
//! use durable::store::sqlite::SqliteStore;
//! use durable::{data, workflow, Data, Engine, StepContext, StepError};
//!
//! async fn create_user(data: Data) -> Result<Data, StepError> {
//!     Ok(data.assign("user_id", 42))
//! }
//!
//! // A step may take a StepContext first: run id, step name, attempt, idempotency key.
//! async fn send_welcome_email(ctx: StepContext, data: Data) -> Result<Data, StepError> {
//!     let _key = ctx.idempotency_key(); // the same on every attempt: give it to the mailer
//!     Ok(data.assign("email_sent", true))
//! }
//!
//! // A step may return anyhow::Result too.
//! async fn provision_workspace(data: Data) -> anyhow::Result<Data> {
//!     Ok(data.assign("workspace_id", "ws-42"))
//! }
//!
//! async fn complete(data: Data) -> Result<Data, StepError> {
//!     Ok(data.assign("onboarded", true))
//! }
//!
//! workflow! {
//!     /// Doc comments become the workflow's description.
//!     pub onboard_user {
//!         step create_user;
//!         parallel {
//!             step send_welcome_email(retry(max_attempts = 3, backoff = exponential, initial = 200ms));
//!             step provision_workspace;
//!         }
//!         step complete;
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), durable::Error> {
//!     let store = SqliteStore::open("app.db")?;
//!     // Building the engine resumes every unfinished run of the registered workflows.
//!     let engine = Engine::builder(store).register(onboard_user).build().await?;
//!     let output = engine.run(onboard_user, data! { "name" => "Ada" }).await?;
//!     assert_eq!(output.get::<bool>("onboarded"), Some(true));
//!     Ok(())
//! }
//! ```
//!
//! If the process dies mid-run, the next `build` on the same file resumes that run
//! ([`engine.resumed()`](Engine::resumed) lists it, [`engine.wait(&id)`](Engine::wait) waits
//! for it): `create_user` and every parallel step that had finished are not run again; a step
//! that was still running runs again, which is what its idempotency key is for.
//!
//! # Guides
//!
//! - [The DSL](guide::dsl): everything a `workflow!` can hold (retries, timeouts, optional
//!   steps, parallel blocks and their merges, dags, maps, typed states), every option and
//!   default, and the mistakes the macro reports.
//! - [Running workflows](guide::engine): starting, waiting, listing; a [`Client`] in another
//!   process; cancelling and resuming failed runs; stopping; what a step must not do.
//! - [Stores](guide::stores): memory for tests, SQLite, PostgreSQL.
//! - [Waiting](guide::waiting): durable sleeps, signals, callbacks from outside systems, and
//!   child workflows.
//! - [PostgreSQL workers](guide::postgres): many worker processes on many machines sharing
//!   runs, and what each guarantee means across them.
//! - [Guarantees](guide::guarantees): what durable promises, failure semantics, what the
//!   journal accepts, versioning, limitations.
//!
//! The repository's `examples/` run with `cargo run --bin NAME`: `onboarding` (press Ctrl-C
//! mid-way, run it again, watch it resume), `dashboard`, `notify_all`, `order_processing`,
//! `bulk_notify`, `rate_limited_batch`, `tenant_sync`, `reminder`, `approval`,
//! `payment_webhook`, and `workers` on PostgreSQL.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod guide;

/// The README's Rust examples, compiled and run as doc tests (docs.rs shows the guides
/// instead).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use durable_macros::workflow;
/// The step graph of a definition (its kinds of nodes: [`graph::GraphKind`]).
pub use durable_runtime::graph;
pub use durable_runtime::{
    batch, callback, data, definition, engine, error, merge, retry, step, store, Backoff,
    BoxFuture, Client, ClientRun, Cursor, Data, Definition, Engine, EngineBuilder, Error,
    FanOutResult, Graph, GraphStep, Health, Merge, Node, OnError, ParallelNode, RetryPolicy,
    RunFailure, RunFilter, RunHandle, RunId, RunInfo, RunPage, RunStatus, State, StepContext,
    StepError, StepEvent, StepFailure, StepFn, StepNode, StepOptions, StepRecord, StepResult,
    Store, Workflow,
};

/// The names a workflow module usually needs: `use durable::prelude::*;`.
pub mod prelude {
    pub use crate::{workflow, Data, Engine, RunId, StepContext, StepError, StepResult, Workflow};
}

/// What code generated by `workflow!` names. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use durable_runtime::callback::erase_submit;
    pub use durable_runtime::definition::{Definition, MapOptions, Node, StepOptions, Workflow};
    pub use durable_runtime::fields;
    pub use durable_runtime::fields::call_node;
    pub use durable_runtime::merge::{Merge, OnError};
    pub use durable_runtime::retry::{Backoff, RetryPolicy};
    pub use durable_runtime::step::erase;
    pub use durable_runtime::Data;
    pub use std::time::Duration;
}
