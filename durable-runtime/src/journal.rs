//! The group-committing journal writer.
//!
//! Every run task sends its writes here and waits for the acknowledgement. One writer task
//! takes whatever has queued up while the previous batch was being committed and hands it to
//! the store as one batch: one transaction, one fsync, many steps from many runs. Under load
//! the batches grow by themselves; a lone run pays one commit per step, as it must.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Rejected, Store, StoreError, Write};

/// The most writes committed in one transaction; bounds the latency of one batch.
const MAX_BATCH: usize = 4096;

/// Why a write did not commit.
#[derive(Debug, Clone)]
pub(crate) enum CommitError {
    /// The store refused this write (the others of its batch committed).
    Rejected(Rejected),
    /// The store failed: nothing of the batch was written.
    Store(StoreError),
}

struct Pending {
    write: Write,
    ack: oneshot::Sender<Result<(), CommitError>>,
}

/// A handle to the writer task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Journal {
    tx: mpsc::UnboundedSender<Pending>,
    /// Set when the engine shuts down: runs start no new attempt.
    closing: Arc<AtomicBool>,
}

impl Journal {
    /// Starts the writer task on the current tokio runtime. It retries a failing store for up
    /// to `retry_for` before failing the writes. It holds the store only while it commits a
    /// batch, so dropping the engine drops the store (and an SQLite file's lock) at once.
    pub(crate) fn spawn(store: Weak<dyn Store>, retry_for: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store, rx, retry_for));
        Self {
            tx,
            closing: Arc::default(),
        }
    }

    /// From now on runs start no new attempt (the engine is shutting down).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether the engine is shutting down, so a run must not start another attempt.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Commits `write` durably, batched with whatever else is waiting.
    pub(crate) async fn write(&self, write: Write) -> Result<(), CommitError> {
        self.submit(write).await
    }

    /// Queues `write` now (so writes submitted one after another commit in that order) and
    /// returns the future of its acknowledgement.
    pub(crate) fn submit(
        &self,
        write: Write,
    ) -> impl std::future::Future<Output = Result<(), CommitError>> + Send + 'static {
        let (ack, done) = oneshot::channel();
        let queued = self.tx.send(Pending { write, ack }).is_ok();
        async move {
            if !queued {
                return Err(stopped());
            }
            done.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

fn stopped() -> CommitError {
    CommitError::Store(StoreError::closed("the journal writer has stopped"))
}

async fn write_loop(
    store: Weak<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    retry_for: Duration,
) {
    let mut pending = Vec::with_capacity(256);
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        let (writes, acks): (Vec<_>, Vec<_>) = pending.drain(..).map(|p| (p.write, p.ack)).unzip();
        let outcome = match store.upgrade() {
            Some(store) => commit_retrying(&*store, &writes, retry_for).await,
            None => Err(StoreError::closed(
                "the store is gone: its engine was dropped or shut down",
            )),
        };
        match outcome {
            Ok(outcomes) => {
                for (ack, outcome) in acks.into_iter().zip(outcomes) {
                    let _ = ack.send(outcome.map_err(CommitError::Rejected));
                }
            }
            Err(e) => {
                for ack in acks {
                    let _ = ack.send(Err(CommitError::Store(e.clone())));
                }
            }
        }
    }
}

/// Commits `writes`, retrying the same batch with growing pauses while the store fails with
/// an error that may pass (a disk hiccup, a locked file, a dropped connection, a full disk:
/// see [`StoreErrorKind::is_retryable`](crate::store::StoreErrorKind::is_retryable)), for up
/// to `retry_for`. Any other failure (corruption, a foreign or closed store) fails the
/// writes at once. The writes waiting meanwhile form the next batch.
async fn commit_retrying(
    store: &dyn Store,
    writes: &[Write],
    retry_for: Duration,
) -> Result<Vec<Result<(), Rejected>>, StoreError> {
    let deadline = Instant::now() + retry_for;
    let mut pause = Duration::from_millis(10);
    let mut retried = false;
    loop {
        match store.commit(writes).await {
            Ok(outcomes) if retried => {
                // A failure the store reported may still have committed (an error after the
                // commit itself): a write found already there then counts as committed.
                let committed = |o: Result<(), Rejected>| match o {
                    Err(Rejected::DuplicateEntry { .. } | Rejected::DuplicateRun) => Ok(()),
                    other => other,
                };
                return Ok(outcomes.into_iter().map(committed).collect());
            }
            Ok(outcomes) => return Ok(outcomes),
            Err(e) if !e.is_retryable() || Instant::now() + pause > deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                retried = true;
            }
        }
    }
}
