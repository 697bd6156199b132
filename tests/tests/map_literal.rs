//! Maps over a list written in the workflow (`over = ["eu", "us", "ap"]`), run by the engine.

use durable::batch::{BatchResult, BatchStatus, CompletionReason, ItemStatus};
use durable::store::memory::MemoryStore;
use durable::{workflow, Data, Engine, StepError};
use durable_tests::{run_to_end, wait_for_handle};

async fn ping(region: String) -> Result<String, StepError> {
    Ok(format!("{region}: ok"))
}

workflow! {
    regions {
        map pinged(over = ["eu", "us", "ap"], max_concurrency = 2, item = String) {
            step ping;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_item_runs_with_results_in_order() {
    let engine = Engine::builder(MemoryStore::new())
        .register(regions)
        .build()
        .await
        .unwrap();
    let run = engine.start(regions, Data::new()).await.unwrap();
    let out = wait_for_handle(&engine, &run).await.unwrap();
    let batch = out.get::<BatchResult<String>>("pinged").unwrap();
    assert_eq!(
        (batch.status, batch.completion_reason),
        (BatchStatus::Completed, CompletionReason::AllCompleted)
    );
    assert_eq!(
        (batch.total_count, batch.success_count, batch.failure_count),
        (3, 3, 0)
    );
    assert_eq!(batch.get_results(), ["eu: ok", "us: ok", "ap: ok"]);
    // Each item's step is journaled under the map's path, like a map over a state field.
    let steps: Vec<String> = engine
        .history(run.id())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.step)
        .collect();
    for i in 0..3 {
        assert!(steps.contains(&format!("pinged[{i}]/ping")), "{steps:?}");
    }
}

/// Fails on negative numbers.
async fn check(n: i64) -> Result<i64, StepError> {
    if n < 0 {
        return Err(StepError::terminal(format!("{n} is negative")));
    }
    Ok(n * 10)
}

workflow! {
    checks {
        map checked(over = [1, -2, 3, 4, 5], item = i64, max_concurrency = 1, min_successful = 3,
                    tolerated_failures = 4) {
            step check;
        }
    }
}

#[tokio::test]
async fn literal_numbers_and_the_completion_policy() {
    let engine = Engine::builder(MemoryStore::new())
        .register(checks)
        .build()
        .await
        .unwrap();
    // One at a time: the third success, at the fourth item, decides; the fifth never starts.
    let out = run_to_end(&engine, checks, Data::new()).await.unwrap();
    let batch = out.get::<BatchResult<i64>>("checked").unwrap();
    assert_eq!(batch.status, BatchStatus::Completed);
    assert_eq!(
        batch.completion_reason,
        CompletionReason::MinSuccessfulReached
    );
    assert_eq!(
        (
            batch.total_count,
            batch.started_count,
            batch.success_count,
            batch.failure_count
        ),
        (5, 4, 3, 1)
    );
    let statuses: Vec<ItemStatus> = batch.items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        [
            ItemStatus::Succeeded,
            ItemStatus::Failed,
            ItemStatus::Succeeded,
            ItemStatus::Succeeded,
            ItemStatus::NotStarted
        ]
    );
    assert_eq!(batch.get_results(), [&10, &30, &40]);
    assert_eq!(
        batch.items[1]
            .error
            .as_deref()
            .map(|e| e.contains("-2 is negative")),
        Some(true)
    );
}
