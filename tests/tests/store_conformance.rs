//! The contract every `Store` backend keeps, checked on each: atomic batches with a verdict per
//! write, fencing by lease token, closed journals, claims, leases and listing.

use std::sync::Arc;
use std::time::Duration;

use durable::store::{
    Claim, EntryKind, Finish, JournalEntry, NewRun, Rejected, RunFilter, RunStatus, Store, Write,
};
use durable::RunId;
use durable_tests::{each_store_and_postgres, in_runtime};

fn new_run(id: &str, workflow: &str, owner: &str) -> Write {
    Write::CreateRun(NewRun {
        id: RunId::from(id),
        workflow: workflow.into(),
        fingerprint: "f1".into(),
        input: r#"{"n":1}"#.into(),
        owner: owner.into(),
        lease_expires_at: u64::MAX / 2,
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

each_store_and_postgres! {
    fn a_batch_gets_one_verdict_per_write(store) {
        in_runtime(async {
            let store = store.open();
            let verdicts = commit(&store, vec![
                new_run("r1", "wf", "w1"),
                new_run("r1", "wf", "w1"),
                append("r1", 1, vec![entry(1, "a")], None),
                append("ghost", 1, vec![entry(1, "a")], None),
            ]).await;
            assert_eq!(verdicts, [Ok(()), Err(Rejected::DuplicateRun), Ok(()), Err(Rejected::UnknownRun)]);
            let run = store.load_run(&"r1".into()).await.unwrap().unwrap();
            assert_eq!((run.status, run.lease_token, run.workflow.as_str(), run.input.as_str()), (RunStatus::Running, 1, "wf", r#"{"n":1}"#));
            assert_eq!(store.load_journal(&"r1".into()).await.unwrap(), [entry(1, "a")]);
            assert_eq!(store.load_run(&"ghost".into()).await.unwrap(), None);
        });
    }

    fn journal_entries_keep_their_order_and_never_repeat(store) {
        in_runtime(async {
            let store = store.open();
            commit(&store, vec![new_run("r", "wf", "w")]).await;
            let verdicts = commit(&store, vec![
                append("r", 1, vec![entry(1, "a"), entry(2, "b")], None),
                append("r", 1, vec![entry(3, "c")], None),
                append("r", 1, vec![entry(4, "d"), entry(2, "again")], None),
            ]).await;
            assert_eq!(verdicts, [Ok(()), Ok(()), Err(Rejected::DuplicateEntry { seq: 2 })]);
            // The refused write left nothing behind, not even its first entry.
            let steps: Vec<_> = store.load_journal(&"r".into()).await.unwrap().into_iter().map(|e| (e.seq, e.step)).collect();
            assert_eq!(steps, [(1, "a".into()), (2, "b".into()), (3, "c".into())]);
        });
    }

    fn a_stale_lease_token_is_fenced_off(store) {
        in_runtime(async {
            let store = store.open();
            commit(&store, vec![new_run("r", "wf", "old")]).await;
            // The old owner's lease is released (it stopped); a new worker claims the run.
            store.release_leases("old").await.unwrap();
            let claimed = store.claim_runs(Claim::new("new", Duration::from_secs(30))).await.unwrap();
            assert_eq!(claimed.len(), 1);
            assert_eq!((claimed[0].lease_token, claimed[0].owner.as_deref()), (2, Some("new")));
            let verdicts = commit(&store, vec![
                append("r", 1, vec![entry(1, "zombie")], None),
                append("r", 2, vec![entry(1, "a")], None),
            ]).await;
            assert_eq!(verdicts, [Err(Rejected::Fenced { current: 2 }), Ok(())]);
            assert_eq!(store.load_journal(&"r".into()).await.unwrap(), [entry(1, "a")]);
        });
    }

    fn a_finished_run_is_closed(store) {
        in_runtime(async {
            let store = store.open();
            commit(&store, vec![new_run("ok", "wf", "w"), new_run("bad", "wf", "w")]).await;
            let verdicts = commit(&store, vec![
                append("ok", 1, vec![entry(1, "a")], Some(Finish::Completed(r#"{"done":true}"#.into()))),
                append("bad", 1, vec![], Some(Finish::Failed("boom".into()))),
            ]).await;
            assert_eq!(verdicts, [Ok(()), Ok(())]);
            let ok = store.load_run(&"ok".into()).await.unwrap().unwrap();
            assert_eq!((ok.status, ok.output.as_deref()), (RunStatus::Completed, Some(r#"{"done":true}"#)));
            let bad = store.load_run(&"bad".into()).await.unwrap().unwrap();
            assert_eq!((bad.status, bad.error.as_deref()), (RunStatus::Failed, Some("boom")));
            assert_eq!(commit(&store, vec![append("ok", 1, vec![entry(2, "late")], None)]).await, [Err(Rejected::Finished)]);
            // Finished runs are never claimed.
            store.release_leases("w").await.unwrap();
            assert!(store.claim_runs(Claim::new("other", Duration::from_secs(30))).await.unwrap().is_empty());
        });
    }

    fn claims_skip_runs_the_claimer_holds_and_leases_renew(store) {
        in_runtime(async {
            let store = store.open();
            commit(&store, vec![new_run("a", "wf", "me"), new_run("b", "wf", "me")]).await;
            assert!(store.claim_runs(Claim::new("me", Duration::from_secs(30))).await.unwrap().is_empty(), "a worker never re-claims its own runs");
            assert_eq!(store.renew_leases("me", Duration::from_secs(30)).await.unwrap(), 2);
            assert_eq!(store.renew_leases("nobody", Duration::from_secs(30)).await.unwrap(), 0);
            store.release_leases("me").await.unwrap();
            let claimed: Vec<_> = store.claim_runs(Claim::new("you", Duration::from_secs(30))).await.unwrap().into_iter().map(|r| (r.id.to_string(), r.lease_token)).collect();
            assert_eq!(claimed, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
        });
    }

    fn listing_filters_and_orders_newest_first(store) {
        in_runtime(async {
            let store = store.open();
            for (id, wf) in [("1", "x"), ("2", "y"), ("3", "x")] {
                commit(&store, vec![new_run(id, wf, "w")]).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            commit(&store, vec![append("3", 1, vec![], Some(Finish::Completed("{}".into())))]).await;
            let ids = |runs: Vec<durable::store::RunRecord>| runs.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
            assert_eq!(ids(store.list_runs(RunFilter::default()).await.unwrap()), ["3", "2", "1"]);
            let x = RunFilter { workflow: Some("x".into()), ..Default::default() };
            assert_eq!(ids(store.list_runs(x).await.unwrap()), ["3", "1"]);
            let running_x = RunFilter { workflow: Some("x".into()), status: Some(RunStatus::Running), limit: None };
            assert_eq!(ids(store.list_runs(running_x).await.unwrap()), ["1"]);
            let one = RunFilter { limit: Some(1), ..Default::default() };
            assert_eq!(ids(store.list_runs(one).await.unwrap()), ["3"]);
        });
    }

    fn claims_take_at_most_the_limit_oldest_first(store) {
        in_runtime(async {
            let store = store.open();
            for id in ["a", "b", "c", "d", "e"] {
                commit(&store, vec![new_run(id, "wf", "gone")]).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            store.release_leases("gone").await.unwrap();
            let ids = |runs: Vec<durable::store::RunRecord>| runs.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
            let first = store.claim_runs(Claim::new("w1", Duration::from_secs(30)).limit(2)).await.unwrap();
            assert_eq!(ids(first), ["a", "b"]);
            // (The same worker: on SQLite every lease but the claimer's counts as dead.)
            let second = store.claim_runs(Claim::new("w1", Duration::from_secs(30)).limit(2)).await.unwrap();
            assert_eq!(ids(second), ["c", "d"]);
            assert!(store.claim_runs(Claim::new("w3", Duration::from_secs(30)).limit(0)).await.unwrap().is_empty());
            let rest = store.claim_runs(Claim::new("w1", Duration::from_secs(30)).limit(10)).await.unwrap();
            assert_eq!(ids(rest), ["e"]);
        });
    }

    fn a_queued_run_has_no_owner_and_any_worker_claims_it(store) {
        in_runtime(async {
            let store = store.open();
            // A client that drives no runs queues them: no owner.
            commit(&store, vec![new_run("q", "wf", "")]).await;
            let run = store.load_run(&"q".into()).await.unwrap().unwrap();
            assert_eq!((run.owner, run.lease_token), (None, 1));
            let claimed = store.claim_runs(Claim::new("worker", Duration::from_secs(30))).await.unwrap();
            assert_eq!(claimed.iter().map(|r| (r.id.as_str(), r.lease_token, r.owner.as_deref())).collect::<Vec<_>>(), [("q", 2, Some("worker"))]);
            // The token the client wrote under is stale now.
            let verdicts = commit(&store, vec![append("q", 1, vec![entry(1, "a")], None), append("q", 2, vec![entry(1, "a")], None)]).await;
            assert_eq!(verdicts, [Err(Rejected::Fenced { current: 2 }), Ok(())]);
        });
    }
}
