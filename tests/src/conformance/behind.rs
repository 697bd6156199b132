//! The checks of what a stored database can hold that the [`Store`] API never writes: a run
//! an earlier version of durable left suspended through a message, an inbox row edited by
//! hand. Each gets at the backend's tables through a [`Backdoor`], so they run on backends
//! whose data lives somewhere else than the process (see
//! [`store_conformance_behind_its_back!`](crate::store_conformance_behind_its_back)).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use durable::store::{inbox_kinds, Finish, RunStatus, Store, StoreErrorKind};
use durable::RunId;

use super::{append, commit, new_run, FreshStore};
use crate::{in_runtime, Backdoor};

/// Runs `check` on a fresh store from `fresh`, with what holds it (for its backdoor).
fn with_held<F, Fut, T, C, CFut>(fresh: F, check: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
    T: FreshStore + Backdoor,
    C: FnOnce(Arc<dyn Store>, T) -> CFut,
    CFut: Future<Output = T>,
{
    in_runtime(async move {
        let held = fresh().await;
        let Some(store) = held.store() else {
            return;
        };
        let held = check(store, held).await;
        // Whatever holds the store is dropped after the check, inside the runtime.
        drop(held);
    });
}

async fn deliver(store: &Arc<dyn Store>, run: &str, kind: &str, name: &str, payload: &str) {
    let delivered = store
        .deliver(&RunId::from(run), kind, name, payload)
        .await
        .expect("the store works");
    assert!(delivered.is_ok(), "{run}: {delivered:?}");
}

async fn claim(store: &Arc<dyn Store>, owner: &str) -> Vec<(String, RunStatus, u64)> {
    let claim = durable::store::Claim::new(owner, Duration::from_secs(30));
    let mut claimed: Vec<_> = store
        .claim_runs(claim)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.status, r.lease_token))
        .collect();
    claimed.sort_by(|a, b| a.0.cmp(&b.0));
    claimed
}

/// A run suspended though its inbox held a message it never saw (what a crash left behind
/// under an earlier version of durable, which woke such a run only after the suspension
/// committed) is claimed, running again, by the next claim; the runs suspended having seen
/// their messages are not. Suspended again having seen it, it stays asleep.
pub fn a_run_that_slept_through_a_message_is_claimed<F, Fut, T>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
    T: FreshStore + Backdoor,
{
    with_held(fresh, |store, held| async move {
        commit(
            &store,
            vec![new_run("stuck", "wf", "w"), new_run("asleep", "wf", "w")],
        )
        .await;
        let nap = || {
            Some(Finish::Suspended {
                wake_at: None,
                inbox_seen: Some(1),
            })
        };
        for run in ["stuck", "asleep"] {
            deliver(&store, run, inbox_kinds::SIGNAL, "go", "true").await;
            let suspended = commit(&store, vec![append(run, 1, Vec::new(), nap())]).await;
            assert_eq!(suspended, [Ok(())], "{run}");
        }
        assert_eq!(claim(&store, "v").await, []);
        held.forget_inbox_seen(&"stuck".into());
        assert_eq!(
            claim(&store, "v").await,
            [("stuck".to_owned(), RunStatus::Running, 2)]
        );
        let suspended = commit(&store, vec![append("stuck", 2, Vec::new(), nap())]).await;
        assert_eq!(suspended, [Ok(())]);
        assert_eq!(claim(&store, "v").await, []);
        held
    });
}

/// An inbox message changed behind the store's back (its payload edited from `100` to
/// `900`) is refused when the inbox is loaded, with a [`Corrupt`](StoreErrorKind::Corrupt)
/// error naming the run and the message (a callback's by its number alone: its token is a
/// secret); another run's inbox still loads, and so does the message once it is as it was
/// delivered. A message without a checksum (delivered before there were any) is read as it
/// is.
pub fn an_inbox_message_changed_behind_the_store_s_back_is_refused<F, Fut, T>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
    T: FreshStore + Backdoor,
{
    with_held(fresh, |store, held| async move {
        commit(
            &store,
            vec![new_run("r", "wf", "w"), new_run("other", "wf", "w")],
        )
        .await;
        let token = "r.tok-secret-123";
        deliver(&store, "r", inbox_kinds::SIGNAL, "limit", "100").await;
        deliver(&store, "r", inbox_kinds::CALLBACK, token, r#"{"ok":1}"#).await;
        deliver(&store, "other", inbox_kinds::SIGNAL, "limit", "100").await;
        let r = RunId::from("r");
        let payloads = |inbox: Vec<durable::store::InboxMessage>| -> Vec<String> {
            inbox.into_iter().map(|m| m.payload).collect()
        };
        assert_eq!(
            payloads(store.load_inbox(&r).await.unwrap()),
            ["100", r#"{"ok":1}"#]
        );

        held.edit_inbox_payload(&r, 1, "900");
        let err = store.load_inbox(&r).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(
                "run r: inbox message 1 (signal `limit`) does not match its checksum, so the \
                 store was damaged or changed outside durable"
            ),
            "{text}"
        );
        assert_eq!(
            payloads(store.load_inbox(&"other".into()).await.unwrap()),
            ["100"]
        );
        held.edit_inbox_payload(&r, 1, "100");
        assert_eq!(payloads(store.load_inbox(&r).await.unwrap()).len(), 2);

        held.edit_inbox_payload(&r, 2, r#"{"ok":2}"#);
        let err = store.load_inbox(&r).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("run r: inbox message 2 (a callback's completion) does not match"),
            "{text}"
        );
        assert!(
            !text.contains("secret"),
            "the error shows the token: {text}"
        );

        held.clear_inbox_checksums(&r);
        assert_eq!(
            payloads(store.load_inbox(&r).await.unwrap()),
            ["100", r#"{"ok":2}"#]
        );
        held
    });
}
