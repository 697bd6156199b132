//! A worker's capacity (`EngineBuilder::max_runs`): it drives at most that many runs at once,
//! queues the rest in the store, and claims them as its runs finish; a client with capacity
//! 0 drives nothing and another worker runs what it starts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use durable::{workflow, Data, Engine, RunStatus, StepContext, StepError};
use durable_tests::{count, each_store_and_postgres, in_runtime, note, wait_for_handle};

/// Per test tag: (running now, most at once).
static BUSY: Mutex<Vec<(String, usize, usize)>> = Mutex::new(Vec::new());

fn busy(tag: &str, delta: isize) {
    let mut all = BUSY.lock().unwrap();
    let i = match all.iter().position(|(t, _, _)| t == tag) {
        Some(i) => i,
        None => {
            all.push((tag.to_owned(), 0, 0));
            all.len() - 1
        }
    };
    let entry = &mut all[i];
    entry.1 = (entry.1 as isize + delta) as usize;
    entry.2 = entry.2.max(entry.1);
}

fn most_at_once(tag: &str) -> usize {
    BUSY.lock()
        .unwrap()
        .iter()
        .find(|(t, _, _)| t == tag)
        .map_or(0, |e| e.2)
}

async fn work(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "work");
    let tag: String = data.get("tag").unwrap_or_default();
    busy(&tag, 1);
    tokio::time::sleep(Duration::from_millis(30)).await;
    busy(&tag, -1);
    Ok(data.assign("worked", true))
}

workflow! { bounded { step work; } }

each_store_and_postgres! {
    fn a_worker_drives_at_most_max_runs_at_once_and_queues_the_rest(store) {
        let tag = format!("{:?}-{}", store.backend(), std::process::id());
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(bounded)
                .max_runs(2)
                .build()
                .await
                .unwrap();
            let mut runs = Vec::new();
            for _ in 0..6 {
                runs.push(engine.start(bounded, Data::new().assign("tag", tag.as_str())).await.unwrap());
            }
            let started = Instant::now();
            for run in &runs {
                let out = wait_for_handle(&engine, run).await.unwrap();
                assert_eq!(out.get::<bool>("worked"), Some(true));
                assert_eq!(count(run.id(), "work"), 1, "each run's step ran once");
            }
            assert_eq!(most_at_once(&tag), 2, "two at once, never more");
            // Queued runs were claimed as capacity freed, not on the 10s heartbeat.
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        });
    }
}

/// Two engines on one store in this process: only stores several engines may share
/// (memory, PostgreSQL), so these are not `each_store_and_postgres!`.
fn client_and_worker(
    store: std::sync::Arc<dyn durable::Store>,
    other: std::sync::Arc<dyn durable::Store>,
) {
    in_runtime(async {
        let client = Engine::builder_shared(store)
            .register(bounded)
            .max_runs(0)
            .build()
            .await
            .unwrap();
        let run = client
            .start(bounded, Data::new().assign("tag", "client"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let info = client.status(run.id()).await.unwrap();
        assert_eq!(
            (info.status, count(run.id(), "work")),
            (RunStatus::Running, 0),
            "the client drives nothing"
        );
        let worker = Engine::builder_shared(other)
            .register(bounded)
            .max_runs(4)
            .poll_interval(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        let out = wait_for_handle(&client, &run).await.unwrap();
        assert_eq!(out.get::<bool>("worked"), Some(true));
        assert_eq!(worker.resumed(), std::slice::from_ref(run.id()));
        assert_eq!(count(run.id(), "work"), 1);
    });
}

#[test]
fn a_client_with_no_capacity_queues_runs_for_a_worker_memory() {
    let store = std::sync::Arc::new(durable::store::memory::MemoryStore::new());
    client_and_worker(store.clone(), store);
}

#[test]
fn a_client_with_no_capacity_queues_runs_for_a_worker_postgres() {
    if durable_tests::postgres_url_or_skip(
        "capacity::a_client_with_no_capacity_queues_runs_for_a_worker_postgres",
    )
    .is_none()
    {
        return;
    }
    let store = durable_tests::TestStore::new(durable_tests::Backend::Postgres);
    client_and_worker(store.open(), store.open());
}
