//! `callback NAME = submit_fn(...)`: the submit function gets an unguessable token, journaled
//! before it first runs, so every attempt hands out the same one; the run waits until the
//! callback is completed or failed; a token is good once, and a token of a finished run is
//! refused. On the memory and the SQLite store.

use std::sync::Mutex;
use std::time::Duration;

use durable::callback::Callback;
use durable::{workflow, Client, Data, Engine, Error, RunId, RunStatus, StepError, StepEvent};
use durable_tests::{each_store_and_postgres, in_runtime, wait_for_handle, wait_for_run};

/// (run, attempt, token) of every call of the submit function.
static CALLS: Mutex<Vec<(String, u32, String)>> = Mutex::new(Vec::new());

fn calls(run: &RunId) -> Vec<(u32, String)> {
    CALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _, _)| r == run.as_str())
        .map(|(_, attempt, token)| (*attempt, token.clone()))
        .collect()
}

async fn request_payment(callback: Callback, data: Data) -> Result<Data, StepError> {
    let attempt = callback.context().attempt();
    CALLS.lock().unwrap().push((
        callback.run_id().to_string(),
        attempt,
        callback.token().to_owned(),
    ));
    if data.get::<bool>("flaky") == Some(true) && attempt == 1 {
        return Err(StepError::retryable("the payment provider is down"));
    }
    Ok(data.assign("requested", true))
}

async fn ship(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("shipped", true))
}

workflow! {
    pay {
        callback paid = request_payment(timeout = 1d, retry(max_attempts = 3, initial = 10ms));
        step ship;
    }
}

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
    fn a_completed_callback_puts_its_payload_in_the_state_and_the_run_goes_on(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(pay).build().await.unwrap();
            let run = engine.start(pay, Data::new().assign("flaky", true)).await.unwrap();
            until_suspended(&engine.client(), run.id()).await;
            // Two attempts (the first failed), one token, made before the first.
            let calls = calls(run.id());
            assert_eq!(calls.len(), 2, "{calls:?}");
            assert_eq!(calls[0].1, calls[1].1, "every attempt hands out the same token");
            let token = calls[0].1.clone();
            assert!(token.len() >= 32 + 4, "{token}");
            let history = engine.history(run.id()).await.unwrap();
            assert!(matches!(&history[0].event, StepEvent::CallbackCreated { token: t } if *t == token), "{history:?}");
            assert_eq!(history[1].step, "paid/submit");

            engine.complete_callback(&token, serde_json::json!({"amount": 42})).await.unwrap();
            let output = wait_for_handle(&engine, &run).await.unwrap();
            let paid: serde_json::Value = output.get("paid").unwrap();
            assert_eq!(paid, serde_json::json!({"amount": 42}));
            assert_eq!(output.get::<bool>("requested"), Some(true));
            assert_eq!(output.get::<bool>("shipped"), Some(true));

            // Good once: the same token again is refused, naming the run and step.
            let err = engine.complete_callback(&token, 1).await.unwrap_err();
            assert!(matches!(&err, Error::CallbackRefused { step: Some(step), .. } if step == "paid"), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "cannot complete the callback of workflow `pay` run {} step `paid`: the run has \
                     finished (completed): its tokens are good no more",
                    run.id()
                )
            );
            engine.shutdown().await.unwrap();
        });
    }

    fn a_failed_callback_fails_the_run_and_a_token_is_good_once(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(pay).build().await.unwrap();
            let run = engine.start(pay, Data::new()).await.unwrap();
            until_suspended(&engine.client(), run.id()).await;
            let token = calls(run.id())[0].1.clone();
            // Completed from a client (no definitions needed), then used again at once.
            let client = Client::new(shared.clone());
            client.fail_callback(&token, "card declined").await.unwrap();
            let again = client.complete_callback(&token, true).await.unwrap_err();
            let again = again.to_string();
            assert!(
                again.contains("the token was used already: a token is good once")
                    || again.contains("the run has finished"),
                "{again}"
            );
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(err.to_string().contains("step `paid` failed after 1 attempt: callback `paid` failed: card declined"), "{err}");
            assert_eq!(shared.load_inbox(run.id()).await.unwrap().len(), 1, "the second use stored nothing");
            assert!(!engine.history(run.id()).await.unwrap().iter().any(|r| r.step == "ship"));
            engine.shutdown().await.unwrap();
        });
    }

    fn a_token_used_twice_before_the_run_takes_it_is_refused_the_second_time(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(pay).build().await.unwrap();
            let run = engine.start(pay, Data::new()).await.unwrap();
            until_suspended(&engine.client(), run.id()).await;
            engine.shutdown().await.unwrap();
            drop((engine, shared));
            // No engine drives the store: both completions meet the suspended run.
            let shared = store.open();
            let client = Client::new(shared.clone());
            let token = calls(run.id())[0].1.clone();
            client.complete_callback(&token, "first").await.unwrap();
            let err = client.complete_callback(&token, "second").await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("cannot complete the callback of workflow `pay` run {} step `paid`: the token was used already: a token is good once", run.id())
            );
            let engine = Engine::builder_shared(shared.clone()).register(pay).build().await.unwrap();
            let output: Data = wait_for_run(&engine, run.id()).await.unwrap();
            assert_eq!(output.get::<String>("paid").as_deref(), Some("first"));
            // The submit function ran once: the resumed run replayed it.
            assert_eq!(calls(run.id()).len(), 1);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_completion_json_cannot_hold_is_refused_and_never_stored_as_null(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(pay).build().await.unwrap();
            let client = Client::new(shared.clone());
            let run = engine.start(pay, Data::new()).await.unwrap();
            let id = run.id();
            until_suspended(&client, id).await;
            let token = calls(id)[0].1.clone();
            let refused = |what: &str| {
                format!(
                    "cannot complete the callback of workflow `pay` run {id} step `paid`: the \
                     payload does not encode as JSON: it holds the number {what}, which JSON \
                     cannot represent (JSON has no NaN or infinity); store such a number as a \
                     string or an Option instead"
                )
            };
            let err = engine.complete_callback(&token, ("amount", f64::INFINITY)).await.unwrap_err();
            assert!(matches!(err, Error::CallbackRefused { .. }), "{err:?}");
            assert_eq!(err.to_string(), refused("inf"));
            let err = client.complete_callback(&token, f64::NAN).await.unwrap_err();
            assert_eq!(err.to_string(), refused("NaN"));
            assert!(shared.load_inbox(id).await.unwrap().is_empty(), "nothing stored");
            // The token is still good: the refused completions did not use it.
            client.complete_callback(&token, 12.5).await.unwrap();
            let output = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(output.get::<f64>("paid"), Some(12.5));
            // A failure's text is delivered as written.
            let run = engine.start(pay, Data::new()).await.unwrap();
            until_suspended(&client, run.id()).await;
            let token = calls(run.id())[0].1.clone();
            client.fail_callback(&token, "the amount was NaN").await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(err.to_string().ends_with("the amount was NaN"), "{err}");
            engine.shutdown().await.unwrap();
        });
    }

    fn a_forged_or_foreign_token_is_refused(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(pay).build().await.unwrap();
            let err = engine.complete_callback("not-a-token", 1).await.unwrap_err();
            assert!(err.to_string().contains("is not a callback token"), "{err}");
            let run = engine.start(pay, Data::new()).await.unwrap();
            until_suspended(&engine.client(), run.id()).await;
            let token = calls(run.id())[0].1.clone();
            // The right run, a guessed secret.
            let (routed, secret) = token.rsplit_once('.').unwrap();
            let forged = format!("{routed}.{}", "A".repeat(secret.len()));
            let err = engine.complete_callback(&forged, 1).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("cannot complete the callback of workflow `pay` run {}: the run made no callback with this token", run.id())
            );
            engine.complete_callback(&token, 1).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            // Finished: a forged token still names no step (nothing tells which it forged), the
            // real one names its step.
            let err = engine.fail_callback(&forged, "late").await.unwrap_err();
            assert!(matches!(&err, Error::CallbackRefused { run_id: Some(_), step: None, .. }), "{err:?}");
            assert!(err.to_string().ends_with("the run made no callback with this token"), "{err}");
            let err = engine.fail_callback(&token, "late").await.unwrap_err();
            assert!(matches!(&err, Error::CallbackRefused { step: Some(step), .. } if step == "paid"), "{err:?}");
            engine.shutdown().await.unwrap();
        });
    }
}
