//! Three worker processes on one PostgreSQL database, 300 runs of a workflow with a parallel
//! block, a map and a retried step, started from a fourth process that drives none. One worker
//! is SIGKILLed mid-way and one SIGSTOPped, then SIGCONTed after its leases expired.
//!
//! What must hold: every run completes; each run's journal holds each step exactly once; every
//! step execution that finished is recorded by the worker in a table of its own (`effects`),
//! and for each step exactly one of its executions is the journaled one, every other coming
//! from the killed or the stopped worker (a step in flight when it died or froze runs again
//! elsewhere; the frozen worker's late result is refused, the new owner's kept).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable_tests::{in_runtime, postgres_url_or_skip, Backend, TestStore};

const WORKER: &str = env!("CARGO_BIN_EXE_pg_worker");
const RUNS: usize = 300;

fn spawn(url: &str, schema: &str, name: &str) -> Child {
    let mut child = Command::new(WORKER)
        .args([url, schema, "worker", name])
        .env("LEASE_MS", "2000")
        .env("STEP_DELAY_MS", "5")
        .env("MAX_RUNS", "30")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pg_worker");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "worker {name} started");
    child
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig}");
}

#[test]
fn three_workers_one_killed_one_frozen_every_run_completes_and_no_finished_step_is_lost_or_doubled()
{
    if postgres_url_or_skip("pg_workers::three_workers_one_killed_one_frozen").is_none() {
        return;
    }
    let store = TestStore::new(Backend::Postgres);
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    in_runtime(async {
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\";
                 CREATE TABLE \"{schema}\".effects (run_id text, step text, attempt int, exec text, worker text)"
            ))
            .await
            .unwrap();

        // Another process starts the runs; it drives none of them.
        let out = Command::new(WORKER)
            .args([&url, &schema, "client", &RUNS.to_string()])
            .output()
            .expect("client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ids: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(ids.len(), RUNS);

        let completed = || async {
            admin
                .query_one(
                    &format!(
                        "SELECT count(*) FROM \"{schema}\".durable_runs WHERE status = 'completed'"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0) as usize
        };
        let wait_for = |n: usize, what: &'static str| {
            let completed = &completed;
            async move {
                let deadline = Instant::now() + Duration::from_secs(180);
                loop {
                    let done = completed().await;
                    if done >= n {
                        return done;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{what}: {done} of {RUNS} runs completed after 180s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };

        let killed = spawn(&url, &schema, "killed");
        let frozen = spawn(&url, &schema, "frozen");
        let steady = spawn(&url, &schema, "steady");

        wait_for(RUNS / 5, "before the kill").await;
        let mut killed = killed;
        killed.kill().unwrap();
        killed.wait().unwrap();
        wait_for(RUNS * 2 / 5, "before the freeze").await;
        signal(&frozen, "-STOP");
        let frozen_at = completed().await;
        // Well past its 2s leases: the steady worker takes its runs over.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let progressed = completed().await;
        signal(&frozen, "-CONT");
        wait_for(RUNS, "in the end").await;
        let mut frozen = frozen;
        let mut steady = steady;
        for child in [&mut frozen, &mut steady] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(
            progressed > frozen_at,
            "the steady worker went on while the other was frozen"
        );

        // Every run completed, and its journal holds each step once.
        let journal = admin
            .query(&format!("SELECT run_id, step, kind, payload FROM \"{schema}\".durable_journal ORDER BY run_id, seq"), &[])
            .await
            .unwrap();
        let mut per_run: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
        for row in &journal {
            per_run
                .entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2), row.get(3)));
        }
        let mut journaled_exec: HashMap<(String, String), String> = HashMap::new();
        for id in &ids {
            let entries = &per_run[id];
            let done: Vec<&str> = entries
                .iter()
                .filter(|e| e.1 == "step_completed" || e.1 == "step_changed")
                .map(|e| e.0.as_str())
                .collect();
            let distinct: HashSet<&str> = done.iter().copied().collect();
            assert_eq!(
                done.len(),
                distinct.len(),
                "run {id}: a step journaled twice: {done:?}"
            );
            for step in ["prepare", "p1", "p2", "flaky", "finish"] {
                assert!(
                    distinct.contains(step),
                    "run {id}: {step} missing: {done:?}"
                );
            }
            for k in 0..5 {
                assert!(
                    distinct.contains(format!("items_done[{k}]/handle").as_str()),
                    "run {id}: item {k} missing: {done:?}"
                );
            }
            let failed: Vec<&str> = entries
                .iter()
                .filter(|e| e.1 == "attempt_failed")
                .map(|e| e.0.as_str())
                .collect();
            assert!(
                failed.contains(&"flaky"),
                "run {id}: the retried step's first attempt is journaled"
            );
            for (step, kind, payload) in entries {
                if kind != "step_completed" && kind != "step_changed" {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(payload).unwrap();
                // A whole state, or a change against the input (the key is nested in it).
                if let Some(exec) = find_key(&value, &format!("exec_{step}")) {
                    journaled_exec.insert((id.clone(), step.clone()), exec.to_owned());
                }
            }
        }
        let status = admin
            .query(
                &format!("SELECT status, owner FROM \"{schema}\".durable_runs"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(status.len(), RUNS);
        assert!(status.iter().all(|r| r.get::<_, String>(0) == "completed"));

        // Side effects: one journaled execution per step; any other came from a dead or
        // frozen worker.
        let effects = admin
            .query(
                &format!("SELECT run_id, step, exec, worker FROM \"{schema}\".effects"),
                &[],
            )
            .await
            .unwrap();
        let mut executions: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
        for row in &effects {
            executions
                .entry((row.get(0), row.get(1)))
                .or_default()
                .push((row.get(2), row.get(3)));
        }
        assert_eq!(executions.len(), RUNS * 10, "10 step executions per run");
        let mut rerun: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
        for (key, execs) in &executions {
            let journaled = journaled_exec
                .get(key)
                .unwrap_or_else(|| panic!("{key:?} not journaled"));
            let (kept, others): (Vec<_>, Vec<_>) = execs.iter().partition(|(e, _)| e == journaled);
            assert_eq!(
                kept.len(),
                1,
                "{key:?}: the journaled execution {journaled} is recorded once"
            );
            *by_worker.entry(kept[0].1.clone()).or_default() += 1;
            for (exec, worker) in others {
                assert!(
                    worker == "killed" || worker == "frozen",
                    "{key:?}: {exec} ran again on a live worker: {execs:?}"
                );
                *rerun.entry(worker.clone()).or_default() += 1;
            }
        }
        assert_eq!(journaled_exec.len(), RUNS * 10);
        // The frozen worker's steps in flight finished after it woke: refused, not journaled.
        assert!(
            rerun.get("frozen").copied().unwrap_or(0) > 0,
            "the frozen worker's late results were fenced: {rerun:?}"
        );
        // Every worker did a share of the journaled work.
        for worker in ["killed", "frozen", "steady"] {
            assert!(
                by_worker.get(worker).copied().unwrap_or(0) > 0,
                "{worker} did nothing: {by_worker:?}"
            );
        }
        eprintln!("journaled executions per worker {by_worker:?}; executions re-done after a kill or freeze {rerun:?}");
        drop(admin);
    });
}

/// The text value of `key` anywhere in `value` (a journaled state, or a change to one).
fn find_key<'v>(value: &'v serde_json::Value, key: &str) -> Option<&'v str> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(|v| v.as_str())
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}
