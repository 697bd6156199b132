//! `max_concurrency` counts the items that wait: a map item (or a parallel branch) that
//! suspends for a callback, a signal, a sleep or a child run keeps its slot until it ends, so
//! with `max_concurrency = 3` at most 3 approvals are outstanding, 3 signals awaited, 3 items
//! asleep, 3 child runs in flight; the next item starts only once one of them ended (its
//! message arrived and the run resumed). Across a restart too: the new engine's replay starts
//! the same items, and no finished one again.
//!
//! Each test releases the waiting items one at a time and, each time the run has suspended
//! again, asserts how many items have started (their first step ran, once each).

use std::time::Duration;

use durable::callback::Callback;
use durable::{
    workflow, Data, Engine, RunId, RunStatus, StepContext, StepError, StepEvent, Workflow,
};
use durable_tests::gates::{bounded, hand_out, noted_with, tokens, until, until_status};
use durable_tests::{
    count, each_store, each_store_and_postgres, in_paused_runtime, in_runtime, note, TestStore,
};
use serde_json::json;

/// Items in the map: 6 of them, at most 3 at once.
const ITEMS: usize = 6;
const LIMIT: usize = 3;

async fn prepare(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    let n: u64 = item.get("n").unwrap();
    note(&ctx, format!("prepare {n}"));
    Ok(item)
}

async fn ask(callback: Callback, data: Data) -> Result<Data, StepError> {
    hand_out(&callback);
    Ok(data)
}

workflow! {
    approvals {
        map approved(over = items, max_concurrency = 3) {
            step prepare;
            callback approval = ask(timeout = 1d);
        }
    }
}

workflow! {
    signalled {
        map approved(over = items, max_concurrency = 3) {
            step prepare;
            wait_for approval;
        }
    }
}

workflow! {
    napping {
        map rested(over = items, max_concurrency = 3) {
            step prepare;
            sleep nap(for = 1h);
        }
    }
}

// A partner's answer: the child run waits for a callback.
workflow! {
    partner {
        callback answer = ask(timeout = 1d);
    }
}

workflow! {
    partner_calls {
        map answered(over = items, max_concurrency = 3) {
            step prepare;
            call reply = partner;
        }
    }
}

workflow! {
    branch_approvals {
        parallel(max_concurrency = 2) {
            callback first = ask(timeout = 1d);
            callback second = ask(timeout = 1d);
            callback third = ask(timeout = 1d);
        }
    }
}

fn input() -> Data {
    Data::new().assign(
        "items",
        (0..ITEMS).map(|n| json!({"n": n})).collect::<Vec<_>>(),
    )
}

/// Items of run `id` whose first step ran.
fn started(id: &RunId) -> usize {
    noted_with(id, "prepare ").len()
}

/// Waits until run `id` has started `expected` items and suspended again, then checks that
/// no more started: the items that wait hold their slots.
async fn settled(engine: &Engine, id: &RunId, expected: usize) {
    until(&format!("run {id} to start {expected} items"), || {
        started(id) >= expected
    })
    .await;
    // A status read after that start is the suspension of the walk that started it.
    until_status(engine, id, RunStatus::Suspended).await;
    assert_eq!(
        started(id),
        expected,
        "items started: {:?}",
        noted_with(id, "prepare ")
    );
}

/// The index of the map item a journal path is inside: `name[3]/...` is 3.
fn item_of(path: &str) -> usize {
    let open = path.find('[').expect("a map item's path");
    let close = path.find(']').expect("a map item's path");
    path[open + 1..close].parse().unwrap()
}

/// The items of run `id` that were handed a callback token, in index order.
fn handed(id: &RunId) -> Vec<usize> {
    let mut items: Vec<usize> = tokens(id).iter().map(|(path, _)| item_of(path)).collect();
    items.sort();
    items
}

/// The token handed to item `i` of run `id`.
fn token_of(id: &RunId, i: usize) -> String {
    tokens(id)
        .into_iter()
        .find(|(path, _)| item_of(path) == i)
        .unwrap_or_else(|| panic!("item {i} has no token"))
        .1
}

/// Each item's first step ran once: no item started twice, through replays and restarts.
fn each_started_once(id: &RunId) {
    for n in 0..ITEMS {
        assert_eq!(
            count(id, &format!("prepare {n}")),
            1,
            "item {n}: {:?}",
            noted_with(id, "prepare ")
        );
    }
}

/// The items outstanding after `released` were released: at most the limit.
fn expected_started(released: usize) -> usize {
    (LIMIT + released).min(ITEMS)
}

/// Builds an engine over `store` driving `workflows`' runs.
async fn engine(
    store: &TestStore,
    workflows: impl FnOnce(durable::EngineBuilder) -> durable::EngineBuilder,
) -> Engine {
    workflows(Engine::builder_shared(store.open()))
        .build()
        .await
        .unwrap()
}

fn register<W: Workflow>(
    workflow: W,
) -> impl FnOnce(durable::EngineBuilder) -> durable::EngineBuilder {
    move |builder| builder.register(workflow)
}

each_store_and_postgres! {
    fn a_map_keeps_at_most_max_concurrency_callbacks_outstanding_across_a_restart(store) {
        let id = in_runtime(async {
            let engine = engine(&store, register(approvals)).await;
            let run = engine.start(approvals, input()).await.unwrap();
            settled(&engine, run.id(), 3).await;
            assert_eq!(handed(run.id()), [0, 1, 2], "the first three items hold the slots");
            // Item 1 ends (its completion arrives): one slot frees, item 3 starts.
            engine.complete_callback(&token_of(run.id(), 1), "yes-1").await.unwrap();
            settled(&engine, run.id(), 4).await;
            assert_eq!(handed(run.id()), [0, 1, 2, 3]);
            engine.shutdown().await.unwrap();
            run.id().clone()
        });
        // A new process: the replay holds the same slots (items 0, 2, 3 wait), no more.
        in_runtime(async {
            let engine = engine(&store, register(approvals)).await;
            let mut released = 1;
            for i in [0, 2, 3, 4, 5] {
                engine.complete_callback(&token_of(&id, i), format!("yes-{i}")).await.unwrap();
                released += 1;
                if released == ITEMS {
                    break;
                }
                settled(&engine, &id, expected_started(released)).await;
                assert_eq!(handed(&id), (0..expected_started(released)).collect::<Vec<_>>(), "one token per started item");
            }
            let out: Data = bounded(&format!("run {id} to finish"), engine.wait(&id)).await.unwrap();
            let batch: durable::batch::BatchResult<Data> = out.get("approved").unwrap();
            assert_eq!(batch.success_count, ITEMS);
            let given: Vec<String> = batch.get_results().iter().map(|d| d.get("approval").unwrap()).collect();
            assert_eq!(given, (0..ITEMS).map(|i| format!("yes-{i}")).collect::<Vec<_>>());
            each_started_once(&id);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_map_awaits_at_most_max_concurrency_signals_across_a_restart(store) {
        let id = in_runtime(async {
            let engine = engine(&store, register(signalled)).await;
            let run = engine.start(signalled, input()).await.unwrap();
            settled(&engine, run.id(), 3).await;
            let waiting = |history: &[durable::StepRecord]| history.iter().filter(|r| matches!(r.event, StepEvent::Waiting { .. })).count();
            assert_eq!(waiting(&engine.history(run.id()).await.unwrap()), 3, "three waits started");
            engine.shutdown().await.unwrap();
            run.id().clone()
        });
        in_runtime(async {
            let engine = engine(&store, register(signalled)).await;
            let client = engine.client();
            for released in 1..=ITEMS {
                // One signal: one waiting item takes it and ends, one more may start.
                client.signal(signalled, &id, "approval", released).await.unwrap();
                if released == ITEMS {
                    break;
                }
                settled(&engine, &id, expected_started(released)).await;
                let history = engine.history(&id).await.unwrap();
                let taken = history.iter().filter(|r| matches!(r.event, StepEvent::Received { .. })).count();
                assert_eq!(taken, released, "{history:?}");
            }
            let out: Data = bounded(&format!("run {id} to finish"), engine.wait(&id)).await.unwrap();
            let batch: durable::batch::BatchResult<Data> = out.get("approved").unwrap();
            assert_eq!(batch.success_count, ITEMS);
            let mut got: Vec<u64> = batch.get_results().iter().map(|d| d.get("approval").unwrap()).collect();
            got.sort();
            assert_eq!(got, (1..=ITEMS as u64).collect::<Vec<_>>(), "each signal taken once");
            each_started_once(&id);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_map_keeps_at_most_max_concurrency_child_runs_in_flight_across_a_restart(store) {
        // Child runs of `id` created so far, in item order.
        async fn children(engine: &Engine, id: &RunId) -> Vec<RunId> {
            let mut kids: Vec<(String, RunId)> = engine.history(id).await.unwrap().into_iter().filter_map(|r| match r.event {
                StepEvent::ChildStarted { child } => Some((r.step, child)),
                _ => None,
            }).collect();
            kids.sort_by_key(|(path, _)| item_of(path));
            kids.into_iter().map(|(_, child)| child).collect()
        }
        async fn settled_children(engine: &Engine, id: &RunId, expected: usize) -> Vec<RunId> {
            settled(engine, id, expected).await;
            let children = children(engine, id).await;
            assert_eq!(children.len(), expected, "child runs in flight: {children:?}");
            for child in &children {
                until(&format!("child run {child} to hand out its token"), || tokens(child).len() == 1).await;
            }
            children
        }
        let id = in_runtime(async {
            let engine = engine(&store, |b| b.register(partner_calls).register(partner)).await;
            let run = engine.start(partner_calls, input()).await.unwrap();
            let kids = settled_children(&engine, run.id(), 3).await;
            // The second child answers: its item ends, and the fourth item calls its child.
            engine.complete_callback(&tokens(&kids[1])[0].1, "ok-1").await.unwrap();
            settled_children(&engine, run.id(), 4).await;
            engine.shutdown().await.unwrap();
            run.id().clone()
        });
        in_runtime(async {
            let engine = engine(&store, |b| b.register(partner_calls).register(partner)).await;
            let mut released = 1;
            for i in [0, 2, 3, 4, 5] {
                let kids = children(&engine, &id).await;
                engine.complete_callback(&tokens(&kids[i])[0].1, format!("ok-{i}")).await.unwrap();
                released += 1;
                if released == ITEMS {
                    break;
                }
                settled_children(&engine, &id, expected_started(released)).await;
            }
            let out: Data = bounded(&format!("run {id} to finish"), engine.wait(&id)).await.unwrap();
            let batch: durable::batch::BatchResult<Data> = out.get("answered").unwrap();
            assert_eq!(batch.success_count, ITEMS);
            let replies: Vec<String> = batch.get_results().iter().map(|d| d.get::<Data>("reply").unwrap().get("answer").unwrap()).collect();
            assert_eq!(replies, (0..ITEMS).map(|i| format!("ok-{i}")).collect::<Vec<_>>());
            each_started_once(&id);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_parallel_block_keeps_at_most_max_concurrency_branches_waiting(store) {
        in_runtime(async {
            let engine = engine(&store, register(branch_approvals)).await;
            let run = engine.start(branch_approvals, Data::new()).await.unwrap();
            let id = run.id().clone();
            let handed = |n: usize| {
                let id = id.clone();
                move || tokens(&id).len() >= n
            };
            until("two branches to hand out their tokens", handed(2)).await;
            until_status(&engine, &id, RunStatus::Suspended).await;
            let token = |branch: &str| {
                let path = format!("{branch}/submit");
                tokens(&id).into_iter().find(|(p, _)| *p == path).map(|(_, t)| t)
            };
            assert_eq!(tokens(&id).len(), 2);
            assert!(token("third").is_none(), "the third branch waits for a slot");
            engine.complete_callback(&token("first").unwrap(), 1).await.unwrap();
            until("the third branch to hand out its token", handed(3)).await;
            until_status(&engine, &id, RunStatus::Suspended).await;
            assert_eq!(tokens(&id).len(), 3);
            assert!(token("third").is_some());
            engine.complete_callback(&token("second").unwrap(), 2).await.unwrap();
            engine.complete_callback(&token("third").unwrap(), 3).await.unwrap();
            let out = bounded("the parallel block to finish", run.wait()).await.unwrap();
            let got: Vec<u64> = ["first", "second", "third"].iter().map(|k| out.get(k).unwrap()).collect();
            assert_eq!(got, [1, 2, 3]);
            engine.shutdown().await.unwrap();
        });
    }
}

each_store! {
    fn a_map_keeps_at_most_max_concurrency_items_asleep_across_a_restart(store) {
        // Time is tokio's paused clock: the hours pass at once.
        const HOUR: Duration = Duration::from_secs(3600);
        let sleeping = |history: &[durable::StepRecord]| {
            history.iter().filter(|r| matches!(r.event, StepEvent::SleepStarted { .. })).count()
        };
        in_paused_runtime(async {
            let first = engine(&store, register(napping)).await;
            let run = first.start(napping, input()).await.unwrap();
            let id = run.id().clone();
            settled(&first, &id, 3).await;
            assert_eq!(sleeping(&first.history(&id).await.unwrap()), 3, "three items asleep");
            first.shutdown().await.unwrap();
            drop(first);
            // The first three are due while no engine runs; a new one resumes the run at once.
            tokio::time::sleep(HOUR + Duration::from_secs(1)).await;
            let second = engine(&store, register(napping)).await;
            settled(&second, &id, 6).await;
            let history = second.history(&id).await.unwrap();
            assert_eq!(sleeping(&history), 6, "the next three asleep, the first three not again");
            // The next three are due an hour after they fell asleep (the bound is past that).
            let out: Data = tokio::time::timeout(3 * HOUR, second.wait(&id))
                .await
                .unwrap_or_else(|_| panic!("waited 3 h for run {id} to finish"))
                .unwrap();
            let batch: durable::batch::BatchResult<Data> = out.get("rested").unwrap();
            assert_eq!(batch.success_count, ITEMS);
            each_started_once(&id);
            second.shutdown().await.unwrap();
        });
    }
}
