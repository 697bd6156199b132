//! Never write what cannot be read back: states nested too deep or holding non-finite floats
//! are refused at the step that produced them; stored values that cannot be read give a clear
//! error on their run and never crash the engine; run ids have limits; the SQLite store
//! checksums its journal and refuses to silently re-create a truncated file.

use std::time::{Duration, Instant};

use durable::store::sqlite::SqliteStore;
use durable::{
    Data, Engine, Error, RunFilter, RunId, RunStatus, StepContext, StepError, StepEvent, Workflow,
};
use durable_tests::{
    count, each_store, in_runtime, note, open_sqlite_retrying, run_to_end, scratch_dir,
    wait_for_handle, wait_for_run, Backend, TestStore,
};
use serde_json::{json, Value};

/// `[[[...1...]]]`, `depth` arrays deep, built without recursion.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// Nests `n` levels below the state's `depth` field (the state object is one level more).
async fn go_deep(ctx: StepContext, state: Value) -> Result<Value, StepError> {
    note(&ctx, "go_deep");
    let n = state["depth"].as_u64().unwrap() as usize;
    // Not `json!`, which would copy `nested(n)` recursively.
    let mut state = serde_json::Map::new();
    state.insert("depth".into(), n.into());
    state.insert("deep".into(), nested(n));
    Ok(Value::Object(state))
}

async fn after(ctx: StepContext, state: Value) -> Result<Value, StepError> {
    note(&ctx, "after");
    Ok(state)
}

durable::workflow! { pub deep_flow(state = serde_json::Value) { step go_deep; step after; } }

async fn a(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "a");
    Ok(data.assign("n", 7))
}

async fn ratio(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "ratio");
    let (sum, n) = (0.0_f64, 0.0_f64);
    Ok(data.assign("ratio", sum / n))
}

async fn use_ratio(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "use_ratio");
    let ratio: f64 = data
        .get("ratio")
        .ok_or_else(|| StepError::terminal("no ratio"))?;
    Ok(data.assign("percent", ratio * 100.0))
}

durable::workflow! {
    pub nan_flow {
        step ratio(retry(max_attempts = 3, backoff = constant, initial = 1ms));
        step use_ratio;
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    celsius: f64,
}

async fn overheat(ctx: StepContext, mut r: Reading) -> Result<Reading, StepError> {
    note(&ctx, "overheat");
    r.celsius = f64::INFINITY;
    Ok(r)
}

async fn report(ctx: StepContext, r: Reading) -> Result<Reading, StepError> {
    note(&ctx, "report");
    Ok(r)
}

durable::workflow! { pub typed_nan(state = Reading) { step overheat; step report; } }

/// Each item nests `depth` levels: fine for the step, too deep inside the map's batch result.
async fn deep_item(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    note(&ctx, "deep_item");
    let depth = item.get::<usize>("depth").unwrap();
    Ok(item.assign("deep", nested(depth)))
}

durable::workflow! {
    pub deep_map {
        map batch(over = items) { step deep_item; }
        step a;
    }
}

/// Assigns a value nested 100,000 levels deep: far too deep to store, and, were it dropped
/// recursively, deep enough to overflow the stack. Retries would not help: it is refused for good.
async fn assign_deep(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "assign_deep");
    Ok(data.assign("deep", nested(100_000)))
}

durable::workflow! {
    pub deep_assign {
        step assign_deep(retry(max_attempts = 3, backoff = constant, initial = 1ms));
        step a;
    }
}

/// A typed state holding JSON: the engine cannot take the type apart, only refuse it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    deep: Value,
}

async fn hold_deep(ctx: StepContext, mut holder: Holder) -> Result<Holder, StepError> {
    note(&ctx, "hold_deep");
    holder.deep = nested(100_000);
    Ok(holder)
}

durable::workflow! { pub deep_holder(state = Holder) { step hold_deep; } }

/// A `fan_out` whose operation returns a value nested 100,000 levels deep.
async fn fan_out_deep(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "fan_out_deep");
    let out = ctx.fan_out(vec![|| async { Ok(nested(100_000)) }]).await?;
    Ok(data.assign("out", out.success))
}

durable::workflow! { pub deep_operation { step fan_out_deep; } }

/// A `fan_out` whose operation returns a NaN.
async fn measure(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "measure");
    let out = ctx.fan_out(vec![|| async { Ok(f64::NAN) }]).await?;
    Ok(data.assign("measured", out.results))
}

durable::workflow! { pub fan_nan { step measure; step a; } }

/// Hangs on its first call in a run, so the test can stop the "process" with the run unfinished.
async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("gate", true))
}

durable::workflow! { pub gated { step a; step gate; } }

fn engine_for<W: Workflow>(
    store: &TestStore,
    workflow: W,
) -> impl std::future::Future<Output = Engine> {
    let store = store.open();
    async move {
        Engine::builder_shared(store)
            .register(workflow)
            .lease_duration(Duration::from_millis(100))
            .build()
            .await
            .unwrap()
    }
}

/// Starts runs of `gated` and stops the runtime while their `gate` steps are in flight.
fn leave_unfinished(store: &TestStore, runs: usize) -> Vec<RunId> {
    let ids = in_runtime(async {
        let engine = engine_for(store, gated).await;
        let mut ids = Vec::new();
        for _ in 0..runs {
            ids.push(engine.start(gated, Data::new()).await.unwrap().id().clone());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while ids.iter().any(|id| count(id, "gate") == 0) {
            assert!(Instant::now() < deadline, "gate never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ids
    });
    // Let the leases expire, and the runtime let go of an SQLite file.
    std::thread::sleep(Duration::from_millis(150));
    if store.backend() == Backend::Sqlite {
        drop(open_sqlite_retrying(&store.db_path()));
    }
    ids
}

each_store! {
    fn a_step_output_nested_too_deep_fails_that_step_and_nothing_of_it_is_written(store) {
        in_runtime(async {
            let engine = engine_for(&store, deep_flow).await;
            // At 100,000 levels, the engine refuses the state and drops it without recursion.
            for depth in [200, 1_000, 100_000] {
                let run = engine.start(deep_flow, json!({ "depth": depth })).await.unwrap();
                let id = run.id().clone();
                let err = wait_for_handle(&engine, &run).await.unwrap_err();
                assert!(matches!(err, Error::RunFailed { .. }), "{err}");
                assert_eq!(
                    err.to_string(),
                    format!(
                        "workflow `deep_flow` run {id} failed: step `go_deep` failed after 1 \
                         attempt: the step's output does not encode as JSON: it nests arrays and \
                         objects more than 100 levels deep, which could not be read back from the \
                         journal (the limit is durable::data::MAX_DEPTH)"
                    )
                );
                assert_eq!((count(&id, "go_deep"), count(&id, "after")), (1, 0));
                let history = engine.history(&id).await.unwrap();
                assert_eq!(history.len(), 1, "{history:?}");
                assert!(matches!(history[0].event, StepEvent::Failed { .. }), "{history:?}");
                let info = engine.status(&id).await.unwrap();
                assert_eq!(info.status, RunStatus::Failed);
            }
            // At the limit, the state is journaled and read back.
            let out = run_to_end(&engine, deep_flow, json!({ "depth": 99 })).await.unwrap();
            assert_eq!(out["deep"], nested(99));
        });
        // And a new engine reads every stored run back.
        in_runtime(async {
            let engine = engine_for(&store, deep_flow).await;
            let done = RunFilter { status: Some(RunStatus::Completed), ..Default::default() };
            let runs = engine.list(done).await.unwrap();
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].output.as_ref().unwrap()["deep"], nested(99));
            let out: Value = wait_for_run(&engine, &runs[0].id).await.unwrap();
            assert_eq!(out["deep"], nested(99));
        });
    }

    fn a_value_nested_100000_deep_fails_its_step_and_no_process_aborts(store) {
        let failed = |id: &RunId, workflow: &str, step: &str, key: &str| {
            format!(
                "workflow `{workflow}` run {id} failed: step `{step}` failed after 1 attempt: the \
                 step's output does not encode as JSON: {key}it nests arrays and objects more \
                 than 100 levels deep, which could not be read back from the journal (the limit \
                 is durable::data::MAX_DEPTH)"
            )
        };
        let (assigned, held) = in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(deep_assign)
                .register(deep_holder)
                .build()
                .await
                .unwrap();
            let run = engine.start(deep_assign, Data::new()).await.unwrap();
            let id = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert_eq!(err.to_string(), failed(&id, "deep_assign", "assign_deep", "key `deep`: "));
            assert_eq!((count(&id, "assign_deep"), count(&id, "a")), (1, 0), "refused for good");
            let run = engine.start(deep_holder, Holder { deep: json!(null) }).await.unwrap();
            let held = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert_eq!(err.to_string(), failed(&held, "deep_holder", "hold_deep", ""));
            (id, held)
        });
        // A later process builds its engine and finds both runs failed: no step runs again.
        if store.backend() == Backend::Sqlite {
            drop(open_sqlite_retrying(&store.db_path()));
        }
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(deep_assign)
                .register(deep_holder)
                .build()
                .await
                .unwrap();
            for id in [&assigned, &held] {
                assert_eq!(engine.status(id).await.unwrap().status, RunStatus::Failed);
            }
            assert!(engine.resumed().is_empty());
            assert_eq!((count(&assigned, "assign_deep"), count(&held, "hold_deep")), (1, 1));
        });
    }

    fn an_operation_output_nested_100000_deep_fails_its_step_and_no_process_aborts(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(deep_operation)
                .build()
                .await
                .unwrap();
            let run = engine.start(deep_operation, Data::new()).await.unwrap();
            let id = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err().to_string();
            assert!(err.contains("its output does not encode"), "{err}");
            assert!(err.contains("more than 100 levels deep"), "{err}");
            assert_eq!(count(&id, "fan_out_deep"), 1, "refused for good");
        });
    }

    fn an_input_nested_too_deep_is_refused_before_the_run_is_written(store) {
        in_runtime(async {
            let engine = engine_for(&store, deep_flow).await;
            let err = engine
                .start_with_id(deep_flow, "too-deep", json!({ "depth": 1, "input": nested(500) }))
                .await
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                "workflow `deep_flow` run too-deep: the input does not encode as JSON: it nests \
                 arrays and objects more than 100 levels deep, which could not be read back from \
                 the journal (the limit is durable::data::MAX_DEPTH)"
            );
            assert!(engine.list(RunFilter::default()).await.unwrap().is_empty());
        });
    }

    fn a_nan_assigned_to_data_fails_the_step_that_produced_it(store) {
        in_runtime(async {
            let engine = engine_for(&store, nan_flow).await;
            let run = engine.start(nan_flow, Data::new()).await.unwrap();
            let id = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            // Terminal: the same computation gives NaN again, so it is not retried.
            assert_eq!(
                err.to_string(),
                format!(
                    "workflow `nan_flow` run {id} failed: step `ratio` failed after 1 attempt: the \
                     step's output does not encode as JSON: key `ratio`: it holds the number NaN, \
                     which JSON cannot represent (JSON has no NaN or infinity); store such a \
                     number as a string or an Option instead"
                )
            );
            assert_eq!((count(&id, "ratio"), count(&id, "use_ratio")), (1, 0));
            let history = engine.history(&id).await.unwrap();
            assert_eq!(history.len(), 1);
            assert!(matches!(&history[0].event, StepEvent::Failed { error, .. } if error.contains("key `ratio`")));
        });
    }

    fn a_non_finite_float_in_a_typed_state_fails_the_step_that_produced_it(store) {
        in_runtime(async {
            let engine = engine_for(&store, typed_nan).await;
            let run = engine.start(typed_nan, Reading { celsius: 20.0 }).await.unwrap();
            let id = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(
                err.to_string().starts_with(&format!(
                    "workflow `typed_nan` run {id} failed: step `overheat` failed after 1 attempt: \
                     the step's output does not encode as JSON: it holds the number inf, which \
                     JSON cannot represent"
                )),
                "{err}"
            );
            assert_eq!((count(&id, "overheat"), count(&id, "report")), (1, 0));
            // Nor can an input hold one.
            let err = engine
                .start_with_id(typed_nan, "cold", Reading { celsius: f64::NEG_INFINITY })
                .await
                .err()
                .unwrap();
            assert!(
                err.to_string().starts_with(
                    "workflow `typed_nan` run cold: the input does not encode as JSON: it holds \
                     the number -inf"
                ),
                "{err}"
            );
            assert!(matches!(engine.status(&RunId::from("cold")).await, Err(Error::RunNotFound { .. })));
            // From a client too, and with `Data`, naming the key.
            let client = engine.client();
            let err = client
                .start_with_id(typed_nan, "warm", Reading { celsius: f64::NAN })
                .await
                .unwrap_err();
            assert!(
                err.to_string().starts_with(
                    "workflow `typed_nan` run warm: the input does not encode as JSON: it holds \
                     the number NaN"
                ),
                "{err}"
            );
            let err = client
                .start_with_id(nan_flow, "ratio", Data::new().assign("ratio", f64::INFINITY))
                .await
                .unwrap_err();
            assert!(
                err.to_string().starts_with(
                    "workflow `nan_flow` run ratio: the input does not encode as JSON: key \
                     `ratio`: it holds the number inf"
                ),
                "{err}"
            );
            assert!(engine.list(RunFilter::default()).await.unwrap().iter().all(|r| r.id.as_str() != "warm" && r.id.as_str() != "ratio"));
        });
    }

    fn a_map_whose_batch_result_nests_too_deep_fails_with_the_maps_name(store) {
        in_runtime(async {
            let engine = engine_for(&store, deep_map).await;
            // The item state is 1 + 1 + 97 = 99 levels deep; the batch result puts it 4 deeper.
            let input = Data::new().assign("items", json!([{ "depth": 97 }, { "depth": 1 }]));
            let run = engine.start(deep_map, input).await.unwrap();
            let id = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "workflow `deep_map` run {id} failed: map `batch`: its batch result cannot be \
                     journaled: it nests arrays and objects more than 100 levels deep, which could \
                     not be read back from the journal (the limit is durable::data::MAX_DEPTH)"
                )
            );
            assert_eq!((count(&id, "deep_item"), count(&id, "a")), (2, 0));
            let history = engine.history(&id).await.unwrap();
            assert!(history.iter().all(|r| r.step != "batch"), "{history:?}");
        });
    }

    fn a_fan_out_operation_returning_nan_fails_its_step_unjournaled(store) {
        in_runtime(async {
            let engine = engine_for(&store, fan_nan).await;
            let run = engine.start(fan_nan, Data::new()).await.unwrap();
            let id = run.id().clone();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(
                err.to_string().starts_with(&format!(
                    "workflow `fan_nan` run {id} failed: step `measure` failed after 1 attempt: \
                     operation measure/fan_out#1[0]: its output does not encode: it holds the \
                     number NaN, which JSON cannot represent"
                )),
                "{err}"
            );
            assert_eq!(count(&id, "a"), 0);
            let history = engine.history(&id).await.unwrap();
            assert_eq!(history.len(), 1, "{history:?}");
            assert_eq!(history[0].step, "measure");
        });
    }

    fn run_ids_outside_the_limits_are_refused_everywhere(store) {
        in_runtime(async {
            let engine = engine_for(&store, gated).await;
            let long = "x".repeat(1 << 20);
            let cases = [
                (String::new(), "invalid run id \"\": it is empty".to_owned()),
                ("order\0-7".to_owned(), "invalid run id \"order\\0-7\": it holds the control character '\\0' at byte 5".to_owned()),
                ("line\nbreak".to_owned(), "invalid run id \"line\\nbreak\": it holds the control character '\\n' at byte 4".to_owned()),
                ("y".repeat(256), format!("invalid run id \"{}\": it is 256 bytes long", "y".repeat(64) + "...")),
                (long.clone(), format!("invalid run id \"{}\": it is 1048576 bytes long", "x".repeat(64) + "...")),
            ];
            let rule = "; a run id is 1 to 255 bytes of text without control characters";
            for (id, message) in cases {
                let err = engine.start_with_id(gated, id.as_str(), Data::new()).await.err().unwrap();
                assert!(matches!(err, Error::InvalidRunId { .. }), "{err}");
                assert_eq!(err.to_string(), format!("{message}{rule}"));
                let id = RunId::from(id);
                assert_eq!(engine.status(&id).await.unwrap_err().to_string(), format!("{message}{rule}"));
                assert_eq!(engine.history(&id).await.unwrap_err().to_string(), format!("{message}{rule}"));
                assert_eq!(wait_for_run::<Data>(&engine, &id).await.unwrap_err().to_string(), format!("{message}{rule}"));
            }
            assert!(engine.list(RunFilter::default()).await.unwrap().is_empty(), "nothing was written");
            // 255 bytes, any script, is fine.
            let ok = "é".repeat(127) + "z";
            assert_eq!(ok.len(), 255);
            let run = engine.start_with_id(gated, ok.as_str(), Data::new()).await.unwrap();
            assert_eq!(engine.status(run.id()).await.unwrap().status, RunStatus::Running);
        });
    }
}

#[test]
fn a_stored_value_too_deep_to_read_stalls_only_its_run_and_never_crashes_the_engine() {
    let store = TestStore::new(Backend::Sqlite);
    let ids = leave_unfinished(&store, 3);
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    {
        // Written straight into the file, as another program or an old version could have.
        let conn = rusqlite::Connection::open(store.db_path()).unwrap();
        conn.execute(
            "UPDATE durable_runs SET input = ?1, input_crc32c = NULL, input_checksum = NULL \
             WHERE id = ?2",
            [&deep, ids[0].as_str()],
        )
        .unwrap();
        conn.execute(
            "UPDATE durable_journal SET payload = ?1, crc32c = NULL, checksum = NULL \
                 WHERE run_id = ?2 AND step = 'a'",
            [&deep, ids[1].as_str()],
        )
        .unwrap();
    }
    in_runtime(async {
        let engine = engine_for(&store, gated).await;
        let err = wait_for_run::<Data>(&engine, &ids[0]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "workflow `gated` run {}: its stored input nests arrays and objects at least \
                     128 levels deep, more than the 127 that can be read back",
                ids[0]
            )
        );
        let err = wait_for_run::<Data>(&engine, &ids[1]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "workflow `gated` run {} step `a`: its journaled output nests arrays and \
                     objects at least 128 levels deep, more than the 127 that can be read back",
                ids[1]
            )
        );
        for id in &ids[..2] {
            assert_eq!(
                engine.status(id).await.unwrap().status,
                RunStatus::Running,
                "kept as it is"
            );
        }
        // The history shows the unreadable entry as text rather than failing.
        let history = engine.history(&ids[1]).await.unwrap();
        assert!(
            matches!(&history[0].event, StepEvent::Completed { output: Value::String(s) } if s.len() == deep.len())
        );
        // The third run is not held up.
        let out: Data = wait_for_run(&engine, &ids[2]).await.unwrap();
        assert_eq!(out.get::<bool>("gate"), Some(true));
        assert_eq!(count(&ids[2], "a"), 1);
    });
}

#[test]
fn a_damaged_run_reports_one_cause_to_status_and_wait() {
    let (store, ids) = journal_checksum_test_store();
    {
        // Too deep to read, and not what durable wrote: its checksum says so first.
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(1_000), "]".repeat(1_000));
        let conn = rusqlite::Connection::open(store.db_path()).unwrap();
        let sql = "UPDATE durable_runs SET input = ?1 WHERE id = ?2";
        assert_eq!(conn.execute(sql, [&deep, ids[0].as_str()]).unwrap(), 1);
        // The other run's journal entry is changed the same way: its record is intact.
        let sql = "UPDATE durable_journal SET payload = ?1 WHERE run_id = ?2 AND step = 'a'";
        assert_eq!(conn.execute(sql, [&deep, ids[1].as_str()]).unwrap(), 1);
    }
    in_runtime(async {
        let engine = engine_for(&store, gated).await;
        let checksum = |id: &RunId, what: &str| {
            format!(
                "sqlite store `{}`: run {id}{what} does not match its checksum, so the file was \
                 damaged or changed outside durable; the run is left as it is: restore the file \
                 from a backup",
                store.db_path().display()
            )
        };
        // The record cannot be read: both say why, in the same words.
        let waited = wait_for_run::<Data>(&engine, &ids[0])
            .await
            .unwrap_err()
            .to_string();
        let status = engine.status(&ids[0]).await.unwrap_err().to_string();
        assert_eq!(
            waited,
            format!("store error: {}", checksum(&ids[0], ": its stored input"))
        );
        assert_eq!(status, waited);
        // The journal cannot be read: the record can, and tells why the engine does not drive
        // the run, as the waiter hears it.
        let waited = wait_for_run::<Data>(&engine, &ids[1])
            .await
            .unwrap_err()
            .to_string();
        let info = engine.status(&ids[1]).await.unwrap();
        assert_eq!(info.status, RunStatus::Running);
        let stalled = info.stalled.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(stalled, waited);
        assert!(
            waited.ends_with(&checksum(&ids[1], " step `a` (journal entry 1): the entry")),
            "{waited}"
        );
        assert_eq!(
            (count(&ids[0], "gate"), count(&ids[1], "gate")),
            (1, 1),
            "neither went on"
        );
    });
}

fn journal_checksum_test_store() -> (TestStore, Vec<RunId>) {
    let store = TestStore::new(Backend::Sqlite);
    let ids = leave_unfinished(&store, 2);
    (store, ids)
}

#[test]
fn a_flipped_byte_in_a_journal_entry_is_refused_naming_run_and_step() {
    let (store, ids) = journal_checksum_test_store();
    {
        // Still valid JSON, just wrong: without a checksum it would replay as n = 8.
        let conn = rusqlite::Connection::open(store.db_path()).unwrap();
        let changed = conn
            .execute(
                "UPDATE durable_journal SET payload = replace(payload, '\"n\":7', '\"n\":8') \
                 WHERE run_id = ?1 AND step = 'a'",
                [ids[0].as_str()],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    in_runtime(async {
        let engine = engine_for(&store, gated).await;
        let err = wait_for_run::<Data>(&engine, &ids[0]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store error: workflow `gated` run {id}: cannot load its journal: sqlite store \
                 `{path}`: run {id} step `a` (journal entry 1): the entry does not match its \
                 checksum, so the file was damaged or changed outside durable; the run is left as \
                 it is: restore the file from a backup",
                id = ids[0],
                path = store.db_path().display()
            )
        );
        let info = engine.status(&ids[0]).await.unwrap();
        assert_eq!(
            info.status,
            RunStatus::Running,
            "the run is not marked finished"
        );
        assert!(info.stalled.is_some());
        // A damaged journal does not heal by itself: heartbeats (every ~33 ms here) leave the
        // run stalled with why, instead of loading it again and again.
        let errors = engine.health().errors;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            engine.health().errors,
            errors,
            "the journal was not loaded again"
        );
        let again = engine.status(&ids[0]).await.unwrap();
        let why = again.stalled.map(|e| e.to_string()).unwrap_or_default();
        assert!(why.contains("does not match its checksum"), "{why}");
        assert_eq!(count(&ids[0], "a"), 1, "the damaged step was not run again");
        assert_eq!(count(&ids[0], "gate"), 1, "the run did not go on");
        // The other run resumes.
        let out: Data = wait_for_run(&engine, &ids[1]).await.unwrap();
        assert_eq!(out.get::<i64>("n"), Some(7));
        assert_eq!(count(&ids[1], "a"), 1);
    });
}

#[test]
fn a_changed_run_input_or_output_is_refused_naming_the_run() {
    let (store, ids) = journal_checksum_test_store();
    let tamper = |sql: &str, id: &RunId| {
        drop(open_sqlite_retrying(&store.db_path()));
        let conn = rusqlite::Connection::open(store.db_path()).unwrap();
        assert_eq!(conn.execute(sql, [id.as_str()]).unwrap(), 1);
    };
    let damaged = |id: &RunId, what: &str| {
        format!(
            "sqlite store `{}`: run {id}: its stored {what} does not match its checksum, so the \
             file was damaged or changed outside durable; the run is left as it is: restore the \
             file from a backup",
            store.db_path().display()
        )
    };
    // Still valid JSON: without a checksum the run would resume from another input.
    tamper(
        r#"UPDATE durable_runs SET input = '{"n":1}' WHERE id = ?1"#,
        &ids[0],
    );
    in_runtime(async {
        let engine = engine_for(&store, gated).await;
        let err = wait_for_run::<Data>(&engine, &ids[0]).await.unwrap_err();
        // The waiter reads the run's record itself, whose input fails its checksum.
        assert_eq!(
            err.to_string(),
            format!("store error: {}", damaged(&ids[0], "input"))
        );
        assert_eq!(count(&ids[0], "gate"), 1, "the run did not go on");
        let out: Data = wait_for_run(&engine, &ids[1]).await.unwrap();
        assert_eq!(out.get::<i64>("n"), Some(7));
        let err = engine.status(&ids[0]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("store error: {}", damaged(&ids[0], "input"))
        );
    });
    tamper(
        r#"UPDATE durable_runs SET output = replace(output, '"n":7', '"n":8') WHERE id = ?1"#,
        &ids[1],
    );
    in_runtime(async {
        let engine = engine_for(&store, gated).await;
        let err = wait_for_run::<Data>(&engine, &ids[1]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("store error: {}", damaged(&ids[1], "output"))
        );
        // Listing still shows every run.
        assert_eq!(engine.list(RunFilter::default()).await.unwrap().len(), 2);
    });
}

#[test]
fn a_file_from_before_checksums_is_migrated_and_its_entries_without_checksums_are_read() {
    let (store, ids) = journal_checksum_test_store();
    {
        // Make the file what version 2 wrote: no checksum column, schema 2 (a real version 1
        // file is migrated through every version in storage_legacy.rs).
        let conn = rusqlite::Connection::open(store.db_path()).unwrap();
        conn.execute_batch(
            "DROP INDEX durable_runs_unread;
             ALTER TABLE durable_runs DROP COLUMN inbox_last;
             ALTER TABLE durable_runs DROP COLUMN inbox_seen;
             ALTER TABLE durable_journal DROP COLUMN crc32c;
             ALTER TABLE durable_runs DROP COLUMN input_crc32c;
             ALTER TABLE durable_runs DROP COLUMN end_crc32c;
             ALTER TABLE durable_journal DROP COLUMN checksum;
             ALTER TABLE durable_runs DROP COLUMN input_checksum;
             ALTER TABLE durable_runs DROP COLUMN end_checksum;
             DROP TABLE durable_inbox;
             DROP INDEX durable_runs_by_parent;
             ALTER TABLE durable_runs DROP COLUMN parent_run;
             ALTER TABLE durable_runs DROP COLUMN parent_step;
             DROP INDEX durable_runs_by_wake;
             DROP INDEX durable_runs_cancel_requested;
             ALTER TABLE durable_runs DROP COLUMN wake_at;
             ALTER TABLE durable_runs DROP COLUMN cancel_requested;
             UPDATE durable_meta SET value = '2' WHERE key = 'schema';",
        )
        .unwrap();
    }
    in_runtime(async {
        let engine = engine_for(&store, gated).await;
        for id in &ids {
            let out: Data = wait_for_run(&engine, id).await.unwrap();
            assert_eq!(out.get::<i64>("n"), Some(7));
            assert_eq!(count(id, "a"), 1);
        }
    });
    drop(open_sqlite_retrying(&store.db_path()));
    let conn = rusqlite::Connection::open(store.db_path()).unwrap();
    let schema: String = conn
        .query_row(
            "SELECT value FROM durable_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(schema, "8");
    // Old entries keep no checksum; new ones have a CRC-32C (and no FNV-1a).
    type Sums = (String, Option<i64>, Option<i64>);
    let sums: Vec<Sums> = conn
        .prepare(
            "SELECT step, crc32c, checksum FROM durable_journal WHERE run_id = ?1 ORDER BY seq",
        )
        .unwrap()
        .query_map([ids[0].as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sums.len(), 2, "{sums:?}");
    assert_eq!(sums[0], ("a".to_owned(), None, None));
    assert_eq!(sums[1].0, "gate");
    assert!(sums[1].1.is_some() && sums[1].2.is_none(), "{sums:?}");
}

#[test]
fn a_store_file_truncated_to_zero_bytes_is_refused_not_reinitialised() {
    let dir = scratch_dir();
    let path = dir.join("runs.db");
    let marker = dir.join("runs.db.durable-marker");
    let store = SqliteStore::open(&path).unwrap();
    assert!(marker.exists(), "the marker is written with the store");
    in_runtime(async {
        let engine = Engine::builder(store)
            .register(gated)
            .build()
            .await
            .unwrap();
        engine.start(gated, Data::new()).await.unwrap();
    });
    drop(open_sqlite_retrying(&path));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "sqlite store `{}`: the file is empty, but `{}` says a durable store was created \
             here: the file was truncated or replaced, and its runs are gone from it. Restore it \
             from a backup, or delete the marker to start a new, empty store at this path",
            path.display(),
            marker.display()
        )
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "the file was left alone"
    );
    // Deleting the marker is the way to start anew.
    std::fs::remove_file(&marker).unwrap();
    drop(SqliteStore::open(&path).unwrap());
    assert!(marker.exists());
    // So is deleting the store's files: a file that is gone was not truncated.
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    drop(SqliteStore::open(&path).unwrap());
}

#[test]
fn a_new_path_and_an_existing_store_without_a_marker_open_and_get_one() {
    let dir = scratch_dir();
    let path = dir.join("fresh.db");
    drop(SqliteStore::open(&path).unwrap());
    let marker = dir.join("fresh.db.durable-marker");
    // A store created before markers existed gets one on its next open.
    std::fs::remove_file(&marker).unwrap();
    drop(SqliteStore::open(&path).unwrap());
    assert!(marker.exists());
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
}
