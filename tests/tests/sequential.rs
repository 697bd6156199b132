//! Sequential steps: order, state passing, typed state, the step context and the journal.

use durable::{workflow, Data, Engine, RunStatus, StepContext, StepError, StepEvent, Workflow};
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, note, run_to_end, wait_for_handle,
    wait_for_run,
};
use serde::{Deserialize, Serialize};

async fn create_user(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "create_user");
    let name: String = data.get("name").unwrap_or_default();
    Ok(data
        .assign("user_id", 42)
        .assign("greeting", format!("hello {name}")))
}

async fn add_email(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "add_email");
    // Sees the previous step's output.
    let id: u64 = data
        .get("user_id")
        .ok_or_else(|| StepError::terminal("no user_id"))?;
    Ok(data.assign("email", format!("user{id}@example.com")))
}

async fn complete(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "complete");
    Ok(data.assign("done", true))
}

workflow! {
    /// Three steps in a row.
    signup {
        step create_user;
        step add_email;
        step complete;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    total_cents: u64,
    lines: Vec<String>,
    paid: bool,
}

async fn add_line(order: Order) -> Result<Order, StepError> {
    let mut order = order;
    order.lines.push("widget".into());
    order.total_cents += 250;
    Ok(order)
}

async fn pay(ctx: StepContext, order: Order) -> Result<Order, StepError> {
    note(&ctx, format!("pay {}", ctx.idempotency_key()));
    Ok(Order {
        paid: true,
        ..order
    })
}

workflow! {
    checkout(state = Order) {
        step add_line;
        step pay;
    }
}

async fn inspect(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    Ok(data
        .assign("workflow", ctx.workflow())
        .assign("run_id", ctx.run_id().as_str())
        .assign("step", ctx.step())
        .assign("attempt", ctx.attempt())
        .assign("key", ctx.idempotency_key()))
}

workflow! {
    introspect { step inspect; }
}

each_store_and_postgres! {
    fn steps_run_in_order_and_see_the_previous_output(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(signup).build().await.unwrap();
            let run = engine.start(signup, Data::new().assign("name", "ada")).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<u64>("user_id"), Some(42));
            assert_eq!(out.get::<String>("email").as_deref(), Some("user42@example.com"));
            assert_eq!(out.get::<String>("greeting").as_deref(), Some("hello ada"));
            assert_eq!(out.get::<bool>("done"), Some(true));
            assert_eq!(events(run.id()), ["create_user", "add_email", "complete"]);

            // The journal holds each step once, in order, with the state it returned.
            let history = engine.history(run.id()).await.unwrap();
            let steps: Vec<_> = history.iter().map(|r| (r.seq, r.step.as_str(), r.attempt)).collect();
            assert_eq!(steps, [(1, "create_user", 1), (2, "add_email", 1), (3, "complete", 1)]);
            match &history[1].event {
                StepEvent::Completed { output } => {
                    assert_eq!(output["email"], "user42@example.com");
                    assert!(output.get("done").is_none(), "a step's journaled output is its own");
                }
                other => panic!("expected a completion, got {other:?}"),
            }
            let info = engine.status(run.id()).await.unwrap();
            assert_eq!(info.status, RunStatus::Completed);
            assert_eq!(info.workflow, "signup");
            assert_eq!(info.input["name"], "ada");
            assert_eq!(info.output.unwrap()["done"], true);
            assert_eq!(info.fingerprint, signup.definition().fingerprint());
        });
    }

    fn typed_state_round_trips_through_the_journal(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(checkout).build().await.unwrap();
            let order = Order { id: 7, total_cents: 1000, lines: vec![], paid: false };
            let run = engine.start(checkout, order).await.unwrap();
            let out: Order = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out, Order { id: 7, total_cents: 1250, lines: vec!["widget".into()], paid: true });
            assert_eq!(count(run.id(), &format!("pay {}/pay", run.id())), 1);
            // Any process can read the output back, typed.
            let again: Order = wait_for_run(&engine, run.id()).await.unwrap();
            assert_eq!(again, out);
        });
    }

    fn the_step_context_names_the_run_and_step(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(introspect).build().await.unwrap();
            let run = engine.start_with_id(introspect, "order-1", Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<String>("workflow").as_deref(), Some("introspect"));
            assert_eq!(out.get::<String>("run_id").as_deref(), Some("order-1"));
            assert_eq!(out.get::<String>("step").as_deref(), Some("inspect"));
            assert_eq!(out.get::<u32>("attempt"), Some(1));
            assert_eq!(out.get::<String>("key").as_deref(), Some("order-1/inspect"));
        });
    }

    fn a_second_start_with_the_same_id_is_refused(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(introspect).build().await.unwrap();
            let run = engine.start_with_id(introspect, "same", Data::new()).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let err = engine.start_with_id(introspect, "same", Data::new()).await.err().unwrap();
            assert!(matches!(err, durable::Error::RunExists { .. }), "{err}");
            assert_eq!(err.to_string(), "a run with id same exists already");
        });
    }

    fn finished_runs_are_read_back_after_a_restart(store) {
        let id = in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(signup).build().await.unwrap();
            let run = engine.start(signup, Data::new().assign("name", "bob")).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            run.id().clone()
        });
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(signup).build().await.unwrap();
            assert!(engine.resumed().is_empty(), "a finished run is not resumed");
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(out.get::<String>("greeting").as_deref(), Some("hello bob"));
            assert_eq!(events(&id).len(), 3, "nothing ran again");
        });
    }
}

/// On a current-thread runtime the SQLite writer cannot commit on the runtime's only thread
/// (every task would stall during the fsync), so it goes through the blocking pool: the same
/// behaviour, by another path.
#[test]
fn sqlite_works_on_a_current_thread_runtime() {
    let store = durable_tests::TestStore::new(durable_tests::Backend::Sqlite);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::builder_shared(store.open())
            .register(signup)
            .build()
            .await
            .unwrap();
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    run_to_end(&engine, signup, Data::new().assign("name", format!("u{i}"))).await
                })
            })
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            let out = run.await.unwrap().unwrap();
            assert_eq!(out.get::<String>("greeting"), Some(format!("hello u{i}")));
        }
    });
}
