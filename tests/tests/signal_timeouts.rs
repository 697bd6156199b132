//! A wait's timeout, with tokio's paused clock (the engine's wall clock follows it): a
//! timeout is a failed attempt, retried as a new wait by `retry`, failing the run for good
//! or skipped by `optional`. No test sleeps for real.

use std::time::Duration;

use durable::{workflow, Data, Engine, Error, StepError, StepEvent};
use durable_tests::{each_store, run_to_end, wait_for_handle, wait_for_run, TestStore};

async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("prepared", true))
}

workflow! {
    retried {
        step prepare;
        wait_for approved(timeout = 1h, retry(max_attempts = 2, backoff = constant, initial = 1m));
    }
}

workflow! {
    skippable {
        step prepare;
        wait_for approved(timeout = 30m, optional);
    }
}

/// Runs `f` on a current-thread runtime whose clock is paused: time moves only when every
/// task waits, straight to the next timer.
fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

async fn engine(store: &TestStore) -> Engine {
    Engine::builder_shared(store.open())
        .register(retried)
        .register(skippable)
        .build()
        .await
        .unwrap()
}

each_store! {
    fn a_timeout_is_a_failed_attempt_and_the_next_attempt_waits_anew(store) {
        paused(async {
            let engine = engine(&store).await;
            let started = tokio::time::Instant::now();
            let run = engine.start(retried, Data::new()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let waited = started.elapsed();
            assert!(matches!(&err, Error::RunFailed { .. }), "{err:?}");
            assert!(
                err.to_string().contains("step `approved` failed after 2 attempts: timed out after 3600s waiting for signal `approved`"),
                "{err}"
            );
            // Two waits of an hour and a minute's backoff, on the paused clock.
            assert!(waited >= Duration::from_secs(2 * 3600 + 60), "{waited:?}");
            let history = engine.history(run.id()).await.unwrap();
            let events: Vec<_> = history.iter().filter(|r| r.step == "approved").map(|r| (r.attempt, r.event.clone())).collect();
            assert_eq!(events.len(), 4, "{events:?}");
            let deadline = |i: usize| match &events[i].1 {
                StepEvent::Waiting { deadline: Some(d) } => *d,
                other => panic!("not a wait: {other:?}"),
            };
            assert!(matches!(&events[1], (1, StepEvent::AttemptFailed { .. })), "{events:?}");
            assert!(matches!(&events[3], (2, StepEvent::Failed { optional: false, .. })), "{events:?}");
            // The second wait's deadline: the first's, plus the backoff, plus the timeout.
            assert_eq!(deadline(2) - deadline(0), 3_600_000 + 60_000, "{events:?}");
            engine.shutdown().await.unwrap();
        });
    }

    fn a_signal_during_the_retried_wait_completes_it(store) {
        paused(async {
            let engine = engine(&store).await;
            let run = engine.start(retried, Data::new()).await.unwrap();
            // Past the first timeout and its backoff, inside the second wait.
            tokio::time::sleep(Duration::from_secs(3600 + 60 + 600)).await;
            let history = engine.history(run.id()).await.unwrap();
            assert!(history.iter().any(|r| matches!(r.event, StepEvent::AttemptFailed { .. })), "{history:?}");
            engine.signal(retried, run.id(), "approved", "late but in time").await.unwrap();
            let output = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!(output.get::<String>("approved").as_deref(), Some("late but in time"));
            engine.shutdown().await.unwrap();
        });
    }

    fn an_optional_wait_that_times_out_is_skipped(store) {
        paused(async {
            let engine = engine(&store).await;
            let output = run_to_end(&engine, skippable, Data::new()).await.unwrap();
            assert_eq!(output.get::<bool>("prepared"), Some(true));
            assert_eq!(output.get::<String>("approved"), None);
            engine.shutdown().await.unwrap();
        });
    }
}

/// A crash between a timed-out attempt and the next wait's start: the next wait still runs
/// from when the retry was due, not from when the run resumed.
#[test]
fn a_resumed_retry_waits_from_when_the_retry_was_due() {
    use durable::store::memory::MemoryStore;
    use durable::store::{EntryKind, JournalEntry, NewRun, Write};
    use durable::{Store, Workflow};

    paused(async {
        let store = std::sync::Arc::new(MemoryStore::new());
        let now = durable_now();
        let retry_at = now + 60_000;
        let entry = |seq, step: &str, kind, payload: String| JournalEntry {
            seq,
            step: step.into(),
            kind,
            attempt: 1,
            payload,
            at: now,
        };
        let writes = [
            Write::CreateRun(NewRun {
                id: "resumed".into(),
                workflow: "retried".into(),
                fingerprint: retried.definition().fingerprint().to_owned(),
                input: "{}".into(),
                owner: String::new(),
                lease_expires_at: 0,
                parent: None,
            }),
            Write::Append {
                run: "resumed".into(),
                lease_token: 1,
                entries: vec![
                    entry(
                        1,
                        "prepare",
                        EntryKind::StepCompleted,
                        r#"{"prepared":true}"#.into(),
                    ),
                    entry(
                        2,
                        "approved",
                        EntryKind::WaitStarted,
                        format!(r#"{{"deadline":{}}}"#, now - 60_000),
                    ),
                    entry(
                        3,
                        "approved",
                        EntryKind::AttemptFailed,
                        format!(r#"{{"error":"timed out","retry_at":{retry_at}}}"#),
                    ),
                ],
                finish: None,
            },
        ];
        let verdicts = store.commit(&writes).await.unwrap();
        assert!(verdicts.iter().all(Result::is_ok), "{verdicts:?}");
        let engine = Engine::builder_shared(store.clone())
            .register(retried)
            .build()
            .await
            .unwrap();
        let id = durable::RunId::from("resumed");
        let deadline = loop {
            let history = engine.history(&id).await.unwrap();
            if let Some(d) = history.iter().find_map(|r| match r.event {
                StepEvent::Waiting { deadline } if r.attempt == 2 => Some(deadline),
                _ => None,
            }) {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(deadline, Some(retry_at + 3_600_000));
        engine.signal(retried, &id, "approved", true).await.unwrap();
        let output: Data = wait_for_run(&engine, &id).await.unwrap();
        assert_eq!(output.get::<bool>("approved"), Some(true));
        engine.shutdown().await.unwrap();
    });
}

/// The engine's wall clock (it follows tokio's paused clock), read as the engine would.
fn durable_now() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ahead = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(std::time::Instant::now());
    wall + ahead.as_millis() as u64
}
