//! The ends of a walk that no feature produces yet (suspended, cancelled), driven by hand
//! through the path every walk ends on: what the store records and what the engine is told.

use std::sync::Arc;
use std::time::Duration;

use super::{Abort, RunTask, Walked};
use crate::definition::Definition;
use crate::error::Error;
use crate::store::memory::MemoryStore;
use crate::store::{NewRun, Rejected, RunStatus, Store, Write};
use crate::writer::Writer;
use crate::RunId;

/// A run of an empty workflow, created in `store` and held by `me`, and its task.
async fn started(store: &Arc<dyn Store>, id: &str) -> RunTask {
    let def = Arc::new(Definition::new("wf", "", Vec::new()));
    let new = NewRun {
        id: RunId::from(id),
        workflow: "wf".into(),
        fingerprint: def.fingerprint().to_owned(),
        input: "{}".into(),
        owner: "me".into(),
        lease_expires_at: u64::MAX / 2,
        parent: None,
    };
    let created = store.commit(&[Write::CreateRun(new)]).await.unwrap();
    assert_eq!(created, [Ok(())]);
    let journal = Writer::spawn(Arc::downgrade(store), Duration::from_secs(1));
    let lease = crate::lease::RunLease::unbounded(RunId::from(id), 1);
    RunTask::new(def, RunId::from(id), lease, journal, Vec::new())
}

#[tokio::test]
async fn a_suspended_walk_is_recorded_unfinished_and_unclaimable() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let task = started(&store, "sleeper").await;
    let walked = task
        .end(Err(Abort::Suspend {
            until: Some(1_900_000_000_000),
            reason: "sleep 1h".into(),
        }))
        .await;
    match walked {
        Walked::Suspended { until, reason } => {
            assert_eq!(
                (until, reason.as_str()),
                (Some(1_900_000_000_000), "sleep 1h")
            )
        }
        other => panic!("not suspended: {other:?}"),
    }
    let run = store
        .load_run(&RunId::from("sleeper"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.status, run.owner), (RunStatus::Suspended, None));
    assert!(!run.status.is_finished());
    // Nobody claims it until something wakes it.
    let claimed = store
        .claim_runs(crate::store::Claim::new("other", Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
}

#[tokio::test]
async fn a_cancelled_walk_is_recorded_finished_with_its_reason() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let task = started(&store, "unwanted").await;
    let walked = task
        .end(Err(Abort::Cancel {
            reason: "the customer withdrew".into(),
        }))
        .await;
    match walked {
        Walked::Ended(Err(Error::RunCancelled {
            workflow,
            run_id,
            reason,
        })) => assert_eq!(
            (workflow.as_str(), run_id.as_str(), reason.as_str()),
            ("wf", "unwanted", "the customer withdrew")
        ),
        other => panic!("not cancelled: {other:?}"),
    }
    let id = RunId::from("unwanted");
    let run = store.load_run(&id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Cancelled, Some("the customer withdrew"))
    );
    // Its journal is closed.
    let late = Write::Append {
        run: id,
        lease_token: 1,
        entries: Vec::new(),
        finish: None,
    };
    assert_eq!(
        store.commit(&[late]).await.unwrap(),
        [Err(Rejected::Finished)]
    );
}
