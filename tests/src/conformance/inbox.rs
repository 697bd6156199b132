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
