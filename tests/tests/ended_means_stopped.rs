//! When `wait` reports a run failed or cancelled, none of its steps still runs: the branches,
//! map items and fan-out operations cancelled with it have been dropped before its end was
//! committed, however long their cancellation takes, nested blocks included.
//!
//! Every step here runs until cancelled, and its cancellation takes 200 ms (`SlowDropNote`):
//! an engine that commits the end without waiting for the cancelled tasks tells `wait` before
//! they are dropped, and the check right after `wait` sees them missing.

use durable::{workflow, Data, Engine, Error, RunId, StepContext, StepError};
use durable_tests::gates::{bounded, hold_until_cancelled_slowly, noted_with, until};
use durable_tests::{each_store_and_postgres, events, in_runtime};
use serde_json::json;

/// Runs until cancelled, as `dropped PATH` and `holding PATH` tell.
async fn hold(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    hold_until_cancelled_slowly(&ctx, ctx.step()).await;
    Ok(data)
}

/// Two fan-out operations that run until cancelled.
async fn fan(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let ops: Vec<_> = (0..2)
        .map(|i| {
            let ctx = ctx.clone();
            move || async move {
                hold_until_cancelled_slowly(&ctx, &format!("op {i}")).await;
                Ok::<_, StepError>(i)
            }
        })
        .collect();
    let done = ctx.fan_out(ops).await?;
    Ok(data.assign("done", done.success))
}

workflow! {
    branches {
        parallel {
            step left = hold;
            step right = hold;
        }
    }
}

workflow! {
    items {
        map each(over = items) {
            step work = hold;
        }
    }
}

workflow! {
    nested {
        map outer(over = items, max_concurrency = 2) {
            parallel {
                step inner_a = hold;
                step inner_b = hold;
            }
        }
    }
}

workflow! {
    operations {
        parallel {
            step fanned = fan;
            step beside = hold;
        }
    }
}

/// Starts `workflow` with `input`, waits until `holding` steps hold, cancels the run and
/// checks that, when `wait` reports it cancelled, each of them was dropped and none finished.
async fn cancel_when_holding<W: durable::Workflow<State = Data>>(
    engine: &Engine,
    workflow: W,
    input: Data,
    holding: usize,
) -> RunId {
    let run = engine.start(workflow, input).await.unwrap();
    let id = run.id().clone();
    until(&format!("{holding} steps of run {id} to hold"), || {
        noted_with(&id, "holding ").len() >= holding
    })
    .await;
    engine.cancel(&id, "not needed").await.unwrap();
    let err = bounded(&format!("run {id} to end"), run.wait())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::RunCancelled { reason, .. } if reason == "not needed"),
        "{err:?}"
    );
    // Right when `wait` told: every step that held was dropped already.
    let held: Vec<String> = noted_with(&id, "holding ")
        .iter()
        .map(|e| e["holding ".len()..].to_owned())
        .collect();
    let dropped: Vec<String> = noted_with(&id, "dropped ")
        .iter()
        .map(|e| e["dropped ".len()..].to_owned())
        .collect();
    for step in &held {
        assert!(
            dropped.contains(step),
            "{step} still ran when the run's end was told: {:?}",
            events(&id)
        );
    }
    assert!(noted_with(&id, "finished ").is_empty(), "{:?}", events(&id));
    assert_eq!(held.len(), holding, "{:?}", events(&id));
    id
}

each_store_and_postgres! {
    fn a_cancelled_runs_branches_are_gone_when_wait_returns(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(branches).build().await.unwrap();
            cancel_when_holding(&engine, branches, Data::new(), 2).await;
        });
    }

    fn a_cancelled_runs_map_items_are_gone_when_wait_returns(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(items).build().await.unwrap();
            let input = Data::new().assign("items", json!([{}, {}, {}]));
            cancel_when_holding(&engine, items, input, 3).await;
        });
    }

    fn a_cancelled_runs_nested_blocks_are_gone_when_wait_returns(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(nested).build().await.unwrap();
            let input = Data::new().assign("items", json!([{}, {}, {}]));
            // Two items at once, each with two branches.
            cancel_when_holding(&engine, nested, input, 4).await;
        });
    }

    fn a_cancelled_runs_fan_out_operations_are_gone_when_wait_returns(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(operations).build().await.unwrap();
            let id = cancel_when_holding(&engine, operations, Data::new(), 3).await;
            let dropped = noted_with(&id, "dropped op ");
            assert_eq!(dropped.len(), 2, "{:?}", events(&id));
        });
    }
}
