//! Parallel blocks: snapshots, real concurrency, the three merges, both error strategies.

use std::time::{Duration, Instant};

use durable::{workflow, Data, Engine, Error, StepContext, StepError, StepEvent};
use durable_tests::gates::{bounded, hold_until_cancelled_slowly, until_noted};
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, meet_another_step, note, run_to_end,
    wait_for_handle, wait_for_run,
};
use serde_json::json;

async fn create_user(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "create_user");
    Ok(data.assign("user_id", 7))
}

/// Fails unless it sees the state of the step before the block, not only the run's input.
async fn needs_user(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, ctx.step().to_owned());
    let id: u64 = data
        .get("user_id")
        .ok_or_else(|| StepError::terminal("no user_id in the snapshot"))?;
    Ok(data.assign(format!("{}_for", ctx.step()), id))
}

async fn notifications(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "notifications");
    let settings = json!({"notifications": true});
    Ok(data
        .assign("settings", settings)
        .assign("winner", "notifications"))
}

async fn theme(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "theme");
    let settings = json!({"theme": "dark"});
    Ok(data.assign("settings", settings).assign("winner", "theme"))
}

async fn complete(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "complete");
    Ok(data.assign("complete", true))
}

workflow! {
    onboard {
        step create_user;
        parallel {
            step welcome = needs_user;
            step workspace = needs_user;
        }
        step complete;
    }
}

workflow! {
    deep {
        parallel(merge = deep_merge) {
            step notifications;
            step theme;
        }
    }
}

workflow! {
    collected {
        step create_user;
        parallel(merge = collect) {
            step orders = count_orders;
            step users = count_users;
        }
    }
}

async fn count_orders(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("count", 10))
}

async fn count_users(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("count", 5))
}

/// Finishes only if another step of the run runs at the same time.
async fn meet(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    meet_another_step(&ctx).await?;
    Ok(data)
}

workflow! {
    concurrent {
        parallel {
            step left = meet;
            step right = meet;
        }
    }
}

async fn slow_first(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(150)).await;
    note(&ctx, "slow_first");
    Ok(data.assign("winner", "slow_first"))
}

async fn quick_second(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "quick_second");
    Ok(data.assign("winner", "quick_second"))
}

/// Never finishes in the first process; the test drops that process to restart.
async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if data.get::<bool>("hold").unwrap_or(false) && count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data)
}

workflow! {
    racing {
        parallel(merge = last_wins) {
            step slow_first;
            step quick_second;
        }
        step gate;
    }
}

/// Fails once the slow branch has started, so that its failure always has a branch to cancel.
async fn fails_soon(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    until_noted(ctx.run_id(), "holding slow", 1).await;
    note(&ctx, "fails_soon");
    Err(StepError::terminal("card declined"))
}

/// Runs until cancelled; its cancellation takes a while (see `SlowDropNote`).
async fn slow(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    hold_until_cancelled_slowly(&ctx, "slow").await;
    Ok(data)
}

async fn after(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "after");
    Ok(data)
}

workflow! {
    fast_failure {
        parallel(on_error = fail_fast) {
            step slow;
            step fails_soon;
        }
        step after;
    }
}

async fn send_email(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("send_email#{}", ctx.attempt()));
    if ctx.attempt() < 2 {
        return Err(StepError::retryable("smtp timeout"));
    }
    Ok(data.assign("email", true))
}

async fn send_sms(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    note(&ctx, "send_sms");
    Err(StepError::retryable("sms gateway down"))
}

async fn send_push(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, "send_push");
    Err(StepError::terminal("no device token"))
}

async fn send_slack(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    tokio::time::sleep(Duration::from_millis(60)).await;
    note(&ctx, "send_slack");
    Ok(data.assign("slack", true))
}

workflow! {
    notify_all {
        parallel(on_error = complete_all) {
            step send_email(retry(max_attempts = 3, backoff = constant, initial = 10ms));
            step send_sms(retry(max_attempts = 2, backoff = constant, initial = 10ms));
            step send_push;
            step send_slack;
        }
        step after;
    }
}

workflow! {
    array_state(state = Vec<u32>) {
        parallel {
            step push_one;
            step push_two;
        }
    }
}

async fn push_one(mut v: Vec<u32>) -> Result<Vec<u32>, StepError> {
    v.push(1);
    Ok(v)
}

async fn push_two(mut v: Vec<u32>) -> Result<Vec<u32>, StepError> {
    v.push(2);
    Ok(v)
}

each_store_and_postgres! {
    fn branches_start_from_the_whole_state_and_merge(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(onboard).build().await.unwrap();
            let run = engine.start(onboard, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<u64>("welcome_for"), Some(7));
            assert_eq!(out.get::<u64>("workspace_for"), Some(7));
            assert_eq!(out.get::<bool>("complete"), Some(true));
            let ev = events(run.id());
            assert_eq!(ev.first().map(String::as_str), Some("create_user"));
            assert_eq!(ev.last().map(String::as_str), Some("complete"));
            // Each branch is journaled on its own.
            let steps: Vec<String> = engine.history(run.id()).await.unwrap().into_iter().map(|r| r.step).collect();
            assert_eq!(steps.len(), 4);
            assert!(steps.contains(&"welcome".to_owned()) && steps.contains(&"workspace".to_owned()));
        });
    }

    fn deep_merge_combines_nested_objects(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(deep).build().await.unwrap();
            let out = run_to_end(&engine, deep, Data::new().assign("settings", json!({"lang": "en"}))).await.unwrap();
            assert_eq!(
                out.value("settings"),
                Some(&json!({"lang": "en", "notifications": true, "theme": "dark"}))
            );
            // A scalar conflict goes to the later-declared branch.
            assert_eq!(out.get::<String>("winner").as_deref(), Some("theme"));
        });
    }

    fn collect_keeps_each_branchs_changes_apart(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(collected).build().await.unwrap();
            let out = run_to_end(&engine, collected, Data::new()).await.unwrap();
            assert_eq!(
                serde_json::Value::from(out),
                json!({"user_id": 7, "parallel_results": {"orders": {"count": 10}, "users": {"count": 5}}})
            );
        });
    }

    fn branches_really_run_at_the_same_time(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(concurrent).build().await.unwrap();
            run_to_end(&engine, concurrent, Data::new()).await.unwrap();
        });
    }

    fn last_wins_follows_the_journaled_finishing_order_on_replay(store) {
        let id = in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(racing).lease_duration(Duration::from_millis(100)).build().await.unwrap();
            let run = engine.start(racing, Data::new().assign("hold", true)).await.unwrap();
            // Wait until the step after the block is in flight, then stop this "process".
            let deadline = Instant::now() + Duration::from_secs(5);
            while count(run.id(), "gate") == 0 {
                assert!(Instant::now() < deadline, "the gate step never started");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let history = engine.history(run.id()).await.unwrap();
            let order: Vec<&str> = history.iter().map(|r| r.step.as_str()).collect();
            assert_eq!(order, ["quick_second", "slow_first"], "journal order is finishing order");
            run.id().clone()
        });
        // The memory store's lease must expire before a new engine may take the run over.
        std::thread::sleep(Duration::from_millis(150));
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(racing).build().await.unwrap();
            assert_eq!(engine.resumed(), std::slice::from_ref(&id));
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            // Declared first but finished last: it wins, on replay too.
            assert_eq!(out.get::<String>("winner").as_deref(), Some("slow_first"));
            assert_eq!(count(&id, "slow_first"), 1, "finished branches do not run again");
            assert_eq!(count(&id, "quick_second"), 1);
            assert_eq!(count(&id, "gate"), 2, "the step in flight runs again");
        });
    }

    fn fail_fast_cancels_the_other_branches_and_stops_the_run(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(fast_failure).build().await.unwrap();
            let run = engine.start(fast_failure, Data::new()).await.unwrap();
            // Never awaits the slow branch: it runs until cancelled.
            let err = bounded("the run to fail", run.wait()).await.unwrap_err();
            let text = err.to_string();
            assert!(text.contains("workflow `fast_failure` run"), "{text}");
            assert!(text.contains(run.id().as_str()), "{text}");
            assert!(text.contains("step `fails_soon` failed after 1 attempt: card declined"), "{text}");
            // When `wait` tells the run failed, the cancelled branch is gone already.
            let ev = events(run.id());
            assert!(ev.contains(&"dropped slow".to_owned()), "the slow branch was not cancelled: {ev:?}");
            assert!(!ev.contains(&"finished slow".to_owned()), "{ev:?}");
            assert!(!ev.contains(&"after".to_owned()), "a step after the block ran: {ev:?}");
            let info = engine.status(run.id()).await.unwrap();
            assert_eq!(info.status, durable::RunStatus::Failed);
            assert_eq!(info.failure.unwrap().steps[0].step, "fails_soon");
        });
    }

    fn complete_all_runs_every_branch_and_reports_every_failure(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(notify_all).build().await.unwrap();
            let run = engine.start(notify_all, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let ev = events(run.id());
            for step in ["send_email#1", "send_email#2", "send_sms", "send_push", "send_slack"] {
                assert!(ev.contains(&step.to_owned()), "{step} did not run: {ev:?}");
            }
            assert_eq!(count(run.id(), "send_sms"), 2, "send_sms gets its two attempts");
            assert!(!ev.contains(&"after".to_owned()), "a step after a failed block ran: {ev:?}");
            let Error::RunFailed { failure, .. } = &err else { panic!("{err}") };
            let mut failed: Vec<(&str, u32)> = failure.steps.iter().map(|f| (f.step.as_str(), f.attempts)).collect();
            failed.sort();
            assert_eq!(failed, [("send_push", 1), ("send_sms", 2)]);
            let text = err.to_string();
            assert!(text.contains("step `send_sms` failed after 2 attempts: sms gateway down"), "{text}");
            assert!(text.contains("step `send_push` failed after 1 attempt: no device token"), "{text}");
            // The journal has the retried email's attempts and its success.
            let history = engine.history(run.id()).await.unwrap();
            let email: Vec<_> = history.iter().filter(|r| r.step == "send_email").map(|r| (r.attempt, matches!(r.event, StepEvent::Completed { .. }))).collect();
            assert_eq!(email, [(1, false), (2, true)]);
        });
    }

    fn merging_a_state_that_is_not_an_object_is_a_clear_error(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(array_state).build().await.unwrap();
            let run = engine.start(array_state, vec![0]).await.unwrap();
            let text = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(text.contains(&format!("workflow `array_state` run {} failed", run.id())), "{text}");
            assert!(text.contains("parallel block (push_one, push_two)"), "{text}");
            assert!(text.contains("`deep_merge` needs the state to be a JSON object, but it is an array"), "{text}");
            // Both branches' results stay in the journal.
            assert_eq!(engine.history(run.id()).await.unwrap().len(), 2);
        });
    }
}
