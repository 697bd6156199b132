//! What the store does with its own connections, seen from inside them (the integration
//! suites in `tests/` see only the public API). Each test makes a schema of its own and drops
//! it; without `DURABLE_TEST_POSTGRES_URL` each prints that it was skipped.

use super::{PostgresOptions, PostgresStore};
use crate::store::test_writes::{append, create};
use crate::store::Store;

fn url_or_skip(test: &str) -> Option<String> {
    match std::env::var("DURABLE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("SKIPPED {test}: DURABLE_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A lone run's steps commit through one prepared statement that PostgreSQL plans once per
/// connection. With its default choice it plans anew at each of the first five executions,
/// and at every one after for as long as its estimates favour a custom plan: in the
/// benchmark, a planning of the batch statement cost more than the commit's fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_runs_appends_are_planned_once_per_connection() {
    let Some(url) = url_or_skip("a_lone_runs_appends_are_planned_once_per_connection") else {
        return;
    };
    let schema = format!("durable_unit_plans_{}", std::process::id());
    let options = PostgresOptions {
        pool_size: 1,
        ..PostgresOptions::schema(&schema)
    };
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    let result = async {
        assert_eq!(store.commit(&[create("r")]).await.unwrap(), vec![Ok(())]);
        for seq in 1..=12 {
            let verdicts = store.commit(&[append("r", seq, None)]).await.unwrap();
            assert_eq!(verdicts, vec![Ok(())], "append {seq}");
        }
        let client = store.inner.client().await.unwrap();
        let row = client
            .query_one(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
                 WHERE statement = $1",
                &[&store.inner.sql.append_one],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    }
    .await;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    drop(store);
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
    assert_eq!(result, (12, 0), "(generic plans, custom plans)");
}
