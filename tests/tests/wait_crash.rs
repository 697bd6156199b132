//! Real crashes (SIGKILL) while runs wait: for a signal, for a callback, and inside a callback's
//! submit function before its call was journaled. After each restart every run completes
//! exactly as without the kill: each step's side effect once, the signal and the callback's
//! payload in the output, one token per callback (the same one when the submit function
//! runs again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable::callback::Callback;
use durable::store::sqlite::SqliteStore;
use durable::{workflow, Client, Data, RunId, RunStatus, StepContext, StepError};
use durable_tests::scratch_dir;

const CHILD: &str = env!("CARGO_BIN_EXE_wait_crash_child");
const RUNS: usize = 3;

async fn work(_ctx: StepContext, data: Data) -> Result<Data, StepError> {
    Ok(data)
}
async fn request_payment(_callback: Callback, data: Data) -> Result<Data, StepError> {
    Ok(data)
}

// The child's workflow: the client checks signal names against it.
workflow! {
    approval_flow {
        step before = work;
        wait_for approved(timeout = 1h);
        callback paid = request_payment(timeout = 1h);
        step after = work;
    }
}

struct Scenario {
    db: PathBuf,
    log: PathBuf,
}

impl Scenario {
    fn new() -> Self {
        let dir = scratch_dir();
        Self {
            db: dir.join("runs.db"),
            log: dir.join("log"),
        }
    }

    fn spawn(&self, slow_submit: bool) -> Child {
        let mut cmd = Command::new(CHILD);
        cmd.args([self.db.to_str().unwrap(), &RUNS.to_string()])
            .env("CRASH_LOG", &self.log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if slow_submit {
            cmd.env("SLOW_SUBMIT", "1");
        }
        cmd.spawn().unwrap()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The tokens each run's submit function was called with, in call order.
    fn tokens(&self) -> HashMap<String, Vec<String>> {
        let mut tokens: HashMap<String, Vec<String>> = HashMap::new();
        for line in self.log() {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts[1] == "submit" {
                tokens
                    .entry(parts[0].into())
                    .or_default()
                    .push(parts[2].into());
            }
        }
        tokens
    }

    fn client(&self) -> Client {
        Client::open(SqliteStore::open_client(&self.db).unwrap())
    }
}

fn ids() -> Vec<RunId> {
    (0..RUNS)
        .map(|i| RunId::from(format!("wait-{i}")))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (up to 30s) until `done` holds for what the client reads.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether every run is suspended with `step` in its journal.
fn all_suspended_after(scenario: &Scenario, step: &str) -> bool {
    let Ok(store) = SqliteStore::open_client(&scenario.db) else {
        return false;
    };
    let client = Client::open(store);
    runtime().block_on(async {
        for id in ids() {
            let Ok(info) = client.status(&id).await else {
                return false;
            };
            let history = client.history(&id).await.unwrap();
            if info.status != RunStatus::Suspended || !history.iter().any(|r| r.step == step) {
                return false;
            }
        }
        true
    })
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn finish(child: Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The output of every run, as without a kill.
fn expected(i: usize) -> serde_json::Value {
    serde_json::json!({
        "did_before": true,
        "approved": format!("yes-{i}"),
        "requested": true,
        "paid": {"run": i},
        "did_after": true,
    })
}

#[test]
fn runs_killed_while_waiting_for_a_signal_and_for_a_callback_complete_as_without_the_kill() {
    let scenario = Scenario::new();
    let child = scenario.spawn(false);
    until("every run waits for its signal", || {
        all_suspended_after(&scenario, "approved")
    });
    kill(child);
    // One signal while no process drives the file, the others after the restart.
    let rt = runtime();
    let client = scenario.client();
    rt.block_on(client.signal(approval_flow, &ids()[0], "approved", "yes-0"))
        .unwrap();
    let child = scenario.spawn(false);
    for (i, id) in ids().iter().enumerate().skip(1) {
        rt.block_on(client.signal(approval_flow, id, "approved", format!("yes-{i}")))
            .unwrap();
    }
    until("every run waits for its callback", || {
        all_suspended_after(&scenario, "paid/submit")
    });
    kill(child);
    let tokens = scenario.tokens();
    // Completed while no process drives the file.
    for (i, id) in ids().iter().enumerate() {
        let token = &tokens[id.as_str()][0];
        rt.block_on(client.complete_callback(token, serde_json::json!({"run": i})))
            .unwrap();
    }
    let outputs = finish(scenario.spawn(false));
    assert_eq!(outputs, (0..RUNS).map(expected).collect::<Vec<_>>());
    // Each side effect once per run, and one submit call: exactly as without the kills.
    let log = scenario.log();
    for id in ids() {
        let lines: Vec<&str> = log
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{id} ")))
            .map(|rest| rest.split(' ').next().unwrap())
            .collect();
        assert_eq!(lines, ["before", "submit", "after"], "{id}: {log:?}");
    }
}

#[test]
fn a_submit_function_killed_before_its_call_was_journaled_runs_again_with_the_same_token() {
    let scenario = Scenario::new();
    let child = scenario.spawn(true);
    until("every submit function was called", || {
        signal_the_waiting_runs(&scenario);
        scenario.tokens().len() == RUNS
    });
    kill(child);
    let rt = runtime();
    let client = scenario.client();
    let child = scenario.spawn(false);
    until("every run waits for its callback", || {
        all_suspended_after(&scenario, "paid/submit")
    });
    let tokens = scenario.tokens();
    for (i, id) in ids().iter().enumerate() {
        let calls = &tokens[id.as_str()];
        assert_eq!(
            calls.len(),
            2,
            "{id}: called again after the kill: {calls:?}"
        );
        assert_eq!(calls[0], calls[1], "{id}: the same token both times");
        rt.block_on(client.complete_callback(&calls[0], serde_json::json!({"run": i})))
            .unwrap();
    }
    kill(child);
    // The signals were sent before the submit step: the runs were already past them.
    let outputs = finish(scenario.spawn(false));
    assert_eq!(outputs, (0..RUNS).map(expected).collect::<Vec<_>>());
}

/// Sends each run that waits for its signal (and has none yet) its signal, so that the runs
/// reach their submit functions.
fn signal_the_waiting_runs(scenario: &Scenario) {
    let Ok(store) = SqliteStore::open_client(&scenario.db) else {
        return;
    };
    let client = Client::open(store);
    runtime().block_on(async {
        for (i, id) in ids().iter().enumerate() {
            if let Ok(info) = client.status(id).await {
                if info.status == RunStatus::Suspended {
                    // Waiting for its signal, which it has not been sent yet.
                    let inbox = SqliteStore::open_client(&scenario.db).unwrap();
                    let sent = durable::Store::load_inbox(&inbox, id).await.unwrap();
                    if sent.is_empty() {
                        client
                            .signal(approval_flow, id, "approved", format!("yes-{i}"))
                            .await
                            .unwrap();
                    }
                }
            }
        }
    })
}
