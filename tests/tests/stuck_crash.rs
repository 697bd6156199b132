//! Real crashes (SIGKILL) while runs suspend with their message arriving: no run sleeps
//! through a message that reached its inbox, whatever instant the process dies at.
//!
//! Per item kind (a signal's `wait_for`, a `callback`, a child run's end through `call`) and
//! per store (SQLite, PostgreSQL), [`LIFETIMES`] processes each start [`RUNS`] runs whose
//! message is sent (or whose child ends) 0-15 ms around the moment the run suspends (see
//! `stuck_child`), and each is killed at a random point of that burst: after a random number
//! of its runs reached the wait, plus 0-9 ms. Every next process drives on what the last one
//! left. A last process then waits for every run to finish: each must, within
//! `stuck_child`'s bound (20 s; the waits' own deadline is an hour away), with the message
//! it was sent in its output, and no step that had finished before a kill (its completion
//! committed) may start again after it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable::store::postgres::{PostgresOptions, PostgresStore};
use durable::store::sqlite::SqliteStore;
use durable::store::{EntryKind, RunFilter, RunStatus};
use durable::Store;
use durable_tests::{drop_schema, postgres_url_or_skip, scratch_dir, scratch_schema};

const CHILD: &str = env!("CARGO_BIN_EXE_stuck_child");
/// Processes killed per kind and store.
const LIFETIMES: usize = 12;
/// Runs each of them starts.
const RUNS: usize = 100;

enum StoreAt {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

struct Trial {
    kind: &'static str,
    store: StoreAt,
    log: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Drop for Trial {
    fn drop(&mut self) {
        if let StoreAt::Postgres { url, schema } = &self.store {
            drop_schema(url, schema);
        }
    }
}

/// A random number below `n`.
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.finish() % n.max(1)
}

impl Trial {
    fn new(kind: &'static str, postgres: Option<String>) -> Self {
        let dir = scratch_dir();
        let store = match postgres {
            Some(url) => StoreAt::Postgres {
                url,
                schema: scratch_schema(),
            },
            None => StoreAt::Sqlite(dir.join("runs.db")),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            kind,
            store,
            log: dir.join("log"),
            rt,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CHILD);
        cmd.arg(self.kind)
            .args(args)
            .env("CRASH_LOG", &self.log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.store {
            StoreAt::Sqlite(db) => cmd.env("STUCK_DB", db),
            StoreAt::Postgres { url, schema } => {
                cmd.env("STUCK_PG_URL", url).env("STUCK_PG_SCHEMA", schema)
            }
        };
        cmd
    }

    /// The store, opened beside the (dead) processes to read what they committed.
    fn open(&self) -> Arc<dyn Store> {
        match &self.store {
            StoreAt::Sqlite(db) => Arc::new(SqliteStore::open_client(db).unwrap()),
            StoreAt::Postgres { url, schema } => {
                let options = PostgresOptions {
                    pool_size: 1,
                    ..PostgresOptions::schema(schema.clone())
                };
                Arc::new(PostgresStore::with_options(url, options).unwrap())
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The line that says one of batch `batch`'s runs reached its wait.
    fn reached_wait(&self, line: &str, batch: &str) -> bool {
        let Some(rest) = line.strip_prefix(&format!("{batch}-")) else {
            return false;
        };
        match self.kind {
            "signal" => rest.ends_with(" before end"),
            "callback" => rest.ends_with(" done/submit end"),
            _ => rest.ends_with("/kid chore end"),
        }
    }

    /// The (run, step) pairs whose completion is committed.
    fn committed(&self) -> HashSet<(String, String)> {
        let store = self.open();
        self.rt.block_on(async {
            let mut done = HashSet::new();
            for run in store.list_runs(RunFilter::default()).await.unwrap() {
                for entry in store.load_journal(&run.id).await.unwrap() {
                    if matches!(
                        entry.kind,
                        EntryKind::StepCompleted | EntryKind::StepChanged
                    ) {
                        done.insert((run.id.to_string(), entry.step));
                    }
                }
            }
            done
        })
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn crash_loop(kind: &'static str, postgres: Option<String>) {
    let backend = if postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let trial = Trial::new(kind, postgres);
    // After kill k: the log's length then, and the steps committed then.
    let mut kills: Vec<(usize, HashSet<(String, String)>)> = Vec::new();
    for lifetime in 0..LIFETIMES {
        let batch = format!("b{lifetime}");
        let mut child = trial
            .command(&["start", &batch, &RUNS.to_string()])
            .spawn()
            .unwrap();
        let target = 1 + random_below(RUNS as u64) as usize;
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let reached = trial
                .log()
                .lines()
                .filter(|l| trial.reached_wait(l, &batch))
                .count();
            if reached >= target {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "{kind}: process {lifetime} exited ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < limit,
                "{kind}: process {lifetime}: {target} runs never reached their wait ({reached} did)"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(random_below(10)));
        kill(child);
        kills.push((trial.log().len(), trial.committed()));
    }

    let out = trial.command(&["finish"]).output().unwrap();
    assert!(
        out.status.success(),
        "{kind}: the last process failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the last process's report");
    let unfinished = report["unfinished"].as_array().unwrap();
    eprintln!(
        "{kind} on {backend}: {LIFETIMES} processes killed, {} runs, {} unfinished after the \
         bound",
        report["runs"],
        unfinished.len()
    );
    let stuck: Vec<String> = unfinished
        .iter()
        .map(|u| format!("{} ({}, inbox {})", u["id"], u["status"], u["inbox"]))
        .collect();
    assert!(
        stuck.is_empty(),
        "{kind}: {} runs never finished though their message was sent: {stuck:?}",
        stuck.len()
    );

    // Every run completed with its own message in its output.
    let store = trial.open();
    trial.rt.block_on(async {
        let runs = store.list_runs(RunFilter::default()).await.unwrap();
        let parents = if kind == "call" { 2 } else { 1 };
        assert_eq!(runs.len(), LIFETIMES * RUNS * parents, "{kind}");
        for run in runs {
            assert_eq!(run.status, RunStatus::Completed, "{kind}: {}", run.id);
            let output: serde_json::Value = serde_json::from_str(run.output.as_deref().unwrap())
                .unwrap_or_else(|e| panic!("{kind}: {}: {e}", run.id));
            let id = run.id.as_str();
            let expected = match run.workflow.as_str() {
                "signalled" => serde_json::json!(format!("go-{id}")),
                "called_back" => serde_json::json!({ "run": id }),
                "parent" => serde_json::json!({ "chore": format!("{id}/kid") }),
                _ => continue,
            };
            let key = match kind {
                "signal" => "go",
                "callback" => "done",
                _ => "kid",
            };
            assert_eq!(output[key], expected, "{kind}: {id}: {output}");
            assert_eq!(output["did_after"], true, "{kind}: {id}: {output}");
        }
    });

    // No step that had finished before a kill started again after it.
    let log = trial.log();
    for (offset, committed) in &kills {
        for line in log[*offset..].lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if let [run, step, "start"] = parts[..] {
                assert!(
                    !committed.contains(&(run.to_owned(), step.to_owned())),
                    "{kind}: step `{step}` of run {run} ran again after its completion was \
                     committed"
                );
            }
        }
    }
}

#[test]
fn signals_sqlite() {
    crash_loop("signal", None);
}

#[test]
fn callbacks_sqlite() {
    crash_loop("callback", None);
}

#[test]
fn calls_sqlite() {
    crash_loop("call", None);
}

#[test]
fn signals_postgres() {
    if let Some(url) = postgres_url_or_skip("stuck_crash::signals_postgres") {
        crash_loop("signal", Some(url));
    }
}

#[test]
fn callbacks_postgres() {
    if let Some(url) = postgres_url_or_skip("stuck_crash::callbacks_postgres") {
        crash_loop("callback", Some(url));
    }
}

#[test]
fn calls_postgres() {
    if let Some(url) = postgres_url_or_skip("stuck_crash::calls_postgres") {
        crash_loop("call", Some(url));
    }
}
