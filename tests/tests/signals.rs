//! `wait_for` and signals: a signal sent before the wait is kept, one sent after wakes the
//! suspended run, two of one name go to two successive waits in order, and a signal to an
//! unknown run, a finished run or a name the workflow never waits for is refused, storing
//! nothing. On the memory and the SQLite store.

use std::time::Duration;

use durable::store::memory::MemoryStore;
use durable::Store as _;
use durable::{workflow, Client, Data, Engine, Error, RunId, RunStatus, StepError, StepEvent};
use durable_tests::{
    each_store, each_store_and_postgres, in_runtime, wait_for_handle, wait_for_run,
};

async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("prepared", true))
}

async fn finish(data: Data) -> Result<Data, StepError> {
    let by: String = data.get("approved").unwrap_or_default();
    Ok(data.assign("finished_by", by))
}

workflow! {
    review {
        step prepare;
        wait_for approved(timeout = 1h);
        step finish;
    }
}

workflow! {
    batch_review {
        map items(over = items, max_concurrency = 1) {
            wait_for vote;
        }
    }
}

/// Polls until `id` is suspended (it waits), for at most 10s of real time.
async fn until_suspended(client: &Client, id: &RunId) {
    for _ in 0..1000 {
        if client.status(id).await.unwrap().status == RunStatus::Suspended {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {id} never suspended");
}

each_store_and_postgres! {
    fn a_signal_sent_before_the_run_waits_is_kept(store) {
        in_runtime(async {
            // Started by a client, signalled before any engine drives it.
            let client = Client::new(store.open());
            let id = client.start(review, Data::new()).await.unwrap();
            client.signal(review, &id, "approved", "ann").await.unwrap();
            drop(client);
            let engine = Engine::builder_shared(store.open()).register(review).build().await.unwrap();
            let output: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(output.get::<String>("approved").as_deref(), Some("ann"));
            assert_eq!(output.get::<String>("finished_by").as_deref(), Some("ann"));
            let history = engine.history(&id).await.unwrap();
            let events: Vec<_> = history.iter().map(|r| (r.step.as_str(), &r.event)).collect();
            assert!(matches!(events[1], ("approved", StepEvent::Waiting { deadline: Some(_) })), "{events:?}");
            assert!(matches!(events[2], ("approved", StepEvent::Received { inbox: 1, value }) if value == "ann"), "{events:?}");
            // Never suspended: the signal was there when the run reached the wait.
            assert_eq!(history.len(), 4, "{events:?}");
            engine.shutdown().await.unwrap();
        });
    }

    fn a_signal_sent_while_the_run_waits_wakes_it(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(review).build().await.unwrap();
            let client = engine.client();
            let run = engine.start(review, Data::new()).await.unwrap();
            until_suspended(&client, run.id()).await;
            // Suspended: no owner, nothing but its row.
            let record = shared.load_run(run.id()).await.unwrap().unwrap();
            assert_eq!(record.owner, None);
            engine.signal(review, run.id(), "approved", "bob").await.unwrap();
            let output = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(output.get::<String>("finished_by").as_deref(), Some("bob"));
            let steps: Vec<_> = engine.history(run.id()).await.unwrap().into_iter().map(|r| r.step).collect();
            assert_eq!(steps, ["prepare", "approved", "approved", "finish"]);
            engine.shutdown().await.unwrap();
        });
    }

    fn two_signals_of_one_name_go_to_two_successive_waits_in_order(store) {
        in_runtime(async {
            let client = Client::new(store.open());
            let input = Data::new().assign("items", serde_json::json!([{"n": 1}, {"n": 2}]));
            let id = client.start(batch_review, input).await.unwrap();
            client.signal(batch_review, &id, "vote", "first").await.unwrap();
            client.signal(batch_review, &id, "vote", "second").await.unwrap();
            drop(client);
            let engine = Engine::builder_shared(store.open()).register(batch_review).build().await.unwrap();
            let output: Data = wait_for_run(&engine, &id).await.unwrap();
            let items: serde_json::Value = output.get("items").unwrap_or_else(|| panic!("{output:?}"));
            let votes: Vec<_> = items["items"].as_array().unwrap_or_else(|| panic!("{items}")).iter().map(|r| r["result"]["vote"].clone()).collect();
            assert_eq!(votes, [serde_json::json!("first"), serde_json::json!("second")], "{items}");
            engine.shutdown().await.unwrap();
        });
    }

    fn a_signal_to_an_unknown_or_finished_run_or_an_unknown_name_is_refused_and_nothing_is_stored(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(review).build().await.unwrap();
            let unknown = RunId::from("nobody");
            let err = engine.signal(review, &unknown, "approved", 1).await.unwrap_err();
            assert!(matches!(&err, Error::SignalRefused { workflow: None, .. }), "{err:?}");
            assert_eq!(err.to_string(), "cannot send signal `approved` to run nobody: no run with this id");

            let run = engine.start(review, Data::new()).await.unwrap();
            until_suspended(&engine.client(), run.id()).await;
            let err = engine.signal(review, run.id(), "aproved", 1).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("cannot send signal `aproved` to workflow `review` run {}: workflow `review` never waits for signal `aproved` (it waits for `approved`)", run.id())
            );
            let err = Client::new(shared.clone()).signal(batch_review, run.id(), "vote", 1).await.unwrap_err();
            assert!(err.to_string().contains("the run is of workflow `review`, not `batch_review`"), "{err}");
            assert!(shared.load_inbox(run.id()).await.unwrap().is_empty(), "nothing stored");

            engine.signal(review, run.id(), "approved", "ann").await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let err = engine.signal(review, run.id(), "approved", "late").await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("cannot send signal `approved` to workflow `review` run {}: the run has finished (completed)", run.id())
            );
            assert_eq!(shared.load_inbox(run.id()).await.unwrap().len(), 1, "only the first signal");
            engine.shutdown().await.unwrap();
        });
    }
}

each_store_and_postgres! {
    fn a_payload_json_cannot_hold_is_refused_and_never_delivered_as_null(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(review).build().await.unwrap();
            let client = Client::new(shared.clone());
            let run = engine.start(review, Data::new()).await.unwrap();
            let id = run.id();
            let refused = |what: &str| {
                format!(
                    "cannot send signal `approved` to workflow `review` run {id}: the payload does \
                     not encode as JSON: it holds the number {what}, which JSON cannot represent \
                     (JSON has no NaN or infinity); store such a number as a string or an Option \
                     instead"
                )
            };
            let err = engine.signal(review, id, "approved", f64::NAN).await.unwrap_err();
            assert!(matches!(err, Error::SignalRefused { .. }), "{err:?}");
            assert_eq!(err.to_string(), refused("NaN"));
            // Inside a structure, from a client.
            let err = client.signal(review, id, "approved", ("ann", [1.0, f64::INFINITY])).await.unwrap_err();
            assert_eq!(err.to_string(), refused("inf"));
            // Nested 100,000 levels deep: refused at the limit, and the process goes on.
            let mut deep = serde_json::json!(1);
            for _ in 0..100_000 {
                deep = serde_json::Value::Array(vec![deep]);
            }
            let err = client.signal(review, id, "approved", deep).await.unwrap_err();
            assert!(err.to_string().contains("the payload does not encode as JSON: it nests arrays and objects more than 100 levels deep"), "{err}");
            assert!(shared.load_inbox(id).await.unwrap().is_empty(), "nothing stored");
            // The run still waits, and takes the next good signal.
            engine.signal(review, id, "approved", "ann").await.unwrap();
            let output = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(output.get::<String>("approved").as_deref(), Some("ann"));
            engine.shutdown().await.unwrap();
        });
    }
}

each_store! {
    fn a_run_cancelled_while_it_waits_ends_cancelled_and_refuses_later_signals(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(review).build().await.unwrap();
            let run = engine.start(review, Data::new()).await.unwrap();
            until_suspended(&engine.client(), run.id()).await;
            engine.cancel(run.id(), "no longer needed").await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(matches!(err, Error::RunCancelled { .. }), "{err:?}");
            let err = engine.signal(review, run.id(), "approved", "late").await.unwrap_err();
            assert!(err.to_string().ends_with("the run has finished (cancelled)"), "{err}");
            assert!(shared.load_inbox(run.id()).await.unwrap().is_empty());
            // It never went past its wait.
            let steps: Vec<_> = engine.history(run.id()).await.unwrap().into_iter().map(|r| r.step).collect();
            assert!(!steps.iter().any(|s| s == "finish"), "{steps:?}");
            engine.shutdown().await.unwrap();
        });
    }
}

#[test]
fn an_engine_checks_a_signal_against_the_workflow_given_even_one_it_does_not_register() {
    in_runtime(async {
        let store = std::sync::Arc::new(MemoryStore::new());
        let id = Client::new(store.clone())
            .start(review, Data::new())
            .await
            .unwrap();
        // This engine drives `batch_review` only: `review` is checked on its own definition.
        let engine = Engine::builder_shared(store.clone())
            .register(batch_review)
            .build()
            .await
            .unwrap();
        let err = engine.signal(review, &id, "aproved", 1).await.unwrap_err();
        assert!(
            err.to_string().ends_with(
                "workflow `review` never waits for signal `aproved` (it waits for `approved`)"
            ),
            "{err}"
        );
        let err = engine
            .signal(batch_review, &id, "vote", 1)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the run is of workflow `review`, not `batch_review`"),
            "{err}"
        );
        assert!(
            store.load_inbox(&id).await.unwrap().is_empty(),
            "nothing stored"
        );
        engine.signal(review, &id, "approved", "ann").await.unwrap();
        assert_eq!(store.load_inbox(&id).await.unwrap().len(), 1);
        engine.shutdown().await.unwrap();
    });
}
