//! The future a step's node boxes stays small enough for the allocator's per-thread cache (see
//! `RunTask::exec_node`): a larger one makes every step take a contended malloc lock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::RunTask;
use crate::data::Data;
use crate::definition::{Definition, Node, StepOptions};
use crate::step::{erase, StepError};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::writer::Writer;
use crate::RunId;

async fn noop(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

/// glibc's per-thread cache serves requests up to 1,032 bytes without a lock.
const THREAD_CACHE_MAX: usize = 1032;

#[tokio::test]
async fn a_step_s_boxed_future_fits_the_allocator_s_thread_cache() {
    let step = Node::step("s", erase::<Data, _, _>(noop), StepOptions::default());
    let def = Arc::new(Definition::new("wf", "", vec![step]));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let journal = Writer::spawn(Arc::downgrade(&store), Duration::from_secs(1));
    let lease = crate::lease::RunLease::unbounded(RunId::from("r"), 1);
    let task = Arc::new(RunTask::new(
        def,
        RunId::from("r"),
        lease,
        journal,
        Vec::new(),
    ));
    let future = task.exec_node(vec![0], Value::Null, Arc::from(""));
    let size = std::mem::size_of_val(&*future);
    assert!(
        size <= THREAD_CACHE_MAX,
        "a step's future is {size} bytes, past the {THREAD_CACHE_MAX} bytes glibc's thread cache \
         serves without a lock: box what made it grow"
    );
}
