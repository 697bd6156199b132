//! Bad input gets a clear error and loses nothing: unknown workflows at resume, changed
//! definitions, foreign or unreadable store files, a tampered journal.

use std::time::{Duration, Instant};

use durable::store::sqlite::SqliteStore;
use durable::{Data, Engine, Error, RunFilter, RunId, RunStatus, StepContext, StepError, Workflow};
use durable_tests::{
    count, each_store, in_runtime, note, open_sqlite_retrying, scratch_dir, wait_for_run, Backend,
    TestStore,
};

async fn a(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "a");
    Ok(data.assign("a", true))
}

async fn b(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "b");
    Ok(data.assign("b", true))
}

/// Hangs on its first call in a run: the test then stops the "process" with the run unfinished.
async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("gate", true))
}

mod v1 {
    use super::*;
    durable::workflow! { pub evolving { step a; step gate; } }
}

mod v2 {
    use super::*;
    durable::workflow! { pub evolving { step a; step b; step gate; } }
}

/// Starts `workflow` and stops the runtime while its `gate` step is in flight.
fn leave_unfinished<W: Workflow<State = Data> + Copy>(store: &TestStore, workflow: W) -> RunId {
    in_runtime(async {
        let engine = Engine::builder_shared(store.open())
            .register(workflow)
            .lease_duration(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        let run = engine.start(workflow, Data::new()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(run.id(), "gate") == 0 {
            assert!(Instant::now() < deadline, "gate never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        run.id().clone()
    })
}

fn after_lease_expiry() {
    std::thread::sleep(Duration::from_millis(150));
}

each_store! {
    fn a_run_of_an_unregistered_workflow_is_reported_and_kept(store) {
        let id = leave_unfinished(&store, v1::evolving);
        after_lease_expiry();
        in_runtime(async {
            // This process knows no workflow called `evolving`.
            let engine = Engine::builder_shared(store.open())
                .lease_duration(Duration::from_millis(100))
                .build()
                .await
                .unwrap();
            assert!(engine.resumed().is_empty());
            let err = wait_for_run::<Data>(&engine, &id).await.unwrap_err();
            assert!(matches!(err, Error::UnknownWorkflow { .. }), "{err}");
            assert_eq!(
                err.to_string(),
                format!("run {id} belongs to workflow `evolving`, which is not registered with this engine: register it (Engine::builder().register(..)) to resume the run")
            );
            let info = engine.status(&id).await.unwrap();
            assert_eq!(info.status, RunStatus::Running);
            assert!(info.stalled.is_some());
            assert_eq!(engine.history(&id).await.unwrap().len(), 1, "the journal is intact");
        });
        after_lease_expiry();
        in_runtime(async {
            // Registering it again finishes the run without redoing `a`.
            let engine = Engine::builder_shared(store.open()).register(v1::evolving).build().await.unwrap();
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(out.get::<bool>("gate"), Some(true));
            assert_eq!(count(&id, "a"), 1);
        });
    }

    fn a_changed_definition_under_a_running_workflow_is_refused(store) {
        let id = leave_unfinished(&store, v1::evolving);
        after_lease_expiry();
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(v2::evolving).build().await.unwrap();
            let err = wait_for_run::<Data>(&engine, &id).await.unwrap_err();
            let Error::DefinitionChanged { started_under, registered, .. } = &err else { panic!("{err}") };
            assert_eq!(started_under, v1::evolving.definition().fingerprint());
            assert_eq!(registered, v2::evolving.definition().fingerprint());
            let text = err.to_string();
            assert!(text.starts_with(&format!("workflow `evolving` run {id} started under definition {started_under}, but the registered definition is {registered}")), "{text}");
            assert_eq!(count(&id, "b"), 0, "nothing ran under the new definition");
            assert_eq!(engine.history(&id).await.unwrap().len(), 1, "the journal is intact");
        });
    }

    fn starting_an_unregistered_workflow_is_an_error(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(v1::evolving).build().await.unwrap();
            let err = engine.start_with_id(v2::evolving, "x", Data::new()).await.err();
            // Same name, registered: v2 runs under the registered (v1) definition's name,
            // so the check is by name. An unknown name is refused:
            assert!(err.is_none());
            let engine = Engine::builder_shared(TestStore::new(store.backend()).open()).build().await.unwrap();
            let err = engine.start(v1::evolving, Data::new()).await.err().unwrap();
            assert!(matches!(&err, Error::NotRegistered { workflow } if workflow == "evolving"), "{err:?}");
            assert_eq!(
                err.to_string(),
                "cannot start a run of workflow `evolving`: it is not registered with this engine \
                 (register it: Engine::builder(store).register(evolving))"
            );
            assert!(engine.list(RunFilter::default()).await.unwrap().is_empty(), "nothing was written");
        });
    }

    fn an_unknown_run_id_is_reported(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).build().await.unwrap();
            let err = wait_for_run::<Data>(&engine, &RunId::from("nope")).await.unwrap_err();
            assert_eq!(err.to_string(), "no run nope in the store");
        });
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let path = scratch_dir().join("notes.txt");
    let content = b"these are my notes, not a database\n".repeat(100);
    std::fs::write(&path, &content).unwrap();
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert_eq!(
        err,
        format!("sqlite store `{}`: the file is not an SQLite database, so not a durable store; point the store at a new path or at a file it created", path.display())
    );
    assert!(
        std::fs::read(&path).unwrap() == content,
        "the file was changed"
    );
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let path = scratch_dir().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(err.contains("the file is an SQLite database of another application (1 tables, none of them durable's)"), "{err}");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the file was changed"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let path = scratch_dir().join("new.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE durable_meta SET value = '99' WHERE key = 'schema'",
            [],
        )
        .unwrap();
    }
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(
        err.contains("schema version 99, written by a newer version of durable"),
        "{err}"
    );
}

#[test]
fn one_engine_process_per_sqlite_file() {
    let path = scratch_dir().join("busy.db");
    let first = SqliteStore::open(&path).unwrap();
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(
        err.contains("the file is open in another durable engine"),
        "{err}"
    );
    drop(first);
    SqliteStore::open(&path).unwrap();
}

#[test]
fn a_tampered_journal_entry_is_a_clear_error_naming_the_step() {
    let store = TestStore::new(Backend::Sqlite);
    let id = leave_unfinished(&store, v1::evolving);
    // Wait for the first runtime to let go of the file, then damage step a's journaled output.
    drop(open_sqlite_retrying(&store.db_path()));
    {
        let conn = rusqlite::Connection::open(store.db_path()).unwrap();
        let changed = conn
            .execute(
                "UPDATE durable_journal SET payload = '{\"a\": tru', crc32c = NULL, checksum = NULL \
                 WHERE step = 'a'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    in_runtime(async {
        let engine = Engine::builder_shared(store.open())
            .register(v1::evolving)
            .build()
            .await
            .unwrap();
        let err = wait_for_run::<Data>(&engine, &id).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "workflow `evolving` run {id} step `a`: its journaled output is not valid JSON"
            )),
            "{text}"
        );
        assert_eq!(count(&id, "a"), 1, "the damaged step was not run again");
        let info = engine.status(&id).await.unwrap();
        assert_eq!(
            info.status,
            RunStatus::Running,
            "the run is not marked failed"
        );
    });
}
