//! Map blocks: every element of a state array runs the block, under a concurrency limit and a
//! completion policy, with a typed batch result; nested maps; early termination.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use durable::batch::{BatchResult, BatchStatus, CompletionReason, ItemStatus};
use durable::{workflow, Data, Engine, StepContext, StepError};
use durable_tests::gates::{bounded, hold_until_cancelled_slowly, until_noted};
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, note, run_to_end, wait_for_handle,
};
use serde_json::json;

/// Per run: items running now, and the most ever at once.
static GAUGES: Mutex<Option<HashMap<String, (usize, usize)>>> = Mutex::new(None);

fn gauge(ctx: &StepContext, delta: isize) {
    let mut all = GAUGES.lock().unwrap();
    let g = all
        .get_or_insert_with(HashMap::new)
        .entry(ctx.run_id().to_string())
        .or_default();
    g.0 = (g.0 as isize + delta) as usize;
    g.1 = g.1.max(g.0);
}

fn peak(run: &durable::RunId) -> usize {
    GAUGES
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(run.as_str()))
        .map_or(0, |g| g.1)
}

/// An item `{"n": N, "fail": bool, "ms": delay}`: waits, then doubles `n` or fails.
async fn process(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    let n: u64 = item.get("n").unwrap_or(0);
    note(&ctx, format!("start {n}"));
    gauge(&ctx, 1);
    tokio::time::sleep(Duration::from_millis(item.get("ms").unwrap_or(5))).await;
    gauge(&ctx, -1);
    note(&ctx, format!("end {n}"));
    if item.get::<bool>("fail").unwrap_or(false) {
        return Err(StepError::terminal(format!("item {n} is bad")));
    }
    Ok(item.assign("doubled", n * 2))
}

async fn summarize(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "summarize");
    let batch: BatchResult<Data> = data
        .get("processed")
        .ok_or_else(|| StepError::terminal("no batch result"))?;
    Ok(data.assign("ok", batch.success_count))
}

workflow! {
    bulk {
        map processed(over = items, max_concurrency = 3) {
            step process;
        }
        step summarize;
    }
}

workflow! {
    tolerant {
        map processed(over = items, max_concurrency = 2, tolerated_failures = 2) {
            step process;
        }
    }
}

workflow! {
    by_percentage {
        map processed(over = items, max_concurrency = 1, tolerated_failure_percentage = 20) {
            step process;
        }
    }
}

workflow! {
    first_match {
        map processed(over = items, max_concurrency = 2, min_successful = 1) {
            step process;
        }
    }
}

async fn sync_user(ctx: StepContext, user: Data) -> Result<Data, StepError> {
    let name: String = user.get("name").unwrap_or_default();
    note(&ctx, format!("sync {name} at {}", ctx.step()));
    Ok(user.assign("synced", true))
}

workflow! {
    tenants_sync {
        map tenants_done(over = tenants, max_concurrency = 2) {
            map users_done(over = users, max_concurrency = 2) {
                step sync_user;
            }
        }
    }
}

async fn fine(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "fine");
    Ok(data.assign("fine", true))
}

workflow! {
    guarded {
        parallel(on_error = complete_all) {
            map processed(over = missing) {
                step process;
            }
            step fine;
        }
    }
}

/// Item 0 runs until cancelled (slowly: see `SlowDropNote`); item 1 fails once item 0 runs.
async fn check(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    if item.get::<u64>("n") == Some(0) {
        hold_until_cancelled_slowly(&ctx, "item 0").await;
        return Ok(item);
    }
    until_noted(ctx.run_id(), "holding item 0", 1).await;
    Err(StepError::terminal("item 1 is bad"))
}

/// Fails the run if the batch failed, telling what it saw of item 0 then.
async fn judge(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let seen = events(ctx.run_id()).join(", ");
    note(&ctx, format!("judge saw: {seen}"));
    let batch: BatchResult<Data> = data
        .get("checked")
        .ok_or_else(|| StepError::terminal("no batch result"))?;
    batch.throw_if_error().map_err(StepError::terminal)?;
    Ok(data)
}

workflow! {
    strict {
        map checked(over = items, tolerated_failures = 0) {
            step check;
        }
        step judge;
    }
}

fn items(spec: &[(u64, bool, u64)]) -> Data {
    let items: Vec<_> = spec
        .iter()
        .map(|&(n, fail, ms)| json!({"n": n, "fail": fail, "ms": ms}))
        .collect();
    Data::new().assign("items", items)
}

each_store_and_postgres! {
    fn every_item_runs_under_the_limit_with_results_in_input_order(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(bulk).build().await.unwrap();
            // Later items are quicker, so they finish first.
            let spec: Vec<_> = (0..10).map(|n| (n, false, 40 - 3 * n)).collect();
            let run = engine.start(bulk, items(&spec)).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            let batch: BatchResult<Data> = out.get("processed").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::AllCompleted));
            assert_eq!((batch.total_count, batch.started_count, batch.success_count, batch.failure_count), (10, 10, 10, 0));
            let doubled: Vec<u64> = batch.get_results().iter().map(|d| d.get("doubled").unwrap()).collect();
            assert_eq!(doubled, (0..10).map(|n| n * 2).collect::<Vec<_>>());
            assert_eq!(out.get::<usize>("ok"), Some(10));
            assert_eq!(peak(run.id()), 3, "never more than max_concurrency, and the limit is used");
            // Each item's step is journaled under the map's path.
            let steps: Vec<String> = engine.history(run.id()).await.unwrap().into_iter().map(|r| r.step).collect();
            for i in 0..10 {
                assert!(steps.contains(&format!("processed[{i}]/process")), "{steps:?}");
            }
            assert!(steps.contains(&"processed".to_owned()), "the batch decision is journaled");
        });
    }

    fn exactly_the_tolerated_failures_still_complete(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(tolerant).build().await.unwrap();
            let spec = [(0, true, 5), (1, false, 5), (2, true, 5), (3, false, 5), (4, false, 5)];
            let out = run_to_end(&engine, tolerant, items(&spec)).await.unwrap();
            let batch: BatchResult<Data> = out.get("processed").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::AllCompleted));
            assert_eq!((batch.success_count, batch.failure_count), (3, 2));
            assert_eq!(batch.failed().map(|i| i.index).collect::<Vec<_>>(), [0, 2]);
            // The user's own message, with the step and its attempts beside it.
            assert_eq!(batch.items[2].error.as_deref(), Some("item 2 is bad"));
            assert_eq!(batch.items[2].step.as_deref(), Some("processed[2]/process"));
            assert_eq!(batch.items[2].attempts, Some(1));
            assert!(batch.throw_if_error().is_err(), "failed items are still errors to throw");
        });
    }

    fn one_failure_over_the_tolerance_fails_the_batch_and_starts_nothing_more(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(tolerant).build().await.unwrap();
            // Items 0-2 fail quickly; with 2 at a time, the third failure decides the batch
            // while items 4.. have not started.
            let mut spec = vec![(0, true, 5), (1, true, 5), (2, true, 5), (3, false, 200)];
            spec.extend((4..10).map(|n| (n, false, 5)));
            let run = engine.start(tolerant, items(&spec)).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            let batch: BatchResult<Data> = out.get("processed").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Failed, CompletionReason::FailureToleranceExceeded));
            assert_eq!(batch.failure_count, 3);
            assert_eq!(batch.items[3].status, ItemStatus::Cancelled, "the item in flight is cancelled");
            assert!(batch.items[4..].iter().all(|i| i.status == ItemStatus::NotStarted));
            assert_eq!(batch.started_count, 4);
            for n in 4..10 {
                assert_eq!(count(run.id(), &format!("start {n}")), 0, "item {n} started after the decision");
            }
            assert_eq!(count(run.id(), "end 3"), 0, "the cancelled item did not finish");
        });
    }

    fn a_failure_percentage_rounds_down(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(by_percentage).build().await.unwrap();
            // 20% of 10 items: 2 failures are tolerated, the third is one too many.
            let at_limit: Vec<_> = (0..10).map(|n| (n, n < 2, 1)).collect();
            let batch: BatchResult<Data> = run_to_end(&engine, by_percentage, items(&at_limit)).await.unwrap().get("processed").unwrap();
            assert_eq!(batch.status, BatchStatus::Completed);
            let over: Vec<_> = (0..10).map(|n| (n, n < 3, 1)).collect();
            let batch: BatchResult<Data> = run_to_end(&engine, by_percentage, items(&over)).await.unwrap().get("processed").unwrap();
            assert_eq!((batch.status, batch.started_count), (BatchStatus::Failed, 3));
        });
    }

    fn min_successful_one_returns_after_the_first_success(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(first_match).build().await.unwrap();
            let mut spec = vec![(0, false, 300), (1, false, 5)];
            spec.extend((2..10).map(|n| (n, false, 5)));
            let run = engine.start(first_match, items(&spec)).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            let batch: BatchResult<Data> = out.get("processed").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::MinSuccessfulReached));
            assert_eq!(batch.success_count, 1);
            assert_eq!(batch.items[1].status, ItemStatus::Succeeded);
            assert_eq!(batch.items[0].status, ItemStatus::Cancelled);
            assert_eq!(batch.started_count, 2);
            assert_eq!(count(run.id(), "start 2"), 0);
        });
    }

    fn maps_nest(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(tenants_sync).build().await.unwrap();
            let input = Data::new().assign("tenants", json!([
                {"tenant": "acme", "users": [{"name": "ada"}, {"name": "bob"}]},
                {"tenant": "initech", "users": [{"name": "cy"}]},
            ]));
            let run = engine.start(tenants_sync, input).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            let tenants: BatchResult<Data> = out.get("tenants_done").unwrap();
            assert_eq!(tenants.success_count, 2);
            let acme: BatchResult<Data> = tenants.items[0].result.as_ref().unwrap().get("users_done").unwrap();
            assert_eq!(acme.get_results().iter().map(|u| u.get::<String>("name").unwrap()).collect::<Vec<_>>(), ["ada", "bob"]);
            assert!(events(run.id()).contains(&"sync bob at tenants_done[0]/users_done[1]/sync_user".to_owned()), "{:?}", events(run.id()));
        });
    }

    fn a_failing_map_inside_a_complete_all_block_is_reported_with_the_rest(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(guarded).build().await.unwrap();
            let run = engine.start(guarded, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(err.contains("parallel block (processed, fine) failed: map `processed` runs over the state's array `missing`, but the state holds nothing there"), "{err}");
            assert_eq!(count(run.id(), "fine"), 1, "the other branch ran to its end");
        });
    }

    fn a_failure_past_the_tolerance_fails_fast_without_waiting_for_the_other_items(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(strict).build().await.unwrap();
            let run = engine.start(strict, Data::new().assign("items", json!([{"n": 0}, {"n": 1}]))).await.unwrap();
            // Item 0 never ends by itself: the run ends only if the failure cancels it.
            let err = bounded("the map to fail fast", run.wait()).await.unwrap_err().to_string();
            assert!(err.contains("item 1: item 1 is bad"), "{err}");
            let id = run.id();
            assert_eq!(count(id, "finished item 0"), 0, "{:?}", events(id));
            // Cancelled, and gone before the step after the map ran.
            let judged = events(id).into_iter().find(|e| e.starts_with("judge saw: ")).expect("judge ran");
            assert!(judged.contains("dropped item 0"), "{judged}");
            let history = engine.history(id).await.unwrap();
            let decision = history.iter().find(|r| r.step == "checked").expect("the decision is journaled");
            let durable::StepEvent::Completed { output } = &decision.event else { panic!("{decision:?}") };
            let batch: BatchResult<Data> = serde_json::from_value(output["checked"].clone()).unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Failed, CompletionReason::FailureToleranceExceeded));
            assert_eq!(batch.items[0].status, ItemStatus::Cancelled);
        });
    }

    fn a_map_over_a_missing_field_is_a_clear_error(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(bulk).build().await.unwrap();
            let run = engine.start(bulk, Data::new().assign("items", "not a list")).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(err.contains("map `processed` runs over the state's array `items`, but the state holds \"not a list\" there"), "{err}");
            assert_eq!(count(run.id(), "summarize"), 0);
        });
    }
}
