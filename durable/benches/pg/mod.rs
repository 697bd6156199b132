//! The PostgreSQL rows of the journal benchmark, run when `DURABLE_TEST_POSTGRES_URL` is set.
//!
//! In a schema of its own (dropped at the end) it measures:
//! - the usual rows (seq10 / fan100 / latency / map10k) with one in-process worker;
//! - seq10 with 1 worker and with 3 worker processes (this binary again, each starting and
//!   driving its share of the runs): the median steps/s of five bursts, and step results per
//!   commit, from `pg_stat_database`'s `xact_commit` around the bursts;
//! - the baselines on the same server from the same number of clients: a loop of single-row
//!   `INSERT` commits, and (the batch limit) 100-row `INSERT`s, one per transaction;
//! - pickup: from `start` in a client to the first step running in a worker process;
//! - fan100 and latency with 3 worker processes: a client that drives nothing starts the runs
//!   one at a time and waits for each (so the figures include the pickup).
//!
//! Every figure comes from one run on a shared machine: read the ratios, not the absolutes.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::{Data, Engine};

use super::{measure, seq10, Fan100, Figures};

/// Set in a worker process: its schema.
const WORKER_VAR: &str = "DURABLE_BENCH_PG_WORKER";
const SEQ10_RUNS: usize = 500;

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the PostgreSQL server answers");
    tokio::spawn(connection);
    client
}

/// Transactions committed in the database so far. PostgreSQL 15 backends report their
/// counts when idle, and an idle backend that reported less than a second ago waits up to
/// 10s to report again: wait that out first.
async fn xact_commit(admin: &tokio_postgres::Client) -> i64 {
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    admin
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn store(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::with_options(url, PostgresOptions::schema(schema)).unwrap()
}

/// If this process is a benchmark worker: on each `go N` (standard input) run N seq10
/// workflows and print `done`; meanwhile, and after, drive whatever runs it claims until
/// killed. Never returns then.
pub async fn worker_if_asked(url: Option<&str>) {
    use std::io::{BufRead, Write};
    let Ok(schema) = std::env::var(WORKER_VAR) else {
        return;
    };
    let engine = Engine::builder(store(url.expect("the URL"), &schema))
        .register(seq10)
        .register(Fan100)
        .poll_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    println!("ready");
    loop {
        // Read on a thread of its own: the runtime's threads keep driving runs meanwhile.
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .unwrap_or_default();
        let Some(n) = line.trim().strip_prefix("go ") else {
            // Standard input closed: keep driving runs until killed.
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        };
        let n: usize = n.parse().unwrap();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.run(seq10, Data::new()).await.unwrap() })
            })
            .collect();
        futures_all(tasks).await;
        println!("done");
        std::io::stdout().flush().unwrap();
    }
}

type Lines = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

fn spawn_worker(schema: &str) -> (Child, Lines) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(WORKER_VAR, schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    (child, lines)
}

/// Bursts of seq10 per figure: one burst of 500 lasts about a tenth of a second, which a
/// checkpoint or another process on the machine can halve; the median of several is steadier.
const BURSTS: usize = 5;

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `BURSTS` times, the three processes each run a third of the seq10 workflows: (median
/// steps/s, step results per commit over all the bursts).
async fn seq10_processes(
    workers: &mut [(Child, Lines)],
    admin: &tokio_postgres::Client,
) -> (f64, f64) {
    use std::io::Write;
    let share = SEQ10_RUNS / workers.len();
    let steps = (share * workers.len() * 10) as f64;
    let before = xact_commit(admin).await;
    let mut rates = Vec::new();
    for _ in 0..BURSTS {
        let started = Instant::now();
        for (child, _) in workers.iter_mut() {
            writeln!(child.stdin.as_mut().unwrap(), "go {share}").unwrap();
        }
        for (_, lines) in workers.iter_mut() {
            assert_eq!(lines.next().unwrap().unwrap(), "done");
        }
        rates.push(steps / started.elapsed().as_secs_f64());
    }
    let commits = xact_commit(admin).await - before;
    (median(rates), BURSTS as f64 * steps / commits as f64)
}

/// `BURSTS` times, `SEQ10_RUNS` seq10 workflows started by `client`, waited for: (median
/// steps/s, step results per commit over all the bursts).
async fn seq10_burst(client: &Engine, admin: &tokio_postgres::Client) -> (f64, f64) {
    let steps = (SEQ10_RUNS * 10) as f64;
    let before = xact_commit(admin).await;
    let mut rates = Vec::new();
    for _ in 0..BURSTS {
        let started = Instant::now();
        let runs = futures_all(
            (0..SEQ10_RUNS)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move { client.run(seq10, Data::new()).await.unwrap() })
                })
                .collect(),
        )
        .await;
        assert_eq!(runs, SEQ10_RUNS);
        rates.push(steps / started.elapsed().as_secs_f64());
    }
    let commits = xact_commit(admin).await - before;
    (median(rates), BURSTS as f64 * steps / commits as f64)
}

async fn futures_all(tasks: Vec<tokio::task::JoinHandle<Data>>) -> usize {
    let mut n = 0;
    for task in tasks {
        task.await.unwrap();
        n += 1;
    }
    n
}

/// A lone seq10 run's median latency against the median time of one single-row INSERT
/// commit, measured in alternating turns so that the machine's load drifts out of the ratio.
async fn latency_against_commits(engine: &Engine, url: &str, schema: &str) -> (f64, f64) {
    let mut runs = Vec::new();
    let mut commits = Vec::new();
    for _ in 0..10 {
        for _ in 0..20 {
            let started = Instant::now();
            engine.run(seq10, Data::new()).await.unwrap();
            runs.push(started.elapsed().as_secs_f64() * 1e3);
        }
        commits.push(1e3 / insert_loop(url, schema, 1, 1, 0.3).await);
    }
    runs.sort_by(f64::total_cmp);
    commits.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], commits[commits.len() / 2])
}

/// A lone run's commits made through the store one at a time, without the engine (its
/// creation, nine appends, the append that ends it), each run followed by one single-row
/// INSERT commit on another connection: (the median run's commits summed, in ms; the median
/// INSERT commit made that way, in ms). Against the loop of [`insert_loop`], whose commits
/// follow each other without a pause, this tells the engine's share of a lone run's latency
/// from the price of a commit that does not come straight after another.
async fn commits_one_at_a_time(url: &str, schema: &str) -> (f64, f64) {
    use durable::store::{EntryKind, Finish, JournalEntry, NewRun, Store, Write};
    let store = store(url, schema);
    let raw = admin(url).await;
    let insert = raw
        .prepare(&format!(
            "INSERT INTO \"{schema}\".bench_rows (v) VALUES ($1)"
        ))
        .await
        .unwrap();
    let (mut runs, mut inserts) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let id = format!("one_at_a_time_{i}");
        let started = Instant::now();
        let create = Write::CreateRun(NewRun {
            id: id.as_str().into(),
            workflow: "seq10".into(),
            fingerprint: "f".into(),
            input: "{}".into(),
            owner: "bench".into(),
            lease_expires_at: u64::MAX / 4,
            parent: None,
        });
        assert_eq!(store.commit(&[create]).await.unwrap(), [Ok(())]);
        for seq in 1..=10 {
            let append = Write::Append {
                run: id.as_str().into(),
                lease_token: 1,
                entries: vec![JournalEntry {
                    seq,
                    step: format!("s{seq}"),
                    kind: EntryKind::StepCompleted,
                    attempt: 1,
                    payload: "{}".into(),
                    at: seq,
                }],
                finish: (seq == 10).then(|| Finish::Completed("{}".into())),
            };
            assert_eq!(store.commit(&[append]).await.unwrap(), [Ok(())]);
        }
        runs.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        raw.execute(&insert, &[&"{}"]).await.unwrap();
        inserts.push(started.elapsed().as_secs_f64() * 1e3);
    }
    (median(runs), median(inserts))
}

/// Rows/s of `clients` connections each committing `rows`-row INSERTs for `secs`.
async fn insert_loop(url: &str, schema: &str, clients: usize, rows: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, schema, stop) = (url.to_owned(), schema.to_owned(), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = admin(&url).await;
                let sql = if rows == 1 {
                    format!("INSERT INTO \"{schema}\".bench_rows (v) VALUES ($1)")
                } else {
                    format!("INSERT INTO \"{schema}\".bench_rows (v) SELECT unnest($1::text[])")
                };
                let stmt = client.prepare(&sql).await.unwrap();
                let payload: Vec<String> = (0..rows).map(|i| format!("{{\"i\":{i}}}")).collect();
                let mut done = 0usize;
                // Timed from here: connecting and preparing are not part of the loop.
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if rows == 1 {
                        client.execute(&stmt, &[&payload[0]]).await.unwrap();
                    } else {
                        client.execute(&stmt, &[&payload]).await.unwrap();
                    }
                    done += rows;
                }
                done as f64 / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut rate = 0.0;
    for task in tasks {
        rate += task.await.unwrap();
    }
    rate
}

/// Milliseconds from `start` in `client` to the run's first journal entry, written by a worker
/// process: pickup plus one no-op step and its commit.
async fn pickup_ms(client: &Engine, admin: &tokio_postgres::Client, schema: &str) -> (f64, f64) {
    let query = format!("SELECT count(*) FROM \"{schema}\".durable_journal WHERE run_id = $1");
    let stmt = admin.prepare(&query).await.unwrap();
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let run = client.start(seq10, Data::new()).await.unwrap();
        loop {
            let n: i64 = admin
                .query_one(&stmt, &[&run.id().as_str()])
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
        run.wait().await.unwrap();
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 9 / 10])
}

/// Runs started one at a time by `client` (which drives nothing) and driven by the worker
/// processes: (fan100 median ms, seq10 latency median ms, seq10 latency p99 ms).
async fn through_processes(client: &Engine) -> (f64, f64, f64) {
    let ms = |started: Instant| started.elapsed().as_secs_f64() * 1e3;
    let mut fan = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        client.run(Fan100, Data::new()).await.unwrap();
        fan.push(ms(started));
    }
    let mut lat = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        client.run(seq10, Data::new()).await.unwrap();
        lat.push(ms(started));
    }
    fan.sort_by(f64::total_cmp);
    lat.sort_by(f64::total_cmp);
    (
        fan[fan.len() / 2],
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
    )
}

/// A schema of its own with the baseline's table, and a client for the statistics.
async fn bench_schema(url: &str) -> (String, tokio_postgres::Client) {
    let schema = format!("durable_bench_{}", std::process::id());
    let admin = admin(url).await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\";
             CREATE TABLE \"{schema}\".bench_rows (id bigserial PRIMARY KEY, v text NOT NULL);"
        ))
        .await
        .unwrap();
    (schema, admin)
}

async fn drop_schema(admin: &tokio_postgres::Client, schema: &str) {
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

async fn one_worker(url: &str, schema: &str) -> Engine {
    Engine::builder(store(url, schema))
        .register(seq10)
        .build()
        .await
        .unwrap()
}

/// Only the lone run's latency against single-row commits, in a schema of its own.
pub async fn latency_row(url: &str) {
    let (schema, admin) = bench_schema(url).await;
    let one = one_worker(url, &schema).await;
    let (lone_ms, commit_ms) = latency_against_commits(&one, url, &schema).await;
    drop(one);
    let one_at_a_time = commits_one_at_a_time(url, &schema).await;
    drop_schema(&admin, &schema).await;
    print_latency(lone_ms, commit_ms, one_at_a_time);
}

/// Only seq10 with one worker in this process, in a schema of its own.
pub async fn seq10_row(url: &str) {
    let (schema, admin) = bench_schema(url).await;
    let one = one_worker(url, &schema).await;
    for _ in 0..20 {
        one.run(seq10, Data::new()).await.unwrap();
    }
    let (steps, per_commit) = seq10_burst(&one, &admin).await;
    drop(one);
    drop_schema(&admin, &schema).await;
    println!(
        "seq10 x{SEQ10_RUNS} (median of {BURSTS} bursts), 1 worker: {steps:.0} steps/s, {per_commit:.2} step results per commit"
    );
}

fn print_latency(lone_ms: f64, commit_ms: f64, (run_commits_ms, insert_ms): (f64, f64)) {
    println!(
        "latency median {lone_ms:.2} ms = {:.2} x the 11 commits a seq10 run needs ({commit_ms:.3} ms each from 1 client, measured in turns with it)",
        lone_ms / (11.0 * commit_ms)
    );
    println!(
        "  the same 11 commits made through the store one at a time, no engine: {run_commits_ms:.2} ms = {:.2} x 11 single-row INSERT commits made between them ({insert_ms:.3} ms each, {:.2} x the loop's)",
        run_commits_ms / (11.0 * insert_ms),
        insert_ms / commit_ms
    );
}

pub async fn rows(url: &str) {
    let (schema, admin) = bench_schema(url).await;
    let sync: String = admin
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);

    // One worker in this process.
    let figures: Figures = measure(store(url, &schema)).await;
    let one = Engine::builder(store(url, &schema))
        .register(seq10)
        .build()
        .await
        .unwrap();
    let (steps_1, per_commit_1) = seq10_burst(&one, &admin).await;
    let (lone_ms, commit_ms) = latency_against_commits(&one, url, &schema).await;
    drop(one);
    let one_at_a_time = commits_one_at_a_time(url, &schema).await;

    // Three worker processes, each driving its share; then a client that drives nothing
    // starts runs one at a time for them (pickup).
    let mut workers: Vec<(Child, Lines)> = (0..3).map(|_| spawn_worker(&schema)).collect();
    let (steps_3, per_commit_3) = seq10_processes(&mut workers, &admin).await;
    let client = Engine::builder(store(url, &schema))
        .register(seq10)
        .register(Fan100)
        .max_runs(0)
        .build()
        .await
        .unwrap();
    let (pickup_p50, pickup_p90) = pickup_ms(&client, &admin, &schema).await;
    let (fan_3, lat_3, lat_p99_3) = through_processes(&client).await;
    for (worker, _) in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }

    let insert_1 = insert_loop(url, &schema, 1, 1, 2.0).await;
    let insert_3 = insert_loop(url, &schema, 3, 1, 2.0).await;
    let batch_1 = insert_loop(url, &schema, 1, 100, 2.0).await;
    drop_schema(&admin, &schema).await;

    let f = &figures;
    println!();
    println!("PostgreSQL (synchronous_commit = {sync}), one run; ratios are what to read:");
    println!(
        "postgres (1 worker, in process) seq10 {:.0} wf/s {:.0} steps/s   fan100 {:.2} ms   latency median {:.2} ms p99 {:.2} ms   map10k {:.0} items/s",
        f.seq10_workflows_per_s, f.seq10_steps_per_s, f.fan100_ms, f.latency_median_ms, f.latency_p99_ms, f.map10k_items_per_s
    );
    println!(
        "seq10 x{SEQ10_RUNS} (median of {BURSTS} bursts), 1 worker:    {steps_1:>8.0} steps/s, {per_commit_1:.2} step results per commit; plain single-row INSERT commits from 1 client: {insert_1:.0}/s -> ratio {:.2}",
        steps_1 / insert_1
    );
    println!(
        "seq10 x{} (median of {BURSTS} bursts), 3 processes: {steps_3:>8.0} steps/s, {per_commit_3:.2} step results per commit; plain single-row INSERT commits from 3 clients: {insert_3:.0}/s -> ratio {:.2}",
        SEQ10_RUNS / 3 * 3,
        steps_3 / insert_3
    );
    println!(
        "3 worker processes, runs started one at a time by a client that drives nothing: fan100 {fan_3:.2} ms   latency median {lat_3:.2} ms p99 {lat_p99_3:.2} ms"
    );
    print_latency(lone_ms, commit_ms, one_at_a_time);
    println!(
        "batch limit: 100-row INSERTs, one per transaction, 1 client: {batch_1:.0} rows/s; seq10 with 1 worker reaches {:.1}% of it",
        100.0 * steps_1 / batch_1
    );
    println!(
        "pickup from start in a client to the run's first step journaled by a worker process: p50 {pickup_p50:.2} ms, p90 {pickup_p90:.2} ms"
    );
}
