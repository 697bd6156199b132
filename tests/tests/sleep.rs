//! Durable sleeps (`sleep NAME(for = ...)`, `sleep NAME(until = FIELD)`): the wake time is
//! journaled once, the run suspends (no task, no owner), and it wakes on time, in this
//! process or after a restart, at once when the time passed while no engine ran. Time is
//! tokio's paused clock: nothing sleeps for real.

use std::time::Duration;

use durable::store::EntryKind;
use durable::{workflow, Data, Engine, Error, RunStatus, StepContext, StepError, StepEvent};
use durable_tests::{
    each_store, each_store_and_postgres, events, in_paused_runtime, note, now_ms, wait_for_handle,
    wait_for_run,
};

const HOUR: u64 = 3_600_000;

async fn before(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "before");
    Ok(data.assign("before", true))
}

async fn after(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, format!("after at {}", now_ms()));
    Ok(data.assign("after", true))
}

async fn quick(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "quick");
    Ok(data.assign("quick", true))
}

workflow! {
    remind {
        step before;
        sleep nap(for = 1h);
        step after;
    }
}

workflow! {
    remind_at {
        step before;
        sleep until_due(until = due_at);
        step after;
    }
}

workflow! {
    side_by_side {
        parallel {
            step quick;
            seq later {
                sleep nap(for = 1h);
                step after;
            }
        }
    }
}

/// The time `after` ran, from its note.
fn after_ran_at(run: &durable::RunId) -> Vec<u64> {
    events(run)
        .iter()
        .filter_map(|e| e.strip_prefix("after at ")?.parse().ok())
        .collect()
}

/// Lets the engine's tasks run without moving the clock much.
async fn settle() {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

each_store! {
    fn a_sleep_suspends_the_run_and_wakes_it_on_time(store) {
        in_paused_runtime(async move {
            let engine = Engine::builder_shared(store.open()).register(remind).build().await.unwrap();
            // Off the heartbeat's beat (every 10 s from the build): only the timer is on time.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let started = now_ms();
            let run = engine.start(remind, Data::new()).await.unwrap();
            let id = run.id().clone();
            settle().await;
            let info = engine.status(&id).await.unwrap();
            assert_eq!(info.status, RunStatus::Suspended);
            // The absolute wake time is journaled, once.
            let history = engine.history(&id).await.unwrap();
            let wakes: Vec<u64> = history.iter().filter_map(|r| match r.event {
                StepEvent::SleepStarted { wake_at } => Some(wake_at),
                _ => None,
            }).collect();
            assert_eq!(wakes.len(), 1, "{history:?}");
            let wake_at = wakes[0];
            assert!((started + HOUR..started + HOUR + 1_000).contains(&wake_at), "{wake_at}");
            // Half-way, nothing more has run.
            tokio::time::sleep(Duration::from_millis(HOUR / 2)).await;
            assert_eq!(engine.status(&id).await.unwrap().status, RunStatus::Suspended);
            assert_eq!(events(&id), ["before"]);
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!((out.get::<bool>("before"), out.get::<bool>("after")), (Some(true), Some(true)));
            let ran = after_ran_at(&id);
            assert_eq!(ran.len(), 1, "{:?}", events(&id));
            // Woken on time by the worker's timer: not before its wake time, and well within a
            // heartbeat (10 s with the default lease) after it.
            assert!(ran[0] >= wake_at && ran[0] < wake_at + 1_000, "woke at {} for {wake_at}", ran[0]);
            assert_eq!(events(&id)[0], "before");
            assert_eq!(events(&id).len(), 2);
            // The journal holds the sleep once, and no second entry for it.
            let sleeps = history.iter().filter(|r| r.step == "nap").count();
            assert_eq!(sleeps, 1);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_restart_during_the_sleep_wakes_the_run_on_time(store) {
        in_paused_runtime(async move {
            let first = Engine::builder_shared(store.open()).register(remind).build().await.unwrap();
            let run = first.start(remind, Data::new()).await.unwrap();
            let id = run.id().clone();
            settle().await;
            let wake_at = first.shared_wake_at(&id).await;
            first.shutdown().await.unwrap();
            drop(first);
            // 10 min 5 s: off the next engine's heartbeat beat, so only its timer is on time.
            tokio::time::sleep(Duration::from_secs(605)).await;
            // A new process: the sleeping run is not resumed at start, it is not due.
            let second = Engine::builder_shared(store.open()).register(remind).build().await.unwrap();
            assert!(second.resumed().is_empty(), "{:?}", second.resumed());
            assert_eq!(second.status(&id).await.unwrap().status, RunStatus::Suspended);
            let out: Data = wait_for_run(&second, &id).await.unwrap();
            assert_eq!(out.get::<bool>("after"), Some(true));
            let ran = after_ran_at(&id);
            assert_eq!(ran.len(), 1);
            assert!(ran[0] >= wake_at && ran[0] < wake_at + 1_000, "woke at {} for {wake_at}", ran[0]);
            // `before` ran once, before the restart.
            assert_eq!(events(&id).iter().filter(|e| *e == "before").count(), 1);
            second.shutdown().await.unwrap();
        });
    }

    fn a_process_started_after_the_due_time_wakes_the_run_at_once(store) {
        in_paused_runtime(async move {
            let first = Engine::builder_shared(store.open()).register(remind).build().await.unwrap();
            let run = first.start(remind, Data::new()).await.unwrap();
            let id = run.id().clone();
            settle().await;
            first.shutdown().await.unwrap();
            drop(first);
            // No engine runs while the time passes.
            tokio::time::sleep(Duration::from_millis(2 * HOUR)).await;
            let built_at = now_ms();
            let second = Engine::builder_shared(store.open()).register(remind).build().await.unwrap();
            // Claimed and resumed by the build itself.
            assert_eq!(second.resumed(), std::slice::from_ref(&id));
            let out: Data = wait_for_run(&second, &id).await.unwrap();
            assert_eq!(out.get::<bool>("after"), Some(true));
            let ran = after_ran_at(&id);
            assert_eq!(ran.len(), 1);
            assert!(ran[0] - built_at < 1_000, "woke {} ms after the start", ran[0] - built_at);
            second.shutdown().await.unwrap();
        });
    }

    fn a_sleep_until_a_field_takes_milliseconds_or_rfc3339_and_fails_clearly_without_one(store) {
        in_paused_runtime(async move {
            let engine = Engine::builder_shared(store.open()).register(remind_at).build().await.unwrap();
            let due = now_ms() + 2 * HOUR + 5_000;
            let by_ms = engine.start(remind_at, Data::new().assign("due_at", due)).await.unwrap();
            // 1970 + 100 years, in RFC 3339, with an offset: long past, so no sleep at all.
            let past = engine
                .start(remind_at, Data::new().assign("due_at", "2000-01-01T01:00:00+01:00"))
                .await
                .unwrap();
            let missing = engine.start(remind_at, Data::new()).await.unwrap();
            let out = wait_for_handle(&engine, &past).await.unwrap();
            assert_eq!(out.get::<bool>("after"), Some(true));
            match wait_for_handle(&engine, &missing).await {
                Err(Error::RunFailed { workflow, failure, .. }) => {
                    assert_eq!(workflow, "remind_at");
                    assert_eq!(failure.steps.len(), 1);
                    assert_eq!(failure.steps[0].step, "until_due");
                    assert!(failure.message.contains("sleep `until_due`")
                        && failure.message.contains("no field `due_at`"), "{}", failure.message);
                }
                other => panic!("{other:?}"),
            }
            wait_for_handle(&engine, &by_ms).await.unwrap();
            let ran = after_ran_at(by_ms.id());
            assert!(ran[0] >= due && ran[0] < due + 1_000, "woke at {} for {due}", ran[0]);
            engine.shutdown().await.unwrap();
        });
    }

    fn a_sleeping_branch_lets_its_siblings_finish_and_they_never_run_again(store) {
        in_paused_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(side_by_side).build().await.unwrap();
            let run = engine.start(side_by_side, Data::new()).await.unwrap();
            let id = run.id().clone();
            settle().await;
            assert_eq!(engine.status(&id).await.unwrap().status, RunStatus::Suspended);
            assert_eq!(events(&id), ["quick"]);
            let out = wait_for_handle(&engine, &run).await.unwrap();
            assert_eq!((out.get::<bool>("quick"), out.get::<bool>("after")), (Some(true), Some(true)));
            // The branch that finished before the suspension was replayed, not run again.
            assert_eq!(events(&id).iter().filter(|e| *e == "quick").count(), 1);
            assert_eq!(after_ran_at(&id).len(), 1);
            let journal = shared.load_journal(&id).await.unwrap();
            let kinds: Vec<(String, EntryKind)> = journal.iter().map(|e| (e.step.clone(), e.kind)).collect();
            assert_eq!(kinds.iter().filter(|(s, _)| s == "quick").count(), 1, "{kinds:?}");
            assert!(kinds.contains(&("nap".to_owned(), EntryKind::SleepStarted)), "{kinds:?}");
            engine.shutdown().await.unwrap();
        });
    }
}

/// The wake time a run's journal holds for its sleep.
trait WakeAt {
    async fn shared_wake_at(&self, id: &durable::RunId) -> u64;
}

impl WakeAt for Engine {
    async fn shared_wake_at(&self, id: &durable::RunId) -> u64 {
        self.history(id)
            .await
            .unwrap()
            .iter()
            .find_map(|r| match r.event {
                StepEvent::SleepStarted { wake_at } => Some(wake_at),
                _ => None,
            })
            .expect("a sleep started")
    }
}

async fn other(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! { nap_short { step other; sleep nap(for = 1m); } }
workflow! { nap_long { step other; sleep nap(for = 2h); } }
workflow! { nap_renamed { step other; sleep doze(for = 1m); } }
workflow! { no_nap { step other; } }

#[test]
fn a_sleep_is_in_the_fingerprint_by_name_and_in_the_graph_as_a_node_of_its_own() {
    use durable::graph::GraphKind;
    use durable::Workflow;
    let fp = |def: durable::Definition| def.fingerprint().to_owned();
    // A run asleep keeps its journaled wake time: the duration is not part of the structure.
    assert_eq!(fp(nap_short.definition()), fp(nap_long.definition()));
    assert_ne!(fp(nap_short.definition()), fp(nap_renamed.definition()));
    assert_ne!(fp(nap_short.definition()), fp(no_nap.definition()));
    let def = remind_at.definition();
    let graph = def.graph();
    let names: Vec<_> = graph.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, ["before", "until_due", "after"]);
    assert_eq!(graph.edges, [(0, 1), (1, 2)]);
    assert!(matches!(
        &graph.steps[1].kind,
        GraphKind::Sleep(durable::definition::Wake::Until("due_at"))
    ));
    let mermaid = def.to_mermaid();
    assert!(
        mermaid.contains(r#"until_due(["sleep until_due<br/>until due_at"])"#),
        "{mermaid}"
    );
    assert!(mermaid.contains("before --> until_due") && mermaid.contains("until_due --> after"));
    let dot = def.to_dot();
    assert!(
        dot.contains(r#""until_due" [label="sleep until_due\nuntil due_at", shape=ellipse];"#),
        "{dot}"
    );
    assert!(dot.contains(r#""until_due" -> "after";"#), "{dot}");
}

each_store_and_postgres! {
    fn a_wake_from_another_process_is_noticed_through_the_watch(store) {
        durable_tests::in_runtime(async move {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(remind).build().await.unwrap();
            let run = engine.start(remind, Data::new()).await.unwrap();
            let id = run.id().clone();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while engine.status(&id).await.unwrap().status != RunStatus::Suspended {
                assert!(std::time::Instant::now() < deadline, "never suspended");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(engine.resumed().is_empty());
            // Another process (a client's connection, for SQLite) wakes it.
            let other: std::sync::Arc<dyn durable::Store> = match store.backend() {
                durable_tests::Backend::Memory => shared.clone(),
                // A store of its own: other connections, as another process has.
                durable_tests::Backend::Postgres => store.open(),
                durable_tests::Backend::Sqlite => std::sync::Arc::new(
                    durable::store::sqlite::SqliteStore::open_client(store.db_path()).unwrap(),
                ),
            };
            let asked = std::time::Instant::now();
            assert!(other.wake(&id).await.unwrap());
            // The engine claims it within its watch's delay, not on a heartbeat (10 s).
            while !engine.resumed().contains(&id) {
                assert!(asked.elapsed() < Duration::from_secs(3), "the wake went unnoticed");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // Not due yet: it sleeps again, with the wake time it journaled, and `after`
            // has not run.
            while engine.status(&id).await.unwrap().status != RunStatus::Suspended {
                assert!(asked.elapsed() < Duration::from_secs(5), "never suspended again");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(events(&id), ["before"]);
            let record = shared.load_run(&id).await.unwrap().unwrap();
            let journaled = engine.shared_wake_at(&id).await;
            assert_eq!(record.wake_at, Some(journaled));
            let sleeps = shared.load_journal(&id).await.unwrap().iter().filter(|e| e.step == "nap").count();
            assert_eq!(sleeps, 1, "the sleep was journaled again");
            engine.shutdown().await.unwrap();
        });
    }
}
