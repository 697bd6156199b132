//! Blocking code in a step: through `durable::step::blocking` it runs on the blocking pool, so
//! its `timeout` fails the attempt on time and other runs go on meanwhile.

use std::time::{Duration, Instant};

use durable::step::blocking;
use durable::{workflow, Data, Engine, Error, StepContext, StepError};
use durable_tests::{count, each_store, in_runtime, note, run_to_end, wait_for_handle};

async fn sleeps_in_blocking(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "blocking started");
    blocking(|| std::thread::sleep(Duration::from_secs(2))).await?;
    note(&ctx, "blocking finished");
    Ok(data)
}

workflow! { slow_sync_call { step sleeps_in_blocking(timeout = 300ms); } }

async fn tick(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "tick");
    let ticks = data.get::<u32>("ticks").unwrap_or(0) + 1;
    Ok(data.assign("ticks", ticks))
}

workflow! {
    five_ticks { step t1 = tick; step t2 = tick; step t3 = tick; step t4 = tick; step t5 = tick; }
}

async fn panics_in_blocking(_data: Data) -> Result<Data, StepError> {
    blocking(|| panic!("the sync client blew up")).await
}

workflow! { blocking_panic { step panics_in_blocking; } }

async fn computes_in_blocking(data: Data) -> Result<Data, StepError> {
    let n: u64 = data.get("n").unwrap_or(0);
    let sum = blocking(move || (1..=n).sum::<u64>()).await?;
    Ok(data.assign("sum", sum))
}

workflow! { blocking_sum { step computes_in_blocking; } }

each_store! {
    fn a_blocking_call_times_out_on_time_and_other_runs_go_on(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(slow_sync_call)
                .register(five_ticks)
                .build()
                .await
                .unwrap();
            let started = Instant::now();
            let slow = engine.start(slow_sync_call, Data::new()).await.unwrap();
            while count(slow.id(), "blocking started") == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Another run's five steps and their commits do not wait for the blocked thread.
            let ticks = Instant::now();
            let out = run_to_end(&engine, five_ticks, Data::new()).await.unwrap();
            assert_eq!(out.get::<u32>("ticks"), Some(5));
            assert!(ticks.elapsed() < Duration::from_secs(1), "{:?}", ticks.elapsed());
            // The timeout fails the attempt on time, long before the blocking call returns.
            let err = wait_for_handle(&engine, &slow).await.unwrap_err();
            let failed_after = started.elapsed();
            assert!(failed_after < Duration::from_millis(1500), "{failed_after:?}");
            assert!(matches!(err, Error::RunFailed { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("sleeps_in_blocking"), "{text}");
            assert!(text.contains("timed out after 300ms"), "{text}");
            assert_eq!(count(slow.id(), "blocking finished"), 0);
        });
    }

    fn a_blocking_call_returns_its_value_and_a_panic_fails_the_attempt(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(blocking_panic)
                .register(blocking_sum)
                .build()
                .await
                .unwrap();
            let out = run_to_end(&engine, blocking_sum, Data::new().assign("n", 100)).await.unwrap();
            assert_eq!(out.get::<u64>("sum"), Some(5050));
            let err = run_to_end(&engine, blocking_panic, Data::new()).await.unwrap_err().to_string();
            assert!(err.contains("panics_in_blocking"), "{err}");
            assert!(err.contains("the blocking code panicked: the sync client blew up"), "{err}");
        });
    }
}

async fn blocks_its_thread(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "blocks started");
    // What a step must not do (see the guide `durable::guide::engine`): block the thread it runs on.
    std::thread::sleep(Duration::from_secs(2));
    Ok(data.assign("blocked", true))
}

workflow! { blocks_thread { step blocks_its_thread(timeout = 300ms); } }

each_store! {
    fn a_step_that_blocks_its_thread_fails_its_timeout_and_other_runs_go_on(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(blocks_thread)
                .register(five_ticks)
                .build()
                .await
                .unwrap();
            let slow = engine.start(blocks_thread, Data::new()).await.unwrap();
            while count(slow.id(), "blocks started") == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // On a multi-thread runtime the other worker drives another run and commits its
            // steps meanwhile (the 2 s sleep would show).
            let other = engine.clone();
            let ticks = tokio::spawn(async move {
                let started = Instant::now();
                run_to_end(&other, five_ticks, Data::new()).await.map(|out| (out, started.elapsed()))
            });
            let (out, took) = ticks.await.unwrap().unwrap();
            assert_eq!(out.get::<u32>("ticks"), Some(5));
            assert!(took < Duration::from_secs(1), "{took:?}");
            // The blocked attempt could not be cancelled, but it overran its timeout: it fails.
            let err = wait_for_handle(&engine, &slow).await.unwrap_err().to_string();
            assert!(err.contains("blocks_its_thread"), "{err}");
            assert!(err.contains("timed out after 300ms"), "{err}");
            assert!(err.contains("durable::step::blocking"), "{err}");
        });
    }
}
