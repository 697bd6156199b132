//! A pending signal changed in the database behind the store's back (`limit` 100 edited to
//! 900 in the SQLite file, or with SQL on PostgreSQL) is not taken: the run stops with an
//! error naming it and the message, and the step after the wait never runs.

use std::time::{Duration, Instant};

use durable::{Client, Data, Engine, Error, RunId, RunStatus, StepContext, StepError};
use durable_tests::{
    count, in_runtime, note, open_sqlite_retrying, postgres_url_or_skip, Backdoor, Backend,
    TestStore,
};

async fn ask(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "ask");
    Ok(data)
}

async fn apply(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "apply");
    let limit: i64 = data.get("limit").unwrap_or(0);
    Ok(data.assign("applied", limit))
}

durable::workflow! {
    limits {
        step ask;
        wait_for limit(timeout = 1h);
        step apply;
    }
}

async fn engine(store: std::sync::Arc<dyn durable::Store>) -> Engine {
    Engine::builder_shared(store)
        .register(limits)
        .build()
        .await
        .unwrap()
}

fn edited_signal_is_refused(store: TestStore) {
    // A run waits for its limit, with no engine left to drive it.
    let id: RunId = in_runtime(async {
        let engine = engine(store.open()).await;
        let id = engine
            .start(limits, Data::new())
            .await
            .unwrap()
            .id()
            .clone();
        let limit = Instant::now() + Duration::from_secs(20);
        while engine.status(&id).await.unwrap().status != RunStatus::Suspended {
            assert!(
                Instant::now() < limit,
                "run {id} never waited for its limit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.shutdown().await.unwrap();
        id
    });
    if store.backend() == Backend::Sqlite {
        drop(open_sqlite_retrying(&store.db_path()));
    }
    in_runtime(async {
        let shared = store.open();
        let client = Client::new(shared.clone());
        client.signal(limits, &id, "limit", 100).await.unwrap();
        // The store file (or table) is edited while the signal waits to be taken.
        store.edit_inbox_payload(&id, 1, "900");
        let engine = engine(shared).await;
        let waited = tokio::time::timeout(Duration::from_secs(20), engine.wait::<Data>(&id))
            .await
            .unwrap_or_else(|_| panic!("run {id} neither ended nor stopped within 20 s"));
        let err = waited.expect_err("the run went on with the edited signal");
        assert!(
            matches!(&err, Error::Store(e) if e.kind() == durable::store::StoreErrorKind::Corrupt),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "workflow `limits` run {id} step `limit`: cannot read the run's inbox"
            )) && text.contains(&format!(
                "run {id}: inbox message 1 (signal `limit`) does not match its checksum"
            )),
            "{text}"
        );
        assert_eq!(count(&id, "apply"), 0, "the step after the wait ran");
        assert_eq!(count(&id, "ask"), 1, "a finished step ran again");
        let info = engine.status(&id).await.unwrap();
        assert_eq!(info.status, RunStatus::Running, "the run is not finished");
        assert!(info.stalled.is_some(), "the engine says why it stopped");
        engine.shutdown().await.unwrap();
    });
}

#[test]
fn an_edited_pending_signal_is_refused_on_sqlite() {
    edited_signal_is_refused(TestStore::new(Backend::Sqlite));
}

#[test]
fn an_edited_pending_signal_is_refused_on_postgres() {
    if postgres_url_or_skip("inbox_checksum::an_edited_pending_signal_is_refused_on_postgres")
        .is_some()
    {
        edited_signal_is_refused(TestStore::new(Backend::Postgres));
    }
}
