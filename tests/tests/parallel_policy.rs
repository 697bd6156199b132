//! Parallel blocks as capable as maps: a concurrency limit, completion policies, a batch result
//! in declaration order, a journaled decision; and the map batch-result defects (percentage
//! threshold, `null` results, the completion reason, bare item errors).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use durable::batch::{BatchResult, BatchStatus, CompletionReason, ItemStatus};
use durable::{workflow, Data, Engine, Error, StepContext, StepError, StepEvent, Workflow};
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, note, run_to_end, wait_for_handle,
    wait_for_run,
};
use serde_json::{json, Value};

/// Per run: branches running now, and the most ever at once.
static GAUGES: Mutex<Option<HashMap<String, (usize, usize)>>> = Mutex::new(None);

fn gauge(run: &str, delta: isize) {
    let mut all = GAUGES.lock().unwrap();
    let g = all
        .get_or_insert_with(HashMap::new)
        .entry(run.to_owned())
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

/// Counts a branch out when it ends, cancelled or not.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        gauge(&self.0, -1);
    }
}

/// A branch that follows the input's `plan.<its name>`: `ms` to wait, `fail` to fail.
async fn branch(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let name = ctx.step().rsplit('/').next().unwrap().to_owned();
    let plan: Value = data.get("plan").unwrap_or_default();
    let ms = plan[&name]["ms"].as_u64().unwrap_or(5);
    let fail = plan[&name]["fail"].as_bool().unwrap_or(false);
    note(&ctx, format!("start {name}"));
    gauge(ctx.run_id().as_str(), 1);
    let running = Running(ctx.run_id().to_string());
    tokio::time::sleep(Duration::from_millis(ms)).await;
    drop(running);
    note(&ctx, format!("end {name}"));
    if fail {
        return Err(StepError::terminal(format!("{name} is down")));
    }
    Ok(data.assign(format!("did_{name}"), true))
}

async fn then(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "then");
    Ok(data.assign("then", true))
}

fn plan(spec: &[(&str, u64, bool)]) -> Data {
    let plan: serde_json::Map<String, Value> = spec
        .iter()
        .map(|&(name, ms, fail)| (name.to_owned(), json!({"ms": ms, "fail": fail})))
        .collect();
    Data::new().assign("plan", plan)
}

fn started(run: &durable::RunId) -> Vec<String> {
    events(run)
        .into_iter()
        .filter_map(|e| e.strip_prefix("start ").map(str::to_owned))
        .collect()
}

workflow! {
    limited {
        parallel fetched(max_concurrency = 2) {
            step a = branch;
            step b = branch;
            step c = branch;
            step d = branch;
        }
        step then;
    }
}

workflow! {
    first_wins {
        parallel fetched(min_successful = 1) {
            step slow = branch;
            step quick = branch;
        }
        step then;
    }
}

workflow! {
    one_at_a_time {
        parallel fetched(max_concurrency = 1, min_successful = 1) {
            step a = branch;
            step b = branch;
            step c = branch;
        }
        step then;
    }
}

workflow! {
    strict {
        parallel fetched(max_concurrency = 1, tolerated_failures = 0) {
            step a = branch;
            step b = branch;
            step c = branch;
        }
        step then;
    }
}

workflow! {
    half {
        parallel fetched(tolerated_failure_percentage = 50) {
            step a = branch;
            step b = branch;
            step c = branch;
            step d = branch;
        }
    }
}

workflow! {
    serial_fail_fast {
        parallel(max_concurrency = 1) {
            step a = branch;
            step b = branch;
            step c = branch;
        }
        step then;
    }
}

workflow! {
    reported_in_order {
        parallel(on_error = complete_all) {
            step late = branch;
            step early = branch;
        }
    }
}

async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if data.get::<bool>("hold").unwrap_or(false) && count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data)
}

workflow! {
    resumable {
        parallel fetched(min_successful = 2, merge = last_wins) {
            step r1 = branch;
            step r2 = branch;
            step r3 = branch;
        }
        step gate;
    }
}

async fn five(_: serde_json::Value) -> Result<serde_json::Value, StepError> {
    Ok(json!(5))
}

async fn object(_: serde_json::Value) -> Result<serde_json::Value, StepError> {
    Ok(json!({"ok": true}))
}

workflow! {
    not_mergeable(state = serde_json::Value) {
        parallel {
            step object;
            step five;
        }
    }
}

async fn echo(item: Option<u32>) -> Result<Option<u32>, StepError> {
    Ok(item)
}

workflow! {
    nulls {
        map echoed(over = values, item = Option<u32>) {
            step echo;
        }
    }
}

async fn maybe_fail(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    let n: u64 = item.get("n").unwrap_or(0);
    note(&ctx, format!("item {n}"));
    if item.get::<bool>("fail").unwrap_or(false) {
        return Err(StepError::terminal(format!("item {n} is bad")));
    }
    Ok(item)
}

workflow! {
    first_success {
        map tried(over = items, max_concurrency = 1, min_successful = 1) {
            step maybe_fail;
        }
    }
}

workflow! {
    twenty_nine_percent {
        map tried(over = items, tolerated_failure_percentage = 29) {
            step maybe_fail;
        }
    }
}

workflow! {
    after_a_named_block {
        dag {
            parallel fetched(max_concurrency = 1) {
                step a = branch;
                step b = branch;
            }
            step c(after = [fetched]) = branch;
        }
    }
}

fn items(failing: impl Fn(u64) -> bool, total: u64) -> Data {
    let items: Vec<Value> = (0..total)
        .map(|n| json!({"n": n, "fail": failing(n)}))
        .collect();
    Data::new().assign("items", items)
}

each_store_and_postgres! {
    fn max_concurrency_starts_branches_in_declaration_order_under_the_limit(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(limited).build().await.unwrap();
            let input = plan(&[("a", 30, false), ("b", 10, false), ("c", 10, false), ("d", 10, false)]);
            let run = engine.start(limited, input).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(peak(run.id()), 2, "never more than max_concurrency, and the limit is used");
            let order = started(run.id());
            let mut first_two = order[..2].to_vec();
            first_two.sort();
            assert_eq!(first_two, ["a", "b"], "the first two declared start first: {order:?}");
            assert_eq!(order.len(), 4);
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::AllCompleted));
            let names: Vec<_> = batch.items.iter().map(|i| i.name.as_deref().unwrap()).collect();
            assert_eq!(names, ["a", "b", "c", "d"], "declaration order");
            // Each branch's result is its changes against the snapshot.
            assert_eq!(batch.get_results(), [&json!({"did_a": true}), &json!({"did_b": true}), &json!({"did_c": true}), &json!({"did_d": true})]);
            for step in ["a", "b", "c", "d"] {
                assert_eq!(out.get::<bool>(&format!("did_{step}")), Some(true), "merged");
            }
            assert_eq!(out.get::<bool>("then"), Some(true));
        });
    }

    fn min_successful_cancels_the_branches_in_flight(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(first_wins).build().await.unwrap();
            let began = Instant::now();
            let input = plan(&[("slow", 10_000, false), ("quick", 5, false)]);
            let run = engine.start(first_wins, input).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert!(began.elapsed() < Duration::from_secs(8), "the slow branch was awaited");
            assert!(!events(run.id()).contains(&"end slow".to_owned()), "the slow branch was not cancelled");
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::MinSuccessfulReached));
            assert_eq!(batch.items[0].status, ItemStatus::Cancelled);
            assert_eq!(batch.items[1].status, ItemStatus::Succeeded);
            assert_eq!((batch.started_count, batch.success_count, batch.failure_count), (2, 1, 0));
            // Only the successful branch is merged.
            assert_eq!(out.get::<bool>("did_quick"), Some(true));
            assert_eq!(out.get::<bool>("did_slow"), None);
            assert_eq!(out.get::<bool>("then"), Some(true));
        });
    }

    fn branches_not_started_when_the_block_is_decided_never_start(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(one_at_a_time).build().await.unwrap();
            let input = plan(&[("a", 5, true), ("b", 5, false), ("c", 5, false)]);
            let run = engine.start(one_at_a_time, input).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(started(run.id()), ["a", "b"], "c never starts");
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::MinSuccessfulReached));
            let statuses: Vec<_> = batch.items.iter().map(|i| i.status).collect();
            assert_eq!(statuses, [ItemStatus::Failed, ItemStatus::Succeeded, ItemStatus::NotStarted]);
            // The failed branch's own error, with its step and attempts beside it.
            assert_eq!(batch.items[0].error.as_deref(), Some("a is down"));
            assert_eq!((batch.items[0].step.as_deref(), batch.items[0].attempts), (Some("a"), Some(1)));
            // The block journals its decision under its name.
            let history = engine.history(run.id()).await.unwrap();
            let decision = history.iter().find(|r| r.step == "fetched").expect("the decision is journaled");
            let StepEvent::Completed { output } = &decision.event else { panic!("{decision:?}") };
            assert_eq!(output["fetched"], serde_json::to_value(&batch).unwrap());
        });
    }

    fn exceeding_the_tolerance_fails_the_batch_and_the_workflow_goes_on(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(strict).build().await.unwrap();
            let input = plan(&[("a", 5, false), ("b", 5, true), ("c", 5, false)]);
            let run = engine.start(strict, input).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(started(run.id()), ["a", "b"]);
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Failed, CompletionReason::FailureToleranceExceeded));
            assert_eq!(batch.items[2].status, ItemStatus::NotStarted);
            let err = batch.throw_if_error().unwrap_err();
            assert!(err.contains("item 1: b is down"), "{err}");
            assert_eq!(out.get::<bool>("did_a"), Some(true), "the successful branch is merged");
            assert_eq!(out.get::<bool>("then"), Some(true), "a later step decides");
        });
    }

    fn the_percentage_counts_the_branches(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(half).build().await.unwrap();
            let two = plan(&[("a", 5, true), ("b", 5, false), ("c", 5, true), ("d", 5, false)]);
            let out = run_to_end(&engine, half, two).await.unwrap();
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!((batch.status, batch.failure_count), (BatchStatus::Completed, 2), "50% of 4 is 2");
            // `d` is slow enough that the third failure always decides first (then `d` is cancelled).
            let three = plan(&[("a", 5, true), ("b", 5, true), ("c", 5, true), ("d", 3000, false)]);
            let out = run_to_end(&engine, half, three).await.unwrap();
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Failed, CompletionReason::FailureToleranceExceeded));
        });
    }

    fn a_dag_node_can_come_after_a_named_parallel_block(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(after_a_named_block).build().await.unwrap();
            let input = plan(&[("a", 20, false), ("b", 20, false), ("c", 1, false)]);
            let run = engine.start(after_a_named_block, input).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(started(run.id()).last().map(String::as_str), Some("c"), "c waits for the block");
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            assert_eq!(batch.success_count, 2);
            assert_eq!(out.get::<bool>("did_c"), Some(true));
        });
    }

    fn without_a_policy_fail_fast_starts_nothing_more(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(serial_fail_fast).build().await.unwrap();
            let input = plan(&[("a", 5, true), ("b", 5, false), ("c", 5, false)]);
            let run = engine.start(serial_fail_fast, input).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert_eq!(started(run.id()), ["a"]);
            assert!(err.to_string().contains("step `a` failed after 1 attempt: a is down"), "{err}");
            assert!(!events(run.id()).contains(&"then".to_owned()));
        });
    }

    fn complete_all_lists_failures_in_declaration_order(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(reported_in_order).build().await.unwrap();
            // Declared first, finishes last.
            let input = plan(&[("late", 80, true), ("early", 1, true)]);
            let run = engine.start(reported_in_order, input).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let Error::RunFailed { failure, .. } = &err else { panic!("{err}") };
            let steps: Vec<&str> = failure.steps.iter().map(|s| s.step.as_str()).collect();
            assert_eq!(steps, ["late", "early"]);
            assert_eq!(
                failure.message,
                "parallel block (late, early) failed: step `late` failed after 1 attempt: late is down; \
                 step `early` failed after 1 attempt: early is down"
            );
        });
    }

    fn a_merge_failure_names_its_step(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(not_mergeable).build().await.unwrap();
            let run = engine.start(not_mergeable, json!({})).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let Error::RunFailed { failure, .. } = &err else { panic!("{err}") };
            assert_eq!(failure.steps.len(), 1, "{failure:?}");
            assert_eq!((failure.steps[0].step.as_str(), failure.steps[0].attempts), ("five", 0));
            assert!(failure.steps[0].error.contains("needs step `five` to return a JSON object, but it returned a number"), "{failure:?}");
            assert!(err.to_string().contains(run.id().as_str()));
        });
    }

    fn the_decision_is_journaled_and_replayed(store) {
        let (id, journaled) = in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(resumable).lease_duration(Duration::from_millis(100)).build().await.unwrap();
            let input = plan(&[("r1", 40, false), ("r2", 5, false), ("r3", 20, true)]).assign("hold", true);
            let run = engine.start(resumable, input).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while count(run.id(), "gate") == 0 {
                assert!(Instant::now() < deadline, "the gate step never started");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let history = engine.history(run.id()).await.unwrap();
            let decision = history.iter().find(|r| r.step == "fetched").expect("journaled").event.clone();
            let StepEvent::Completed { output } = decision else { panic!() };
            (run.id().clone(), output["fetched"].clone())
        });
        std::thread::sleep(Duration::from_millis(150));
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(resumable).build().await.unwrap();
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(serde_json::Value::from(out.clone())["fetched"], journaled);
            let batch: BatchResult<Value> = out.get("fetched").unwrap();
            // Which reason depends on whether r3 failed before r1 succeeded (timing); the
            // replay must give the journaled one, and it must agree with the items.
            let cancelled = batch.items.iter().any(|i| i.status == ItemStatus::Cancelled);
            let reason = if cancelled { CompletionReason::MinSuccessfulReached } else { CompletionReason::AllCompleted };
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, reason));
            for step in ["r1", "r2", "r3"] {
                assert_eq!(count(&id, &format!("start {step}")), 1, "{step} ran again");
            }
            assert_eq!(count(&id, "gate"), 2, "the step in flight runs again");
        });
    }

    fn a_null_item_result_stays_in_the_batch(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(nulls).build().await.unwrap();
            let out = run_to_end(&engine, nulls, Data::new().assign("values", json!([1, null, 3]))).await.unwrap();
            let batch: BatchResult<Option<u32>> = out.get("echoed").unwrap();
            assert_eq!(batch.success_count, 3);
            assert_eq!(batch.get_results(), [&Some(1), &None, &Some(3)]);
            let raw: BatchResult<Value> = out.get("echoed").unwrap();
            assert_eq!(raw.get_results(), [&json!(1), &Value::Null, &json!(3)]);
        });
    }

    fn every_item_ran_so_the_reason_is_all_completed(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(first_success).build().await.unwrap();
            let out = run_to_end(&engine, first_success, items(|n| n == 0, 2)).await.unwrap();
            let batch: BatchResult<Data> = out.get("tried").unwrap();
            assert_eq!((batch.status, batch.completion_reason), (BatchStatus::Completed, CompletionReason::AllCompleted));
            assert_eq!((batch.success_count, batch.failure_count), (1, 1));
        });
    }

    fn twenty_nine_percent_of_a_hundred_tolerates_twenty_nine(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(twenty_nine_percent).build().await.unwrap();
            let out = run_to_end(&engine, twenty_nine_percent, items(|n| n < 29, 100)).await.unwrap();
            let batch: BatchResult<Data> = out.get("tried").unwrap();
            assert_eq!((batch.status, batch.failure_count, batch.success_count), (BatchStatus::Completed, 29, 71));
            let out = run_to_end(&engine, twenty_nine_percent, items(|n| n < 30, 100)).await.unwrap();
            let batch: BatchResult<Data> = out.get("tried").unwrap();
            assert_eq!(batch.status, BatchStatus::Failed);
            assert!(batch.failure_count >= 30);
        });
    }
}

#[test]
fn a_parallel_blocks_policy_shows_in_the_graph() {
    let def = one_at_a_time.definition();
    let mermaid = def.to_mermaid();
    assert!(mermaid.contains("subgraph block1 [\"parallel fetched: deep_merge, max_concurrency 1, min_successful 1\"]"), "{mermaid}");
    let dot = def.to_dot();
    assert!(
        dot.contains(
            "label=\"parallel fetched: deep_merge, max_concurrency 1, min_successful 1\";"
        ),
        "{dot}"
    );
    let dot = half.definition().to_dot();
    assert!(
        dot.contains("label=\"parallel fetched: deep_merge, tolerated_failure_percentage 50%\";"),
        "{dot}"
    );
    let mermaid = serial_fail_fast.definition().to_mermaid();
    assert!(
        mermaid.contains("[\"parallel: deep_merge, fail_fast, max_concurrency 1\"]"),
        "{mermaid}"
    );
    let steps = def.graph().steps;
    assert_eq!(steps[0].blocks, ["parallel fetched"]);
}

#[test]
fn a_parallel_blocks_name_is_part_of_the_fingerprint() {
    mod unnamed {
        use super::*;
        workflow! { pub w { parallel { step a = branch; step b = branch; } } }
    }
    mod named {
        use super::*;
        workflow! { pub w { parallel fetched { step a = branch; step b = branch; } } }
    }
    mod limited_only {
        use super::*;
        workflow! { pub w { parallel(max_concurrency = 1) { step a = branch; step b = branch; } } }
    }
    let unnamed = unnamed::w.definition();
    assert_ne!(unnamed.fingerprint(), named::w.definition().fingerprint());
    assert_eq!(
        unnamed.fingerprint(),
        limited_only::w.definition().fingerprint(),
        "options are not structure"
    );
}
