//! Several engines on one store: a clean shutdown hands runs over at once, and a worker that
//! dies loses its runs when its leases expire.

use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::{workflow, Data, Engine, StepContext, StepError};
use durable_tests::{count, in_runtime, note, wait_for_run};

/// Hangs on its first call in a run.
async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("gate", true))
}

async fn first(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "first");
    Ok(data.assign("first", true))
}

workflow! { handover { step first; step gate; } }

async fn until_gate(run: &durable::RunId) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(run, "gate") == 0 {
        assert!(Instant::now() < deadline, "gate never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn a_shut_down_engine_hands_its_runs_over_at_once() {
    let store = std::sync::Arc::new(MemoryStore::new());
    in_runtime(async {
        let lease = Duration::from_millis(60);
        let a = Engine::builder_shared(store.clone())
            .register(handover)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let run = a.start(handover, Data::new()).await.unwrap();
        until_gate(run.id()).await;
        a.shutdown().await.unwrap();
        // Several heartbeats of `a` later: it must not have claimed the run back.
        tokio::time::sleep(lease * 3).await;
        let b = Engine::builder_shared(store.clone())
            .register(handover)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        assert_eq!(b.resumed(), std::slice::from_ref(run.id()));
        let out: Data = wait_for_run(&b, run.id()).await.unwrap();
        assert_eq!(out.get::<bool>("gate"), Some(true));
        assert_eq!(
            count(run.id(), "first"),
            1,
            "the finished step did not run again"
        );
        // The first engine reports why it no longer drives the run.
        let err = wait_for_run::<Data>(&a, run.id())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("the engine shut down while run"), "{err}");
    });
}

#[test]
fn a_dead_workers_runs_are_taken_over_when_its_lease_expires() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let lease = Duration::from_millis(100);
    let id = in_runtime(async {
        let a = Engine::builder_shared(store.clone())
            .register(handover)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let run = a.start(handover, Data::new()).await.unwrap();
        until_gate(run.id()).await;
        run.id().clone()
        // The runtime stops here: worker `a` dies without releasing its lease.
    });
    in_runtime(async {
        let started = Instant::now();
        // `b` starts while `a`'s lease still holds, so it takes the run over on a later beat.
        let b = Engine::builder_shared(store.clone())
            .register(handover)
            .lease_duration(lease)
            .build()
            .await
            .unwrap();
        let out: Data = wait_for_run(&b, &id).await.unwrap();
        assert_eq!(out.get::<bool>("gate"), Some(true));
        assert!(b.resumed().contains(&id));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(count(&id, "first"), 1);
    });
}
