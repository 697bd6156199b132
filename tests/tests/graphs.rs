//! Step graphs: dags, optional steps, timeouts, workflow-level retries, nested blocks,
//! multi-stage pipelines, versions and introspection.

use std::time::{Duration, Instant};

use durable::{workflow, Data, Engine, Error, StepContext, StepError, StepEvent, Workflow};
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, meet_another_step, note, run_to_end,
    wait_for_handle, wait_for_run,
};
use serde_json::json;

/// Records the step and what it saw, then adds `<step>: true`.
async fn mark(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let seen: Vec<String> = data.0.keys().cloned().collect();
    note(&ctx, format!("{} saw {}", ctx.step(), seen.join(",")));
    Ok(data.assign(ctx.step(), true))
}

/// Finishes only if another step of the run runs at the same time.
async fn meet(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    meet_another_step(&ctx).await?;
    mark(ctx, data).await
}

workflow! {
    diamond {
        step start = mark;
        dag {
            step fetch = mark;
            step process(after = [fetch]) = meet;
            step validate(after = [fetch]) = meet;
            step save(after = [process, validate]) = mark;
        }
        step done = mark;
    }
}

async fn fails(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("{}#{}", ctx.step(), ctx.attempt()));
    Err(StepError::retryable(format!("{} is down", ctx.step())))
}

workflow! {
    with_optional {
        step first = mark;
        step email(optional, retry(max_attempts = 2, initial = 5ms)) = fails;
        step last = mark;
    }
}

workflow! {
    optional_in_parallel {
        parallel(on_error = complete_all) {
            step sms(optional) = fails;
            step push = mark;
        }
        parallel(on_error = fail_fast) {
            step slack(optional) = fails;
            step fax = meet_later;
        }
        step after = mark;
    }
}

/// Takes a while, so a fail-fast block would have cancelled it if the optional failure counted.
async fn meet_later(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    mark(ctx, data).await
}

struct Dropped(StepContext);
impl Drop for Dropped {
    fn drop(&mut self) {
        note(&self.0, format!("dropped#{}", self.0.attempt()));
    }
}

/// Hangs on its first attempt, returns at once on the next.
async fn hangs_once(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("attempt#{}", ctx.attempt()));
    let _guard = Dropped(ctx.clone());
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        note(&ctx, "woke");
    }
    Ok(data.assign("answered_on", ctx.attempt()))
}

workflow! {
    timeouts {
        step call(timeout = 50ms, retry(max_attempts = 2, initial = 5ms)) = hangs_once;
    }
}

workflow! {
    timeout_exhausted {
        step call(timeout = 30ms) = hangs_once;
    }
}

workflow! {
    defaults(retry(max_attempts = 3, backoff = constant, initial = 5ms)) {
        step inherits = fails;
    }
}

workflow! {
    nested {
        parallel {
            seq account {
                step create = mark;
                step verify = mark;
            }
            dag {
                step a = mark;
                parallel {
                    step b1 = mark;
                    step b2 = mark;
                }
                step c(after = [a]) = mark;
            }
        }
        step finish = mark;
    }
}

async fn stage_one_fails(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, ctx.step().to_owned());
    Err(StepError::terminal("user not found"))
}

workflow! {
    pipeline {
        parallel {
            step fetch_user = stage_one_fails;
            step check_inventory = mark;
            step validate_payment = mark;
        }
        parallel {
            step fraud_check = mark;
            step shipping = mark;
        }
    }
}

mod v1 {
    use super::*;
    workflow! { pub evolving { step one = mark; step gate = gate_step; } }
}

mod v2 {
    use super::*;
    workflow! { pub evolving { step one = mark; step two = mark; step gate = gate_step; } }
}

async fn gate_step(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if data.get::<bool>("hold").unwrap_or(false) && count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("gate", true))
}

fn saw(run: &durable::RunId, step: &str) -> Vec<String> {
    let prefix = format!("{step} saw ");
    let ev = events(run);
    let line = ev
        .iter()
        .find(|e| e.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{step} did not run: {ev:?}"));
    line[prefix.len()..]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

each_store_and_postgres! {
    fn a_dag_runs_each_node_when_its_dependencies_finish(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(diamond).build().await.unwrap();
            let run = engine.start(diamond, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            // process and validate ran at once (they met), each seeing fetch's output.
            assert_eq!(saw(run.id(), "process"), ["fetch", "start"]);
            assert_eq!(saw(run.id(), "validate"), ["fetch", "start"]);
            // save saw both its dependencies' changes merged; the block's output has all.
            assert_eq!(saw(run.id(), "save"), ["fetch", "process", "start", "validate"]);
            for step in ["start", "fetch", "process", "validate", "save", "done"] {
                assert_eq!(out.get::<bool>(step), Some(true), "{step}");
            }
            let steps: Vec<String> = engine.history(run.id()).await.unwrap().into_iter().map(|r| r.step).collect();
            assert_eq!(steps.len(), 6);
            assert_eq!(steps[4], "save");
        });
    }

    fn an_optional_steps_failure_is_recorded_and_the_workflow_goes_on(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(with_optional).build().await.unwrap();
            let run = engine.start(with_optional, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<bool>("last"), Some(true));
            assert!(!out.contains("email"), "the failed step's output is not used");
            assert_eq!(count(run.id(), "email#1") + count(run.id(), "email#2"), 2, "retried before giving up");
            let history = engine.history(run.id()).await.unwrap();
            let email: Vec<_> = history.iter().filter(|r| r.step == "email").map(|r| r.event.clone()).collect();
            assert!(matches!(&email[1], StepEvent::Failed { error, optional: true } if error == "email is down"), "{email:?}");
            assert_eq!(engine.status(run.id()).await.unwrap().status, durable::RunStatus::Completed);
        });
    }

    fn optional_failures_in_parallel_blocks_go_under_parallel_errors(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(optional_in_parallel).build().await.unwrap();
            let run = engine.start(optional_in_parallel, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.value("parallel_errors"), Some(&json!({"sms": "sms is down", "slack": "slack is down"})));
            assert_eq!(out.get::<bool>("push"), Some(true));
            assert_eq!(out.get::<bool>("fax"), Some(true), "an optional failure does not cancel a fail_fast block");
            assert_eq!(out.get::<bool>("after"), Some(true));
        });
    }

    fn an_attempt_that_runs_too_long_is_cancelled_and_retried(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(timeouts).register(timeout_exhausted).build().await.unwrap();
            let started = Instant::now();
            let run = engine.start(timeouts, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(out.get::<u32>("answered_on"), Some(2));
            let ev = events(run.id());
            assert!(ev.contains(&"dropped#1".to_owned()) && !ev.contains(&"woke".to_owned()), "{ev:?}");
            let history = engine.history(run.id()).await.unwrap();
            assert!(matches!(&history[0].event, StepEvent::AttemptFailed { error, .. } if error == "the attempt timed out after 50ms"), "{history:?}");

            let run = engine.start(timeout_exhausted, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(err.ends_with("step `call` failed after 1 attempt: the attempt timed out after 30ms"), "{err}");
        });
    }

    fn workflow_level_retry_applies_to_steps_without_their_own(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(defaults).build().await.unwrap();
            let run = engine.start(defaults, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(err.ends_with("step `inherits` failed after 3 attempts: inherits is down"), "{err}");
        });
    }

    fn blocks_nest_and_sequences_pass_state_along(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(nested).build().await.unwrap();
            let run = engine.start(nested, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(saw(run.id(), "verify"), ["create"], "a seq passes its state along");
            assert_eq!(saw(run.id(), "c"), ["a"]);
            for step in ["create", "verify", "a", "b1", "b2", "c", "finish"] {
                assert_eq!(out.get::<bool>(step), Some(true), "{step}");
            }
            assert_eq!(engine.history(run.id()).await.unwrap().len(), 7);
        });
    }

    fn a_failed_stage_means_the_next_stage_never_runs(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(pipeline).build().await.unwrap();
            let run = engine.start(pipeline, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let Error::RunFailed { failure, .. } = &err else { panic!("{err}") };
            assert_eq!(failure.steps[0].step, "fetch_user");
            let ev = events(run.id());
            assert!(!ev.iter().any(|e| e.starts_with("fraud_check") || e.starts_with("shipping")), "stage 2 ran: {ev:?}");
        });
    }

    fn an_old_run_finishes_on_the_version_it_started_under(store) {
        let old = in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(v1::evolving).lease_duration(Duration::from_millis(100)).build().await.unwrap();
            let run = engine.start(v1::evolving, Data::new().assign("hold", true)).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while count(run.id(), "gate") == 0 {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            run.id().clone()
        });
        std::thread::sleep(Duration::from_millis(150));
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(v2::evolving)
                .register_version(v1::evolving)
                .build()
                .await
                .unwrap();
            let out: Data = wait_for_run(&engine, &old).await.unwrap();
            assert_eq!(out.get::<bool>("gate"), Some(true));
            assert!(!out.contains("two"), "the old run kept its definition");
            let new = run_to_end(&engine, v2::evolving, Data::new()).await.unwrap();
            assert_eq!(new.get::<bool>("two"), Some(true), "new runs start on the current one");
        });
    }
}

#[test]
fn the_graph_is_data_and_renders_as_mermaid_and_dot() {
    let def = diamond.definition();
    let graph = def.graph();
    let names: Vec<&str> = graph.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["start", "fetch", "process", "validate", "save", "done"]
    );
    let edges: Vec<(&str, &str)> = graph
        .edges
        .iter()
        .map(|&(a, b)| (names[a], names[b]))
        .collect();
    assert_eq!(
        edges,
        [
            ("start", "fetch"),
            ("fetch", "process"),
            ("fetch", "validate"),
            ("process", "save"),
            ("validate", "save"),
            ("save", "done")
        ]
    );
    assert_eq!(graph.steps[2].blocks, ["dag"]);
    let mermaid = def.to_mermaid();
    assert!(mermaid.starts_with("flowchart TD\n"), "{mermaid}");
    assert!(
        mermaid.contains("subgraph block1 [\"dag\"]") && mermaid.contains("process --> save"),
        "{mermaid}"
    );
    let dot = def.to_dot();
    assert!(
        dot.contains("subgraph cluster_1") && dot.contains("\"fetch\" -> \"validate\";"),
        "{dot}"
    );

    let timeouts_graph = timeouts.definition().graph();
    assert_eq!(
        timeouts_graph.steps[0].options.timeout,
        Some(Duration::from_millis(50))
    );
    assert!(timeouts
        .definition()
        .to_mermaid()
        .contains("call[\"call<br/>retry ×2<br/>timeout 50ms\"]"));
}
