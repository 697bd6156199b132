//! Journal throughput and latency, SQLite (synchronous=FULL) against memory.
//!
//! `cargo bench -p durable --bench journal` prints:
//! - `seq10`: 500 concurrent workflows of 10 no-op steps: workflows/s and journaled steps/s;
//! - `fan100`: one parallel block of 100 no-op steps: ms per workflow;
//! - `latency`: one seq10 workflow at a time: median and p99 ms;
//! - `map10k`: a map block over 10,000 items, 100 at a time: items/s;
//! - `big_state`: 50 concurrent seq10 workflows whose state is 100 KB and whose steps each
//!   set one small field: journal bytes per step (the payloads' length, and the SQLite file's
//!   growth) and steps/s (`cargo bench -p durable
//!   --bench journal -- big_state` runs only this case);
//! - `sleep100k` (`cargo bench -p durable --bench journal -- sleep100k` runs only it):
//!   100,000 runs asleep in an SQLite store (`sleep nap(until = wake_at)`), 10,000 of them
//!   due at one instant: the process's resident memory (`/proc/self/statm`) before and after
//!   `Engine::build`, the build's time (it must not read the sleeping runs: only an index
//!   range of the due ones), and the time from the due instant to each run's wake (its next
//!   step running), p50 and p99;
//!
//! each for both stores with the SQLite/memory ratio, and the cost of one fsync on the same
//! disk, so the latency can be read as a multiple of ten fsyncs.
//!
//! With `DURABLE_TEST_POSTGRES_URL` set, PostgreSQL rows follow (see `pg/mod.rs`);
//! `DURABLE_BENCH_ONLY=postgres` runs only those; `postgres-latency` only the lone run's
//! latency against single-row commits, `postgres-seq10` only seq10 with one worker (each a
//! minute or less, for trying a change).

mod pg;

use std::io::Write as _;
use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Definition, Engine, Node, StepError, StepOptions, Store, Workflow};

async fn noop(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

/// Sets one small field: the step's change is a few bytes whatever the state's size.
async fn touch(ctx: durable::StepContext, data: Data) -> Result<Data, StepError> {
    Ok(data.assign(format!("touched_{}", ctx.step()), true))
}

workflow! {
    big_seq10 {
        step t0 = touch; step t1 = touch; step t2 = touch; step t3 = touch; step t4 = touch;
        step t5 = touch; step t6 = touch; step t7 = touch; step t8 = touch; step t9 = touch;
    }
}

/// A 100 KB state: 100 fields of 1 KB.
fn big_state() -> Data {
    (0..100).fold(Data::new(), |d, i| {
        d.assign(
            format!("field_{i:03}"),
            format!("{i:03}").repeat(1000 / 3 + 1),
        )
    })
}

struct BigFigures {
    journal_bytes_per_step: f64,
    file_bytes_per_step: Option<f64>,
    steps_per_s: f64,
}

/// `big_state` on one store; `files` are the store's files, whose growth is measured.
async fn measure_big(store: std::sync::Arc<dyn Store>, files: &[std::path::PathBuf]) -> BigFigures {
    let engine = Engine::builder_shared(std::sync::Arc::clone(&store))
        .register(big_seq10)
        .build()
        .await
        .unwrap();
    let input = big_state();
    assert!(serde_json::to_string(&input).unwrap().len() >= 100_000);
    engine.run(big_seq10, input.clone()).await.unwrap();
    let size = || -> u64 {
        files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    };
    let before = size();
    let workflows = 50;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workflows)
        .map(|_| {
            let (engine, input) = (engine.clone(), input.clone());
            tokio::spawn(async move { engine.start(big_seq10, input).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let run = task.await.unwrap();
        let out = run.wait().await.unwrap();
        assert_eq!(out.get::<bool>("touched_t9"), Some(true));
        ids.push(run.id().clone());
    }
    let secs = started.elapsed().as_secs_f64();
    let steps = (workflows * 10) as f64;
    let mut journal = 0;
    for id in &ids {
        let entries = store.load_journal(id).await.unwrap();
        assert_eq!(entries.len(), 10);
        journal += entries.iter().map(|e| e.payload.len()).sum::<usize>();
    }
    BigFigures {
        journal_bytes_per_step: journal as f64 / steps,
        file_bytes_per_step: (!files.is_empty()).then(|| (size() - before) as f64 / steps),
        steps_per_s: steps / secs,
    }
}

async fn big_state_case(dir: &std::path::Path) {
    let db = dir.join("big.db");
    let files = [db.clone(), dir.join("big.db-wal")];
    let sqlite = measure_big(std::sync::Arc::new(SqliteStore::open(&db).unwrap()), &files).await;
    let memory = measure_big(std::sync::Arc::new(MemoryStore::new()), &[]).await;
    println!("big_state (100 KB state, each step sets one field; 50 x seq10)");
    println!("store          journal B/step   file growth B/step   steps/s");
    for (name, f) in [("sqlite (FULL)", &sqlite), ("memory", &memory)] {
        let file = f
            .file_bytes_per_step
            .map_or("-".to_owned(), |b| format!("{b:.0}"));
        println!(
            "{name:<14} {:>14.0}   {file:>18}   {:>7.0}",
            f.journal_bytes_per_step, f.steps_per_s
        );
    }
}

workflow! {
    seq10 {
        step s0 = noop; step s1 = noop; step s2 = noop; step s3 = noop; step s4 = noop;
        step s5 = noop; step s6 = noop; step s7 = noop; step s8 = noop; step s9 = noop;
    }
}

workflow! {
    map10k {
        map done(over = items, max_concurrency = 100) {
            step item = noop;
        }
    }
}

/// A parallel block of 100 no-op branches, built by hand: the DSL would need 100 lines.
#[derive(Clone, Copy)]
struct Fan100;

impl Workflow for Fan100 {
    type State = Data;
    const NAME: &'static str = "fan100";
    fn definition(&self) -> Definition {
        let branches = (0..100)
            .map(|i| {
                let name: &'static str = Box::leak(format!("b{i}").into_boxed_str());
                Node::step(
                    name,
                    durable::step::erase::<Data, _, _>(noop),
                    StepOptions::default(),
                )
            })
            .collect();
        Definition::new(
            "fan100",
            "",
            vec![Node::parallel(
                Default::default(),
                Default::default(),
                branches,
            )],
        )
    }
}

struct Figures {
    seq10_workflows_per_s: f64,
    seq10_steps_per_s: f64,
    fan100_ms: f64,
    latency_median_ms: f64,
    latency_p99_ms: f64,
    map10k_items_per_s: f64,
}

async fn measure(store: impl Store) -> Figures {
    let engine = Engine::builder(store)
        .register(seq10)
        .register(Fan100)
        .register(map10k)
        .build()
        .await
        .unwrap();
    // Warm up: page cache, prepared statements, WAL file.
    for _ in 0..20 {
        engine.run(seq10, Data::new()).await.unwrap();
    }

    let workflows = 500;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workflows)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run(seq10, Data::new()).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let seq10_secs = started.elapsed().as_secs_f64();

    let mut fan = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        engine.run(Fan100, Data::new()).await.unwrap();
        fan.push(t.elapsed());
    }
    fan.sort();

    let mut lat = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        engine.run(seq10, Data::new()).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    let items: Vec<serde_json::Value> =
        (0..10_000).map(|i| serde_json::json!({ "i": i })).collect();
    let started = Instant::now();
    let out = engine
        .run(map10k, Data::new().assign("items", items))
        .await
        .unwrap();
    let map_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        out.value("done")
            .and_then(|d| d.get("succeeded"))
            .and_then(|v| v.as_u64()),
        Some(10_000)
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Figures {
        map10k_items_per_s: 10_000.0 / map_secs,
        seq10_workflows_per_s: workflows as f64 / seq10_secs,
        seq10_steps_per_s: (workflows * 10) as f64 / seq10_secs,
        fan100_ms: ms(fan[fan.len() / 2]),
        latency_median_ms: ms(lat[lat.len() / 2]),
        latency_p99_ms: ms(lat[lat.len() * 99 / 100]),
    }
}

/// The process's peak resident memory, from /proc (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The median time of one write + fdatasync on the disk the benchmark uses.
fn fsync_ms(dir: &std::path::Path) -> f64 {
    let mut file = std::fs::File::create(dir.join("fsync.bin")).unwrap();
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&[0u8; 512]).unwrap();
            file.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The process's resident memory now, from /proc/self/statm (Linux only).
fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// When each woken run's step ran, in Unix milliseconds.
static WOKEN: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn woke(data: Data) -> Result<Data, StepError> {
    WOKEN.lock().unwrap().push(unix_ms());
    Ok(data)
}

workflow! {
    sleeper {
        sleep nap(until = wake_at);
        step woke;
    }
}

/// 100,000 sleeping runs, 10,000 due at once: memory, build time, due-to-woken latency.
async fn sleep100k_case(dir: &std::path::Path) {
    use durable::store::{EntryKind, Finish, JournalEntry, NewRun, Write};
    const TOTAL: usize = 100_000;
    const DUE: usize = 10_000;
    let path = dir.join("sleep100k.db");
    let fingerprint = sleeper.definition().fingerprint().to_owned();
    let far = unix_ms() + 30 * 24 * 3_600_000;
    // The rows a run writes as it reaches its sleep, written in batches of 1,000 runs.
    let populate = |store: &SqliteStore, from: usize, to: usize, wake_at: u64| {
        let store = store.clone();
        let fingerprint = fingerprint.clone();
        async move {
            for chunk in (from..to).collect::<Vec<_>>().chunks(1_000) {
                let mut batch = Vec::new();
                for &i in chunk {
                    let id = durable::RunId::from(format!("sleeper-{i}"));
                    batch.push(Write::CreateRun(NewRun {
                        id: id.clone(),
                        workflow: "sleeper".into(),
                        fingerprint: fingerprint.clone(),
                        input: format!(r#"{{"wake_at":{wake_at}}}"#),
                        owner: "populating".into(),
                        lease_expires_at: 0,
                        parent: None,
                    }));
                    batch.push(Write::Append {
                        run: id,
                        lease_token: 1,
                        entries: vec![JournalEntry {
                            seq: 1,
                            step: "nap".into(),
                            kind: EntryKind::SleepStarted,
                            attempt: 1,
                            payload: format!(r#"{{"wake_at":{wake_at}}}"#),
                            at: unix_ms(),
                        }],
                        finish: Some(Finish::Suspended {
                            wake_at: Some(wake_at),
                            inbox_seen: None,
                        }),
                    });
                }
                let verdicts = store.commit(&batch).await.unwrap();
                assert!(verdicts.iter().all(Result::is_ok));
            }
        }
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        populate(&store, 0, TOTAL - DUE, far).await;
        store.close();
    }
    // The due ones last, due a few seconds after they are written.
    let due_at = unix_ms() + 4_000;
    {
        let store = SqliteStore::open(&path).unwrap();
        populate(&store, TOTAL - DUE, TOTAL, due_at).await;
        store.close();
    }
    let rss_before = rss_mib();
    let started = Instant::now();
    let engine = Engine::builder(SqliteStore::open(&path).unwrap())
        .register(sleeper)
        .build()
        .await
        .unwrap();
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_built = rss_mib();
    assert!(
        engine.resumed().is_empty(),
        "the build resumed sleeping runs"
    );
    assert!(
        unix_ms() < due_at,
        "populating took too long: the runs fell due before the build"
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while WOKEN.lock().unwrap().len() < DUE {
        assert!(Instant::now() < deadline, "the due runs did not all wake");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_after = rss_mib();
    let mut lags: Vec<u64> = WOKEN
        .lock()
        .unwrap()
        .iter()
        .map(|&at| at.saturating_sub(due_at))
        .collect();
    lags.sort_unstable();
    let file_mib = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let show = |m: Option<f64>| m.map_or("?".to_owned(), |m| format!("{m:.0} MiB"));
    println!(
        "sleep100k (sqlite): {TOTAL} sleeping runs ({file_mib:.0} MiB file); RSS before build {}, \
         after build {}, after {DUE} woke {}; Engine::build {build_ms:.0} ms; due-to-woken \
         p50 {} ms, p99 {} ms, max {} ms",
        show(rss_before),
        show(rss_built),
        show(rss_after),
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
        lags[lags.len() - 1],
    );
    engine.shutdown().await.unwrap();
}

#[tokio::main]
async fn main() {
    let pg_url = std::env::var("DURABLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    pg::worker_if_asked(pg_url.as_deref()).await;
    let only = std::env::var("DURABLE_BENCH_ONLY").unwrap_or_default();
    if !only.starts_with("postgres") {
        local_rows().await;
    }
    match pg_url {
        Some(url) if only == "postgres-latency" => pg::latency_row(&url).await,
        Some(url) if only == "postgres-seq10" => pg::seq10_row(&url).await,
        Some(url) => pg::rows(&url).await,
        None => println!("PostgreSQL rows skipped: DURABLE_TEST_POSTGRES_URL is not set"),
    }
}

async fn local_rows() {
    let dir = std::env::temp_dir().join(format!("durable-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if std::env::args().any(|a| a == "sleep100k") {
        sleep100k_case(&dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let only_big = std::env::args().any(|a| a == "big_state");
    big_state_case(&dir).await;
    if only_big {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let fsync = fsync_ms(&dir);
    let sqlite = measure(SqliteStore::open(dir.join("bench.db")).unwrap()).await;
    let memory = measure(MemoryStore::new()).await;
    println!("store          seq10 wf/s   seq10 steps/s   fan100 ms   latency median ms   latency p99 ms   map10k items/s");
    for (name, f) in [("sqlite (FULL)", &sqlite), ("memory", &memory)] {
        println!(
            "{name:<14} {:>10.0}   {:>13.0}   {:>9.2}   {:>17.2}   {:>14.2}   {:>14.0}",
            f.seq10_workflows_per_s,
            f.seq10_steps_per_s,
            f.fan100_ms,
            f.latency_median_ms,
            f.latency_p99_ms,
            f.map10k_items_per_s
        );
    }
    println!(
        "sqlite/memory  {:>10.2}   {:>13.2}   {:>9.2}   {:>17.2}   {:>14.2}   {:>14.2}",
        sqlite.seq10_workflows_per_s / memory.seq10_workflows_per_s,
        sqlite.seq10_steps_per_s / memory.seq10_steps_per_s,
        sqlite.fan100_ms / memory.fan100_ms,
        sqlite.latency_median_ms / memory.latency_median_ms,
        sqlite.latency_p99_ms / memory.latency_p99_ms,
        sqlite.map10k_items_per_s / memory.map10k_items_per_s,
    );
    if let Some(peak) = peak_rss_mib() {
        println!("peak RSS of the benchmark process (both stores, every figure): {peak:.0} MiB");
    }
    println!(
        "fsync {fsync:.3} ms; sqlite latency median = {:.2} x ten fsyncs; seq10 = {:.0} x DBOS's 345 steps/s, {:.0} x duroxide's 198",
        sqlite.latency_median_ms / (10.0 * fsync),
        sqlite.seq10_steps_per_s / 345.0,
        sqlite.seq10_steps_per_s / 198.0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
