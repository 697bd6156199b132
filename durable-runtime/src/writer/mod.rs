//! The group-committing journal writer.
//!
//! Every run task sends its writes here and waits for the acknowledgement. One writer task
//! takes whatever has queued up while the previous batch was being committed and hands it to
//! the store as one batch: one transaction, one fsync, many steps from many runs. Under load
//! the batches grow by themselves; a lone run pays one commit per step, as it must, and when
//! the writer is idle and load is low it commits that step in its own task ([`lane`]).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Rejected, Store, StoreError, Write};
use crate::RunId;

mod lane;
#[cfg(test)]
mod lane_tests;

use lane::{Lane, OwnCommit};

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
    /// The verdict, and the write itself: see [`Returned`].
    ack: oneshot::Sender<(Result<(), CommitError>, Returned)>,
}

/// A committed write on its way back to the run task that made it, to be dropped there.
///
/// Its strings were allocated on that task's thread. Freed by the writer instead, each free
/// would take the lock of the allocating thread's malloc arena (glibc), while the runs on
/// that thread allocate from it: measured, the writer's frees were most of seq10's futex
/// calls (11,067 against 3,355 returned) and cost 15% of its steps/s.
struct Returned(#[allow(dead_code)] Write);

/// A handle to the writer task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Pending>,
    /// Set when the engine shuts down: runs start no new attempt.
    closing: Arc<AtomicBool>,
    /// The store, for the reads a walk makes besides its journal (a wait's inbox).
    store: Weak<dyn Store>,
    /// Shared with the writer task: whether a write may be committed by its own task.
    lane: Arc<Lane>,
    /// How long a failing store is retried (see [`commit_retrying`]).
    retry_for: Duration,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime. It retries a failing store for up
    /// to `retry_for` before failing the writes. It holds the store only while it commits a
    /// batch, so dropping the engine drops the store (and an SQLite file's lock) at once.
    pub(crate) fn spawn(store: Weak<dyn Store>, retry_for: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane::new());
        tokio::spawn(write_loop(store.clone(), rx, retry_for, Arc::clone(&lane)));
        Self {
            tx,
            closing: Arc::default(),
            store,
            lane,
            retry_for,
        }
    }

    /// The store, while the engine lives.
    pub(crate) fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.upgrade()
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
    /// returns the future of its acknowledgement. When the writer is idle and load is low, the
    /// write is committed by the task that polls that future instead (see [`lane`]): poll it
    /// at once (the writer waits for it meanwhile); dropped, it commits in a task of its own.
    pub(crate) fn submit(
        &self,
        write: Write,
    ) -> impl std::future::Future<Output = Result<(), CommitError>> + Send + 'static {
        let (ack, done) = oneshot::channel();
        let routed = self
            .lane
            .route(write, |write| self.tx.send(Pending { write, ack }).is_ok());
        let (own, queued) = match routed {
            Ok(write) => {
                let lane = Arc::clone(&self.lane);
                let own = OwnCommit::new(write, self.store.clone(), lane, self.retry_for);
                (Some(own), true)
            }
            Err(queued) => (None, queued),
        };
        async move {
            if let Some(own) = own {
                return own.await;
            }
            if !queued {
                return Err(stopped());
            }
            match done.await {
                Ok((verdict, returned)) => {
                    drop(returned);
                    verdict
                }
                Err(_) => Err(stopped()),
            }
        }
    }
}

fn stopped() -> CommitError {
    CommitError::Store(StoreError::closed("the journal writer has stopped"))
}

async fn write_loop(
    store: Weak<dyn Store>,
    rx: mpsc::UnboundedReceiver<Pending>,
    retry_for: Duration,
    lane: Arc<Lane>,
) {
    let depth = store.upgrade().map_or(1, |s| s.commits_in_flight().max(1));
    if depth == 1 {
        one_at_a_time(store, rx, retry_for, &lane).await;
    } else {
        overlapping(store, rx, retry_for, depth, &lane).await;
    }
}

/// One batch at a time: whatever queued while the previous one (or a task's own commit)
/// committed.
async fn one_at_a_time(
    store: Weak<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    retry_for: Duration,
    lane: &Lane,
) {
    let mut pending = Vec::with_capacity(256);
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        lane.no_own_commit().await;
        // What queued while a run task committed its own write joins this batch.
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => pending.push(p),
                Err(_) => break,
            }
        }
        let (writes, acks): (Vec<_>, Vec<_>) = pending.drain(..).map(|p| (p.write, p.ack)).unzip();
        let outcome = commit_batch(&store, &writes, retry_for).await;
        lane.acknowledged(writes.len());
        acknowledge(writes, acks, outcome);
    }
}

/// Up to `depth` batches committing at once (a task's own commit counts as one), none
/// writing to a run another one in flight writes to: a write to such a run waits, and so does
/// every later write to it, so each run's writes still commit in the order they were made.
/// (Writes to different runs never depend on each other's order: a run task that needs
/// another run's write, a child's creation say, waits for its acknowledgement before going
/// on.) The commits are polled here, in the writer's task, not spawned: a write costs no
/// extra task switch.
async fn overlapping(
    store: Weak<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    retry_for: Duration,
    depth: usize,
    lane: &Lane,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut received = Vec::with_capacity(256);
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut open = true;
    loop {
        // No task starts its own commit while writes are queued here, so what is read here
        // can only end meanwhile.
        let own = if queue.is_empty() {
            None
        } else {
            lane.own_commit()
        };
        while in_flight.len() + usize::from(own.is_some()) < depth {
            let held: HashSet<&RunId> = in_flight
                .iter()
                .flat_map(|f| &f.runs)
                .chain(own.as_ref())
                .collect();
            let batch = take_batch(&mut queue, &held);
            if batch.is_empty() {
                break;
            }
            let (writes, acks): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.write, p.ack)).unzip();
            let mut runs: Vec<RunId> = writes.iter().map(|w| w.run().clone()).collect();
            runs.sort_unstable();
            runs.dedup();
            let store = store.clone();
            in_flight.push(InFlight {
                runs,
                commit: Box::pin(async move {
                    let outcome = commit_batch(&store, &writes, retry_for).await;
                    (writes, acks, outcome)
                }),
            });
        }
        if !open && in_flight.is_empty() && queue.is_empty() {
            return;
        }
        tokio::select! {
            (writes, acks, outcome) = next_committed(&mut in_flight), if !in_flight.is_empty() => {
                lane.acknowledged(writes.len());
                acknowledge(writes, acks, outcome);
            }
            n = rx.recv_many(&mut received, MAX_BATCH), if open => {
                if n == 0 {
                    open = false;
                } else {
                    queue.extend(received.drain(..));
                }
            }
            () = lane.own_commit_ended(), if own.is_some() => {}
        }
    }
}

type Acks = Vec<oneshot::Sender<(Result<(), CommitError>, Returned)>>;
type Outcome = Result<Vec<Result<(), Rejected>>, StoreError>;
/// A committed batch: its writes, their acknowledgements, and the store's answer.
type Committed = (Vec<Write>, Acks, Outcome);

/// A batch being committed, and the runs it writes to.
struct InFlight {
    runs: Vec<RunId>,
    commit: Pin<Box<dyn Future<Output = Committed> + Send>>,
}

/// The first of `in_flight` to finish committing, taken out of it.
async fn next_committed(in_flight: &mut Vec<InFlight>) -> Committed {
    std::future::poll_fn(|cx| {
        for i in 0..in_flight.len() {
            if let Poll::Ready(done) = in_flight[i].commit.as_mut().poll(cx) {
                in_flight.swap_remove(i);
                return Poll::Ready(done);
            }
        }
        Poll::Pending
    })
    .await
}

/// The next batch from `queue`, in order: up to [`MAX_BATCH`] writes to runs no batch in
/// flight writes to (`held`). What stays keeps its order; a run's later writes stay with its
/// first held one, since they are held for the same reason (its run, or a full batch).
fn take_batch(queue: &mut VecDeque<Pending>, held: &HashSet<&RunId>) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut waiting = VecDeque::new();
    for p in queue.drain(..) {
        if batch.len() < MAX_BATCH && !held.contains(p.write.run()) {
            batch.push(p);
        } else {
            waiting.push_back(p);
        }
    }
    *queue = waiting;
    batch
}

async fn commit_batch(store: &Weak<dyn Store>, writes: &[Write], retry_for: Duration) -> Outcome {
    match store.upgrade() {
        Some(store) => commit_retrying(&*store, writes, retry_for).await,
        None => Err(StoreError::closed(
            "the store is gone: its engine was dropped or shut down",
        )),
    }
}

/// Sends each write its verdict, and the write itself back to be freed by its run task.
fn acknowledge(writes: Vec<Write>, acks: Acks, outcome: Outcome) {
    let returned = writes.into_iter().map(Returned);
    match outcome {
        Ok(outcomes) => {
            for ((ack, outcome), write) in acks.into_iter().zip(outcomes).zip(returned) {
                let _ = ack.send((outcome.map_err(CommitError::Rejected), write));
            }
        }
        Err(e) => {
            for (ack, write) in acks.into_iter().zip(returned) {
                let _ = ack.send((Err(CommitError::Store(e.clone())), write));
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
                // commit itself): a write found already there then counts as committed. So
                // does a run's end found already written: with the writer's lease still
                // current (the store checks it first), no one else could have finished it.
                let committed = |(write, o): (&Write, Result<(), Rejected>)| match (write, o) {
                    (_, Err(Rejected::DuplicateEntry { .. } | Rejected::DuplicateRun)) => Ok(()),
                    (
                        Write::Append {
                            finish: Some(_), ..
                        },
                        Err(Rejected::Finished),
                    ) => Ok(()),
                    (_, other) => other,
                };
                return Ok(writes.iter().zip(outcomes).map(committed).collect());
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::step::BoxFuture;
    use crate::store::memory::MemoryStore;
    use crate::store::test_writes::{append, create};
    use crate::store::{Finish, RunStatus, StoreErrorKind};
    use crate::RunId;

    /// A memory store that the writer's tests watch and disturb: its commits are counted, the
    /// next `lose` of them go through but report a failure of `kind`, and once `overlapping`
    /// it takes `depth` batches at once, each taking 20 ms, records the runs of each batch
    /// and the task that committed it, and panics if two batches in flight share a run.
    struct Watched {
        inner: MemoryStore,
        watching: bool,
        tasks: std::sync::Mutex<Vec<Option<tokio::task::Id>>>,
        lose: AtomicUsize,
        kind: StoreErrorKind,
        commits: AtomicUsize,
        depth: usize,
        in_flight: std::sync::Mutex<Vec<RunId>>,
        batches: std::sync::Mutex<Vec<Vec<String>>>,
        most_at_once: AtomicUsize,
        now: AtomicUsize,
    }

    impl Watched {
        fn new(lose: usize, kind: StoreErrorKind) -> Self {
            Self {
                inner: MemoryStore::new(),
                watching: false,
                tasks: Default::default(),
                lose: AtomicUsize::new(lose),
                kind,
                commits: AtomicUsize::new(0),
                depth: 1,
                in_flight: Default::default(),
                batches: Default::default(),
                most_at_once: AtomicUsize::new(0),
                now: AtomicUsize::new(0),
            }
        }

        fn overlapping(depth: usize) -> Self {
            Self {
                depth,
                watching: true,
                ..Self::new(0, StoreErrorKind::Transient)
            }
        }

        async fn overlap(&self, batch: &[Write]) -> Result<Vec<Result<(), Rejected>>, StoreError> {
            let runs: Vec<RunId> = batch.iter().map(|w| w.run().clone()).collect();
            {
                let mut in_flight = self.in_flight.lock().unwrap();
                for run in &runs {
                    assert!(
                        !in_flight.contains(run),
                        "two batches in flight write to {run}"
                    );
                }
                in_flight.extend(runs.iter().cloned());
            }
            let names = runs.iter().map(|r| r.as_str().to_owned()).collect();
            self.batches.lock().unwrap().push(names);
            self.tasks.lock().unwrap().push(tokio::task::try_id());
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let outcome = self.inner.commit(batch).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.in_flight.lock().unwrap().retain(|r| !runs.contains(r));
            outcome
        }
    }

    impl Store for Watched {
        fn commits_in_flight(&self) -> usize {
            self.depth
        }
        fn commit<'a>(
            &'a self,
            batch: &'a [Write],
        ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
            Box::pin(async move {
                self.commits.fetch_add(1, Ordering::SeqCst);
                if self.watching {
                    return self.overlap(batch).await;
                }
                let outcome = self.inner.commit(batch).await?;
                let lost = self
                    .lose
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if lost {
                    return Err(StoreError::new(self.kind, "the answer got lost"));
                }
                Ok(outcome)
            })
        }
        crate::store::forward_store_reads!(inner);
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn watched(depth: usize, runs: &[&str]) -> (Arc<Watched>, Writer) {
        let store = Arc::new(Watched::overlapping(depth));
        let creates: Vec<Write> = runs.iter().map(|r| create(r)).collect();
        let committed = futures_lite_block(store.inner.commit(&creates));
        assert!(committed.iter().all(Result::is_ok));
        let weak: Weak<dyn Store> = Arc::downgrade(&(Arc::clone(&store) as Arc<dyn Store>));
        let writer = Writer::spawn(weak, Duration::from_secs(5));
        (store, writer)
    }

    /// The memory store answers at once: its commit future is ready when first polled.
    fn futures_lite_block<T>(future: BoxFuture<'_, Result<T, StoreError>>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = future;
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(result) => result.unwrap(),
            Poll::Pending => panic!("the memory store's commit waited"),
        }
    }

    async fn seqs(store: &Watched, run: &str) -> Vec<u64> {
        let journal = store.inner.load_journal(&run.into()).await.unwrap();
        journal.iter().map(|e| e.seq).collect()
    }

    /// With two batches in flight, a write to a run whose earlier write is still committing
    /// waits for it (and keeps its place before the run's later writes), while writes to other
    /// runs go ahead in a batch of their own. The first write, made with the writer idle, is
    /// committed by the task that waits for it, and counts as one of the two.
    #[test]
    fn overlapping_batches_never_share_a_run_and_keep_each_run_s_order() {
        rt().block_on(async {
            let (store, writer) = watched(2, &["a", "b"]);
            let pause = || tokio::time::sleep(Duration::from_millis(2));
            let a1 = tokio::spawn(writer.submit(append("a", 1, None)));
            pause().await;
            let b1 = writer.submit(append("b", 1, None));
            let a2 = writer.submit(append("a", 2, None));
            let b2 = writer.submit(append("b", 2, None));
            let a3 = writer.submit(append("a", 3, None));
            pause().await;
            let a1_task = a1.id();
            assert!(a1.await.unwrap().is_ok(), "a1");
            assert!(b1.await.is_ok(), "b1");
            let (a2, b2, a3) = tokio::join!(a2, b2, a3);
            assert!(a2.is_ok() && b2.is_ok() && a3.is_ok());
            let batches = store.batches.lock().unwrap().clone();
            assert_eq!(batches, [vec!["a"], vec!["b", "b"], vec!["a", "a"]]);
            let tasks = store.tasks.lock().unwrap().clone();
            assert_eq!(tasks[0], Some(a1_task), "a1 committed in its own task");
            assert!(tasks[1..]
                .iter()
                .all(|t| *t != Some(a1_task) && t.is_some()));
            assert_eq!(store.most_at_once.load(Ordering::SeqCst), 2);
            assert_eq!(seqs(&store, "a").await, [1, 2, 3]);
            assert_eq!(seqs(&store, "b").await, [1, 2]);
        });
    }

    /// A write committed by its own task commits even when that task stops waiting for it
    /// midway, and the run's next write waits for it; with a store that commits one batch at
    /// a time, so does every other write. Once the writer's last batch held several writes,
    /// a write goes to the writer even when it is idle; after a batch of one, to its own task.
    #[test]
    fn a_write_committed_by_its_own_task_commits_in_order_even_if_abandoned() {
        rt().block_on(async {
            let (store, writer) = watched(1, &["a", "b"]);
            let a1 = writer.submit(append("a", 1, None));
            let waited = tokio::time::timeout(Duration::from_millis(5), a1).await;
            assert!(waited.is_err(), "a1 was still committing when abandoned");
            let a2 = writer.submit(append("a", 2, None));
            let b1 = writer.submit(append("b", 1, None));
            let (a2, b1) = tokio::join!(a2, b1);
            assert!(a2.is_ok() && b1.is_ok());
            assert_eq!(seqs(&store, "a").await, [1, 2]);
            let batches = store.batches.lock().unwrap().clone();
            assert_eq!(batches, [vec!["a"], vec!["a", "b"]]);
            assert_eq!(store.most_at_once.load(Ordering::SeqCst), 1);
            // After a batch of two, the writer commits even a lone write; after a batch of
            // one, a write made with the writer idle is committed by its own task (here the
            // test's, which has no task id).
            assert!(writer.submit(append("a", 3, None)).await.is_ok());
            assert!(writer.submit(append("a", 4, None)).await.is_ok());
            let tasks = store.tasks.lock().unwrap().clone();
            assert_eq!(tasks.len(), 4);
            assert_eq!(tasks[0], None, "a1 started in the test's own task");
            assert!(tasks[1].is_some() && tasks[2].is_some(), "the writer's");
            assert_eq!(tasks[3], None, "a4 committed by the test's own task");
            assert_eq!(seqs(&store, "a").await, [1, 2, 3, 4]);
        });
    }

    #[test]
    fn a_retried_batch_that_had_committed_counts_as_committed() {
        rt().block_on(async {
            let store = Watched::new(0, StoreErrorKind::Transient);
            store.commit(&[create("r")]).await.unwrap();
            // A step's entry, a new run, and another run's end: all went through the first
            // time; the retry finds them there.
            store.commit(&[create("done")]).await.unwrap();
            store.lose.store(1, Ordering::SeqCst);
            let batch = [
                append("r", 1, None),
                create("new"),
                append("done", 1, Some(Finish::Completed("{}".into()))),
            ];
            let outcomes = commit_retrying(&store, &batch, Duration::from_secs(5)).await;
            assert_eq!(outcomes.unwrap(), [Ok(()), Ok(()), Ok(())]);
            assert_eq!(store.commits.load(Ordering::SeqCst), 2 + 2);
            let done = store.inner.load_run(&"done".into()).await.unwrap().unwrap();
            assert_eq!(done.status, RunStatus::Completed);
            // A write without an end that finds its run finished did not commit.
            let late = [append("done", 2, None)];
            store.lose.store(1, Ordering::SeqCst);
            let outcomes = commit_retrying(&store, &late, Duration::from_secs(5)).await;
            assert_eq!(outcomes.unwrap(), [Err(Rejected::Finished)]);
        });
    }

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        rt().block_on(async {
            for kind in [
                StoreErrorKind::Corrupt,
                StoreErrorKind::Foreign,
                StoreErrorKind::Closed,
                StoreErrorKind::InUse,
                StoreErrorKind::Other,
            ] {
                let store = Watched::new(1, kind);
                let err = commit_retrying(&store, &[create("r")], Duration::from_secs(5))
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), kind);
                assert_eq!(
                    store.commits.load(Ordering::SeqCst),
                    1,
                    "{kind} was retried"
                );
            }
            for kind in [StoreErrorKind::Transient, StoreErrorKind::Full] {
                let store = Watched::new(2, kind);
                let outcomes = commit_retrying(&store, &[create("r")], Duration::from_secs(5))
                    .await
                    .unwrap();
                assert_eq!(outcomes, [Ok(())]);
                assert_eq!(
                    store.commits.load(Ordering::SeqCst),
                    3,
                    "{kind} was not retried"
                );
            }
        });
    }
}
