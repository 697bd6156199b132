//! A client in another process signals a run and completes a callback on the SQLite file a
//! running engine holds; the engine notices the message through its watch and wakes the run
//! promptly (the time from the child's exit to the run's next step is printed).

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use durable::callback::Callback;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Engine, RunId, RunStatus, StepError};
use durable_tests::{in_runtime, scratch_dir, wait_for_handle};

const CHILD: &str = env!("CARGO_BIN_EXE_signal_child");

static TOKEN: Mutex<Option<String>> = Mutex::new(None);

async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("prepared", true))
}

async fn request_payment(callback: Callback, data: Data) -> Result<Data, StepError> {
    *TOKEN.lock().unwrap() = Some(callback.token().to_owned());
    Ok(data)
}

// The same workflow as tests/src/bin/signal_child.rs names.
workflow! {
    remote_review {
        step prepare;
        wait_for approved(timeout = 1h);
        callback paid = request_payment(timeout = 1h);
    }
}

/// Polls (every millisecond) until `id` has status `status`; returns when it saw it.
async fn until(engine: &Engine, id: &RunId, status: RunStatus) -> Instant {
    let limit = Instant::now() + Duration::from_secs(20);
    while Instant::now() < limit {
        if engine.status(id).await.unwrap().status == status {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("run {id} never became {status:?}");
}

fn child(args: &[&str]) {
    let out = Command::new(CHILD).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "signal_child {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_client_in_another_process_signals_and_completes_a_callback_the_engine_notices_promptly() {
    let dir = scratch_dir();
    let db = dir.join("runs.db");
    in_runtime(async move {
        // The default lease (30s): its heartbeat claims only every 10s, so a prompt wake is
        // the worker's watch noticing the other process's write.
        let engine = Engine::builder(SqliteStore::open(&db).unwrap())
            .register(remote_review)
            .build()
            .await
            .unwrap();
        let run = engine.start(remote_review, Data::new()).await.unwrap();
        let id = run.id().clone();
        until(&engine, &id, RunStatus::Suspended).await;
        let db_text = db.to_str().unwrap().to_owned();
        let signal_args = [
            db_text.as_str(),
            "signal",
            id.as_str(),
            "approved",
            "\"ann\"",
        ];
        let sent = tokio::task::block_in_place(|| {
            child(&signal_args);
            Instant::now()
        });
        // Woken, driven to the callback, suspended again.
        let history_len =
            |h: &Vec<durable::StepRecord>| h.iter().filter(|r| r.step == "paid").count();
        let limit = Instant::now() + Duration::from_secs(20);
        let noticed = loop {
            let history = engine.history(&id).await.unwrap();
            if history_len(&history) > 0 {
                break Instant::now();
            }
            assert!(
                Instant::now() < limit,
                "the engine never took the signal: {history:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let signal_latency = noticed - sent;
        until(&engine, &id, RunStatus::Suspended).await;
        let token = TOKEN.lock().unwrap().clone().unwrap();
        let complete_args = [
            db_text.as_str(),
            "complete",
            token.as_str(),
            "{\"amount\":42}",
        ];
        let sent = tokio::task::block_in_place(|| {
            child(&complete_args);
            Instant::now()
        });
        let output = wait_for_handle(&engine, &run).await.unwrap();
        let callback_latency = sent.elapsed();
        assert_eq!(output.get::<String>("approved").as_deref(), Some("ann"));
        assert_eq!(
            output.get::<serde_json::Value>("paid").unwrap()["amount"],
            42
        );
        eprintln!(
            "noticed a signal from another process in {signal_latency:?}, a callback completion \
             in {callback_latency:?} (from the child's exit to the run taking it)"
        );
        // Well under the heartbeat (10s): the watch noticed, not the heartbeat.
        assert!(
            signal_latency < Duration::from_secs(5),
            "{signal_latency:?}"
        );
        assert!(
            callback_latency < Duration::from_secs(5),
            "{callback_latency:?}"
        );
        // A second completion from another process is refused, and says why.
        let out = Command::new(CHILD).args(complete_args).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("its tokens are good no more"), "{stderr}");
        engine.shutdown().await.unwrap();
    });
}
