//! Run states beyond running, completed and failed: a suspended run is unfinished and waits
//! to be woken (no engine claims it); a cancelled run is finished, with its reason. Nothing
//! produces them yet; stores record them and the engine reads them.

use std::time::Duration;

use durable::store::{Finish, NewRun, Rejected, Write};
use durable::{workflow, Data, Engine, Error, RunFilter, RunId, RunStatus, StepError};
use durable_tests::{client_wait_for_run, each_store, in_runtime, wait_for_run};

async fn greet(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("hi", true))
}

workflow! { hello { step greet; } }

/// Creates a run of `hello` held by a worker that is gone, and ends it with `finish`.
async fn ended(store: &dyn durable::Store, id: &str, finish: Finish) -> RunId {
    let id = RunId::from(id);
    let new = NewRun {
        id: id.clone(),
        workflow: "hello".into(),
        fingerprint: durable::Workflow::definition(&hello)
            .fingerprint()
            .to_owned(),
        input: "{}".into(),
        owner: "gone".into(),
        lease_expires_at: 0,
        parent: None,
    };
    let end = Write::Append {
        run: id.clone(),
        lease_token: 1,
        entries: Vec::new(),
        finish: Some(finish),
    };
    assert_eq!(
        store.commit(&[Write::CreateRun(new), end]).await.unwrap(),
        [Ok(()), Ok(())]
    );
    id
}

each_store! {
    fn stores_keep_suspended_and_cancelled_runs(store) {
        in_runtime(async move {
            let store = store.open();
            let sleeping = ended(&*store, "sleeping", Finish::Suspended { wake_at: None, inbox_seen: None }).await;
            let cancelled = ended(&*store, "cancelled", Finish::Cancelled("withdrawn".into())).await;
            let run = store.load_run(&sleeping).await.unwrap().unwrap();
            assert_eq!((run.status, run.owner.as_deref()), (RunStatus::Suspended, None));
            let run = store.load_run(&cancelled).await.unwrap().unwrap();
            assert_eq!((run.status, run.error.as_deref()), (RunStatus::Cancelled, Some("withdrawn")));
            // No claim takes either: one waits to be woken, the other is finished.
            let claimed = store.claim_runs(durable::store::Claim::new("worker", Duration::from_secs(30))).await.unwrap();
            assert!(claimed.is_empty(), "{claimed:?}");
            // Neither takes appends.
            for id in [&sleeping, &cancelled] {
                let late = Write::Append { run: id.clone(), lease_token: 1, entries: Vec::new(), finish: None };
                assert_eq!(store.commit(&[late]).await.unwrap(), [Err(Rejected::Finished)]);
            }
            // Both list under their status.
            for (status, id) in [(RunStatus::Suspended, &sleeping), (RunStatus::Cancelled, &cancelled)] {
                let filter = RunFilter { status: Some(status), ..Default::default() };
                let listed: Vec<RunId> = store.list_runs(filter).await.unwrap().into_iter().map(|r| r.id).collect();
                assert_eq!(listed, std::slice::from_ref(id));
            }
        });
    }

    fn the_engine_reads_cancelled_runs_and_leaves_suspended_ones_waiting(store) {
        in_runtime(async move {
            let shared = store.open();
            let sleeping = ended(&*shared, "sleeping", Finish::Suspended { wake_at: None, inbox_seen: None }).await;
            let cancelled = ended(&*shared, "cancelled", Finish::Cancelled("withdrawn".into())).await;
            let engine = Engine::builder_shared(shared).register(hello).build().await.unwrap();
            // The suspended run is not resumed: it waits to be woken.
            assert!(engine.resumed().is_empty(), "{:?}", engine.resumed());
            let info = engine.status(&sleeping).await.unwrap();
            assert_eq!((info.status, info.stalled.is_none()), (RunStatus::Suspended, true));
            let waited = tokio::time::timeout(Duration::from_millis(300), engine.wait::<Data>(&sleeping)).await;
            assert!(waited.is_err(), "a suspended run is unfinished: {waited:?}");
            // The cancelled one is finished: waiting says why, naming workflow and run.
            let error = wait_for_run::<Data>(&engine, &cancelled).await.unwrap_err();
            assert!(matches!(&error, Error::RunCancelled { reason, .. } if reason == "withdrawn"), "{error:?}");
            assert_eq!(error.to_string(), "workflow `hello` run cancelled was cancelled: withdrawn");
            let info = engine.status(&cancelled).await.unwrap();
            assert_eq!((info.status, info.failure.is_none()), (RunStatus::Cancelled, true));
            // A client reads the same.
            let client_error = client_wait_for_run::<Data>(&engine.client(), &cancelled).await.unwrap_err();
            assert!(matches!(client_error, Error::RunCancelled { .. }));
            engine.shutdown().await.unwrap();
        });
    }
}
