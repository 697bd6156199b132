//! The lane of a write its own task commits: when the writer is idle and load is low, a run
//! task commits its write itself instead of handing it to the writer task.
//!
//! Why: a lone run's step otherwise goes run task → writer task → connection task and back,
//! and tokio's multi-thread scheduler runs at most three tasks woken one by another before it
//! hands the next to another worker thread. Each commit of a lone run on PostgreSQL then
//! crossed threads once (one futex wake each, measured), which a tight loop of INSERTs never
//! does: a lone seq10 run took 3.2 ms against 2.7 ms committed by its own task.
//!
//! Invariants, kept under one lock:
//! - A task commits its own write only when no write is with the writer task (queued or in
//!   flight), no other task is committing its own, and the writer's last batch held a single
//!   write (load is low: under load every write goes to the writer, to be grouped).
//! - While a task commits its own write to a run, the writer takes no write to that run, so a
//!   run's writes still commit in the order they were submitted; with a store that commits
//!   one batch at a time, it takes none at all.
//! - A write committed by its own task is committed even if that task stops waiting for it
//!   (a parallel branch cancelled by a sibling's failure): the unfinished commit is handed to
//!   a task of its own, as a write handed to the writer is committed whether or not anyone
//!   waits for it. Only a runtime shutting down drops it, as it drops the writer's queue: the
//!   process is ending, and the run resumes from whatever committed.
//! - The lane is given back however the commit ends: finished, failed, panicked, or dropped
//!   (even unpolled, outside any runtime).
//! - The lane is taken when the write is submitted, and the write commits as its future is
//!   polled: a caller polls it at once (every caller awaits it right after submitting), or the
//!   writer waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

use super::{commit_batch, CommitError};
use crate::step::BoxFuture;
use crate::store::{Store, StoreError, Write};
use crate::RunId;

/// What the writer task and the tasks that commit their own write share.
pub(super) struct Lane {
    state: Mutex<State>,
    /// Told when a task's own commit ends: the writer may take what it held back.
    own_commit_ended: Notify,
}

#[derive(Debug)]
struct State {
    /// Writes sent to the writer task and not acknowledged yet.
    with_writer: usize,
    /// The run whose write a task is committing itself, if any.
    own_commit: Option<RunId>,
    /// Whether the writer's last batch held a single write.
    quiet: bool,
}

impl Lane {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                with_writer: 0,
                own_commit: None,
                quiet: true,
            }),
            own_commit_ended: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides where `write` goes: `Ok(write)` to be committed by the submitting task (the
    /// lane is then taken for its run), or `Err(sent)` after `send` handed it to the writer
    /// task (`sent`: whether the writer took it).
    pub(super) fn route(
        &self,
        write: Write,
        send: impl FnOnce(Write) -> bool,
    ) -> Result<Write, bool> {
        let mut state = self.state();
        if state.quiet && state.with_writer == 0 && state.own_commit.is_none() {
            state.own_commit = Some(write.run().clone());
            return Ok(write);
        }
        // Sent under the lock, so that no task finds the writer idle while this write is on
        // its way to it.
        let sent = send(write);
        if sent {
            state.with_writer += 1;
        }
        Err(sent)
    }

    /// The writer acknowledged a batch of `n` writes.
    pub(super) fn acknowledged(&self, n: usize) {
        let mut state = self.state();
        state.with_writer = state.with_writer.saturating_sub(n);
        state.quiet = n == 1;
    }

    /// The run a task is committing a write of itself, if any.
    pub(super) fn own_commit(&self) -> Option<RunId> {
        self.state().own_commit.clone()
    }

    /// Waits until no task is committing its own write.
    pub(super) async fn no_own_commit(&self) {
        loop {
            let ended = self.own_commit_ended.notified();
            if self.state().own_commit.is_none() {
                return;
            }
            ended.await;
        }
    }

    /// Resolves when a task's own commit ends (or has ended since the last call).
    pub(super) async fn own_commit_ended(&self) {
        self.own_commit_ended.notified().await;
    }

    fn end_own_commit(&self) {
        self.state().own_commit = None;
        self.own_commit_ended.notify_one();
    }
}

/// A write committed by the task that submitted it. Dropped unfinished, it goes on committing
/// in a task of its own.
pub(super) struct OwnCommit {
    commit: Option<BoxFuture<'static, Result<(), CommitError>>>,
}

impl OwnCommit {
    /// Starts committing `write`, for which `lane` was taken.
    pub(super) fn new(
        write: Write,
        store: Weak<dyn Store>,
        lane: Arc<Lane>,
        retry_for: Duration,
    ) -> Self {
        // Gives the lane back however the commit ends, even dropped unpolled.
        let release = Release(lane);
        Self {
            commit: Some(Box::pin(async move {
                let _release = release;
                let outcome = commit_batch(&store, std::slice::from_ref(&write), retry_for).await;
                match outcome.map(Vec::into_iter).map(|mut v| v.next()) {
                    Ok(Some(verdict)) => verdict.map_err(CommitError::Rejected),
                    Ok(None) => Err(CommitError::Store(StoreError::other(
                        "the store answered a batch of one write with no verdict",
                    ))),
                    Err(e) => Err(CommitError::Store(e)),
                }
            })),
        }
    }
}

impl Future for OwnCommit {
    type Output = Result<(), CommitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Taken out while polled: if the store panics, the commit is dropped with the panic
        // (giving the lane back), never handed on half-run by `drop`.
        let mut commit = self
            .commit
            .take()
            .expect("a task's own commit polled after it ended");
        let done = commit.as_mut().poll(cx);
        if done.is_pending() {
            self.commit = Some(commit);
        }
        done
    }
}

impl Drop for OwnCommit {
    fn drop(&mut self) {
        if let Some(commit) = self.commit.take() {
            // Nobody waits for the verdict any more; the write still commits, in order.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(commit);
            }
        }
    }
}

struct Release(Arc<Lane>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.end_own_commit();
    }
}
