//! The tasks a run's walk spawns (the children of its concurrent blocks, the operations of its
//! steps' fan-outs), counted so that whatever cancels them can wait until they are gone.
//!
//! Cancelling a tokio task (aborting it, or dropping its `JoinSet`) only asks: its future is
//! dropped the next time the runtime gets to it, maybe on another thread, maybe after the run's
//! end was committed and its waiters told, so a step's code could still run then. Here every
//! spawned future belongs to a [`Tasks`] group and is counted in it, and in every group around
//! it, until its future (and so everything it held: a step attempt, its drop guards, the
//! groups of its own blocks) has been dropped. A run has a root group; a concurrent block
//! makes a group inside the group of the task that runs it, so waiting for the block's group
//! waits for its nested blocks' tasks too, and waiting for the root waits for all.
//!
//! Invariants: a group's count is the number of its tasks (its nested groups' included) whose
//! future was not dropped yet; [`Tasks::idle`] returns only when it is zero.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

tokio::task_local! {
    /// The group of the spawned task being polled.
    static CURRENT: Arc<Tasks>;
}

/// A group of spawned tasks: a run's, or a concurrent block's.
#[derive(Default)]
pub(crate) struct Tasks {
    /// Tasks of this group (nested groups' included) whose future was not dropped yet.
    live: AtomicUsize,
    /// Told when `live` falls to zero.
    idle: Notify,
    /// The group around this one.
    parent: Option<Arc<Tasks>>,
}

impl Tasks {
    /// A run's group.
    pub(crate) fn root() -> Arc<Self> {
        Arc::default()
    }

    /// A group inside the group of the spawned task being polled, or inside `root` when none
    /// is (the run's own task).
    pub(crate) fn nested(root: &Arc<Tasks>) -> Arc<Self> {
        let parent = Self::current().unwrap_or_else(|| Arc::clone(root));
        Arc::new(Self {
            parent: Some(parent),
            ..Self::default()
        })
    }

    /// The group of the spawned task being polled, if a group's task is.
    pub(crate) fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// `fut` as a task of this group, to spawn: counted from now until it is dropped, and
    /// polled with this group as the current one (its own blocks' groups nest in it).
    pub(crate) fn task<F: Future>(self: &Arc<Self>, fut: F) -> impl Future<Output = F::Output> {
        let live = self.enter();
        CURRENT.scope(Arc::clone(self), async move {
            // Declared before the awaited future, so dropped after it: when the count falls,
            // that future is gone.
            let _live = live;
            fut.await
        })
    }

    fn enter(self: &Arc<Self>) -> Live {
        let mut group = Some(self);
        while let Some(g) = group {
            g.live.fetch_add(1, Ordering::SeqCst);
            group = g.parent.as_ref();
        }
        Live(Arc::clone(self))
    }

    /// Returns once every task of this group (and of its nested groups) has been dropped.
    pub(crate) async fn idle(&self) {
        loop {
            let told = self.idle.notified();
            tokio::pin!(told);
            // Listen before looking, so a fall to zero in between is not missed.
            told.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            told.await;
        }
    }
}

/// One task's place in its group and the groups around it, given up when dropped.
struct Live(Arc<Tasks>);

impl Drop for Live {
    fn drop(&mut self) {
        let mut group = Some(&self.0);
        while let Some(g) = group {
            if g.live.fetch_sub(1, Ordering::SeqCst) == 1 {
                g.idle.notify_waiters();
            }
            group = g.parent.as_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Records, when dropped, whether its group still counted it.
    struct Probe(Arc<Tasks>, Arc<AtomicBool>);

    impl Drop for Probe {
        fn drop(&mut self) {
            let counted = self.0.live.load(Ordering::SeqCst) > 0;
            self.1.store(counted, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_task_is_counted_until_its_future_was_dropped() {
        let root = Tasks::root();
        let block = Tasks::nested(&root);
        let counted_at_drop = Arc::new(AtomicBool::new(false));
        let probe = Probe(Arc::clone(&root), Arc::clone(&counted_at_drop));
        let task = block.task(async move {
            let _probe = probe;
            std::future::pending::<()>().await
        });
        let mut task = Box::pin(task);
        // Started (suspended inside), then dropped, as an aborted task is.
        assert!(futures_poll_once(task.as_mut()).await.is_none());
        assert_eq!(root.live.load(Ordering::SeqCst), 1);
        drop(task);
        assert!(
            counted_at_drop.load(Ordering::SeqCst),
            "counted while it was dropped"
        );
        assert_eq!(block.live.load(Ordering::SeqCst), 0);
        root.idle().await;
    }

    #[tokio::test]
    async fn idle_waits_for_nested_groups_of_aborted_tasks() {
        let root = Tasks::root();
        let outer = Tasks::nested(&root);
        let inner_started = Arc::new(Notify::new());
        let started = Arc::clone(&inner_started);
        let mut set = tokio::task::JoinSet::new();
        let task = outer.task(async move {
            // A block inside the task: its group nests in the task's.
            let inner = Tasks::nested(&Tasks::root());
            assert!(Arc::ptr_eq(
                inner.parent.as_ref().unwrap(),
                &Tasks::current().unwrap()
            ));
            let mut nested = tokio::task::JoinSet::new();
            nested.spawn(inner.task(std::future::pending::<()>()));
            started.notify_one();
            std::future::pending::<()>().await
        });
        set.spawn(task);
        inner_started.notified().await;
        assert_eq!(root.live.load(Ordering::SeqCst), 2);
        // Dropping the set only asks the tasks to stop; idle waits until they have.
        drop(set);
        tokio::time::timeout(std::time::Duration::from_secs(10), root.idle())
            .await
            .expect("the aborted tasks were dropped");
        assert_eq!(outer.live.load(Ordering::SeqCst), 0);
    }

    /// Polls `fut` once: its output if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
