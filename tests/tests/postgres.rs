//! What only the PostgreSQL store has to prove: migrations that do not race, clear errors,
//! other workers' live leases honoured, claims that never take a run twice nor wait behind a
//! locked row, fencing of a late worker, recovery through killed connections, and prompt
//! pickup of queued runs.
//!
//! Each test uses a schema of its own, dropped afterwards. Without `DURABLE_TEST_POSTGRES_URL`
//! each prints that it was skipped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use durable::store::postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use durable::store::{Claim, NewRun, Store, Write};
use durable::{workflow, Data, Engine, RunId, RunStatus, StepContext, StepError, StepEvent};
use durable_tests::{
    count, in_runtime, note, postgres_url_or_skip, wait_for_handle, wait_for_run, Backend,
    TestStore,
};

/// A PostgreSQL test store, or `None` (printed as skipped) without the server URL.
fn pg(test: &str) -> Option<TestStore> {
    postgres_url_or_skip(&format!("postgres::{test}"))?;
    Some(TestStore::new(Backend::Postgres))
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test server answers");
    tokio::spawn(connection);
    client
}

fn store_at(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::with_options(url, PostgresOptions::schema(schema)).unwrap()
}

fn queued(id: &str, workflow: &str) -> Write {
    Write::CreateRun(NewRun {
        id: RunId::from(id),
        workflow: workflow.into(),
        fingerprint: "f".into(),
        input: "{}".into(),
        owner: String::new(),
        lease_expires_at: 0,
        parent: None,
    })
}

#[test]
fn workers_starting_at_once_migrate_the_schema_once() {
    let Some(store) = pg("workers_starting_at_once_migrate_the_schema_once") else {
        return;
    };
    let (url, schema) = store.postgres().unwrap();
    in_runtime(async {
        let connects = (0..6).map(|_| {
            let (url, schema) = (url.to_owned(), schema.to_owned());
            tokio::spawn(async move {
                PostgresStore::connect_with(&url, PostgresOptions::schema(schema)).await
            })
        });
        for connect in connects.collect::<Vec<_>>() {
            connect.await.unwrap().expect("every worker starts");
        }
        let client = sql(url).await;
        let versions: Vec<i32> = client
            .query(
                &format!("SELECT version FROM \"{schema}\".durable_migrations ORDER BY version"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    });
}

#[test]
fn a_schema_written_by_a_newer_version_is_refused() {
    let Some(store) = pg("a_schema_written_by_a_newer_version_is_refused") else {
        return;
    };
    let (url, schema) = store.postgres().unwrap();
    in_runtime(async {
        PostgresStore::connect_with(url, PostgresOptions::schema(schema))
            .await
            .unwrap();
        let newer = SCHEMA_VERSION + 1;
        sql(url)
            .await
            .execute(
                &format!("INSERT INTO \"{schema}\".durable_migrations (version) VALUES ($1)"),
                &[&newer],
            )
            .await
            .unwrap();
        let err = PostgresStore::connect_with(url, PostgresOptions::schema(schema))
            .await
            .err()
            .expect("refused");
        let text = err.to_string();
        // Not this code's schema: never retried.
        assert_eq!(
            err.kind(),
            durable::store::StoreErrorKind::Foreign,
            "{text}"
        );
        assert!(text.contains(&format!("schema `{schema}`")), "{text}");
        assert!(
            text.contains(&format!("the schema has version {newer}, written by a newer version of durable; this one knows versions up to {SCHEMA_VERSION}: upgrade durable")),
            "{text}"
        );
    });
}

#[test]
fn an_unreachable_server_is_a_clear_error_not_a_hang() {
    in_runtime(async {
        // Nothing listens on this port: refused at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let started = Instant::now();
        let err = PostgresStore::connect(&format!("postgres://root@127.0.0.1:{port}/test"))
            .await
            .err()
            .expect("no server");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "postgres store (127.0.0.1:{port}/test, schema `durable`): cannot connect: "
            )),
            "{text}"
        );
        // A refused connection may pass (the server restarting): the journal retries it.
        assert_eq!(
            err.kind(),
            durable::store::StoreErrorKind::Transient,
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // A server that accepts the connection and never answers: the timeout ends it.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let options = PostgresOptions {
            connect_timeout: Duration::from_millis(300),
            ..PostgresOptions::default()
        };
        let started = Instant::now();
        let err =
            PostgresStore::connect_with(&format!("postgres://root@127.0.0.1:{port}/test"), options)
                .await
                .err()
                .expect("no answer");
        let text = err.to_string();
        assert!(
            text.contains("cannot connect") || text.contains("did not answer"),
            "{text}"
        );
        assert!(text.contains(&format!("127.0.0.1:{port}/test")), "{text}");
        assert_eq!(
            err.kind(),
            durable::store::StoreErrorKind::Transient,
            "{text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        held.abort();
    });
}

#[test]
fn other_workers_live_leases_are_honoured_and_expired_ones_taken() {
    let Some(store) = pg("other_workers_live_leases_are_honoured_and_expired_ones_taken") else {
        return;
    };
    in_runtime(async {
        let store = store.open();
        store.commit(&[queued("r", "wf")]).await.unwrap();
        let a = store
            .claim_runs(Claim::new("a", Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(a.len(), 1);
        // Unlike SQLite (one process per file), a live lease here belongs to a live worker.
        assert!(store
            .claim_runs(Claim::new("b", Duration::from_secs(30)))
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            store
                .renew_leases("a", Duration::from_millis(300))
                .await
                .unwrap(),
            1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            store
                .claim_runs(Claim::new("b", Duration::from_secs(30)))
                .await
                .unwrap()
                .is_empty(),
            "renewed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let b = store
            .claim_runs(Claim::new("b", Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(
            b.iter()
                .map(|r| (r.owner.as_deref(), r.lease_token))
                .collect::<Vec<_>>(),
            [(Some("b"), 3)]
        );
        assert_eq!(
            store
                .renew_leases("a", Duration::from_secs(30))
                .await
                .unwrap(),
            0,
            "a lost it"
        );
    });
}

#[test]
fn concurrent_claims_never_take_a_run_twice_and_respect_workflows() {
    let Some(store) = pg("concurrent_claims_never_take_a_run_twice_and_respect_workflows") else {
        return;
    };
    in_runtime(async {
        let store = store.open();
        let batch: Vec<Write> = (0..200)
            .map(|i| queued(&format!("r{i:03}"), "wf"))
            .chain([queued("other", "unknown"), {
                let Write::CreateRun(mut old) = queued("old", "wf") else {
                    unreachable!()
                };
                old.fingerprint = "old".into();
                Write::CreateRun(old)
            }])
            .collect();
        assert!(store
            .commit(&batch)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok));
        let claimers = (0..8).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let definitions = [("wf", "f")];
                    let claim = Claim::new(&owner, Duration::from_secs(30))
                        .limit(7)
                        .workflows(&definitions);
                    let got = store.claim_runs(claim).await.unwrap();
                    assert!(got.len() <= 7);
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|r| r.id.to_string()));
                }
            })
        });
        let mut all = Vec::new();
        for claimer in claimers.collect::<Vec<_>>() {
            all.extend(claimer.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().cloned().collect();
        assert_eq!(
            (all.len(), distinct.len()),
            (200, 200),
            "each run claimed exactly once"
        );
        assert!(
            !distinct.contains("other"),
            "a run of a workflow the worker lacks stays queued"
        );
        assert!(
            !distinct.contains("old"),
            "a run started under a definition the worker lacks stays queued"
        );
        // A worker that keeps the old definition takes it.
        let old = [("wf", "old")];
        let claim = Claim::new("old-worker", Duration::from_secs(30)).workflows(&old);
        let got = store.claim_runs(claim).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["old"]
        );
    });
}

/// Claims on a server where another transaction holds two claimable runs' rows (a queued
/// run, and a sleeper fallen due): the claim takes the others at once and leaves those two,
/// instead of waiting behind the locks (a claim without `SKIP LOCKED` waits, and with it
/// every worker's heartbeat). Once the locks go, the next claim takes them.
#[test]
fn a_claim_skips_the_runs_another_transaction_has_locked_instead_of_waiting_for_them() {
    let Some(store) =
        pg("a_claim_skips_the_runs_another_transaction_has_locked_instead_of_waiting_for_them")
    else {
        return;
    };
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    in_runtime(async {
        use durable::store::Finish;
        let store = store.open();
        let held = Write::CreateRun(NewRun {
            owner: "sleeper-owner".into(),
            lease_expires_at: durable_tests::now_ms() + 60_000,
            ..match queued("due", "wf") {
                Write::CreateRun(new) => new,
                _ => unreachable!(),
            }
        });
        let batch = [
            queued("q1", "wf"),
            queued("q2", "wf"),
            queued("q3", "wf"),
            held,
        ];
        assert!(store
            .commit(&batch)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok));
        // `due` sleeps until a time long past: claimable, once woken by the claim.
        let sleep = Write::Append {
            run: RunId::from("due"),
            lease_token: 1,
            entries: Vec::new(),
            finish: Some(Finish::Suspended {
                wake_at: Some(1),
                inbox_seen: None,
            }),
        };
        assert_eq!(store.commit(&[sleep]).await.unwrap(), [Ok(())]);

        let locker = sql(&url).await;
        locker
            .batch_execute(&format!(
                "BEGIN; SELECT id FROM \"{schema}\".durable_runs WHERE id IN ('q2', 'due') \
                 FOR UPDATE"
            ))
            .await
            .unwrap();
        let claim = Claim::new("w", Duration::from_secs(30)).limit(10);
        let claimed = tokio::time::timeout(Duration::from_secs(5), store.claim_runs(claim))
            .await
            .expect("the claim still waits after 5 s behind rows another transaction locked")
            .unwrap();
        let ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["q1", "q3"], "the unlocked runs, and only those");

        locker.batch_execute("ROLLBACK").await.unwrap();
        let claim = Claim::new("w", Duration::from_secs(30)).limit(10);
        let claimed = tokio::time::timeout(Duration::from_secs(5), store.claim_runs(claim))
            .await
            .expect("a claim with nothing locked answers within 5 s")
            .unwrap();
        let mut ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["due", "q2"], "once the locks are gone");
    });
}

static RELEASE_ZOMBIE: AtomicBool = AtomicBool::new(false);

/// The first call (the worker that will lose its lease) hangs until released.
async fn slow(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "slow");
    if count(ctx.run_id(), "slow") == 1 {
        while !RELEASE_ZOMBIE.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        return Ok(data.assign("by", "zombie"));
    }
    Ok(data.assign("by", "new owner"))
}

async fn after(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "after");
    Ok(data.assign("after", true))
}

workflow! { leased { step slow; step after; } }

#[test]
fn a_lease_that_expires_mid_step_fences_the_late_write_and_keeps_the_new_owners_result() {
    let Some(store) =
        pg("a_lease_that_expires_mid_step_fences_the_late_write_and_keeps_the_new_owners_result")
    else {
        return;
    };
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    in_runtime(async {
        let a = Engine::builder_shared(store.open())
            .register(leased)
            .build()
            .await
            .unwrap();
        let run = a.start(leased, Data::new()).await.unwrap();
        let id = run.id().clone();
        while count(&id, "slow") == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Worker `a` hangs inside the step past its lease (as a SIGSTOPped process would).
        sql(&url)
            .await
            .execute(
                &format!("UPDATE \"{schema}\".durable_runs SET lease_expires_at = 0 WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .unwrap();
        let b = Engine::builder_shared(store_at(&url, &schema).into_arc())
            .register(leased)
            .build()
            .await
            .unwrap();
        assert_eq!(b.resumed(), std::slice::from_ref(&id));
        let out: Data = wait_for_run(&b, &id).await.unwrap();
        assert_eq!(out.get::<String>("by").as_deref(), Some("new owner"));
        // Now the zombie finishes its step: its write is refused.
        RELEASE_ZOMBIE.store(true, Ordering::SeqCst);
        // Its handle then reads the run's end from the store: the new owner's result.
        let out = wait_for_handle(&a, &run).await.unwrap();
        assert_eq!(out.get::<String>("by").as_deref(), Some("new owner"));
        let history = b.history(&id).await.unwrap();
        let steps: Vec<_> = history.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(
            steps,
            ["slow", "after"],
            "one result per step: the new owner's"
        );
        let StepEvent::Completed { output } = &history[0].event else {
            panic!("{history:?}")
        };
        assert_eq!(output["by"], "new owner");
        assert_eq!(
            count(&id, "after"),
            1,
            "the zombie never got past its fenced write"
        );
        assert_eq!(b.status(&id).await.unwrap().status, RunStatus::Completed);
    });
}

trait IntoArc {
    fn into_arc(self) -> std::sync::Arc<dyn Store>;
}

impl IntoArc for PostgresStore {
    fn into_arc(self) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(self)
    }
}

async fn step_a(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "a");
    tokio::time::sleep(Duration::from_millis(25)).await;
    Ok(data.assign("a", true))
}

async fn step_b(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "b");
    tokio::time::sleep(Duration::from_millis(25)).await;
    Ok(data.assign("b", true))
}

workflow! { two_steps { step step_a; step step_b; } }

#[test]
fn killed_connections_while_workers_recover_leave_no_run_pending() {
    let Some(store) = pg("killed_connections_while_workers_recover_leave_no_run_pending") else {
        return;
    };
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    // The workers' connections carry a name of their own, so the test kills only those.
    let app = format!("{schema}_w");
    let worker_url = format!("{url}?application_name={app}");
    in_runtime(async {
        let client = Engine::builder_shared(store.open())
            .register(two_steps)
            .max_runs(0)
            .build()
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..60 {
            ids.push(
                client
                    .start(two_steps, Data::new())
                    .await
                    .unwrap()
                    .id()
                    .clone(),
            );
        }
        let mut workers = Vec::new();
        for _ in 0..2 {
            let store = PostgresStore::with_options(
                &worker_url,
                PostgresOptions {
                    pool_size: 3,
                    ..PostgresOptions::schema(schema.clone())
                },
            )
            .unwrap();
            workers.push(
                Engine::builder(store)
                    .register(two_steps)
                    .max_runs(10)
                    .lease_duration(Duration::from_millis(600))
                    .poll_interval(Duration::from_millis(50))
                    .commit_retry(Duration::from_millis(300))
                    .build()
                    .await
                    .unwrap(),
            );
        }
        let admin = sql(&url).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut kills = 0;
        loop {
            let done: i64 = admin
                .query_one(
                    &format!(
                        "SELECT count(*) FROM \"{schema}\".durable_runs WHERE status = 'completed'"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if done == ids.len() as i64 {
                break;
            }
            if Instant::now() > deadline {
                let stuck: Vec<String> = admin
                    .query(&format!("SELECT id, owner, lease_token, lease_expires_at - {now} FROM \"{schema}\".durable_runs WHERE status <> 'completed'", now = "(extract(epoch from clock_timestamp()) * 1000)::bigint"), &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| format!("{} owner {:?} token {} lease left {}ms", r.get::<_, String>(0), r.get::<_, Option<String>>(1), r.get::<_, i64>(2), r.get::<_, i64>(3)))
                    .collect();
                panic!(
                    "{done} of {} runs completed after 60s; pending: {stuck:#?}",
                    ids.len()
                );
            }
            if kills < 8 {
                // Every connection of the workers, the listeners included, dies mid-flight.
                let killed: i64 = admin
                    .query_one("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) k", &[&app])
                    .await
                    .unwrap()
                    .get(0);
                if killed > 0 {
                    kills += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert!(
            kills >= 3,
            "the connections were killed during the work ({kills} times)"
        );
        for id in &ids {
            assert_eq!(
                client.status(id).await.unwrap().status,
                RunStatus::Completed
            );
            let steps: Vec<_> = client
                .history(id)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.step)
                .collect();
            assert_eq!(
                steps,
                ["step_a", "step_b"],
                "run {id}: each step journaled once"
            );
        }
    });
}

static PICKED: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());

async fn first_step(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    PICKED
        .lock()
        .unwrap()
        .push((ctx.run_id().to_string(), Instant::now()));
    Ok(data)
}

workflow! { pickup { step first_step; } }

#[test]
fn a_run_started_by_a_client_is_picked_up_promptly_by_an_idle_worker() {
    let Some(store) = pg("a_run_started_by_a_client_is_picked_up_promptly_by_an_idle_worker")
    else {
        return;
    };
    in_runtime(async {
        // Separate stores: separate pools, as separate processes would have.
        let client = Engine::builder_shared(store.open())
            .register(pickup)
            .max_runs(0)
            .build()
            .await
            .unwrap();
        let _worker = Engine::builder_shared(store.open())
            .register(pickup)
            .max_runs(100)
            // The poll floor is far above what we measure: NOTIFY does the work.
            .poll_interval(Duration::from_secs(5))
            .build()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // the listener connects
        let mut pickups = Vec::new();
        for _ in 0..40 {
            let started = Instant::now();
            let run = client.start(pickup, Data::new()).await.unwrap();
            let id = run.id().to_string();
            let picked = loop {
                if let Some((_, at)) = PICKED.lock().unwrap().iter().find(|(r, _)| *r == id) {
                    break *at;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(4),
                    "run {id} not picked up by NOTIFY"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            pickups.push(picked - started);
            wait_for_handle(&client, &run).await.unwrap();
        }
        pickups.sort();
        let p50 = pickups[pickups.len() / 2];
        let p90 = pickups[pickups.len() * 9 / 10];
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "pickup from another client's start to the first step: p50 {p50:?}, p90 {p90:?}"
        );
        assert!(p50 < Duration::from_millis(500), "p50 {p50:?}");
    });
}

fn entry(seq: u64, step: &str) -> durable::store::JournalEntry {
    durable::store::JournalEntry {
        seq,
        step: step.into(),
        kind: durable::store::EntryKind::StepCompleted,
        attempt: 1,
        payload: "{}".into(),
        at: seq,
    }
}

#[test]
fn a_retried_commit_that_had_landed_and_finished_the_run_is_a_duplicate_not_a_lost_lease() {
    let Some(store) =
        pg("a_retried_commit_that_had_landed_and_finished_the_run_is_a_duplicate_not_a_lost_lease")
    else {
        return;
    };
    in_runtime(async {
        use durable::store::{Finish, Rejected};
        let store = store.open();
        store
            .commit(&[queued("one", "wf"), queued("two", "wf")])
            .await
            .unwrap();
        let claimed = store
            .claim_runs(Claim::new("w", Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        let append = |run: &str, seqs: &[u64], finish: bool| Write::Append {
            run: RunId::from(run),
            lease_token: 2,
            entries: seqs.iter().map(|&s| entry(s, "s")).collect(),
            finish: finish.then(|| Finish::Completed("{}".into())),
        };
        // One append per run (the one-round-trip path), then two for one run (the other).
        let single = [append("one", &[1, 2], true)];
        let double = [append("two", &[1], false), append("two", &[2], true)];
        for batch in [&single[..], &double[..]] {
            assert!(store.commit(batch).await.unwrap().iter().all(Result::is_ok));
            // The same batch again, as the journal retries one whose outcome it never heard:
            // the run's end is found already written (checked before the sequence, as on
            // every store), which the journal counts as committed under a current lease.
            let again = store.commit(batch).await.unwrap();
            assert!(
                again.iter().all(|v| matches!(v, Err(Rejected::Finished))),
                "{again:?}"
            );
        }
        // New entries on a finished run are still refused as such.
        let late = store.commit(&[append("one", &[3], false)]).await.unwrap();
        assert_eq!(late, [Err(Rejected::Finished)]);
    });
}

mod v1 {
    use super::*;
    workflow! { pub rolling { step step_a; } }
}

mod v2 {
    use super::*;
    workflow! { pub rolling { step step_a; step step_b; } }
}

#[test]
fn in_a_rolling_deploy_a_worker_claims_only_runs_of_definitions_it_registered() {
    let Some(store) =
        pg("in_a_rolling_deploy_a_worker_claims_only_runs_of_definitions_it_registered")
    else {
        return;
    };
    in_runtime(async {
        let client = Engine::builder_shared(store.open())
            .register(v1::rolling)
            .max_runs(0)
            .build()
            .await
            .unwrap();
        let run = client.start(v1::rolling, Data::new()).await.unwrap();
        // A new worker knows only v2: it leaves the v1 run alone rather than hold it stalled.
        let new = Engine::builder_shared(store.open())
            .register(v2::rolling)
            .poll_interval(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(new.resumed().is_empty());
        let info = client.status(run.id()).await.unwrap();
        assert_eq!(info.status, RunStatus::Running);
        // An old worker (or one that keeps v1 as a version) finishes it.
        let old = Engine::builder_shared(store.open())
            .register(v2::rolling)
            .register_version(v1::rolling)
            .poll_interval(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        let out = wait_for_handle(&client, &run).await.unwrap();
        assert_eq!(out.get::<bool>("a"), Some(true));
        assert_eq!(old.resumed(), std::slice::from_ref(run.id()));
        assert_eq!(count(run.id(), "b"), 0, "it finished on v1");
    });
}

/// Hangs on its first call in a run.
async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    if count(ctx.run_id(), "gate") == 1 {
        std::future::pending::<()>().await;
    }
    Ok(data.assign("gate", true))
}

workflow! { handover { step gate; } }

#[test]
fn a_shut_down_worker_wakes_an_idle_one_to_take_its_runs_at_once() {
    let Some(store) = pg("a_shut_down_worker_wakes_an_idle_one_to_take_its_runs_at_once") else {
        return;
    };
    in_runtime(async {
        let a = Engine::builder_shared(store.open())
            .register(handover)
            .build()
            .await
            .unwrap();
        let run = a.start(handover, Data::new()).await.unwrap();
        // An idle worker that would not look again for a minute on its own.
        let b = Engine::builder_shared(store.open())
            .register(handover)
            .poll_interval(Duration::from_secs(60))
            .build()
            .await
            .unwrap();
        while count(run.id(), "gate") == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(b.resumed().is_empty(), "a's lease is live");
        let released = Instant::now();
        a.shutdown().await.unwrap();
        let out: Data = wait_for_run(&b, run.id()).await.unwrap();
        assert_eq!(out.get::<bool>("gate"), Some(true));
        assert_eq!(b.resumed(), std::slice::from_ref(run.id()));
        // Woken by the release's NOTIFY, not by its poll or a lease expiry (30s).
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "{:?}",
            released.elapsed()
        );
    });
}

/// A TCP relay to the test server that can be frozen: bytes stop flowing both ways, as on a
/// dead network link, while the connections stay open.
async fn freezable_relay(url: &str) -> (String, std::sync::Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config: tokio_postgres::Config = url.parse().unwrap();
    let target = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => format!(
            "{host}:{}",
            config.get_ports().first().copied().unwrap_or(5432)
        ),
        other => panic!("a TCP server, not {other:?}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = std::sync::Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(ro), Box::new(wi)),
            ] {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    (format!("postgres://{user}@127.0.0.1:{port}/{db}"), frozen)
}

#[test]
fn a_connection_that_goes_silent_is_an_error_after_the_operation_timeout_not_a_hang() {
    let Some(store) =
        pg("a_connection_that_goes_silent_is_an_error_after_the_operation_timeout_not_a_hang")
    else {
        return;
    };
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    in_runtime(async {
        let (relayed, frozen) = freezable_relay(&url).await;
        let options = PostgresOptions {
            operation_timeout: Duration::from_millis(500),
            pool_size: 2,
            ..PostgresOptions::schema(schema.clone())
        };
        let store = PostgresStore::connect_with(&relayed, options)
            .await
            .unwrap();
        store.commit(&[queued("r", "wf")]).await.unwrap();
        frozen.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let err = store
            .commit(&[queued("s", "wf")])
            .await
            .expect_err("no answer");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            err.to_string().ends_with(&format!(
                "schema `{schema}`): no answer within 500ms; the connection is dropped"
            )),
            "{err}"
        );
        frozen.store(false, Ordering::SeqCst);
        // The abandoned commit's outcome is unknown (its bytes were in flight: here the relay
        // delivers them once it thaws), as after any lost answer. The store works again, and
        // the retry the journal would make finds the run either new or there already, which
        // the journal counts as committed.
        let mut again = store.commit(&[queued("s", "wf")]).await;
        for _ in 0..20 {
            if again.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            again = store.commit(&[queued("s", "wf")]).await;
        }
        let verdict = again.unwrap();
        assert!(
            matches!(
                verdict[..],
                [Ok(())] | [Err(durable::store::Rejected::DuplicateRun)]
            ),
            "{verdict:?}"
        );
        assert!(store.load_run(&RunId::from("s")).await.unwrap().is_some());
    });
}

async fn reserve(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "reserve");
    Ok(data.assign("reserved", 3))
}

async fn pack(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "pack");
    Ok(data.assign("packed", true))
}

workflow! { stock { step reserve; } }
workflow! { shipment { call stock = stock; step pack; } }

/// A parent held by one worker, its child run by another (which alone registers the child's
/// workflow): the child's end reaches the parent through the database, wakes it, and the
/// parent finishes with the child's output, each step having run once. Both workers poll
/// only every 5 s, so the NOTIFYs (of the new child, of the woken parent) do the work.
#[test]
fn a_child_run_by_another_worker_wakes_its_parent_with_its_output() {
    let Some(store) = pg("a_child_run_by_another_worker_wakes_its_parent_with_its_output") else {
        return;
    };
    in_runtime(async {
        let parents = Engine::builder_shared(store.open())
            .register(shipment)
            .poll_interval(Duration::from_secs(5))
            .build()
            .await
            .unwrap();
        let children = Engine::builder_shared(store.open())
            .register(stock)
            .poll_interval(Duration::from_secs(5))
            .build()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // the listeners connect
        let started = Instant::now();
        let id = RunId::from(format!("{}s", RunId::generate()));
        let run = parents
            .start_with_id(shipment, id.clone(), Data::new())
            .await
            .unwrap();
        let out = wait_for_handle(&parents, &run).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}: a poll, not a NOTIFY",
            started.elapsed()
        );
        let stock_out: serde_json::Value = out.get("stock").unwrap();
        assert_eq!(stock_out["reserved"], 3);
        assert_eq!(out.get::<bool>("packed"), Some(true));
        let child = RunId::from(format!("{id}/stock"));
        assert_eq!(count(&child, "reserve"), 1);
        assert_eq!(count(&id, "pack"), 1);
        let child_info = children.status(&child).await.unwrap();
        assert_eq!(child_info.status, RunStatus::Completed);
        let link = child_info.parent.expect("the parent link");
        assert_eq!((link.run, link.step.as_str()), (id.clone(), "stock"));
        // The child's end is in the parent's inbox, delivered once.
        let inbox = store.open().load_inbox(&id).await.unwrap();
        assert_eq!(inbox.len(), 1, "{inbox:?}");
        assert_eq!(inbox[0].kind, "child");
        parents.shutdown().await.unwrap();
        children.shutdown().await.unwrap();
    });
}

/// Two batches committing at once (one worker's journal commits two) that end children of
/// the same two parents in opposite orders: the child-ended trigger locks each parent, so
/// without every parent locked up front, in id order with the batch's own runs, each batch
/// could hold one parent while waiting for the other's (measured before the fix: 4 deadlocks
/// in 60 such rounds). Every commit must go through, and every parent hear of every child.
#[test]
fn batches_ending_children_of_the_same_parents_at_once_do_not_deadlock() {
    let Some(store) = pg("batches_ending_children_of_the_same_parents_at_once_do_not_deadlock")
    else {
        return;
    };
    in_runtime(async {
        use durable::store::{Finish, ParentLink};
        let store = store.open();
        let run = |id: &str, parent: Option<&str>| {
            Write::CreateRun(NewRun {
                id: RunId::from(id),
                workflow: "wf".into(),
                fingerprint: "f".into(),
                input: "{}".into(),
                owner: "w".into(),
                lease_expires_at: u64::MAX / 4,
                parent: parent.map(|p| ParentLink {
                    run: RunId::from(p),
                    step: "s".into(),
                }),
            })
        };
        let end = |id: &str| Write::Append {
            run: RunId::from(id),
            lease_token: 1,
            entries: vec![],
            finish: Some(Finish::Completed("1".into())),
        };
        for round in 0..60 {
            let (p, q) = (format!("p{round}"), format!("q{round}"));
            let mut creates = vec![run(&p, None), run(&q, None)];
            for i in 0..50 {
                creates.push(run(&format!("c{round}_{i}"), Some(&p)));
                creates.push(run(&format!("d{round}_{i}"), Some(&q)));
            }
            assert!(store
                .commit(&creates)
                .await
                .unwrap()
                .iter()
                .all(Result::is_ok));
            let (mut one, mut two) = (Vec::new(), Vec::new());
            for i in 0..25 {
                one.push(end(&format!("c{round}_{i}")));
                one.push(end(&format!("d{round}_{i}")));
            }
            for i in 25..50 {
                two.push(end(&format!("d{round}_{i}")));
                two.push(end(&format!("c{round}_{i}")));
            }
            let (s1, s2) = (store.clone(), store.clone());
            let one = tokio::spawn(async move { s1.commit(&one).await });
            let two = tokio::spawn(async move { s2.commit(&two).await });
            for verdicts in [one.await.unwrap(), two.await.unwrap()] {
                let verdicts = verdicts.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(
                    verdicts.iter().all(Result::is_ok),
                    "round {round}: {verdicts:?}"
                );
            }
            for parent in [&p, &q] {
                let inbox = store
                    .load_inbox(&RunId::from(parent.as_str()))
                    .await
                    .unwrap();
                assert_eq!(inbox.len(), 50, "round {round}: {parent}'s inbox");
            }
        }
    });
}
