//! The contract every [`Store`] backend keeps, as a suite any backend can run: atomic batches
//! with a verdict per write, journal sequence numbers (see the [`Store`] docs: consecutive
//! from 1, a duplicate refused as [`Rejected::DuplicateEntry`], a gap or a wrong order as
//! [`Rejected::OutOfOrder`]), fencing by lease token, closed journals, claims, leases and
//! listing.
//!
//! # Running it on a backend
//!
//! A backend's test file instantiates the suite with [`store_conformance!`](crate::store_conformance),
//! giving a module name and a factory: a closure (or async fn) that returns a future of a
//! **fresh, empty** store (no runs at all: the checks use fixed run ids such as `r1`), as
//! anything [`FreshStore`]: an `Arc<dyn Store>`, a [`TestStore`] (kept until the check ends,
//! so its `Drop` can clean up), or an `Option` of one, `None` skipping the check where the
//! backend is not available. The future is awaited inside the test's tokio runtime
//! (multi-threaded, two workers), so a backend that connects asynchronously connects there;
//! each check gets its own runtime and its own store.
//!
//! ```
//! // tests/tests/store_conformance_mine.rs
//! use std::sync::Arc;
//! use durable::store::memory::MemoryStore;
//! use durable::Store;
//!
//! // `MemoryStore::new()` stands for the backend's own constructor.
//! durable_tests::store_conformance!(mine, || async {
//!     Arc::new(MemoryStore::new()) as Arc<dyn Store>
//! });
//! # fn main() {}
//! ```
//!
//! That defines one `#[test]` per check, named `mine::<check>`. Attributes before the name go
//! on every test, e.g. `store_conformance!(#[ignore = "needs a database"] mine, ...)`. The
//! checks are the public functions of this module; each takes the factory and panics with what
//! the backend got wrong. A new check is a function here plus its name in the list of
//! [`store_conformance!`](crate::store_conformance).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use durable::store::{
    EntryKind, Finish, JournalEntry, NewRun, Rejected, RunFilter, RunRecord, RunStatus, Store,
    Write,
};
use durable::RunId;

use crate::{in_runtime, TestStore};

mod behind;
mod children;
mod claims;
mod inbox;
pub use behind::*;
pub use children::*;
pub use claims::*;
pub use inbox::*;

/// Defines one `#[test]` per check of the [conformance suite](crate::conformance) in a module
/// named `$backend`, each on a fresh store from `$fresh` (a closure returning a future of an
/// `Arc<dyn Store>`). Attributes written before the name apply to every test.
///
/// ```
/// use durable_tests::{store_conformance, Backend, TestStore};
///
/// store_conformance!(sqlite, || async { TestStore::new(Backend::Sqlite) });
/// // Attributes go on every test of the suite.
/// store_conformance!(#[ignore = "slow"] sqlite_again, || async {
///     TestStore::new(Backend::Sqlite)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($(#[$attr:meta])* $backend:ident, $fresh:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            $crate::__store_conformance_checks! {
                [$(#[$attr])*] $fresh;
                a_batch_gets_one_verdict_per_write,
                journal_entries_keep_their_order_and_never_repeat,
                sequence_numbers_start_at_one_and_leave_no_gap,
                a_duplicate_sequence_number_is_refused_and_leaves_nothing_behind,
                appends_in_one_batch_apply_in_order,
                the_lease_and_the_finish_are_checked_before_the_sequence,
                a_write_committed_alone_gets_the_verdict_it_gets_in_a_batch,
                a_stale_lease_token_is_fenced_off,
                a_finished_run_is_closed,
                claims_skip_runs_the_claimer_holds_and_leases_renew,
                listing_filters_and_orders_newest_first,
                claims_take_at_most_the_limit_oldest_first,
                a_queued_run_has_no_owner_and_any_worker_claims_it,
                // Issue 9, suspension, wake, cancel, reopen (branch `timers`).
                suspended_runs_are_claimed_once_due_and_the_next_wake_is_known,
                a_wake_is_conditional_and_makes_the_run_claimable,
                a_cancel_request_is_kept_wakes_a_sleeper_and_refuses_finished_runs,
                a_suspension_after_a_cancel_request_leaves_the_run_claimable,
                a_failed_run_reopens_with_one_more_entry,
                inbox_messages_are_numbered_per_run_and_refused_for_unknown_or_finished_runs,
                a_message_wakes_a_suspended_run,
                a_callback_token_is_taken_once,
                // Issue 18: no run sleeps through a message that reached its inbox.
                a_suspension_after_a_message_it_did_not_see_leaves_the_run_claimable,
            }
        }
    };
}

/// The checks of child runs (a parent link, a child's end delivered to its parent's inbox in
/// the same commit, cancel cascades), for a backend that supports `call`: instantiated like
/// [`store_conformance!`] under another module name.
#[macro_export]
macro_rules! store_conformance_children {
    ($(#[$attr:meta])* $backend:ident, $fresh:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            $crate::__store_conformance_checks! {
                [$(#[$attr])*] $fresh;
                a_child_s_end_reaches_its_parent_s_inbox_in_the_same_commit,
                a_cancel_request_cascades_to_unfinished_children,
            }
        }
    };
}

/// The checks of what a stored database can hold that the `Store` API never writes (a run an
/// earlier version of durable left suspended through a message, an inbox row edited by hand),
/// for a backend whose data outlives the process: the factory returns something that is
/// both a [`FreshStore`] and a [`Backdoor`](crate::Backdoor) to its tables (a
/// [`TestStore`] is, for SQLite and PostgreSQL). Instantiated like [`store_conformance!`].
///
/// ```
/// use durable_tests::{store_conformance_behind_its_back, Backend, TestStore};
///
/// store_conformance_behind_its_back!(sqlite, || async { TestStore::new(Backend::Sqlite) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_behind_its_back {
    ($(#[$attr:meta])* $backend:ident, $fresh:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            $crate::__store_conformance_checks! {
                [$(#[$attr])*] $fresh;
                a_run_that_slept_through_a_message_is_claimed,
                an_inbox_message_changed_behind_the_store_s_back_is_refused,
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_checks {
    ([$($attr:tt)*] $fresh:expr; $check:ident, $($rest:ident,)*) => {
        #[test]
        $($attr)*
        fn $check() {
            $crate::conformance::$check($fresh);
        }

        $crate::__store_conformance_checks! { [$($attr)*] $fresh; $($rest,)* }
    };
    ([$($attr:tt)*] $fresh:expr;) => {};
}

/// What a factory of [`store_conformance!`](crate::store_conformance) returns: a fresh,
/// empty store, or something that holds one (and may clean it up when dropped, after the
/// check), or nothing, to skip the check where the backend is not available.
pub trait FreshStore {
    /// The store to check; `None` skips the check.
    fn store(&self) -> Option<Arc<dyn Store>>;
}

impl FreshStore for Arc<dyn Store> {
    fn store(&self) -> Option<Arc<dyn Store>> {
        Some(Arc::clone(self))
    }
}

/// The test store's backend, opened once; dropped (and cleaned up) after the check.
impl FreshStore for TestStore {
    fn store(&self) -> Option<Arc<dyn Store>> {
        Some(self.open())
    }
}

/// `None` skips the check (say why on stderr when making it).
impl<T: FreshStore> FreshStore for Option<T> {
    fn store(&self) -> Option<Arc<dyn Store>> {
        self.as_ref().and_then(FreshStore::store)
    }
}

/// Runs `check` on a fresh store from `fresh`, in a runtime of its own.
fn with_store<F, Fut, C, CFut>(fresh: F, check: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
    C: FnOnce(Arc<dyn Store>) -> CFut,
    CFut: Future<Output = ()>,
{
    in_runtime(async move {
        let fresh = fresh().await;
        let Some(store) = fresh.store() else {
            return;
        };
        check(store).await;
        // Whatever holds the store is dropped after the check, inside the runtime.
        drop(fresh);
    });
}

fn new_run(id: &str, workflow: &str, owner: &str) -> Write {
    Write::CreateRun(NewRun {
        id: RunId::from(id),
        workflow: workflow.into(),
        fingerprint: "f1".into(),
        input: r#"{"n":1}"#.into(),
        owner: owner.into(),
        lease_expires_at: u64::MAX / 2,
        parent: None,
    })
}

fn entry(seq: u64, step: &str) -> JournalEntry {
    JournalEntry {
        seq,
        step: step.into(),
        kind: EntryKind::StepCompleted,
        attempt: 1,
        payload: format!(r#"{{"step":"{step}"}}"#),
        at: 1000 + seq,
    }
}

fn entries(seqs: &[u64]) -> Vec<JournalEntry> {
    seqs.iter()
        .map(|&seq| entry(seq, &format!("s{seq}")))
        .collect()
}

fn append(run: &str, token: u64, entries: Vec<JournalEntry>, finish: Option<Finish>) -> Write {
    Write::Append {
        run: RunId::from(run),
        lease_token: token,
        entries,
        finish,
    }
}

async fn commit(store: &Arc<dyn Store>, batch: Vec<Write>) -> Vec<Result<(), Rejected>> {
    store.commit(&batch).await.expect("the store works")
}

/// The sequence numbers of a run's journal.
async fn seqs(store: &Arc<dyn Store>, run: &str) -> Vec<u64> {
    let journal = store.load_journal(&run.into()).await.unwrap();
    journal.into_iter().map(|e| e.seq).collect()
}

fn ids(runs: Vec<RunRecord>) -> Vec<String> {
    runs.into_iter().map(|r| r.id.to_string()).collect()
}

/// A batch gets one verdict per write; refused writes do not stop the others.
pub fn a_batch_gets_one_verdict_per_write<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        let verdicts = commit(
            &store,
            vec![
                new_run("r1", "wf", "w1"),
                new_run("r1", "wf", "w1"),
                append("r1", 1, vec![entry(1, "a")], None),
                append("ghost", 1, vec![entry(1, "a")], None),
            ],
        )
        .await;
        assert_eq!(
            verdicts,
            [
                Ok(()),
                Err(Rejected::DuplicateRun),
                Ok(()),
                Err(Rejected::UnknownRun)
            ]
        );
        let run = store.load_run(&"r1".into()).await.unwrap().unwrap();
        assert_eq!(
            (
                run.status,
                run.lease_token,
                run.workflow.as_str(),
                run.input.as_str()
            ),
            (RunStatus::Running, 1, "wf", r#"{"n":1}"#)
        );
        assert_eq!(
            store.load_journal(&"r1".into()).await.unwrap(),
            [entry(1, "a")]
        );
        assert_eq!(store.load_run(&"ghost".into()).await.unwrap(), None);
    });
}

/// Entries keep their order; a write repeating a committed number is refused whole.
pub fn journal_entries_keep_their_order_and_never_repeat<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(&store, vec![new_run("r", "wf", "w")]).await;
        let verdicts = commit(
            &store,
            vec![
                append("r", 1, vec![entry(1, "a"), entry(2, "b")], None),
                append("r", 1, vec![entry(3, "c")], None),
                append("r", 1, vec![entry(4, "d"), entry(2, "again")], None),
            ],
        )
        .await;
        assert_eq!(
            verdicts,
            [Ok(()), Ok(()), Err(Rejected::DuplicateEntry { seq: 2 })]
        );
        // The refused write left nothing behind, not even its first entry.
        let steps: Vec<_> = store
            .load_journal(&"r".into())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.step))
            .collect();
        assert_eq!(steps, [(1, "a".into()), (2, "b".into()), (3, "c".into())]);
    });
}

/// A journal starts at 1 and goes on without a gap: any other number is out of order, and
/// the refused write leaves nothing behind.
pub fn sequence_numbers_start_at_one_and_leave_no_gap<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(&store, vec![new_run("r", "wf", "w")]).await;
        let out_of_order = |expected, got| Err(Rejected::OutOfOrder { expected, got });
        // An empty journal starts at 1: not at 2, not at 0.
        let verdicts = commit(
            &store,
            vec![
                append("r", 1, entries(&[2]), None),
                append("r", 1, entries(&[0]), None),
                // Consecutive within the write too: 1 then 3 leaves out 2.
                append("r", 1, entries(&[1, 3]), None),
                // Backwards within the write.
                append("r", 1, entries(&[1, 2, 1]), None),
            ],
        )
        .await;
        assert_eq!(
            verdicts,
            [
                out_of_order(1, 2),
                out_of_order(1, 0),
                out_of_order(2, 3),
                out_of_order(3, 1)
            ],
            "every write of this batch numbers the journal wrongly"
        );
        assert_eq!(
            seqs(&store, "r").await,
            [0u64; 0],
            "a refused write leaves none of its entries behind"
        );
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[1, 2]), None)]).await,
            [Ok(())]
        );
        // After 2 comes 3: 4 leaves a gap, and so does a far jump.
        let verdicts = commit(
            &store,
            vec![
                append("r", 1, entries(&[4]), None),
                append("r", 1, entries(&[1000, 1001]), None),
            ],
        )
        .await;
        assert_eq!(verdicts, [out_of_order(3, 4), out_of_order(3, 1000)]);
        // A refused write that would have finished the run does not finish it.
        assert_eq!(
            commit(
                &store,
                vec![append(
                    "r",
                    1,
                    entries(&[5]),
                    Some(Finish::Completed("{}".into()))
                )]
            )
            .await,
            [out_of_order(3, 5)]
        );
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!((run.status, run.output), (RunStatus::Running, None));
        assert_eq!(seqs(&store, "r").await, [1, 2]);
        // The journal goes on from where it is.
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[3]), None)]).await,
            [Ok(())]
        );
        assert_eq!(seqs(&store, "r").await, [1, 2, 3]);
    });
}

/// A number the journal holds already is a duplicate (which the journal writer reads, after
/// a failed commit it retried, as "the first try committed"); the refused write leaves
/// nothing behind, not even its end.
pub fn a_duplicate_sequence_number_is_refused_and_leaves_nothing_behind<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(&store, vec![new_run("r", "wf", "w")]).await;
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[1, 2]), None)]).await,
            [Ok(())]
        );
        let duplicate = |seq| Err(Rejected::DuplicateEntry { seq });
        let verdicts = commit(
            &store,
            vec![
                // The same write again, as a retry of a commit that did go through sends it.
                append("r", 1, entries(&[1, 2]), None),
                append("r", 1, entries(&[2]), None),
                append(
                    "r",
                    1,
                    entries(&[2, 3]),
                    Some(Finish::Failed("boom".into())),
                ),
            ],
        )
        .await;
        assert_eq!(verdicts, [duplicate(1), duplicate(2), duplicate(2)]);
        let journal = store.load_journal(&"r".into()).await.unwrap();
        assert_eq!(journal, entries(&[1, 2]), "the journal is as it was");
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!((run.status, run.error), (RunStatus::Running, None));
        // A number repeated inside one write is out of order, not a duplicate: it is not
        // in the journal.
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[3, 3]), None)]).await,
            [Err(Rejected::OutOfOrder {
                expected: 4,
                got: 3
            })]
        );
        assert_eq!(seqs(&store, "r").await, [1, 2]);
    });
}

/// The writes of one batch apply in order, so one batch may carry several appends to a run,
/// each going on from the one before; a refused one does not move the journal on.
pub fn appends_in_one_batch_apply_in_order<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        let verdicts = commit(
            &store,
            vec![
                new_run("r", "wf", "w"),
                append("r", 1, entries(&[1]), None),
                append("r", 1, entries(&[2, 3]), None),
                append("r", 1, entries(&[3]), None),
                append("r", 1, entries(&[5]), None),
                append("r", 1, entries(&[4]), Some(Finish::Completed("{}".into()))),
            ],
        )
        .await;
        assert_eq!(
            verdicts,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err(Rejected::DuplicateEntry { seq: 3 }),
                Err(Rejected::OutOfOrder {
                    expected: 4,
                    got: 5
                }),
                Ok(())
            ]
        );
        assert_eq!(seqs(&store, "r").await, [1, 2, 3, 4]);
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed);
    });
}

/// Two runs held by `w` under lease token 1: `r`, running, its journal `r_seqs`, and `done`,
/// completed after one entry.
async fn running_and_done(store: &Arc<dyn Store>, r_seqs: &[u64]) {
    commit(
        store,
        vec![new_run("r", "wf", "w"), new_run("done", "wf", "w")],
    )
    .await;
    let mut writes = vec![append(
        "done",
        1,
        entries(&[1]),
        Some(Finish::Completed("{}".into())),
    )];
    if !r_seqs.is_empty() {
        writes.push(append("r", 1, entries(r_seqs), None));
    }
    let n = writes.len();
    assert_eq!(commit(store, writes).await, vec![Ok(()); n]);
}

/// The run, its lease and its end are checked before the sequence numbers: a zombie writer
/// is told it was fenced off, whatever numbers it sends.
pub fn the_lease_and_the_finish_are_checked_before_the_sequence<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        running_and_done(&store, &[]).await;
        let verdicts = commit(
            &store,
            vec![
                append("r", 7, entries(&[5]), None),
                append("r", 7, entries(&[1]), None),
                append("done", 1, entries(&[1]), None),
                append("done", 1, entries(&[2]), None),
                append("ghost", 1, entries(&[9]), None),
            ],
        )
        .await;
        assert_eq!(
            verdicts,
            [
                Err(Rejected::Fenced { current: 1 }),
                Err(Rejected::Fenced { current: 1 }),
                Err(Rejected::Finished),
                Err(Rejected::Finished),
                Err(Rejected::UnknownRun)
            ]
        );
        assert_eq!(seqs(&store, "r").await, [0u64; 0]);
        assert_eq!(seqs(&store, "done").await, [1]);
    });
}

/// A batch of one write is the common case (a lone run's step) and a backend may commit it
/// by another path than a batch of many (the PostgreSQL store does): every verdict holds
/// there too, and a refused write leaves nothing behind.
pub fn a_write_committed_alone_gets_the_verdict_it_gets_in_a_batch<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        running_and_done(&store, &[1, 2]).await;
        let out_of_order = |expected, got| Err(Rejected::OutOfOrder { expected, got });
        let done = || Finish::Completed(r#"{"n":6}"#.into());
        let cases = [
            (
                append("ghost", 1, entries(&[1]), None),
                Err(Rejected::UnknownRun),
            ),
            (
                append("r", 7, entries(&[3]), None),
                Err(Rejected::Fenced { current: 1 }),
            ),
            (
                append("done", 1, entries(&[2]), None),
                Err(Rejected::Finished),
            ),
            (
                append("r", 1, entries(&[2]), None),
                Err(Rejected::DuplicateEntry { seq: 2 }),
            ),
            (
                append("r", 1, entries(&[1]), None),
                Err(Rejected::DuplicateEntry { seq: 1 }),
            ),
            (
                append("r", 1, entries(&[1, 2]), None),
                Err(Rejected::DuplicateEntry { seq: 1 }),
            ),
            (append("r", 1, entries(&[4]), None), out_of_order(3, 4)),
            (append("r", 1, entries(&[0]), None), out_of_order(3, 0)),
            (append("r", 1, entries(&[3, 5]), None), out_of_order(4, 5)),
            (append("r", 1, entries(&[3, 3]), None), out_of_order(4, 3)),
            // The same refusals when the one entry would also end the run.
            (
                append("r", 7, entries(&[3]), Some(done())),
                Err(Rejected::Fenced { current: 1 }),
            ),
            (
                append("done", 1, entries(&[2]), Some(done())),
                Err(Rejected::Finished),
            ),
            (
                append("r", 1, entries(&[2]), Some(done())),
                Err(Rejected::DuplicateEntry { seq: 2 }),
            ),
            (
                append("r", 1, entries(&[4]), Some(done())),
                out_of_order(3, 4),
            ),
        ];
        for (write, expected) in cases {
            let what = format!("{write:?}");
            assert_eq!(commit(&store, vec![write]).await, [expected], "{what}");
        }
        assert_eq!(
            seqs(&store, "r").await,
            [1, 2],
            "a refused write wrote nothing"
        );
        assert_eq!(seqs(&store, "done").await, [1]);
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[3]), None)]).await,
            [Ok(())]
        );
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[4, 5]), None)]).await,
            [Ok(())]
        );
        assert_eq!(seqs(&store, "r").await, [1, 2, 3, 4, 5]);
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(
            commit(&store, vec![append("r", 1, entries(&[6]), Some(done()))]).await,
            [Ok(())]
        );
        assert_eq!(seqs(&store, "r").await, [1, 2, 3, 4, 5, 6]);
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.output.as_deref(), Some(r#"{"n":6}"#));
    });
}

/// A worker whose lease was taken over cannot write any more.
pub fn a_stale_lease_token_is_fenced_off<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(&store, vec![new_run("r", "wf", "old")]).await;
        // The old owner's lease is released (it stopped); a new worker claims the run.
        store.release_leases("old").await.unwrap();
        let claimed = store
            .claim_runs(durable::store::Claim::new("new", Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].lease_token, claimed[0].owner.as_deref()),
            (2, Some("new"))
        );
        let verdicts = commit(
            &store,
            vec![
                append("r", 1, vec![entry(1, "zombie")], None),
                append("r", 2, vec![entry(1, "a")], None),
            ],
        )
        .await;
        assert_eq!(verdicts, [Err(Rejected::Fenced { current: 2 }), Ok(())]);
        assert_eq!(
            store.load_journal(&"r".into()).await.unwrap(),
            [entry(1, "a")]
        );
    });
}

/// A finished run keeps its output or error, takes no more entries and is never claimed.
pub fn a_finished_run_is_closed<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![new_run("ok", "wf", "w"), new_run("bad", "wf", "w")],
        )
        .await;
        let verdicts = commit(
            &store,
            vec![
                append(
                    "ok",
                    1,
                    vec![entry(1, "a")],
                    Some(Finish::Completed(r#"{"done":true}"#.into())),
                ),
                append("bad", 1, vec![], Some(Finish::Failed("boom".into()))),
            ],
        )
        .await;
        assert_eq!(verdicts, [Ok(()), Ok(())]);
        let ok = store.load_run(&"ok".into()).await.unwrap().unwrap();
        assert_eq!(
            (ok.status, ok.output.as_deref()),
            (RunStatus::Completed, Some(r#"{"done":true}"#))
        );
        let bad = store.load_run(&"bad".into()).await.unwrap().unwrap();
        assert_eq!(
            (bad.status, bad.error.as_deref()),
            (RunStatus::Failed, Some("boom"))
        );
        assert_eq!(
            commit(&store, vec![append("ok", 1, vec![entry(2, "late")], None)]).await,
            [Err(Rejected::Finished)]
        );
        // Finished runs are never claimed.
        store.release_leases("w").await.unwrap();
        assert!(store
            .claim_runs(durable::store::Claim::new("other", Duration::from_secs(30)))
            .await
            .unwrap()
            .is_empty());
    });
}

/// Claims take released leases and skip the claimer's own runs; renewals count what is held.
pub fn claims_skip_runs_the_claimer_holds_and_leases_renew<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![new_run("a", "wf", "me"), new_run("b", "wf", "me")],
        )
        .await;
        assert!(
            store
                .claim_runs(durable::store::Claim::new("me", Duration::from_secs(30)))
                .await
                .unwrap()
                .is_empty(),
            "a worker never re-claims its own runs"
        );
        assert_eq!(
            store
                .renew_leases("me", Duration::from_secs(30))
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .renew_leases("nobody", Duration::from_secs(30))
                .await
                .unwrap(),
            0
        );
        store.release_leases("me").await.unwrap();
        let claimed: Vec<_> = store
            .claim_runs(durable::store::Claim::new("you", Duration::from_secs(30)))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id.to_string(), r.lease_token))
            .collect();
        assert_eq!(claimed, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
    });
}

/// Listing is newest first, filtered by workflow and status, and limited.
pub fn listing_filters_and_orders_newest_first<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        for (id, wf) in [("1", "x"), ("2", "y"), ("3", "x")] {
            commit(&store, vec![new_run(id, wf, "w")]).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        commit(
            &store,
            vec![append("3", 1, vec![], Some(Finish::Completed("{}".into())))],
        )
        .await;
        assert_eq!(
            ids(store.list_runs(RunFilter::default()).await.unwrap()),
            ["3", "2", "1"]
        );
        let x = RunFilter {
            workflow: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(ids(store.list_runs(x).await.unwrap()), ["3", "1"]);
        let running_x = RunFilter {
            workflow: Some("x".into()),
            status: Some(RunStatus::Running),
            limit: None,
            after: None,
        };
        assert_eq!(ids(store.list_runs(running_x).await.unwrap()), ["1"]);
        let one = RunFilter {
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(ids(store.list_runs(one).await.unwrap()), ["3"]);
    });
}

/// Milliseconds since the Unix epoch, as the stores stamp them.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn suspend(run: &str, token: u64, wake_at: Option<u64>) -> Write {
    append(
        run,
        token,
        Vec::new(),
        Some(Finish::Suspended {
            wake_at,
            inbox_seen: None,
        }),
    )
}

/// A suspended run has no owner and takes no append; a claim takes it once its `wake_at`
/// passed (running again, its `wake_at` cleared), never before, and never one that waits for
/// an event only; `next_wake_at` is the earliest due time of the suspended runs.
pub fn suspended_runs_are_claimed_once_due_and_the_next_wake_is_known<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        assert_eq!(store.next_wake_at().await.unwrap(), None);
        let later = now_ms() + 3_600_000;
        let past = now_ms() - 1_000;
        for id in ["due", "later", "event"] {
            commit(&store, vec![new_run(id, "wf", "w1")]).await;
        }
        let verdicts = commit(
            &store,
            vec![
                suspend("due", 1, Some(past)),
                suspend("later", 1, Some(later)),
                suspend("event", 1, None),
            ],
        )
        .await;
        assert_eq!(verdicts, [Ok(()), Ok(()), Ok(())]);
        let later_run = store.load_run(&"later".into()).await.unwrap().unwrap();
        assert_eq!(
            (later_run.status, later_run.owner, later_run.wake_at),
            (RunStatus::Suspended, None, Some(later))
        );
        assert_eq!(store.next_wake_at().await.unwrap(), Some(past));
        // Nothing may append to a suspended run.
        assert_eq!(
            commit(&store, vec![append("later", 1, vec![entry(1, "a")], None)]).await,
            [Err(Rejected::Finished)]
        );
        let claimed = store
            .claim_runs(durable::store::Claim::new("w2", Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(ids(claimed.clone()), ["due"]);
        assert_eq!(
            (
                claimed[0].status,
                claimed[0].owner.as_deref(),
                claimed[0].lease_token
            ),
            (RunStatus::Running, Some("w2"), 2)
        );
        let due = store.load_run(&"due".into()).await.unwrap().unwrap();
        assert_eq!((due.status, due.wake_at), (RunStatus::Running, None));
        assert_eq!(store.next_wake_at().await.unwrap(), Some(later));
        // The claimer drives it on.
        assert_eq!(
            commit(&store, vec![append("due", 2, vec![entry(1, "a")], None)]).await,
            [Ok(())]
        );
        let again = store
            .claim_runs(durable::store::Claim::new("w3", Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(
            again.iter().all(|r| r.id.as_str() == "due"),
            "a run not due was claimed: {again:?}"
        );
    });
}

/// `wake` makes a suspended run claimable now, once: it refuses (false) a run that is not
/// suspended, and the watch, if the store has one, reports the woken run.
pub fn a_wake_is_conditional_and_makes_the_run_claimable<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        let later = now_ms() + 3_600_000;
        for id in ["sleeper", "waiter", "busy", "done"] {
            commit(&store, vec![new_run(id, "wf", "w1")]).await;
        }
        commit(
            &store,
            vec![
                suspend("sleeper", 1, Some(later)),
                suspend("waiter", 1, None),
                append("done", 1, Vec::new(), Some(Finish::Completed("{}".into()))),
            ],
        )
        .await;
        let mut watch = store.watch_claimable().unwrap();
        let before = watch.as_mut().map(|w| w.version().unwrap());
        assert!(store.wake(&"sleeper".into()).await.unwrap());
        assert!(!store.wake(&"sleeper".into()).await.unwrap(), "woken twice");
        assert!(!store.wake(&"busy".into()).await.unwrap());
        assert!(!store.wake(&"done".into()).await.unwrap());
        assert!(!store.wake(&"ghost".into()).await.unwrap());
        if let Some(watch) = watch.as_mut() {
            assert_ne!(
                Some(watch.version().unwrap()),
                before,
                "the watch missed a wake"
            );
        }
        let sleeper = store.load_run(&"sleeper".into()).await.unwrap().unwrap();
        assert_eq!(
            (sleeper.status, sleeper.owner, sleeper.wake_at),
            (RunStatus::Running, None, None)
        );
        // Woken, it is no longer due at its old time.
        assert_eq!(store.next_wake_at().await.unwrap(), None);
        assert!(store.wake(&"waiter".into()).await.unwrap());
        let claimed = store
            .claim_runs(durable::store::Claim::new("w1", Duration::from_secs(30)))
            .await
            .unwrap();
        let mut claimed = ids(claimed);
        claimed.sort();
        assert_eq!(claimed, ["sleeper", "waiter"]);
    });
}

/// A suspension that lands after a cancellation was asked for (its worker had not seen the
/// request yet) leaves the run awake and nobody's, the request kept, so that the next claim
/// carries the cancellation out; through a batch of one write and of two. A run without a
/// request suspends as always.
pub fn a_suspension_after_a_cancel_request_leaves_the_run_claimable<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![
                new_run("one", "wf", "w"),
                new_run("two", "wf", "w"),
                new_run("three", "wf", "w"),
            ],
        )
        .await;
        for run in ["one", "two"] {
            let asked = store.request_cancel(&run.into(), "stop").await.unwrap();
            assert_eq!(asked, Ok(()), "{run}");
        }
        let suspend = |run| {
            append(
                run,
                1,
                entries(&[1]),
                Some(Finish::Suspended {
                    wake_at: None,
                    inbox_seen: None,
                }),
            )
        };
        assert_eq!(commit(&store, vec![suspend("one")]).await, [Ok(())]);
        assert_eq!(
            commit(&store, vec![suspend("two"), suspend("three")]).await,
            [Ok(()), Ok(())]
        );
        for run in ["one", "two"] {
            let record = store.load_run(&run.into()).await.unwrap().unwrap();
            assert_eq!(
                (
                    record.status,
                    record.owner.as_deref(),
                    record.cancel_requested.as_deref(),
                    record.wake_at
                ),
                (RunStatus::Running, None, Some("stop"), None),
                "{run}"
            );
        }
        let three = store.load_run(&"three".into()).await.unwrap().unwrap();
        assert_eq!(three.status, RunStatus::Suspended);
        let claimed = store
            .claim_runs(durable::store::Claim::new("v", Duration::from_secs(30)))
            .await
            .unwrap();
        let mut claimed: Vec<(String, Option<String>)> = claimed
            .into_iter()
            .map(|r| (r.id.as_str().to_owned(), r.cancel_requested))
            .collect();
        claimed.sort();
        let stop = Some("stop".to_owned());
        assert_eq!(
            claimed,
            [("one".to_owned(), stop.clone()), ("two".to_owned(), stop)]
        );
    });
}

/// A cancellation request is kept on an unfinished run (the first reason wins), listed for
/// the run's owner, wakes a suspended run, and is refused for an unknown or finished run;
/// finishing the run carries it out.
pub fn a_cancel_request_is_kept_wakes_a_sleeper_and_refuses_finished_runs<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        let later = now_ms() + 3_600_000;
        for id in ["busy", "sleeper", "done"] {
            commit(&store, vec![new_run(id, "wf", "w1")]).await;
        }
        commit(
            &store,
            vec![
                suspend("sleeper", 1, Some(later)),
                append("done", 1, Vec::new(), Some(Finish::Completed("{}".into()))),
            ],
        )
        .await;
        let cancel = |id: &'static str, reason: &'static str| {
            let store = Arc::clone(&store);
            async move {
                store
                    .request_cancel(&id.into(), reason)
                    .await
                    .expect("the store works")
            }
        };
        assert_eq!(cancel("busy", "first").await, Ok(()));
        assert_eq!(cancel("busy", "second").await, Ok(()));
        assert_eq!(
            store.cancel_requests("w1").await.unwrap(),
            [(RunId::from("busy"), "first".to_owned())]
        );
        assert_eq!(store.cancel_requests("w2").await.unwrap(), []);
        let busy = store.load_run(&"busy".into()).await.unwrap().unwrap();
        assert_eq!(
            (busy.status, busy.cancel_requested.as_deref()),
            (RunStatus::Running, Some("first"))
        );
        assert_eq!(cancel("sleeper", "unwanted").await, Ok(()));
        let sleeper = store.load_run(&"sleeper".into()).await.unwrap().unwrap();
        assert_eq!(
            (
                sleeper.status,
                sleeper.owner,
                sleeper.cancel_requested.as_deref()
            ),
            (RunStatus::Running, None, Some("unwanted"))
        );
        assert_eq!(cancel("done", "late").await, Err(Rejected::Finished));
        assert_eq!(cancel("ghost", "who").await, Err(Rejected::UnknownRun));
        let done = store.load_run(&"done".into()).await.unwrap().unwrap();
        assert_eq!(done.cancel_requested, None);
        // The driver ends the run cancelled: the request is carried out.
        commit(
            &store,
            vec![append(
                "busy",
                1,
                Vec::new(),
                Some(Finish::Cancelled("first".into())),
            )],
        )
        .await;
        assert_eq!(store.cancel_requests("w1").await.unwrap(), []);
        assert_eq!(cancel("busy", "again").await, Err(Rejected::Finished));
    });
}

/// `reopen` appends one entry to a failed run and sets it running, unowned, for a claim; it
/// refuses an unknown run, a run that has not failed and a wrongly numbered entry, leaving
/// nothing behind.
pub fn a_failed_run_reopens_with_one_more_entry<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        for id in ["broken", "fine"] {
            commit(&store, vec![new_run(id, "wf", "w1")]).await;
        }
        commit(
            &store,
            vec![append(
                "broken",
                1,
                entries(&[1, 2]),
                Some(Finish::Failed("boom".into())),
            )],
        )
        .await;
        let reopen = |id: &'static str, seq: u64| {
            let store = Arc::clone(&store);
            async move {
                store
                    .reopen(&id.into(), &[entry(seq, "resumed")])
                    .await
                    .expect("the store works")
            }
        };
        assert_eq!(
            reopen("broken", 2).await,
            Err(Rejected::DuplicateEntry { seq: 2 })
        );
        assert_eq!(
            reopen("broken", 4).await,
            Err(Rejected::OutOfOrder {
                expected: 3,
                got: 4
            })
        );
        assert_eq!(reopen("fine", 1).await, Err(Rejected::Finished));
        assert_eq!(reopen("ghost", 1).await, Err(Rejected::UnknownRun));
        let still = store.load_run(&"broken".into()).await.unwrap().unwrap();
        assert_eq!(still.status, RunStatus::Failed);
        assert_eq!(seqs(&store, "broken").await, [1, 2]);
        assert_eq!(reopen("broken", 3).await, Ok(()));
        let run = store.load_run(&"broken".into()).await.unwrap().unwrap();
        assert_eq!(
            (run.status, run.owner, run.error),
            (RunStatus::Running, None, None)
        );
        assert_eq!(seqs(&store, "broken").await, [1, 2, 3]);
        assert_eq!(reopen("broken", 4).await, Err(Rejected::Finished));
        let claimed = store
            .claim_runs(durable::store::Claim::new("w2", Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(ids(claimed).contains(&"broken".to_owned()));
    });
}
