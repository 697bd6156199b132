//! Crash tests: a real worker process is killed with SIGKILL while steps are in flight and at
//! random points, then restarted. Finished steps must never run again, and the run must
//! complete with the right output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable_tests::scratch_dir;

const CHILD: &str = env!("CARGO_BIN_EXE_crash_child");

struct Scenario {
    db: PathBuf,
    log: PathBuf,
    name: &'static str,
}

impl Scenario {
    fn new(name: &'static str) -> Self {
        let dir = scratch_dir();
        Self {
            db: dir.join("crash.db"),
            log: dir.join("effects.log"),
            name,
        }
    }

    fn spawn(&self, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(CHILD);
        cmd.arg(&self.db).arg(self.name).env("CRASH_LOG", &self.log);
        cmd.env_remove("SLOW_STEP")
            .env_remove("STEP_DELAY_MS")
            .env("RUST_BACKTRACE", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crash_child")
    }

    /// Runs the worker to the end; returns its output.
    fn finish(&self) -> serde_json::Value {
        let out = self.spawn(&[]).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("output JSON")
    }

    /// How often each `start X` / `end X` line is in the side-effect log.
    fn effects(&self) -> BTreeMap<String, usize> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            *counts.entry(line.to_owned()).or_insert(0) += 1;
        }
        counts
    }

    fn count(&self, line: &str) -> usize {
        self.effects().get(line).copied().unwrap_or(0)
    }

    /// The steps whose completion is committed in the journal.
    fn committed(&self) -> BTreeSet<String> {
        if !self.db.exists() {
            return BTreeSet::new();
        }
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let has_table: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'durable_journal'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if has_table == 0 {
            return BTreeSet::new();
        }
        let mut stmt = conn
            .prepare(
                "SELECT step FROM durable_journal WHERE kind IN ('step_completed', 'step_changed')",
            )
            .unwrap();
        let steps = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        steps
    }

    fn completions_per_step(&self) -> BTreeMap<String, i64> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = conn
            .prepare("SELECT step, count(*) FROM durable_journal WHERE kind IN ('step_completed', 'step_changed') GROUP BY step")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

#[test]
fn a_step_in_flight_when_the_process_is_killed_runs_again_and_nothing_else_does() {
    let s = Scenario::new("seq");
    let child = s.spawn(&[("SLOW_STEP", "s3")]);
    wait_until("s3 to start", || s.count("start s3") == 1);
    kill(child);
    assert_eq!(s.committed(), ["s1", "s2"].map(String::from).into());

    let out = s.finish();
    assert_eq!(out["n"], 5);
    assert_eq!(
        out["trail"],
        serde_json::json!(["s1", "s2", "s3", "s4", "s5"])
    );
    let effects = s.effects();
    for step in ["s1", "s2", "s4", "s5"] {
        assert_eq!(
            effects[&format!("start {step}")],
            1,
            "{step} ran again: {effects:?}"
        );
    }
    assert_eq!(
        effects["start s3"], 2,
        "the step in flight runs again: {effects:?}"
    );
    assert_eq!(effects["end s3"], 1);
    assert!(s.completions_per_step().values().all(|&n| n == 1));
}

#[test]
fn a_parallel_block_killed_midway_reruns_only_its_unfinished_branch() {
    let s = Scenario::new("parallel");
    let child = s.spawn(&[("SLOW_STEP", "p2")]);
    // p1 and p3 finish and are committed while p2 is still in flight.
    wait_until("p1 and p3 to commit", || {
        let c = s.committed();
        c.contains("p1") && c.contains("p3")
    });
    assert_eq!(s.count("start p2"), 1);
    kill(child);
    assert_eq!(
        s.committed(),
        ["prepare", "p1", "p3"].map(String::from).into()
    );

    let out = s.finish();
    let effects = s.effects();
    for step in ["prepare", "p1", "p3", "middle", "q1", "q2", "finish"] {
        assert_eq!(effects[&format!("start {step}")], 1, "{step}: {effects:?}");
    }
    assert_eq!(effects["start p2"], 2);
    // The merge saw all three branches, replayed and fresh alike.
    for step in ["p1", "p2", "p3", "q1", "q2", "finish"] {
        assert_eq!(out[format!("did_{step}")], true, "{out}");
    }
    assert!(s.completions_per_step().values().all(|&n| n == 1));
}

/// A small deterministic generator (xorshift), seeded from the clock and printed, so a
/// failing sequence of kill points can be replayed with `CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn random_kills(name: &'static str) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            nanos as u64 | 1
        });
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let s = Scenario::new(name);
    let mut kills = 0;
    let out = loop {
        let committed = s.committed();
        let before = s.effects();
        let mut child = s.spawn(&[("STEP_DELAY_MS", "4")]);
        // Kill anywhere: during start-up, mid-step, between a step and its commit. After
        // 25 kills, let the worker finish.
        if kills < 25 {
            std::thread::sleep(Duration::from_millis(rng.next(35)));
        }
        let done = kills >= 25 || child.try_wait().unwrap().is_some();
        let output = if done {
            Some(child.wait_with_output().unwrap())
        } else {
            kill(child);
            kills += 1;
            None
        };
        // No step committed before this worker started may have started again.
        let after = s.effects();
        for step in &committed {
            let key = format!("start {step}");
            assert_eq!(
                before.get(&key),
                after.get(&key),
                "committed step {step} ran again (seed {seed})"
            );
        }
        if let Some(output) = output {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            break serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap();
        }
    };
    let completions = s.completions_per_step();
    assert!(completions.values().all(|&n| n == 1), "{completions:?}");
    let expected = match name {
        "seq" => 5,
        // seed, 20 items, the map's decision, finish
        "batch" => 23,
        // prepare, four branches (b2 fails), the block's decision, finish
        "policy" => 7,
        _ => 8,
    };
    assert_eq!(completions.len(), expected, "{completions:?}");
    if name == "batch" {
        assert_eq!(out["items_done"]["succeeded"], 20, "{out}");
    }
    if name == "policy" {
        assert_policy_decision(&s, &out);
    }
    // Block entries (a map's or a named parallel block's decision) are not steps.
    let blocks = ["items_done", "picked"];
    for step in completions
        .keys()
        .filter(|s| !blocks.iter().any(|b| s.starts_with(b)))
    {
        assert_eq!(out[format!("did_{step}")], true, "{out}");
        assert!(s.count(&format!("end {step}")) >= 1);
    }
    println!("{kills} kills (seed {seed})");
}

#[test]
fn a_dag_with_a_nested_sequence_killed_midway_resumes_inside_the_sequence() {
    let s = Scenario::new("graph");
    let child = s.spawn(&[("SLOW_STEP", "c2")]);
    wait_until("c2 to start", || s.count("start c2") == 1);
    wait_until("p1 and p2 to commit", || {
        let c = s.committed();
        c.contains("p1") && c.contains("p2")
    });
    kill(child);
    assert_eq!(
        s.committed(),
        ["prepare", "d1", "c1", "p1", "p2"].map(String::from).into()
    );

    let out = s.finish();
    let effects = s.effects();
    for step in ["prepare", "d1", "c1", "p1", "p2", "d2", "finish"] {
        assert_eq!(effects[&format!("start {step}")], 1, "{step}: {effects:?}");
    }
    assert_eq!(effects["start c2"], 2, "the step in flight runs again");
    for step in ["prepare", "d1", "c1", "c2", "p1", "p2", "d2", "finish"] {
        assert_eq!(out[format!("did_{step}")], true, "{out}");
    }
    assert!(s.completions_per_step().values().all(|&n| n == 1));
}

#[test]
fn random_kills_never_rerun_a_committed_step_graph() {
    for _ in 0..5 {
        random_kills("graph");
    }
}

#[test]
fn a_map_killed_midway_redoes_no_finished_item() {
    let s = Scenario::new("batch");
    let child = s.spawn(&[("SLOW_STEP", "items_done[9]/handle")]);
    wait_until("item 9 to start and items 0-8 to commit", || {
        let c = s.committed();
        s.count("start items_done[9]/handle") == 1
            && (0..9).all(|i| c.contains(&format!("items_done[{i}]/handle")))
    });
    let committed = s.committed();
    kill(child);

    let out = s.finish();
    assert_eq!(out["items_done"]["succeeded"], 20, "{out}");
    let effects = s.effects();
    for step in &committed {
        assert_eq!(effects[&format!("start {step}")], 1, "{step} ran again");
    }
    assert_eq!(
        effects["start items_done[9]/handle"], 2,
        "the item in flight runs again"
    );
    assert!(s.completions_per_step().values().all(|&n| n == 1));
}

#[test]
fn random_kills_never_rerun_a_committed_step_batch() {
    for _ in 0..3 {
        random_kills("batch");
    }
}

#[test]
fn random_kills_never_rerun_a_committed_step_seq() {
    for _ in 0..5 {
        random_kills("seq");
    }
}

#[test]
fn random_kills_never_rerun_a_committed_step_parallel() {
    for _ in 0..5 {
        random_kills("parallel");
    }
}

/// The parallel block `picked` of the `policy` scenario decided as its branches warrant, and
/// the decision in the output is the one journaled.
fn assert_policy_decision(s: &Scenario, out: &serde_json::Value) {
    let batch = &out["picked"];
    assert_eq!(batch["status"], "completed", "{out}");
    assert_eq!(batch["completion_reason"], "all_completed", "{out}");
    assert_eq!(
        (&batch["succeeded"], &batch["failed"]),
        (&4.into(), &1.into()),
        "{out}"
    );
    assert_eq!(batch["items"][1]["error"], "b2 is broken", "{out}");
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let journaled: String = conn
        .query_row(
            "SELECT payload FROM durable_journal WHERE step = 'picked' AND kind = 'step_completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let journaled: serde_json::Value = serde_json::from_str(&journaled).unwrap();
    assert_eq!(
        journaled["picked"], *batch,
        "the output's decision is the journaled one"
    );
}

#[test]
fn a_parallel_block_with_a_policy_killed_midway_reruns_only_its_branch_in_flight() {
    let s = Scenario::new("policy");
    let child = s.spawn(&[("SLOW_STEP", "b3")]);
    // Two at a time: b1 and b2 first, then b3 (slow) beside b4, then b5 beside b3.
    wait_until("b1, b4 and b5 to commit while b3 runs", || {
        let c = s.committed();
        ["b1", "b4", "b5"].iter().all(|b| c.contains(*b))
    });
    assert_eq!(s.count("start b3"), 1);
    kill(child);
    assert_eq!(
        s.committed(),
        ["prepare", "b1", "b4", "b5"].map(String::from).into(),
        "nothing decided yet: b3 can still change the outcome"
    );

    let out = s.finish();
    let effects = s.effects();
    for step in ["prepare", "b1", "b2", "b4", "b5", "finish"] {
        assert_eq!(effects[&format!("start {step}")], 1, "{step}: {effects:?}");
    }
    assert_eq!(effects["start b3"], 2, "the branch in flight runs again");
    // b2's failure was journaled before the kill: it is replayed, not run again (above).
    assert_policy_decision(&s, &out);
    for step in ["b1", "b3", "b4", "b5", "finish"] {
        assert_eq!(out[format!("did_{step}")], true, "{out}");
    }
    assert!(s.completions_per_step().values().all(|&n| n == 1));
}

#[test]
fn random_kills_never_rerun_a_committed_step_policy() {
    for _ in 0..3 {
        random_kills("policy");
    }
}

impl Scenario {
    /// Whether the journal holds the start of sleep `step`.
    fn sleep_started(&self, step: &str) -> bool {
        if !self.db.exists() {
            return false;
        }
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'durable_journal'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            > 0
            && conn
                .query_row(
                    "SELECT count(*) FROM durable_journal WHERE kind = 'sleep_started' AND step = ?1",
                    [step],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                > 0
    }

    /// The run's status and `wake_at` as the file holds them.
    fn run_state(&self) -> (String, Option<i64>) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.query_row(
            "SELECT status, wake_at FROM durable_runs WHERE id = 'crash-run'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }
}

#[test]
fn a_process_killed_while_its_run_sleeps_wakes_it_after_a_restart_and_no_step_runs_twice() {
    let s = Scenario::new("sleep");
    let child = s.spawn(&[]);
    // Killed while the run sleeps inside a parallel block, its sibling finished.
    wait_until("the run to suspend in `nap`", || {
        s.sleep_started("nap") && s.db.exists() && s.run_state().0 == "suspended"
    });
    kill(child);
    let (status, wake_at) = s.run_state();
    assert_eq!(status, "suspended");
    assert!(wake_at.is_some());
    assert_eq!(s.committed(), ["before", "side"].map(String::from).into());
    // Restarted before the wake time: the run wakes on time; killed again in `rest`.
    let child = s.spawn(&[]);
    wait_until("the run to suspend in `rest`", || s.sleep_started("rest"));
    kill(child);
    assert_eq!(s.count("start after"), 1);
    // Restarted (the second sleep may be over by now): the run completes.
    let out = s.finish();
    for step in ["before", "side", "after", "finish"] {
        assert_eq!(out[format!("did_{step}")], true, "{out}");
    }
    let effects = s.effects();
    for step in ["before", "side", "after", "finish"] {
        assert_eq!(effects[&format!("start {step}")], 1, "{step}: {effects:?}");
    }
    assert!(s.completions_per_step().values().all(|&n| n == 1));
    assert_eq!(s.run_state().0, "completed");
}
