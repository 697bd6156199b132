//! The engine, journal, retries, merges and stores behind the `durable` crate.
//!
//! Users depend on `durable`, which re-exports this crate next to the `workflow!` macro; see
//! its documentation for the guides (`durable::guide`). This crate knows nothing of the macro: the macro builds a
//! [`Definition`] and the engine runs it.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batch;
pub mod callback;
mod changes;
mod clock;
pub mod data;
pub mod definition;
mod encode;
pub mod engine;
pub mod error;
pub mod fan_out;
#[doc(hidden)]
pub mod fields;
pub mod graph;
mod lease;
pub mod merge;
mod panic;
pub mod retry;
mod run_id;
pub mod step;
pub mod store;
mod tasks;
mod walk;
mod writer;

pub use data::{Data, State};
pub use definition::{
    CallbackNode, DagNode, Definition, MapNode, MapOptions, Node, ParallelNode, SeqNode, StepNode,
    StepOptions, WaitNode, Workflow,
};
pub use engine::{
    Client, ClientRun, Engine, EngineBuilder, Health, RunHandle, RunInfo, RunPage, StepEvent,
    StepRecord, WorkerError,
};
pub use error::{Error, RunFailure, StepFailure};
pub use fan_out::FanOutResult;
pub use graph::{Graph, GraphStep};
pub use merge::{Merge, OnError};
pub use retry::{Backoff, RetryPolicy};
pub use run_id::RunId;
pub use step::{BoxFuture, StepContext, StepError, StepFn, StepResult};
pub use store::{Cursor, RunFilter, RunStatus, Store};
