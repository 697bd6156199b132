//! The history tells an optional item's failure from one that failed the run: every kind of
//! item that can be `optional` (a step, a `wait_for`, a `callback` failed or whose submit
//! function failed, a `call` whose child failed, each also inside a map) records
//! `StepEvent::Failed { optional: true }` when it was, and `false` when it was not, through
//! an engine (which knows the definitions) and through a client (which reads the run's
//! record).

use durable::callback::Callback;
use durable::{workflow, Client, Data, Engine, RunId, RunStatus, StepError, StepEvent};
use durable_tests::gates::{bounded, hand_out, tokens, until, until_status};
use durable_tests::{each_store_and_postgres, in_runtime};
use serde_json::json;

async fn broken(_: Data) -> Result<Data, StepError> {
    Err(StepError::terminal("broken"))
}

async fn submit_fails(_: Callback, _: Data) -> Result<Data, StepError> {
    Err(StepError::terminal("the provider is down"))
}

async fn submit(callback: Callback, data: Data) -> Result<Data, StepError> {
    hand_out(&callback);
    Ok(data)
}

async fn done(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("done", true))
}

workflow! {
    child_fails { step broken; }
}

workflow! {
    optionals {
        step plain(optional) = broken;
        callback refused = submit_fails(optional);
        callback declined = submit(optional, timeout = 1d);
        call payment = child_fails(optional);
        wait_for nod(optional, timeout = 5ms);
        map each(over = items) {
            step inner(optional) = broken;
            callback inner_refused = submit_fails(optional);
            call inner_payment = child_fails(optional);
        }
        step done;
    }
}

workflow! {
    required_submit { callback refused = submit_fails; }
}

workflow! {
    required_call { call payment = child_fails; }
}

/// Each failure in a history: its path and whether it was optional.
fn failures(history: Vec<durable::StepRecord>) -> Vec<(String, bool)> {
    history
        .into_iter()
        .filter_map(|r| match r.event {
            StepEvent::Failed { optional, .. } => Some((r.step, optional)),
            _ => None,
        })
        .collect()
}

async fn engine_failures(engine: &Engine, id: &RunId) -> Vec<(String, bool)> {
    failures(engine.history(id).await.unwrap())
}

each_store_and_postgres! {
    fn every_kind_of_optional_item_records_its_failure_as_optional(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(optionals)
                .register(child_fails)
                .build()
                .await
                .unwrap();
            let run = engine.start(optionals, Data::new().assign("items", json!([{}]))).await.unwrap();
            let id = run.id().clone();
            until("the callback `declined` to hand out its token", || !tokens(&id).is_empty()).await;
            until_status(&engine, &id, RunStatus::Suspended).await;
            engine.fail_callback(&tokens(&id)[0].1, "declined by the bank").await.unwrap();
            let out = bounded("the run to finish", run.wait()).await.unwrap();
            assert_eq!(out.get::<bool>("done"), Some(true), "the run went on past every failure");
            let expected: Vec<(String, bool)> = [
                "plain",
                "refused/submit",
                "declined",
                "payment",
                "nod",
                "each[0]/inner",
                "each[0]/inner_refused/submit",
                "each[0]/inner_payment",
            ]
            .into_iter()
            .map(|step| (step.to_owned(), true))
            .collect();
            assert_eq!(engine_failures(&engine, &id).await, expected);
            // A client has no definitions: a completed run went on past every failure.
            let client = Client::new(shared.clone());
            assert_eq!(failures(client.history(&id).await.unwrap()), expected);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_required_callbacks_failed_submit_and_a_required_calls_failed_child_are_not_optional(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(required_submit)
                .register(required_call)
                .register(child_fails)
                .build()
                .await
                .unwrap();
            let client = Client::new(shared.clone());
            let run = engine.start(required_submit, Data::new()).await.unwrap();
            let err = bounded("the run to fail", run.wait()).await.unwrap_err();
            assert!(err.to_string().contains("step `refused/submit` failed after 1 attempt: the provider is down"), "{err}");
            let expected = vec![("refused/submit".to_owned(), false)];
            assert_eq!(engine_failures(&engine, run.id()).await, expected);
            assert_eq!(failures(client.history(run.id()).await.unwrap()), expected);
            let run = engine.start(required_call, Data::new()).await.unwrap();
            bounded("the run to fail", run.wait()).await.unwrap_err();
            let expected = vec![("payment".to_owned(), false)];
            assert_eq!(engine_failures(&engine, run.id()).await, expected);
            assert_eq!(failures(client.history(run.id()).await.unwrap()), expected);
            engine.shutdown().await.unwrap();
        });
    }
}
