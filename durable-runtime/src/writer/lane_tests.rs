//! The lane under a multi-thread runtime: many runs, several branches per run sharing one
//! numbering lock (as `RunTask::append` does), some abandoning their write after one poll, a
//! store that takes a random while: every run's journal is gap-free and in order, no two
//! commits of one run are ever in flight at once, never more than the store's depth, nothing
//! hangs; and the lane is given back however a commit ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::*;
use crate::step::BoxFuture;
use crate::store::memory::MemoryStore;
use crate::store::test_writes::{append, create};

/// A memory store whose commits take a random while (none, a yield, or 200 µs), which counts
/// two commits of one run in flight at once, the most commits at once, the commits made by
/// each task, and, with `panics` set, panics in that many commits first.
struct Jitter {
    inner: MemoryStore,
    depth: usize,
    in_flight: Mutex<Vec<RunId>>,
    now: AtomicUsize,
    most: AtomicUsize,
    rng: AtomicU64,
    shared_a_run: AtomicUsize,
    by_task: Mutex<HashMap<Option<tokio::task::Id>, usize>>,
    panics: AtomicUsize,
}

impl Jitter {
    fn new(depth: usize) -> Self {
        Self {
            inner: MemoryStore::new(),
            depth,
            in_flight: Mutex::default(),
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            shared_a_run: AtomicUsize::new(0),
            by_task: Mutex::default(),
            panics: AtomicUsize::new(0),
        }
    }

    /// splitmix64: deterministic, no dependency.
    fn random(&self) -> u64 {
        let mut x = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

impl Store for Jitter {
    fn commits_in_flight(&self) -> usize {
        self.depth
    }
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        Box::pin(async move {
            let panic = self
                .panics
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            assert!(!panic, "the store panics");
            let runs: Vec<RunId> = batch.iter().map(|w| w.run().clone()).collect();
            {
                let mut in_flight = self.in_flight.lock().unwrap();
                if runs.iter().any(|r| in_flight.contains(r)) {
                    self.shared_a_run.fetch_add(1, Ordering::SeqCst);
                }
                in_flight.extend(runs.iter().cloned());
            }
            *self
                .by_task
                .lock()
                .unwrap()
                .entry(tokio::task::try_id())
                .or_default() += 1;
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            match self.random() % 4 {
                0 => tokio::time::sleep(Duration::from_micros(200)).await,
                1 => tokio::task::yield_now().await,
                _ => {}
            }
            let outcome = self.inner.commit(batch).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            let mut in_flight = self.in_flight.lock().unwrap();
            for run in &runs {
                let i = in_flight.iter().position(|r| r == run).unwrap();
                in_flight.swap_remove(i);
            }
            outcome
        })
    }
    crate::store::forward_store_reads!(inner);
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn writer_over(store: &Arc<Jitter>, runs: &[String]) -> Writer {
    let creates: Vec<Write> = runs.iter().map(|r| create(r)).collect();
    let committed = futures_now(store.inner.commit(&creates));
    assert!(committed.iter().all(Result::is_ok));
    let weak: Weak<dyn Store> = Arc::downgrade(&(Arc::clone(store) as Arc<dyn Store>));
    Writer::spawn(weak, Duration::from_secs(5))
}

/// The memory store answers at once: its commit future is ready when first polled.
fn futures_now<T>(mut future: BoxFuture<'_, Result<T, StoreError>>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("the memory store's commit waited"),
    }
}

/// `runs` runs of `branches` branches each making `writes` writes; returns the commits the
/// branches' own tasks made, and all commits.
fn stress(depth: usize, runs: usize, branches: usize, writes: usize) -> (usize, usize) {
    multi_thread().block_on(async {
        let store = Arc::new(Jitter::new(depth));
        let names: Vec<String> = (0..runs).map(|r| format!("r{r}")).collect();
        let writer = writer_over(&store, &names);
        let mut tasks = tokio::task::JoinSet::new();
        let mut branch_tasks = std::collections::HashSet::new();
        for (r, run) in names.iter().enumerate() {
            let numbering = Arc::new(Mutex::new(0u64));
            for b in 0..branches {
                let (writer, numbering, run) =
                    (writer.clone(), Arc::clone(&numbering), run.clone());
                let task = tasks.spawn(async move {
                    for i in 0..writes {
                        let ack = {
                            let mut last = numbering.lock().unwrap();
                            *last += 1;
                            writer.submit(append(&run, *last, None))
                        };
                        if (i + b + r) % 17 == 5 {
                            // Abandoned after one poll, as a cancelled branch's write is.
                            let _ = tokio::time::timeout(Duration::from_micros(1), ack).await;
                            continue;
                        }
                        match tokio::time::timeout(Duration::from_secs(10), ack).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => panic!("{run}: a write failed: {e:?}"),
                            Err(_) => panic!("{run}: no acknowledgement within 10 s"),
                        }
                        if i % 3 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
                branch_tasks.insert(task.id());
            }
        }
        while let Some(task) = tasks.join_next().await {
            task.unwrap();
        }
        // The abandoned writes finish in tasks of their own.
        let want: Vec<u64> = (1..=(branches * writes) as u64).collect();
        for run in &names {
            let mut seqs = Vec::new();
            for _ in 0..200 {
                let journal = store
                    .inner
                    .load_journal(&run.as_str().into())
                    .await
                    .unwrap();
                seqs = journal.iter().map(|e| e.seq).collect();
                if seqs == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(seqs, want, "{run}'s journal");
        }
        assert_eq!(store.shared_a_run.load(Ordering::SeqCst), 0);
        let most = store.most.load(Ordering::SeqCst);
        assert!(most <= depth, "{most} commits at once, depth {depth}");
        let by_task = store.by_task.lock().unwrap();
        let own = by_task
            .iter()
            .filter(|(task, _)| task.is_some_and(|t| branch_tasks.contains(&t)))
            .map(|(_, n)| n)
            .sum();
        (own, by_task.values().sum())
    })
}

#[test]
fn many_runs_and_branches_keep_order_and_depth_one_batch_at_a_time() {
    for _ in 0..10 {
        stress(1, 4, 3, 60);
    }
}

#[test]
fn many_runs_and_branches_keep_order_and_depth_two_batches_at_once() {
    for _ in 0..10 {
        stress(2, 4, 3, 60);
    }
}

/// A lone run making one write after another (as a sequence of steps does): its own task
/// commits nearly every write; only a write made while its abandoned one still commits goes to
/// the writer.
#[test]
fn a_lone_run_commits_its_writes_in_its_own_task() {
    let (mut own, mut all) = (0, 0);
    for _ in 0..10 {
        let (by_branch, total) = stress(1, 1, 1, 200);
        own += by_branch;
        all += total;
    }
    assert!(
        own * 10 >= all * 9,
        "only {own} of {all} commits made by the run's own task"
    );
}

/// A write submitted outside any runtime and dropped unpolled gives the lane back: the
/// writer goes on (it waited for it).
#[test]
fn an_own_commit_dropped_unpolled_outside_a_runtime_gives_the_lane_back() {
    let runtime = multi_thread();
    let store = Arc::new(Jitter::new(1));
    let writer = runtime.block_on(async { writer_over(&store, &["a".into(), "b".into()]) });
    drop(writer.submit(append("a", 1, None)));
    let b1 = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), writer.submit(append("b", 1, None))).await
    });
    assert!(matches!(b1, Ok(Ok(()))), "{b1:?}");
}

/// A store that panics in a run task's own commit: the panic reaches that task, the lane is
/// given back, and the run's write can be made again.
#[test]
fn a_panicking_own_commit_gives_the_lane_back() {
    multi_thread().block_on(async {
        let store = Arc::new(Jitter::new(1));
        let writer = writer_over(&store, &["a".into()]);
        store.panics.store(1, Ordering::SeqCst);
        let first = tokio::spawn(writer.submit(append("a", 1, None))).await;
        assert!(first.unwrap_err().is_panic());
        let again =
            tokio::time::timeout(Duration::from_secs(2), writer.submit(append("a", 1, None)));
        assert!(matches!(again.await, Ok(Ok(()))));
        assert_eq!(
            store.inner.load_journal(&"a".into()).await.unwrap().len(),
            1
        );
    });
}
