//! `call NAME = other_workflow;`: child runs (complete, fail, optional, timeout, attach after
//! a parent's crash, cancel cascade), on every store.

use std::time::{Duration, Instant};

use durable::store::{NewRun, ParentLink, Write};
use durable::{
    workflow, Data, Engine, Error, RunId, RunStatus, StepContext, StepError, StepEvent, Workflow,
};
use durable_tests::{
    count, each_store, each_store_and_postgres, events, in_runtime, note, run_to_end,
    wait_for_handle, wait_for_run,
};

async fn charge(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "charge");
    let amount = data.get::<i64>("amount").unwrap_or(0);
    Ok(data.assign("charged", amount * 100))
}

async fn decline(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, "decline");
    Err(StepError::terminal("card declined"))
}

async fn hang(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "hanging");
    std::future::pending::<()>().await;
    Ok(data)
}

async fn prepare(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "prepare");
    Ok(data.assign("payment", serde_json::json!({ "amount": 7 })))
}

async fn ship(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "ship");
    Ok(data.assign("shipped", true))
}

workflow! { payment { step charge; } }
workflow! { declined { step decline; } }
workflow! { stuck_child { step hang; } }
workflow! { order { step prepare; call payment = payment; step ship; } }
workflow! { order_declined { step prepare; call payment = declined; step ship; } }
workflow! { order_optional { step prepare; call payment = declined(optional); step ship; } }
workflow! { order_stuck { step prepare; call payment = stuck_child; step ship; } }

/// Waits (for real, at most 10 s) until `run` noted `what`.
async fn noted(run: &RunId, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(run, what) == 0 {
        assert!(Instant::now() < deadline, "{what} never happened in {run}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

each_store_and_postgres! {
    fn a_child_runs_as_a_run_of_its_own_and_its_output_lands_under_the_name(store) {
        in_runtime(async move {
            let px = RunId::generate();
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(order)
                .register(payment)
                .build()
                .await
                .unwrap();
            let run = engine.start_with_id(order, format!("{px}o1"), Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<i64>("payment.charged"), None);
            let payment_out: serde_json::Value = out.get("payment").unwrap();
            assert_eq!(payment_out["charged"], 700);
            assert_eq!(payment_out["amount"], 7);
            assert_eq!(out.get::<bool>("shipped"), Some(true));
            let child = RunId::from(format!("{px}o1/payment"));
            assert_eq!(events(&child), ["charge"]);
            assert_eq!(events(&format!("{px}o1").into()), ["prepare", "ship"]);
            // The child is a run of its own: listed, with its status, history and parent.
            let info = engine.status(&child).await.unwrap();
            assert_eq!(info.status, RunStatus::Completed);
            assert_eq!(info.workflow, "payment");
            let parent = info.parent.expect("a parent link");
            assert_eq!((parent.run.to_string(), parent.step.as_str()), (format!("{px}o1"), "payment"));
            let listed = engine.list(Default::default()).await.unwrap();
            assert!(listed.iter().any(|r| r.id == child), "{listed:?}");
            let history = engine.history(&child).await.unwrap();
            assert!(history.iter().any(|r| r.step == "charge"));
            // The parent's journal names the child.
            let parent_history = engine.history(&format!("{px}o1").into()).await.unwrap();
            assert!(parent_history.iter().any(|r| r.step == "payment"
                && r.event == StepEvent::ChildStarted { child: child.clone() }));
            engine.shutdown().await.unwrap();
        });
    }

    fn a_failed_child_fails_the_call_and_optional_skips_it(store) {
        in_runtime(async move {
            let px = RunId::generate();
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(order_declined)
                .register(order_optional)
                .register(declined)
                .build()
                .await
                .unwrap();
            let run = engine.start_with_id(order_declined, format!("{px}d1"), Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::RunFailed { .. }), "{err:?}");
            assert!(
                text.contains("d1/payment") && text.contains("declined")
                    && text.contains("card declined") && text.contains("payment"),
                "{text}"
            );
            assert_eq!(events(&format!("{px}d1").into()), ["prepare"]);
            assert_eq!(events(&format!("{px}d1/payment").into()), ["decline"]);
            let child = engine.status(&format!("{px}d1/payment").into()).await.unwrap();
            assert_eq!(child.status, RunStatus::Failed);

            let run = engine.start_with_id(order_optional, format!("{px}d2"), Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<bool>("shipped"), Some(true));
            assert_eq!(events(&format!("{px}d2").into()), ["prepare", "ship"]);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_restarted_parent_attaches_to_its_child_and_starts_no_second_one(store) {
        in_runtime(async move {
            let px = RunId::generate();
            let shared = store.open();
            // A walk that died after creating its child and before journaling it: the child
            // is there, with this parent and step, and the parent's journal does not say so.
            let created = shared
                .commit(&[Write::CreateRun(NewRun {
                    id: format!("{px}a0/payment").into(),
                    workflow: "payment".into(),
                    fingerprint: payment.definition().fingerprint().to_owned(),
                    input: r#"{"amount":7}"#.into(),
                    owner: String::new(),
                    lease_expires_at: 0,
                    parent: Some(ParentLink { run: format!("{px}a0").into(), step: "payment".into() }),
                })])
                .await
                .unwrap();
            assert_eq!(created, [Ok(())]);
            // The first engine drives parents only: children wait, unclaimed.
            let engine = Engine::builder_shared(shared.clone())
                .register(order)
                .build()
                .await
                .unwrap();
            engine.start_with_id(order, format!("{px}a0"), Data::new()).await.unwrap();
            engine.start_with_id(order, format!("{px}a1"), Data::new()).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            for parent in [format!("{px}a0"), format!("{px}a1")] {
                loop {
                    let record = shared.load_run(&parent.as_str().into()).await.unwrap().unwrap();
                    if record.status == RunStatus::Suspended {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{parent} never suspended: {record:?}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // The process dies: nothing is shut down gracefully.
            drop(engine);
            drop(shared);
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(order)
                .register(payment)
                .build()
                .await
                .unwrap();
            for parent in [format!("{px}a0"), format!("{px}a1")] {
                let out: Data = wait_for_run(&engine, &parent.as_str().into()).await.unwrap();
                assert_eq!(out.get::<bool>("shipped"), Some(true), "{parent}");
                let child = RunId::from(format!("{parent}/payment"));
                // One child, run once; the parent's steps each ran once.
                assert_eq!(events(&child), ["charge"], "{parent}");
                assert_eq!(events(&parent.as_str().into()), ["prepare", "ship"]);
            }
            let runs = engine.list(Default::default()).await.unwrap();
            assert_eq!(runs.len(), 4, "{runs:?}");
            // A run under the child's id that is not this item's child is not taken over.
            shared
                .commit(&[Write::CreateRun(NewRun {
                    id: format!("{px}a2/payment").into(),
                    workflow: "payment".into(),
                    fingerprint: payment.definition().fingerprint().to_owned(),
                    input: "{}".into(),
                    owner: "someone-else".into(),
                    lease_expires_at: u64::MAX,
                    parent: None,
                })])
                .await
                .unwrap();
            engine.start_with_id(order, format!("{px}a2"), Data::new()).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let error = loop {
                if let Some(error) = engine.status(&format!("{px}a2").into()).await.unwrap().stalled {
                    break error;
                }
                assert!(Instant::now() < deadline, "a2 never stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let text = error.to_string();
            assert!(text.contains("a2/payment") && text.contains("not this item's child"), "{text}");
            engine.shutdown().await.unwrap();
        });
    }

    fn cancelling_a_parent_cancels_its_child(store) {
        in_runtime(async move {
            let px = RunId::generate();
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(order_stuck)
                .register(stuck_child)
                .build()
                .await
                .unwrap();
            let run = engine.start_with_id(order_stuck, format!("{px}c1"), Data::new()).await.unwrap();
            let child = RunId::from(format!("{px}c1/payment"));
            noted(&child, "hanging").await;
            engine.cancel(&format!("{px}c1").into(), "order withdrawn").await.unwrap();
            assert!(matches!(wait_for_handle(&engine, &run).await, Err(Error::RunCancelled { .. })));
            let err = wait_for_run::<Data>(&engine, &child).await.unwrap_err();
            match err {
                Error::RunCancelled { reason, .. } => assert_eq!(reason, "order withdrawn"),
                other => panic!("{other:?}"),
            }
            assert_eq!(events(&format!("{px}c1").into()), ["prepare"]);
            engine.shutdown().await.unwrap();
        });
    }
}

workflow! { order_timeout { step prepare; call payment = stuck_child(timeout = 1h); step ship; } }
workflow! { order_timeout_optional { step prepare; call payment = stuck_child(optional, timeout = 1h); step ship; } }

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Invoice {
    amount: u64,
    paid: bool,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Checkout {
    id: u64,
    invoice: Invoice,
}

async fn pay(invoice: Invoice) -> Result<Invoice, StepError> {
    Ok(Invoice {
        paid: true,
        ..invoice
    })
}

async fn seal(c: Checkout) -> Result<Checkout, StepError> {
    Ok(c)
}

workflow! { billing(state = Invoice) { step pay; } }
workflow! { checkout(state = Checkout) { call invoice = billing; step seal; } }

// On tokio's paused clock (the timeout is an hour), which a network store's connect and
// operation timeouts cannot run on: memory and SQLite only.
each_store! {
    fn a_child_that_outlives_its_timeout_fails_the_call_and_is_cancelled(store) {
        durable_tests::in_paused_runtime(async move {
            let px = RunId::generate();
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(order_timeout)
                .register(order_timeout_optional)
                .register(stuck_child)
                .build()
                .await
                .unwrap();
            let id = RunId::from(format!("{px}t1"));
            engine.start_with_id(order_timeout, id.clone(), Data::new()).await.unwrap();
            let err = wait_for_run::<Data>(&engine, &id).await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("timed out after 3600s waiting for child run")
                    && text.contains(&format!("{px}t1/payment")),
                "{text}"
            );
            let child = RunId::from(format!("{px}t1/payment"));
            match wait_for_run::<Data>(&engine, &child).await {
                Err(Error::RunCancelled { reason, .. }) => {
                    assert!(reason.contains("stopped waiting"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(events(&id), ["prepare"]);

            let id = RunId::from(format!("{px}t2"));
            engine.start_with_id(order_timeout_optional, id.clone(), Data::new()).await.unwrap();
            let out = wait_for_run::<Data>(&engine, &id).await.unwrap();
            assert_eq!(out.get::<bool>("shipped"), Some(true));
            engine.shutdown().await.unwrap();
        });
    }
}

each_store_and_postgres! {
    fn a_typed_parent_gets_the_typed_child_s_output_in_its_field(store) {
        in_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone())
                .register(checkout)
                .register(billing)
                .build()
                .await
                .unwrap();
            let input = Checkout { id: 3, invoice: Invoice { amount: 12, paid: false } };
            let out = run_to_end(&engine, checkout, input).await.unwrap();
            assert_eq!((out.id, out.invoice.amount, out.invoice.paid), (3, 12, true));
            engine.shutdown().await.unwrap();
        });
    }
}

#[test]
fn the_called_workflow_is_part_of_the_fingerprint_and_the_graph() {
    workflow! { order_b { step prepare; call payment = declined; step ship; } }
    workflow! { order_c { step prepare; step ship; } }
    let (a, b, c) = (
        order.definition(),
        order_b.definition(),
        order_c.definition(),
    );
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_eq!(a.step_names(), ["prepare", "payment", "ship"]);
    let mermaid = a.to_mermaid();
    assert!(
        mermaid.contains(r#"payment[["call payment = payment"]]"#),
        "{mermaid}"
    );
    assert!(mermaid.contains("prepare --> payment") && mermaid.contains("payment --> ship"));
    let dot = order_timeout_optional.definition().to_dot();
    assert!(
        dot.contains(r#""payment" [shape=box3d, label="call payment = stuck_child\ntimeout 3600s\noptional"];"#),
        "{dot}"
    );
}
