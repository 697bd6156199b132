//! Journal throughput and latency, SQLite (synchronous=FULL) against memory.
//!
//! `cargo bench -p durable --bench journal` prints:
//! - `seq10`: 500 concurrent workflows of 10 no-op steps: workflows/s and journaled steps/s;
//! - `fan100`: one parallel block of 100 no-op steps: ms per workflow;
//! - `latency`: one seq10 workflow at a time: median and p99 ms;
//! - `map10k`: a map block over 10,000 items, 100 at a time: items/s;
//!
//! each for both stores with the SQLite/memory ratio, and the cost of one fsync on the same
//! disk, so the latency can be read as a multiple of ten fsyncs.
//!
//! With `DURABLE_TEST_POSTGRES_URL` set, PostgreSQL rows follow (see `pg/mod.rs`);
//! `DURABLE_BENCH_ONLY=postgres` runs only those.

mod pg;

use std::io::Write as _;
use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Data, Definition, Engine, Node, StepError, StepOptions, Store, Workflow};

async fn noop(data: Data) -> Result<Data, StepError> {
    Ok(data)
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

#[tokio::main]
async fn main() {
    let pg_url = std::env::var("DURABLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    pg::worker_if_asked(pg_url.as_deref()).await;
    if std::env::var("DURABLE_BENCH_ONLY").as_deref() != Ok("postgres") {
        local_rows().await;
    }
    match pg_url {
        Some(url) => pg::rows(&url).await,
        None => println!("PostgreSQL rows skipped: DURABLE_TEST_POSTGRES_URL is not set"),
    }
}

async fn local_rows() {
    let dir = std::env::temp_dir().join(format!("durable-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
