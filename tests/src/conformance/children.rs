//! The child-run checks of the conformance suite (see [`ParentLink`]).

use std::future::Future;

use durable::store::{inbox_kinds, Finish, NewRun, ParentLink, RunStatus, Write};
use durable::RunId;

use super::{append, commit, entry, new_run, with_store, FreshStore};

fn new_child(id: &str, parent: &str, step: &str) -> Write {
    Write::CreateRun(NewRun {
        id: RunId::from(id),
        workflow: "child".into(),
        fingerprint: "f1".into(),
        input: "{}".into(),
        owner: "w".into(),
        lease_expires_at: u64::MAX / 2,
        parent: Some(ParentLink {
            run: RunId::from(parent),
            step: step.into(),
        }),
    })
}

/// A child keeps its parent link; its end (completed, failed, cancelled) is delivered to the
/// parent's inbox (kind `child`, named by the step) in the commit that finishes it, waking a
/// suspended parent; a suspension delivers nothing, and a finished parent gets nothing.
pub fn a_child_s_end_reaches_its_parent_s_inbox_in_the_same_commit<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![
                new_run("p", "wf", "w"),
                new_child("p/a", "p", "a"),
                new_child("p/b", "p", "b"),
                new_child("p/c", "p", "c"),
                new_child("p/d", "p", "d"),
            ],
        )
        .await;
        let child = store.load_run(&"p/a".into()).await.unwrap().unwrap();
        let link = child.parent.expect("the parent link is kept");
        assert_eq!((link.run.as_str(), link.step.as_str()), ("p", "a"));
        assert_eq!(
            store.load_run(&"p".into()).await.unwrap().unwrap().parent,
            None
        );
        // The parent suspends, waiting for its children.
        let suspend = Finish::Suspended {
            wake_at: None,
            inbox_seen: None,
        };
        commit(
            &store,
            vec![append("p", 1, vec![entry(1, "a")], Some(suspend))],
        )
        .await;
        // A child's suspension tells the parent nothing.
        let nap = Finish::Suspended {
            wake_at: Some(u64::MAX / 4),
            inbox_seen: None,
        };
        commit(
            &store,
            vec![append("p/d", 1, vec![entry(1, "s")], Some(nap))],
        )
        .await;
        assert!(store.load_inbox(&"p".into()).await.unwrap().is_empty());
        // A child completes: the parent has the message and is running (woken).
        let done = Finish::Completed(r#"{"x":1}"#.into());
        commit(
            &store,
            vec![append("p/a", 1, vec![entry(1, "s")], Some(done))],
        )
        .await;
        let parent = store.load_run(&"p".into()).await.unwrap().unwrap();
        assert_eq!(parent.status, RunStatus::Running);
        let failed = Finish::Failed("boom".into());
        let cancelled = Finish::Cancelled("stop".into());
        commit(
            &store,
            vec![
                append("p/b", 1, vec![entry(1, "s")], Some(failed)),
                append("p/c", 1, vec![entry(1, "s")], Some(cancelled)),
            ],
        )
        .await;
        let inbox: Vec<_> = store
            .load_inbox(&"p".into())
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.seq, m.kind, m.name, m.payload))
            .collect();
        let child = inbox_kinds::CHILD.to_owned();
        assert_eq!(
            inbox,
            [
                (1, child.clone(), "a".into(), r#"{"ok":{"x":1}}"#.into()),
                (2, child.clone(), "b".into(), r#"{"error":"boom"}"#.into()),
                (3, child, "c".into(), r#"{"cancelled":"stop"}"#.into()),
            ]
        );
        // The parent finishes; a late child's end is not delivered, and still commits.
        let parent_end = Finish::Failed("x".into());
        let verdicts = commit(
            &store,
            vec![append("p", 1, vec![entry(2, "z")], Some(parent_end))],
        )
        .await;
        assert_eq!(verdicts, [Ok(())]);
        let _ = store.wake(&"p/d".into()).await.unwrap();
        let claimed = store
            .claim_runs(durable::store::Claim::new(
                "w",
                std::time::Duration::from_secs(60),
            ))
            .await
            .unwrap();
        let token = claimed
            .iter()
            .find(|r| r.id.as_str() == "p/d")
            .map(|r| r.lease_token)
            .expect("the woken child is claimed");
        let end = Finish::Completed("{}".into());
        let verdicts = commit(
            &store,
            vec![append("p/d", token, vec![entry(2, "t")], Some(end))],
        )
        .await;
        assert_eq!(verdicts, [Ok(())]);
        assert_eq!(store.load_inbox(&"p".into()).await.unwrap().len(), 3);
    });
}

/// A cancellation requested for a run is requested for its unfinished children, and
/// theirs; finished children and other runs are left alone.
pub fn a_cancel_request_cascades_to_unfinished_children<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output: FreshStore>,
{
    with_store(fresh, |store| async move {
        commit(
            &store,
            vec![
                new_run("p", "wf", "w"),
                new_run("other", "wf", "w"),
                new_child("p/a", "p", "a"),
                new_child("p/a/x", "p/a", "x"),
                new_child("p/b", "p", "b"),
            ],
        )
        .await;
        let done = Finish::Completed("{}".into());
        commit(
            &store,
            vec![append("p/b", 1, vec![entry(1, "s")], Some(done))],
        )
        .await;
        let nap = Finish::Suspended {
            wake_at: None,
            inbox_seen: None,
        };
        commit(
            &store,
            vec![append("p/a/x", 1, vec![entry(1, "s")], Some(nap))],
        )
        .await;
        assert_eq!(
            store.request_cancel(&"p".into(), "why").await.unwrap(),
            Ok(())
        );
        for (id, expected) in [
            ("p", Some("why")),
            ("p/a", Some("why")),
            ("p/a/x", Some("why")),
            ("p/b", None),
            ("other", None),
        ] {
            let run = store.load_run(&id.into()).await.unwrap().unwrap();
            assert_eq!(run.cancel_requested.as_deref(), expected, "{id}");
        }
        // The suspended grandchild was woken, to end cancelled.
        let grandchild = store.load_run(&"p/a/x".into()).await.unwrap().unwrap();
        assert_eq!(grandchild.status, RunStatus::Running);
    });
}
