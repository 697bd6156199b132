//! The inbox checks of the conformance suite (see [`Store::deliver`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use durable::store::{inbox_kinds, Finish, Rejected, RunStatus, Store};
use durable::RunId;

use super::{append, commit, entry, new_run, with_store, FreshStore};

async fn deliver(
    store: &Arc<dyn Store>,
    run: &str,
    kind: &str,
    name: &str,
    payload: &str,
) -> Result<u64, Rejected> {
    store
        .deliver(&RunId::from(run), kind, name, payload)
        .await
        .expect("the store works")
}

/// (seq, kind, name, payload) of a run's inbox.
async fn inbox(store: &Arc<dyn Store>, run: &str) -> Vec<(u64, String, String, String)> {
    let messages = store.load_inbox(&RunId::from(run)).await.unwrap();
    messages
        .into_iter()
        .map(|m| (m.seq, m.kind, m.name, m.payload))
        .collect()
}

fn message(seq: u64, kind: &str, name: &str, payload: &str) -> (u64, String, String, String) {
    (seq, kind.into(), name.into(), payload.into())
}

/// Messages are numbered from 1 per run in delivery order and kept whether or not anything
/// waits; an unknown or a finished run refuses a message and nothing is stored.
pub fn inbox_messages_are_numbered_per_run_and_refused_for_unknown_or_finished_runs<F, Fut>(
    fresh: F,
) where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![
                new_run("r1", "wf", "w"),
                new_run("r2", "wf", "w"),
                new_run("done", "wf", "w"),
            ],
        )
        .await;
        let signal = inbox_kinds::SIGNAL;
        assert_eq!(deliver(&store, "r1", signal, "approve", "1").await, Ok(1));
        assert_eq!(
            deliver(&store, "r2", signal, "approve", "\"x\"").await,
            Ok(1)
        );
        assert_eq!(deliver(&store, "r1", signal, "approve", "2").await, Ok(2));
        assert_eq!(deliver(&store, "r1", signal, "other", "{}").await, Ok(3));
        assert_eq!(
            inbox(&store, "r1").await,
            [
                message(1, signal, "approve", "1"),
                message(2, signal, "approve", "2"),
                message(3, signal, "other", "{}"),
            ]
        );
        assert_eq!(
            inbox(&store, "r2").await,
            [message(1, signal, "approve", "\"x\"")]
        );
        let at = store.load_inbox(&"r1".into()).await.unwrap()[0].at;
        assert!(at > 0, "a message keeps when it was delivered");

        assert_eq!(
            deliver(&store, "nobody", signal, "approve", "1").await,
            Err(Rejected::UnknownRun)
        );
        assert!(inbox(&store, "nobody").await.is_empty());
        let verdicts = commit(
            &store,
            vec![append(
                "done",
                1,
                vec![entry(1, "a")],
                Some(Finish::Completed("{}".into())),
            )],
        )
        .await;
        assert_eq!(verdicts, [Ok(())]);
        assert_eq!(
            deliver(&store, "done", signal, "approve", "1").await,
            Err(Rejected::Finished)
        );
        assert!(inbox(&store, "done").await.is_empty());
    });
}

/// A message to a suspended run wakes it: running, with no owner, claimable at once.
pub fn a_message_wakes_a_suspended_run<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(&store, vec![new_run("r", "wf", "w")]).await;
        let verdicts = commit(
            &store,
            vec![append(
                "r",
                1,
                vec![entry(1, "a")],
                Some(Finish::Suspended {
                    wake_at: None,
                    inbox_seen: None,
                }),
            )],
        )
        .await;
        assert_eq!(verdicts, [Ok(())]);
        let lease = Duration::from_secs(30);
        assert!(
            store
                .claim_runs(durable::store::Claim::new("w2", lease))
                .await
                .unwrap()
                .is_empty(),
            "a suspended run is not claimed"
        );
        let mut watch = store.watch_claimable().unwrap();
        let before = watch.as_mut().map(|watch| watch.version().unwrap());
        assert_eq!(
            deliver(&store, "r", inbox_kinds::SIGNAL, "go", "true").await,
            Ok(1)
        );
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!((run.status, run.owner), (RunStatus::Running, None));
        if let (Some(watch), Some(before)) = (watch.as_mut(), before) {
            assert_ne!(
                watch.version().unwrap(),
                before,
                "the watch reports the woken run"
            );
        }
        let claimed = store
            .claim_runs(durable::store::Claim::new("w2", lease))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].lease_token, 2);
        // The claimer appends on after the journal it found.
        let verdicts = commit(&store, vec![append("r", 2, vec![entry(2, "b")], None)]).await;
        assert_eq!(verdicts, [Ok(())]);
        // A message to a running run wakes nothing and changes no lease.
        assert_eq!(
            deliver(&store, "r", inbox_kinds::SIGNAL, "go", "false").await,
            Ok(2)
        );
        let run = store.load_run(&"r".into()).await.unwrap().unwrap();
        assert_eq!(
            (run.status, run.owner.as_deref(), run.lease_token),
            (RunStatus::Running, Some("w2"), 2)
        );
    });
}

/// A callback token is good once per run: a second completion with the same token is refused,
/// naming the first, and leaves nothing behind; signals may repeat a name.
pub fn a_callback_token_is_taken_once<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![new_run("r", "wf", "w"), new_run("s", "wf", "w")],
        )
        .await;
        let callback = inbox_kinds::CALLBACK;
        assert_eq!(deliver(&store, "r", callback, "tok-1", "1").await, Ok(1));
        assert_eq!(
            deliver(&store, "r", callback, "tok-1", "2").await,
            Err(Rejected::DuplicateEntry { seq: 1 })
        );
        assert_eq!(deliver(&store, "r", callback, "tok-2", "3").await, Ok(2));
        // The same token on another run is another callback.
        assert_eq!(deliver(&store, "s", callback, "tok-1", "4").await, Ok(1));
        // Signals of one name all count.
        assert_eq!(
            deliver(&store, "r", inbox_kinds::SIGNAL, "tok-1", "5").await,
            Ok(3)
        );
        assert_eq!(
            deliver(&store, "r", inbox_kinds::SIGNAL, "tok-1", "6").await,
            Ok(4)
        );
        assert_eq!(
            inbox(&store, "r").await,
            [
                message(1, callback, "tok-1", "1"),
                message(2, callback, "tok-2", "3"),
                message(3, inbox_kinds::SIGNAL, "tok-1", "5"),
                message(4, inbox_kinds::SIGNAL, "tok-1", "6"),
            ]
        );
    });
}

/// A suspension that lands after a message its waits did not see (delivered after they
/// looked, while the run still ran, so the delivery woke nothing) leaves the run awake and
/// nobody's, without a wake time, for the next claim to take the message: committed alone
/// with no entry or with one, beside another run's suspension, or after another append to
/// the run in the same batch. A suspension that saw every message, or where no wait looked
/// (`inbox_seen: None`), or that saw an empty inbox, suspends; none of those is claimed,
/// and a run that took its message and suspends again stays asleep.
pub fn a_suspension_after_a_message_it_did_not_see_leaves_the_run_claimable<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        let missed = ["alone", "step", "pair_a", "pair_b", "twice"];
        let kept = ["saw", "no_look", "empty"];
        let runs: Vec<_> = missed
            .iter()
            .chain(&kept)
            .map(|run| new_run(run, "wf", "w"))
            .collect();
        commit(&store, runs).await;
        for run in missed.iter().chain(&["saw", "no_look"]) {
            let delivered = deliver(&store, run, inbox_kinds::SIGNAL, "go", "1").await;
            assert_eq!(delivered, Ok(1), "{run}");
        }
        let later = Some(u64::MAX / 4);
        let nap = |inbox_seen| {
            Some(Finish::Suspended {
                wake_at: later,
                inbox_seen,
            })
        };
        let suspend = |run, entries, inbox_seen| append(run, 1, entries, nap(inbox_seen));
        let batches = [
            vec![suspend("alone", Vec::new(), Some(0))],
            vec![suspend("step", vec![entry(1, "a")], Some(0))],
            vec![
                suspend("pair_a", vec![entry(1, "a")], Some(0)),
                suspend("pair_b", Vec::new(), Some(0)),
            ],
            vec![
                append("twice", 1, vec![entry(1, "a")], None),
                suspend("twice", vec![entry(2, "b")], Some(0)),
            ],
            vec![suspend("saw", Vec::new(), Some(1))],
            vec![suspend("no_look", Vec::new(), None)],
            vec![suspend("empty", Vec::new(), Some(0))],
        ];
        for batch in batches {
            let verdicts = commit(&store, batch.clone()).await;
            assert!(
                verdicts.iter().all(Result::is_ok),
                "{batch:?}: {verdicts:?}"
            );
        }
        for run in missed {
            let record = store.load_run(&run.into()).await.unwrap().unwrap();
            assert_eq!(
                (record.status, record.owner.as_deref(), record.wake_at),
                (RunStatus::Running, None, None),
                "{run}: a message came after its waits looked"
            );
        }
        for run in kept {
            let record = store.load_run(&run.into()).await.unwrap().unwrap();
            assert_eq!(
                (record.status, record.wake_at),
                (RunStatus::Suspended, later),
                "{run}"
            );
        }
        let lease = Duration::from_secs(30);
        let claimed = store
            .claim_runs(durable::store::Claim::new("v", lease))
            .await
            .unwrap();
        let mut claimed: Vec<(String, u64)> = claimed
            .into_iter()
            .map(|r| (r.id.to_string(), r.lease_token))
            .collect();
        claimed.sort();
        let mut expected: Vec<(String, u64)> =
            missed.iter().map(|run| (run.to_string(), 2)).collect();
        expected.sort();
        assert_eq!(claimed, expected);
        // The claimer took the message and suspends having seen it: asleep, and not claimed.
        let again = append("alone", 2, Vec::new(), nap(Some(1)));
        assert_eq!(commit(&store, vec![again]).await, [Ok(())]);
        let alone = store.load_run(&"alone".into()).await.unwrap().unwrap();
        assert_eq!(alone.status, RunStatus::Suspended);
        // (By the same claimer: a store one process drives hands another one its runs.)
        let claimed = store
            .claim_runs(durable::store::Claim::new("v", lease))
            .await
            .unwrap();
        assert!(claimed.is_empty(), "{claimed:?}");
    });
}
