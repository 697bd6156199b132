//! Dynamic work inside a step: fan_out, fan_out_fail, map_concurrent, process_batch; every
//! finished operation journaled under the step's path and reused when the step is retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use durable::batch::{BatchResult, BatchStatus};
use durable::{workflow, Data, Engine, StepContext, StepError, StepEvent};
use durable_tests::gates::{bounded, hold_until_cancelled_slowly, until_noted};
use durable_tests::{
    count, each_store_and_postgres, events, in_runtime, note, run_to_end, wait_for_handle,
};

async fn enrich(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let ops: Vec<_> = (0..4u32)
        .map(|i| {
            let ctx = ctx.clone();
            move || async move {
                note(&ctx, format!("op{i}#{}", ctx.attempt()));
                // Op 2 fails on the step's first attempt only.
                if i == 2 && ctx.attempt() == 1 {
                    return Err(StepError::retryable("pricing timeout"));
                }
                Ok(format!("product-{i}"))
            }
        })
        .collect();
    let out = ctx.fan_out(ops).await?;
    if out.failed > 0 {
        // Fail the attempt: the retry reuses the journaled successes.
        return Err(StepError::retryable(format!(
            "{} of 4 failed: {:?}",
            out.failed, out.errors
        )));
    }
    Ok(data.assign("products", out.results))
}

workflow! {
    enrichment {
        step enrich(retry(max_attempts = 2, initial = 5ms));
    }
}

async fn validate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    type Check = Box<dyn FnOnce() -> durable::BoxFuture<'static, Result<bool, StepError>> + Send>;
    // Runs until cancelled; its cancellation takes a while (see `SlowDropNote`).
    let slow: Check = {
        let ctx = ctx.clone();
        Box::new(move || {
            Box::pin(async move {
                hold_until_cancelled_slowly(&ctx, "slow check").await;
                Ok(true)
            })
        })
    };
    // Fails once the slow check has started, so that its failure always has one to cancel.
    let failing: Check = {
        let ctx = ctx.clone();
        Box::new(move || {
            Box::pin(async move {
                until_noted(ctx.run_id(), "holding slow check", 1).await;
                Err(StepError::terminal("card declined"))
            })
        })
    };
    let results = ctx.fan_out_fail(vec![slow, failing]).await?;
    Ok(data.assign("valid", results))
}

workflow! {
    validation { step validate; }
}

async fn resize(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let urls: Vec<String> = (0..12).map(|i| format!("img-{i}.png")).collect();
    // (running now, most at once), measured by the operations themselves.
    let gauge = std::sync::Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let g = std::sync::Arc::clone(&gauge);
    let sizes = ctx
        .map_concurrent(urls, 3, move |url| {
            let g = std::sync::Arc::clone(&g);
            async move {
                let now = g.0.fetch_add(1, Ordering::SeqCst) + 1;
                g.1.fetch_max(now, Ordering::SeqCst);
                // Later items finish first: results must still come in input order.
                let n: u64 = url[4..url.len() - 4].parse().unwrap();
                tokio::time::sleep(Duration::from_millis(30 - 2 * n)).await;
                g.0.fetch_sub(1, Ordering::SeqCst);
                Ok(url.len() as u64 * 100 + n)
            }
        })
        .await?;
    let batch: BatchResult<u32> = ctx
        .process_batch((0..5u32).collect(), 2, |row| async move {
            if row == 3 {
                Err(StepError::retryable("row 3 is malformed"))
            } else {
                Ok(row * 2)
            }
        })
        .await?;
    let peak = gauge.1.load(Ordering::SeqCst);
    Ok(data
        .assign("sizes", sizes)
        .assign("batch", batch)
        .assign("peak", peak))
}

workflow! {
    images { step resize; }
}

each_store_and_postgres! {
    fn a_retried_step_reuses_its_journaled_operations(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(enrichment).build().await.unwrap();
            let run = engine.start(enrichment, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(
                out.get::<Vec<String>>("products").unwrap(),
                ["product-0", "product-1", "product-2", "product-3"]
            );
            // Attempt 1 ran all four; attempt 2 re-ran only the one that failed.
            let ev = events(run.id());
            for i in [0, 1, 3] {
                assert_eq!(count(run.id(), &format!("op{i}#1")), 1, "{ev:?}");
                assert_eq!(count(run.id(), &format!("op{i}#2")), 0, "op{i} ran again: {ev:?}");
            }
            assert_eq!(count(run.id(), "op2#2"), 1);
            // Each operation is journaled under the step's path.
            let history = engine.history(run.id()).await.unwrap();
            let done: Vec<&str> = history
                .iter()
                .filter(|r| matches!(r.event, StepEvent::Completed { .. }))
                .map(|r| r.step.as_str())
                .collect();
            for i in 0..4 {
                assert!(done.contains(&format!("enrich/fan_out#1[{i}]").as_str()), "{done:?}");
            }
        });
    }

    fn fan_out_fail_cancels_the_rest_and_fails_with_the_first_error(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(validation).build().await.unwrap();
            let run = engine.start(validation, Data::new()).await.unwrap();
            let err = bounded("the run to fail", run.wait()).await.unwrap_err().to_string();
            assert!(err.ends_with("step `validate` failed after 1 attempt: card declined"), "{err}");
            // When `wait` tells the run failed, the cancelled operation is gone already.
            let ev = events(run.id());
            assert!(ev.contains(&"dropped slow check".to_owned()), "{ev:?}");
            assert!(!ev.contains(&"finished slow check".to_owned()), "{ev:?}");
        });
    }

    fn map_concurrent_keeps_the_limit_and_the_input_order(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(images).build().await.unwrap();
            let out = run_to_end(&engine, images, Data::new()).await.unwrap();
            let sizes: Vec<u64> = out.get("sizes").unwrap();
            assert_eq!(sizes, (0..12).map(|n| if n < 10 { 900 + n } else { 1000 + n }).collect::<Vec<u64>>());
            let peak: usize = out.get("peak").unwrap();
            assert_eq!(peak, 3, "at most 3 operations at once, and the limit is used");
            let batch: BatchResult<u32> = out.get("batch").unwrap();
            assert_eq!(batch.status, BatchStatus::Failed);
            assert_eq!((batch.success_count, batch.failure_count), (4, 1));
            assert_eq!(batch.get_results(), [&0, &2, &4, &8]);
            assert_eq!(batch.failed().next().unwrap().error.as_deref(), Some("row 3 is malformed"));
        });
    }
}
