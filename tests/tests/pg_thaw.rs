//! A frozen worker never starts a step another worker finished. Three worker processes
//! (`thaw_worker`) share runs of `durable_tests::thaw::thawed` on one PostgreSQL database;
//! in each trial a batch of runs starts, one worker chosen at random is SIGSTOPped at a random
//! point, kept stopped well past its leases (the others take its runs over and finish them)
//! and SIGCONTed. Every start of a step or sub-operation is logged by the worker, first
//! thing, with the time.
//!
//! What must hold, in every trial: every run completes with each step and sub-operation
//! journaled once, and no start is logged after its path's completion was committed (a start
//! in flight when the worker froze may finish late and be refused: that start came before
//! the completion; a start after it is a finished step run again). When a completion was
//! committed is bounded by what followed it (see `next_path`), not by the entry's `at`: that
//! is stamped when the step returns, before the commit. The completion the journal holds is
//! the current lease holder's (a claim bumps the token, so an older holder's later commit is
//! refused, and the claimer reads every commit that came before it). A start logged between
//! its `at` and its commit is another worker's whose lease had just run out: one slowed past
//! the margin between its lease check and the step's first line (the window `lease.rs`
//! documents), starting a step that was still unfinished; its own commit is then refused. It
//! is counted and printed, not a failure.
//!
//! `THAW_TRIALS` sets the number of trials (default 16), `THAW_SEED` replays a sequence of
//! stop points (the seed is printed).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable::store::{NewRun, Write};
use durable::{RunId, Workflow};
use durable_tests::thaw::{thawed, PATHS};
use durable_tests::{in_runtime, postgres_url_or_skip, scratch_dir, Backend, TestStore};

const WORKER: &str = env!("CARGO_BIN_EXE_thaw_worker");
const WORKERS: usize = 3;
/// Runs per trial: more than one worker's capacity (`MAX_RUNS`), so all three hold some.
const RUNS: usize = 45;
const LEASE_MS: u64 = 800;
/// How long the victim stays stopped: past its leases, and long enough for the others to
/// claim its runs (they poll every 50 ms) and finish them.
const STOPPED: Duration = Duration::from_millis(LEASE_MS * 3);

/// The worker processes, killed when dropped (a failed assertion included).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(url: &str, schema: &str, name: &str, log: &Path) -> Child {
    let mut child = Command::new(WORKER)
        .args([url, schema, name])
        .arg(log)
        .env("LEASE_MS", LEASE_MS.to_string())
        .env("MAX_RUNS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn thaw_worker");
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
    assert!(status.success(), "kill {sig} {}", child.id());
}

/// A small deterministic generator (xorshift), seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One logged start.
#[derive(Debug)]
struct Start {
    attempt: u32,
    micros: u64,
    worker: String,
}

/// Every start the workers logged, by run and path.
fn starts(logs: &[PathBuf]) -> HashMap<(String, String), Vec<Start>> {
    let mut all: HashMap<(String, String), Vec<Start>> = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let [run, path, attempt, micros, worker] = fields[..] else {
                panic!("a torn log line in {}: {line:?}", log.display())
            };
            all.entry((run.to_owned(), path.to_owned()))
                .or_default()
                .push(Start {
                    attempt: attempt.parse().unwrap(),
                    micros: micros.parse().unwrap(),
                    worker: worker.to_owned(),
                });
        }
    }
    all
}

/// The path that starts only once the completion of `PATHS[p]` is committed, on any worker:
/// a worker goes on past a path only after its own commit of it was accepted, or with the
/// completion in the journal it loaded; either way after the one completion the journal holds
/// was committed. So the first start of that next path, on any worker, is an upper bound of
/// the commit's time (the completer's acknowledgement, as it logs it), and a start of `PATHS[p]`
/// after it is a finished step started again. `fan` finishes after its operations; the last
/// step has none (the run's end).
fn next_path(p: usize) -> Option<&'static str> {
    match PATHS[p] {
        "fan" => Some("s6"),
        _ => PATHS.get(p + 1).copied(),
    }
}

#[test]
fn a_worker_thawed_past_its_leases_never_starts_a_step_another_worker_finished() {
    let test =
        "pg_thaw::a_worker_thawed_past_its_leases_never_starts_a_step_another_worker_finished";
    if postgres_url_or_skip(test).is_none() {
        return;
    }
    let trials: usize = std::env::var("THAW_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let seed = std::env::var("THAW_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_micros() | 1);
    eprintln!("THAW_SEED={seed}");
    let mut rng = Rng(seed);
    let store = TestStore::new(Backend::Postgres);
    let (url, schema) = store
        .postgres()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .unwrap();
    let dir = scratch_dir();
    let logs: Vec<PathBuf> = (0..WORKERS)
        .map(|w| dir.join(format!("starts-w{w}.log")))
        .collect();
    let workers = Workers(
        (0..WORKERS)
            .map(|w| spawn(&url, &schema, &format!("w{w}"), &logs[w]))
            .collect(),
    );
    let began = Instant::now();
    in_runtime(async {
        let shared = store.open();
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let fingerprint = thawed.definition().fingerprint().to_owned();
        // Per trial: the victim, and how many of its starts came after it was continued.
        let mut trial_notes = Vec::new();
        for trial in 0..trials {
            let ids: Vec<RunId> = (0..RUNS)
                .map(|i| RunId::from(format!("t{trial}-{i}")))
                .collect();
            let batch: Vec<Write> = ids
                .iter()
                .map(|id| {
                    Write::CreateRun(NewRun {
                        id: id.clone(),
                        workflow: "thawed".into(),
                        fingerprint: fingerprint.clone(),
                        input: "{}".into(),
                        owner: String::new(),
                        lease_expires_at: 0,
                        parent: None,
                    })
                })
                .collect();
            let created = shared.commit(&batch).await.unwrap();
            assert!(created.iter().all(Result::is_ok), "{created:?}");
            // A random point of the batch's life (it takes a few hundred ms).
            tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
            let victim = rng.next(WORKERS as u64) as usize;
            signal(&workers.0[victim], "-STOP");
            tokio::time::sleep(STOPPED).await;
            let continued = now_micros();
            signal(&workers.0[victim], "-CONT");

            let pattern = format!("t{trial}-%");
            let deadline = Instant::now() + Duration::from_secs(60);
            let all_done = loop {
                let done: i64 = admin
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM \"{schema}\".durable_runs \
                             WHERE id LIKE $1 AND status = 'completed'"
                        ),
                        &[&pattern],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if done as usize == RUNS {
                    break now_micros();
                }
                assert!(
                    Instant::now() < deadline,
                    "trial {trial}: {done} of {RUNS} runs completed 60 s after the victim w{victim} \
                     was continued"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            trial_notes.push((trial, victim, pattern, continued, all_done));
        }

        // The journal's completions, each path's once, and the starts against them.
        let rows = admin
            .query(
                &format!(
                    "SELECT run_id, step, at FROM \"{schema}\".durable_journal \
                     WHERE kind IN ('step_completed', 'step_changed', 'op_completed')"
                ),
                &[],
            )
            .await
            .unwrap();
        let mut completed: HashMap<(String, String), Vec<u64>> = HashMap::new();
        for row in &rows {
            completed
                .entry((row.get(0), row.get(1)))
                .or_default()
                .push(row.get::<_, i64>(2) as u64);
        }
        let starts = starts(&logs);
        let mut failed_trials = BTreeMap::new();
        let (mut late_starts, mut in_flight_starts) = (0, 0);
        for (trial, victim, _, continued, all_done) in &trial_notes {
            let mut violations = Vec::new();
            for i in 0..RUNS {
                let run = format!("t{trial}-{i}");
                let of = |path: &str| {
                    starts
                        .get(&(run.clone(), path.to_owned()))
                        .map_or(&[][..], Vec::as_slice)
                };
                for (p, path) in PATHS.iter().enumerate() {
                    let key = (run.clone(), (*path).to_owned());
                    let done = completed.get(&key).map_or(&[][..], Vec::as_slice);
                    assert_eq!(done.len(), 1, "{key:?} journaled as completed {done:?}");
                    let at_ms = done[0];
                    // When the completion surely was committed: before the first start of the
                    // path after it, or (the last step's, which ends the run) before the test
                    // saw the run completed.
                    let (committed, witness) = match next_path(p) {
                        Some(next) => {
                            let first = of(next).iter().min_by_key(|s| s.micros);
                            let first = first.unwrap_or_else(|| {
                                panic!("{run} `{next}` never started, yet `{path}` completed")
                            });
                            (
                                first.micros,
                                format!("`{next}` started by {}", first.worker),
                            )
                        }
                        None => (*all_done, "the run was seen completed".to_owned()),
                    };
                    for start in of(path) {
                        if start.worker == format!("w{victim}") && start.micros > *continued {
                            late_starts += 1;
                        }
                        if start.micros > committed {
                            violations.push(format!(
                                "{run} `{path}` attempt {} started by {} {} µs after its \
                                 completion was committed ({witness}; {} ms after w{victim} \
                                 was continued)",
                                start.attempt,
                                start.worker,
                                start.micros - committed,
                                (start.micros as i64 - *continued as i64) / 1000,
                            ));
                        } else if start.micros / 1000 > at_ms {
                            // Between the completion's entry and its commit: the step was
                            // unfinished (see the module's documentation).
                            in_flight_starts += 1;
                        }
                    }
                }
            }
            if !violations.is_empty() {
                failed_trials.insert(*trial, violations);
            }
        }
        eprintln!(
            "{trials} trials in {:?}; starts by a victim after it was continued: {late_starts}; \
             starts while another worker's completion of the step was being committed: \
             {in_flight_starts}; trials with a finished step started again: {}",
            began.elapsed(),
            failed_trials.len()
        );
        assert!(
            failed_trials.is_empty(),
            "in {} of {trials} trials a finished step was started again (THAW_SEED={seed}): \
             {failed_trials:#?}",
            failed_trials.len()
        );
    });
    drop(workers);
}
