//! The examples whose runs wait for another process: `approval` (a signal sent by a second
//! invocation) and `payment_webhook` (a callback completed or failed by a second invocation).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod bounded;
use bounded::{output_within, wait_within, Lines};

const APPROVAL: &str = env!("CARGO_BIN_EXE_approval");
const PAYMENT: &str = env!("CARGO_BIN_EXE_payment_webhook");

fn scratch_db(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("example-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm", ".durable-marker"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    path
}

fn command(bin: &str, db: &Path) -> Command {
    let mut command = Command::new(bin);
    command.env("DURABLE_EXAMPLE_DB", db);
    command
}

/// `bin start`, running, with the line its output reached.
struct Started {
    child: Child,
    /// The line that contained the marker.
    line: String,
    /// Its output, read as it comes.
    lines: Lines,
    /// What its run waits for, to say so if it never ends.
    waits_for: &'static str,
}

impl Started {
    /// Starts `bin start` and reads its output up to a line containing `marker`; its run
    /// then `waits_for` something a second invocation sends.
    // The child is waited for by `finish`, or here when its output ends early.
    #[allow(clippy::zombie_processes)]
    fn until(bin: &str, db: &Path, marker: &str, waits_for: &'static str) -> Self {
        let mut child = command(bin, db)
            .arg("start")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::of(child.stdout.take().unwrap());
        match lines.until(marker) {
            Some(line) => Started {
                child,
                line,
                lines,
                waits_for,
            },
            None => {
                let status = wait_within(&mut child, "its end", String::new);
                panic!(
                    "`{bin} start` ended ({status:?}) before `{marker}`: {:?}",
                    lines.seen
                );
            }
        }
    }

    /// Waits for its end: whether it succeeded, and all it printed.
    fn finish(mut self) -> (bool, String) {
        let lines = &mut self.lines;
        let ok = wait_within(&mut self.child, self.waits_for, || {
            format!("{:?}", lines.so_far())
        })
        .success();
        (ok, self.lines.rest().join("\n"))
    }
}

fn run(command: &mut Command) -> (bool, String, String) {
    let out = output_within(command, "the message it sends to be stored");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn approval_waits_for_the_signal_a_second_invocation_sends() {
    let db = scratch_db("approval");
    let started = Started::until(
        APPROVAL,
        &db,
        "waiting for approval",
        "its run's signal `approved`",
    );
    let id = started
        .line
        .split("approval approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {:?}", started.line))
        .to_owned();
    // A misspelt run id is refused, and says so.
    let (ok, _, stderr) = run(command(APPROVAL, &db).args(["approve", "no-such-run", "ann"]));
    assert!(!ok);
    assert!(
        stderr.contains("cannot send signal `approved` to run no-such-run: no run with this id"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = run(command(APPROVAL, &db).args(["approve", &id, "ann"]));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("approved run {id} as ann")),
        "{stdout}"
    );
    let (ok, out) = started.finish();
    assert!(ok, "{out}");
    assert!(out.contains("paid, approved by ann"), "{out}");
    assert!(out.contains("received #1: \"ann\""), "{out}");
    // The run finished: a late approval is refused.
    let (ok, _, stderr) = run(command(APPROVAL, &db).args(["approve", &id, "bob"]));
    assert!(!ok);
    assert!(
        stderr.contains("the run has finished (completed)"),
        "{stderr}"
    );
}

fn token_of(line: &str) -> String {
    line.split("token=")
        .nth(1)
        .unwrap_or_else(|| panic!("no token in {line:?}"))
        .trim()
        .to_owned()
}

#[test]
fn payment_webhook_waits_for_the_callback_a_second_invocation_completes() {
    let db = scratch_db("payment-complete");
    let started = Started::until(PAYMENT, &db, "token=", "its run's callback `paid`");
    let token = token_of(&started.line);
    let (ok, stdout, stderr) = run(command(PAYMENT, &db).args(["complete", &token, "4200"]));
    assert!(ok, "{stdout}{stderr}");
    // A token is good once.
    let (ok, _, stderr) = run(command(PAYMENT, &db).args(["complete", &token, "4200"]));
    assert!(!ok);
    assert!(
        stderr.contains("a token is good once") || stderr.contains("its tokens are good no more"),
        "{stderr}"
    );
    let (ok, out) = started.finish();
    assert!(ok, "{out}");
    assert!(
        out.contains("paid {\"amount\":4200}, shipped: true"),
        "{out}"
    );
}

#[test]
fn payment_webhook_fails_the_run_when_the_callback_fails() {
    let db = scratch_db("payment-fail");
    let started = Started::until(PAYMENT, &db, "token=", "its run's callback `paid`");
    let token = token_of(&started.line);
    let (ok, stdout, stderr) = run(command(PAYMENT, &db).args(["fail", &token, "card declined"]));
    assert!(ok, "{stdout}{stderr}");
    let (ok, out) = started.finish();
    assert!(!ok, "{out}");
    assert!(
        out.contains("failed: callback `paid` failed: card declined"),
        "{out}"
    );
}

#[test]
fn approval_approved_while_no_start_runs_finishes_on_the_next_start() {
    let db = scratch_db("approval-killed");
    let mut started = Started::until(
        APPROVAL,
        &db,
        "waiting for approval",
        "its run's signal `approved`",
    );
    let id = started
        .line
        .split("approval approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {:?}", started.line))
        .to_owned();
    started.child.kill().unwrap();
    let _ = started.finish();
    let (ok, stdout, stderr) = run(command(APPROVAL, &db).args(["approve", &id, "ann"]));
    assert!(ok, "{stdout}{stderr}");
    // The next start drives the approved run to its end instead of starting another (which
    // would wait for its own approval: the bound fails the test then).
    let (ok, out, stderr) = run(command(APPROVAL, &db).arg("start"));
    assert!(ok, "{out}{stderr}");
    assert!(
        out.contains(&format!("run {id} was unfinished: resumed it")),
        "{out}"
    );
    assert!(out.contains(&format!("approval approve {id} ")), "{out}");
    assert!(out.contains("paid, approved by ann"), "{out}");
    // No other run: every id it names is the approved run's (the kill may have come before
    // `prepare_request` committed, so that step may run again in the same run).
    let ids: Vec<&str> = out
        .split("run ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|word| word.len() == id.len() && word.contains('-'))
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|other| *other == id),
        "another run started:\n{out}"
    );
}
