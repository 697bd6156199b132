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

/// A lone run's steps commit through one prepared statement, `append_step`, and its end
/// through `finish_step` (the fallbacks that tell why a write was refused are never needed),
/// which PostgreSQL plans once per connection. With its default choice it plans anew at each
/// of the first five executions, and at every one after for as long as its estimates favour a
/// custom plan: in the benchmark, a planning of the batch statement cost more than the
/// commit's fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_runs_appends_are_planned_once_per_connection() {
    let test = "a_lone_runs_appends_are_planned_once_per_connection";
    let Some(plans) = on_scratch_store(test, async |store, _| {
        assert_eq!(store.commit(&[create("r")]).await.unwrap(), vec![Ok(())]);
        for seq in 1..=12 {
            let verdicts = store.commit(&[append("r", seq, None)]).await.unwrap();
            assert_eq!(verdicts, vec![Ok(())], "append {seq}");
        }
        let end = Some(crate::store::Finish::Completed("{}".into()));
        let verdicts = store.commit(&[append("r", 13, end)]).await.unwrap();
        assert_eq!(verdicts, vec![Ok(())], "the end");
        let client = store.inner.client().await.unwrap();
        let sql = &store.inner.sql;
        let mut plans = Vec::new();
        let statements = [
            &sql.append_step,
            &sql.finish_step,
            &sql.append_one,
            &sql.finish_one,
        ];
        for statement in statements {
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
        [Some((12, 0)), Some((1, 0)), None, None],
        "(generic plans, custom plans) of append_step, finish_step, append_one, finish_one"
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

/// A schema an older durable left at any earlier version is brought up to date when a store
/// connects, and keeps its runs and journals: the store reads the run left mid-way and writes
/// its next step and its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_of_any_earlier_version_is_brought_up_to_date_keeping_its_runs() {
    let test = "a_schema_of_any_earlier_version_is_brought_up_to_date_keeping_its_runs";
    let Some(url) = url_or_skip(test) else {
        return;
    };
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut failures = Vec::new();
    for version in 1..super::SCHEMA_VERSION {
        let schema = format!("durable_unit_{}_v{version}", std::process::id());
        let s = format!("\"{schema}\"");
        // What an older durable left: its migrations, then a run one step in.
        let mut setup = format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.durable_migrations (version integer PRIMARY \
             KEY, applied_at timestamptz NOT NULL DEFAULT now());"
        );
        for (i, migration) in super::schema::MIGRATIONS[..version as usize]
            .iter()
            .enumerate()
        {
            setup += &migration.replace("{s}", &s);
            setup += &format!(
                ";\nINSERT INTO {s}.durable_migrations (version) VALUES ({});",
                i + 1
            );
        }
        setup += &format!(
            "INSERT INTO {s}.durable_runs (id, workflow, fingerprint, status, input, owner, \
             lease_token, lease_expires_at, created_at, updated_at) \
             VALUES ('r', 'wf', 'f', 'running', '{{}}', 'me', 1, 4000000000000000, 1, 1); \
             INSERT INTO {s}.durable_journal VALUES ('r', 1, 's1', 'step_completed', 1, '{{}}', 1);"
        );
        admin.batch_execute(&setup).await.unwrap();
        let outcome = async {
            let store = PostgresStore::connect_with(&url, PostgresOptions::schema(&schema))
                .await
                .map_err(|e| e.to_string())?;
            let run = store
                .load_run(&"r".into())
                .await
                .map_err(|e| e.to_string())?;
            let journal = store
                .load_journal(&"r".into())
                .await
                .map_err(|e| e.to_string())?;
            let end = Some(crate::store::Finish::Completed("{}".into()));
            let verdicts = store
                .commit(&[append("r", 2, None)])
                .await
                .map_err(|e| e.to_string())?;
            let ended = store
                .commit(&[append("r", 3, end)])
                .await
                .map_err(|e| e.to_string())?;
            let after = store
                .load_run(&"r".into())
                .await
                .map_err(|e| e.to_string())?;
            let versions: Vec<i32> = admin
                .query(
                    &format!("SELECT version FROM {s}.durable_migrations ORDER BY version"),
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|row| row.get(0))
                .collect();
            Ok::<_, String>((
                run.map(|r| r.status),
                journal.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (verdicts, ended),
                after.map(|r| r.status),
                versions,
            ))
        }
        .await;
        admin
            .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
            .await
            .unwrap();
        let expected = (
            Some(crate::store::RunStatus::Running),
            vec![1],
            (vec![Ok(())], vec![Ok(())]),
            Some(crate::store::RunStatus::Completed),
            (1..=super::SCHEMA_VERSION).collect::<Vec<_>>(),
        );
        if outcome.as_ref() != Ok(&expected) {
            failures.push(format!("from version {version}: {outcome:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The claim's look for runs that slept through a message reads the partial index that
/// holds only them, never the suspended runs as a whole (there may be millions waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_slept_through_a_message_are_found_through_their_own_index() {
    let test = "runs_that_slept_through_a_message_are_found_through_their_own_index";
    let Some(plan) = on_scratch_store(test, async |store, schema| {
        let writes: Vec<_> = (0..2000).map(|i| create(&format!("r{i}"))).collect();
        store.commit(&writes).await.unwrap();
        let client = store.inner.client().await.unwrap();
        client
            .batch_execute(&format!(
                "UPDATE \"{schema}\".durable_runs SET status = 'suspended', owner = NULL, \
                 wake_at = 4000000000000 + pos WHERE pos % 2 = 0; \
                 ANALYZE \"{schema}\".durable_runs"
            ))
            .await
            .unwrap();
        let plan: Vec<String> = client
            .simple_query(&format!(
                "PREPARE wake_due (text) AS {}; EXPLAIN EXECUTE wake_due ('c')",
                store.inner.sql.wake_due
            ))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        plan
    })
    .await
    else {
        return;
    };
    let shown = plan.join("\n");
    // The CTE that finds them, up to the next part of the statement.
    let unread: Vec<&String> = plan
        .iter()
        .skip_while(|line| !line.contains("CTE unread"))
        .skip(1)
        .take_while(|line| !line.contains("CTE "))
        .collect();
    assert!(
        unread
            .iter()
            .any(|line| line.contains("Index Scan using durable_runs_unread")),
        "{shown}"
    );
    assert!(
        !unread.iter().any(|line| line.contains("Seq Scan")),
        "{shown}"
    );
}

/// A schema version 3 left with a run suspended though its inbox held a message (the bug of
/// version 3: a crash between its suspension and the in-memory look that would have woken
/// it) is brought up to date, and the next claim takes that run, and only it; suspended
/// again having seen the message, it stays asleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_version_3_left_asleep_with_a_message_is_claimed_after_the_upgrade() {
    let test = "a_run_version_3_left_asleep_with_a_message_is_claimed_after_the_upgrade";
    let Some(url) = url_or_skip(test) else {
        return;
    };
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let schema = format!("durable_unit_{}_stuck_v3", std::process::id());
    let s = format!("\"{schema}\"");
    let mut setup = format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.durable_migrations (version integer PRIMARY \
         KEY, applied_at timestamptz NOT NULL DEFAULT now());"
    );
    for (i, migration) in super::schema::MIGRATIONS[..3].iter().enumerate() {
        setup += &migration.replace("{s}", &s);
        setup += &format!(
            ";\nINSERT INTO {s}.durable_migrations (version) VALUES ({});",
            i + 1
        );
    }
    setup += &format!(
        "INSERT INTO {s}.durable_runs (id, workflow, fingerprint, status, input, owner, \
         lease_token, lease_expires_at, created_at, updated_at) VALUES \
         ('stuck', 'wf', 'f', 'suspended', '{{}}', NULL, 3, 0, 1, 1), \
         ('asleep', 'wf', 'f', 'suspended', '{{}}', NULL, 3, 0, 2, 2); \
         INSERT INTO {s}.durable_inbox VALUES ('stuck', 1, 'signal', 'go', 'true', 5);"
    );
    admin.batch_execute(&setup).await.unwrap();
    let outcome = async {
        let store = PostgresStore::connect_with(&url, PostgresOptions::schema(&schema))
            .await
            .map_err(|e| e.to_string())?;
        let claim = || crate::store::Claim::new("w", std::time::Duration::from_secs(30));
        let claimed = store.claim_runs(claim()).await.map_err(|e| e.to_string())?;
        let claimed: Vec<(String, u64)> = claimed
            .iter()
            .map(|r| (r.id.to_string(), r.lease_token))
            .collect();
        // Read as it is, though it has no checksum.
        let inbox = store
            .load_inbox(&"stuck".into())
            .await
            .map_err(|e| e.to_string())?;
        let nap = crate::store::Finish::Suspended {
            wake_at: None,
            inbox_seen: Some(1),
        };
        let write = crate::store::Write::Append {
            run: "stuck".into(),
            lease_token: 4,
            entries: Vec::new(),
            finish: Some(nap),
        };
        let suspended = store.commit(&[write]).await.map_err(|e| e.to_string())?;
        let again = store.claim_runs(claim()).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((
            claimed,
            inbox.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(),
            suspended,
            again.len(),
        ))
    }
    .await;
    admin
        .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Ok((
            vec![("stuck".to_owned(), 4)],
            vec!["true".to_owned()],
            vec![Ok(())],
            0
        ))
    );
}
