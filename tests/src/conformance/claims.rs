//! The bounded-claim checks of the conformance suite (see `Store::claim_runs`).

use std::future::Future;
use std::time::Duration;

use durable::store::{Claim, Rejected};

use super::{append, commit, entry, ids, new_run, with_store, FreshStore};

/// A claim takes at most its limit, oldest runs first; the rest wait for the next claim.
pub fn claims_take_at_most_the_limit_oldest_first<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        for id in ["a", "b", "c", "d", "e"] {
            commit(&store, vec![new_run(id, "wf", "gone")]).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        store.release_leases("gone").await.unwrap();
        let lease = Duration::from_secs(30);
        let first = store.claim_runs(Claim::new("w1", lease).limit(2)).await;
        assert_eq!(ids(first.unwrap()), ["a", "b"]);
        // The same worker again (on a store one process drives, every lease but the
        // claimer's counts as dead): it never re-claims its own runs.
        let second = store.claim_runs(Claim::new("w1", lease).limit(2)).await;
        assert_eq!(ids(second.unwrap()), ["c", "d"]);
        let none = store.claim_runs(Claim::new("w3", lease).limit(0)).await;
        assert!(none.unwrap().is_empty(), "a claim of 0 runs takes none");
        let rest = store.claim_runs(Claim::new("w1", lease).limit(10)).await;
        assert_eq!(ids(rest.unwrap()), ["e"]);
    });
}

/// A run created with no owner (queued by a client) is claimed by any worker, which fences
/// off the token it was created under.
pub fn a_queued_run_has_no_owner_and_any_worker_claims_it<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(&store, vec![new_run("q", "wf", "")]).await;
        let run = store.load_run(&"q".into()).await.unwrap().unwrap();
        assert_eq!((run.owner, run.lease_token), (None, 1));
        let claimed = store
            .claim_runs(Claim::new("worker", Duration::from_secs(30)))
            .await
            .unwrap();
        let claimed: Vec<_> = claimed
            .iter()
            .map(|r| (r.id.as_str(), r.lease_token, r.owner.as_deref()))
            .collect();
        assert_eq!(claimed, [("q", 2, Some("worker"))]);
        let verdicts = commit(
            &store,
            vec![
                append("q", 1, vec![entry(1, "a")], None),
                append("q", 2, vec![entry(1, "a")], None),
            ],
        )
        .await;
        assert_eq!(verdicts, [Err(Rejected::Fenced { current: 2 }), Ok(())]);
    });
}
