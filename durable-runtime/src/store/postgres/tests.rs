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

/// Runs `check` on a store over a schema of its own, with one connection (so that what the
/// check reads through `inner.client()` is the connection the store used), then drops the
/// store and the schema; `None` when skipped. Assert on the result after: a failed
/// assertion inside would leave the schema behind.
async fn on_scratch_store<T>(
    test: &str,
    check: impl AsyncFnOnce(&PostgresStore, &str) -> T,
) -> Option<T> {
    let url = url_or_skip(test)?;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let schema = format!("durable_unit_{}_{n}", std::process::id());
    let options = PostgresOptions {
        pool_size: 1,
        ..PostgresOptions::schema(&schema)
    };
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    let result = check(&store, &schema).await;
    drop(store);
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
    Some(result)
}

/// A lone run's steps commit through one prepared statement, `append_step` (the fallback
/// that tells why a write was refused is never needed), that PostgreSQL plans once per
/// connection. With its default choice it plans anew at each of the first five executions,
/// and at every one after for as long as its estimates favour a custom plan: in the
/// benchmark, a planning of the batch statement cost more than the commit's fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_runs_appends_are_planned_once_per_connection() {
    let test = "a_lone_runs_appends_are_planned_once_per_connection";
    let Some(plans) = on_scratch_store(test, async |store, _| {
        assert_eq!(store.commit(&[create("r")]).await.unwrap(), vec![Ok(())]);
        for seq in 1..=12 {
            let verdicts = store.commit(&[append("r", seq, None)]).await.unwrap();
            assert_eq!(verdicts, vec![Ok(())], "append {seq}");
        }
        let client = store.inner.client().await.unwrap();
        let sql = &store.inner.sql;
        let mut plans = Vec::new();
        for statement in [&sql.append_step, &sql.append_one] {
            let row = client
                .query_opt(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
                     WHERE statement = $1",
                    &[statement],
                )
                .await
                .unwrap();
            plans.push(row.map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1))));
        }
        plans
    })
    .await
    else {
        return;
    };
    assert_eq!(
        plans,
        [Some((12, 0)), None],
        "(generic plans, custom plans) of append_step, then append_one"
    );
}

/// The listing's filters and its page reach the listing indexes under the connection's
/// generic plans: each given condition is an index condition, not a filter applied to every
/// row from the newest on (measured with `IS NULL OR` conditions on 500,000 runs: 14 ms for
/// a status filter, 93 ms for the oldest page, against 0.1 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_and_pages_are_index_conditions() {
    let test = "listing_filters_and_pages_are_index_conditions";
    let Some(result) = on_scratch_store(test, async |store, schema| {
        // A table the planner knows is big enough for an index to matter.
        let writes: Vec<_> = (0..2000).map(|i| create(&format!("r{i}"))).collect();
        store.commit(&writes).await.unwrap();
        let client = store.inner.client().await.unwrap();
        // Twenty workflows and five statuses, as a real table would hold.
        client
            .batch_execute(&format!(
                "UPDATE \"{schema}\".durable_runs SET workflow = 'w' || (pos % 20), \
                 status = (ARRAY['running', 'completed', 'failed', 'cancelled', \
                 'suspended'])[1 + pos % 5], created_at = pos; \
                 ANALYZE \"{schema}\".durable_runs"
            ))
            .await
            .unwrap();
        let cases = [
            (vec!["status = $1".to_owned()], "text", vec!["status"]),
            (vec!["workflow = $1".to_owned()], "text", vec!["workflow"]),
            (
                vec!["(created_at, id) < ($1, $2)".to_owned()],
                "bigint, text",
                vec!["created_at"],
            ),
            (
                vec![
                    "workflow = $1".to_owned(),
                    "(created_at, id) < ($2, $3)".to_owned(),
                ],
                "text, bigint, text",
                vec!["workflow", "created_at"],
            ),
        ];
        let mut plans = Vec::new();
        for (i, (conditions, types, columns)) in cases.into_iter().enumerate() {
            let limit = types.split(',').count() + 1;
            let sql = store.inner.sql.list_runs(&conditions, limit);
            let args = types
                .split(", ")
                .map(|t| match t {
                    "text" => "'wf'",
                    _ => "9999999999999",
                })
                .chain(["50"])
                .collect::<Vec<_>>()
                .join(", ");
            let plan: Vec<String> = client
                .simple_query(&format!(
                    "PREPARE listing{i} ({types}, bigint) AS {sql}; \
                     EXPLAIN EXECUTE listing{i} ({args})"
                ))
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect();
            let index_conditions: String = plan
                .iter()
                .filter(|line| line.contains("Index Cond"))
                .cloned()
                .collect();
            for column in columns {
                if !index_conditions.contains(column) {
                    plans.push(format!(
                        "{conditions:?}: `{column}` is no index condition in\n{}",
                        plan.join("\n")
                    ));
                }
            }
        }
        plans
    })
    .await
    else {
        return;
    };
    assert!(result.is_empty(), "{}", result.join("\n\n"));
}
