//! Retries: attempt counts, backoff timing, exhaustion, terminal errors, panics, and a
//! backoff that survives a restart.

use std::time::{Duration, Instant};

use durable::{workflow, Data, Engine, Error, StepContext, StepError, StepEvent};
use durable_tests::gates::bounded;
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, note, run_to_end, wait_for_handle,
    wait_for_run,
};

/// Fails on its first two attempts, then succeeds.
async fn flaky(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(
        &ctx,
        format!("flaky#{} {}", ctx.attempt(), ctx.idempotency_key()),
    );
    if ctx.attempt() < 3 {
        return Err(std::io::Error::other(format!("timeout {}", ctx.attempt())).into());
    }
    Ok(data.assign("attempts", ctx.attempt()))
}

workflow! {
    constant_backoff {
        step flaky(retry(max_attempts = 3, backoff = constant, initial = 60ms));
    }
}

workflow! {
    exponential_backoff {
        step flaky(retry(max_attempts = 3, backoff = exponential, initial = 40ms, multiplier = 3.0));
    }
}

async fn always_fails(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, "always_fails");
    Err(StepError::retryable(format!("error {}", ctx.attempt())))
}

async fn never_runs(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "never_runs");
    Ok(data)
}

workflow! {
    exhausted {
        step always_fails(retry(max_attempts = 3, backoff = linear, initial = 5ms));
        step never_runs;
    }
}

workflow! {
    doubling {
        step always_fails(retry(max_attempts = 4, backoff = exponential, initial = 5ms, multiplier = 2.0));
    }
}

async fn declined(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    note(&ctx, "declined");
    Err(StepError::terminal("card declined"))
}

workflow! {
    terminal {
        step declined(retry(max_attempts = 5, initial = 5ms));
        step never_runs;
    }
}

async fn panics_once(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "panics_once");
    if ctx.attempt() == 1 {
        panic!("index out of bounds");
    }
    Ok(data.assign("recovered", true))
}

workflow! {
    panicky {
        step panics_once(retry(max_attempts = 2, initial = 5ms));
    }
}

async fn slow_retry(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("slow_retry#{}", ctx.attempt()));
    note(&ctx, format!("key {}", ctx.idempotency_key()));
    if ctx.attempt() == 1 {
        return Err(StepError::retryable("not yet"));
    }
    Ok(data)
}

workflow! {
    long_backoff {
        step slow_retry(retry(max_attempts = 2, backoff = constant, initial = 700ms));
    }
}

fn attempt_times(history: &[durable::StepRecord]) -> Vec<u64> {
    history.iter().map(|r| r.at).collect()
}

each_store_and_postgres! {
    fn a_step_is_retried_attempt_by_attempt_with_constant_backoff(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(constant_backoff).build().await.unwrap();
            let started = Instant::now();
            let run = engine.start(constant_backoff, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            let elapsed = started.elapsed();
            assert_eq!(out.get::<u32>("attempts"), Some(3));
            let key = format!("{}/flaky", run.id());
            assert_eq!(
                events(run.id()),
                [1, 2, 3].map(|n| format!("flaky#{n} {key}")),
                "three attempts, one idempotency key"
            );
            assert!(elapsed >= Duration::from_millis(120), "two waits of 60ms, took {elapsed:?}");
            assert!(elapsed < Duration::from_millis(2000), "took {elapsed:?}");
            let history = engine.history(run.id()).await.unwrap();
            let kinds: Vec<_> = history.iter().map(|r| (r.attempt, &r.event)).collect();
            assert!(matches!(kinds[0], (1, StepEvent::AttemptFailed { error, .. }) if error == "timeout 1"));
            assert!(matches!(kinds[1], (2, StepEvent::AttemptFailed { error, .. }) if error == "timeout 2"));
            assert!(matches!(kinds[2], (3, StepEvent::Completed { .. })));
            // Each journaled retry time is the failure time plus the backoff.
            for r in &history[..2] {
                let StepEvent::AttemptFailed { retry_at, .. } = r.event else { unreachable!() };
                assert!((60..=120).contains(&(retry_at - r.at)), "retry_at - at = {}", retry_at - r.at);
            }
        });
    }

    fn exponential_backoff_grows_by_the_multiplier(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(exponential_backoff).build().await.unwrap();
            let run = engine.start(exponential_backoff, Data::new()).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let times = attempt_times(&engine.history(run.id()).await.unwrap());
            // Waits of 40ms then 120ms between the attempts' journal entries.
            let first_gap = times[1] - times[0];
            let second_gap = times[2] - times[1];
            assert!((40..400).contains(&first_gap), "first wait {first_gap}ms");
            assert!((120..600).contains(&second_gap), "second wait {second_gap}ms");
            assert!(second_gap > first_gap, "{first_gap}ms then {second_gap}ms");
        });
    }

    fn each_exponential_backoff_doubles_the_one_before_up_to_the_third_retry(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(doubling).build().await.unwrap();
            let run = engine.start(doubling, Data::new()).await.unwrap();
            bounded("the run to fail", run.wait()).await.unwrap_err();
            // A failed attempt's entry is stamped when it failed, and holds when the next was
            // due: their difference is the backoff the engine chose, whatever the clock did.
            let backoffs: Vec<(u32, u64)> = engine
                .history(run.id())
                .await
                .unwrap()
                .into_iter()
                .filter_map(|r| match r.event {
                    StepEvent::AttemptFailed { retry_at, .. } => Some((r.attempt, retry_at - r.at)),
                    _ => None,
                })
                .collect();
            // 5 ms, then twice that, then twice again: the gap before attempt 4 is 4 x 5 ms
            // (a linear backoff would give 15 ms).
            assert_eq!(backoffs, [(1, 5), (2, 10), (3, 20)]);
            assert_eq!(count(run.id(), "always_fails"), 4);
        });
    }

    fn exhausted_retries_fail_the_run_with_the_last_error(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(exhausted).build().await.unwrap();
            let run = engine.start(exhausted, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("workflow `exhausted` run {} failed: step `always_fails` failed after 3 attempts: error 3", run.id())
            );
            assert_eq!(count(run.id(), "always_fails"), 3);
            assert_eq!(count(run.id(), "never_runs"), 0);
            let Error::RunFailed { failure, .. } = err else { unreachable!() };
            assert_eq!(failure.steps[0].attempts, 3);
            let last = engine.history(run.id()).await.unwrap().pop().unwrap();
            assert_eq!(last.event, StepEvent::Failed { error: "error 3".into(), optional: false });
        });
    }

    fn a_terminal_error_skips_the_remaining_retries(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(terminal).build().await.unwrap();
            let run = engine.start(terminal, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(err.ends_with("step `declined` failed after 1 attempt: card declined"), "{err}");
            assert_eq!(count(run.id(), "declined"), 1);
            assert_eq!(count(run.id(), "never_runs"), 0);
        });
    }

    fn a_panicking_step_is_a_failed_attempt_not_a_dead_engine(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(panicky).register(terminal).build().await.unwrap();
            let run = engine.start(panicky, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(out.get::<bool>("recovered"), Some(true));
            let history = engine.history(run.id()).await.unwrap();
            assert!(matches!(&history[0].event, StepEvent::AttemptFailed { error, .. } if error == "the step panicked: index out of bounds"), "{history:?}");
            // The engine still runs other work.
            assert!(run_to_end(&engine, terminal, Data::new()).await.is_err());
        });
    }

    fn a_backoff_survives_a_restart(store) {
        let (id, failed_at) = in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(long_backoff).lease_duration(Duration::from_millis(100)).build().await.unwrap();
            let run = engine.start(long_backoff, Data::new()).await.unwrap();
            // Stop the process during the backoff, once the failed attempt is journaled.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let history = engine.history(run.id()).await.unwrap();
                if let Some(StepEvent::AttemptFailed { retry_at, .. }) = history.first().map(|r| r.event.clone()) {
                    break (run.id().clone(), retry_at);
                }
                assert!(Instant::now() < deadline, "the first attempt never failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(long_backoff).build().await.unwrap();
            wait_for_run::<Data>(&engine, &id).await.unwrap();
            let history = engine.history(&id).await.unwrap();
            assert_eq!(history.len(), 2);
            assert_eq!(history[1].attempt, 2, "the attempt count survives the restart");
            // The second attempt waited for the journaled retry time, no less.
            assert!(history[1].at >= failed_at, "retried at {} before {}", history[1].at, failed_at);
            assert_eq!(count(&id, "slow_retry#1"), 1);
            assert_eq!(count(&id, "slow_retry#2"), 1);
            // The idempotency key is the same before and after the restart.
            assert_eq!(count(&id, &format!("key {id}/slow_retry")), 2);
        });
    }
}
