//! Runs each example binary and checks what it prints; kills the onboarding example mid-run
//! and checks that the next start resumes it without re-running finished steps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod bounded;
use bounded::{output_within, Lines};

/// A scratch database path for one test, with any leftovers of an earlier run removed.
fn scratch_db(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("example-{name}-{}.db", std::process::id()));
    remove_db(&path);
    path
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// An example's command with fast sleeps and no inherited database setting.
fn example(bin: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .env("DURABLE_EXAMPLE_FAST", "1")
        .env_remove("DURABLE_EXAMPLE_DB");
    command
}

/// Runs the command to its end (its runs' ends, bounded), asserts it succeeded and returns
/// its stdout.
fn stdout_of(command: &mut Command) -> String {
    let output = output_within(command, "its runs to end");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    assert!(
        output.status.success(),
        "the example failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

const ONBOARDING: &str = env!("CARGO_BIN_EXE_onboarding");

#[test]
fn onboarding_runs_every_step_once_and_retries_the_email() {
    let db = scratch_db("onboarding");
    let out = stdout_of(example(ONBOARDING).arg(&db));
    assert!(out.contains("starting a new run"), "{out}");
    for step in [
        "create_user",
        "provision_workspace",
        "setup_billing",
        "complete",
    ] {
        assert_eq!(
            count(&out, &format!("{step}: started")),
            1,
            "{step}:\n{out}"
        );
        assert_eq!(
            count(&out, &format!("{step}: finished")),
            1,
            "{step}:\n{out}"
        );
    }
    assert!(
        out.contains("send_welcome_email: failed (attempt 1)"),
        "{out}"
    );
    assert!(
        out.contains("send_welcome_email: finished (attempt 2)"),
        "{out}"
    );
    assert!(out.contains("completed; final state:"), "{out}");
    assert!(out.contains("\"onboarded\": true"), "{out}");
    assert!(
        out.contains("attempt failed: mail server timed out"),
        "{out}"
    );

    // A second start finds nothing to resume and starts a new run.
    let again = stdout_of(example(ONBOARDING).arg(&db));
    assert!(
        again.contains("no unfinished run (1 finished in this file): starting a new run"),
        "{again}"
    );
    assert!(!again.contains("resuming"), "{again}");
    remove_db(&db);
}

#[test]
fn onboarding_killed_mid_run_resumes_without_rerunning_finished_steps() {
    let db = scratch_db("onboarding-resume");
    // Real sleeps (a second a step), so the parallel block is still running when killed.
    let mut child = Command::new(ONBOARDING)
        .arg(&db)
        .env_remove("DURABLE_EXAMPLE_FAST")
        .env_remove("DURABLE_EXAMPLE_DB")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let mut lines = Lines::of(child.stdout.take().unwrap());
    lines.until_where("line saying a step of the parallel block started", |line| {
        ["send_welcome_email", "provision_workspace", "setup_billing"]
            .iter()
            .any(|step| line.contains(&format!("{step}: started")))
    });
    child.kill().expect("kill the example");
    child.wait().expect("reap the example");
    let seen = lines.seen.join("\n");
    assert!(seen.contains("create_user: finished"), "{seen}");
    assert!(!seen.contains("completed"), "killed too late:\n{seen}");

    let out = stdout_of(example(ONBOARDING).arg(&db));
    assert!(out.contains("resuming run"), "{out}");
    assert!(!out.contains("starting a new run"), "{out}");
    assert!(
        !out.contains("create_user: started"),
        "a finished step ran again:\n{out}"
    );
    assert_eq!(count(&out, "complete: finished"), 1, "{out}");
    assert!(out.contains("completed; final state:"), "{out}");
    assert!(out.contains("\"user_id\": 42"), "{out}");
    // The journal holds create_user once.
    let history = out.split("history of run").nth(1).expect("a history");
    assert_eq!(count(history, " create_user "), 1, "{history}");
    remove_db(&db);
}

#[test]
fn dashboard_fetches_all_three_sources() {
    let out = stdout_of(&mut example(env!("CARGO_BIN_EXE_dashboard")));
    for step in [
        "init",
        "fetch_orders",
        "fetch_metrics",
        "fetch_notifications",
        "build_dashboard",
    ] {
        assert_eq!(
            count(&out, &format!("{step}: started")),
            1,
            "{step}:\n{out}"
        );
        assert_eq!(
            count(&out, &format!("{step}: finished")),
            1,
            "{step}:\n{out}"
        );
    }
    assert!(out.contains("\"visits\": 1234"), "{out}");
    assert!(out.contains("Your invoice is ready"), "{out}");
    assert!(out.contains("the run took"), "{out}");
}

#[test]
fn notify_all_runs_every_branch_and_names_the_failed_step() {
    let out = stdout_of(&mut example(env!("CARGO_BIN_EXE_notify_all")));
    let (failing, succeeding) = out
        .split_once("--- a run with the SMS gateway up")
        .expect("two runs");
    // The failing run: every branch ran to its end, the error names send_sms, and the step
    // after the block did not run.
    assert!(
        failing.contains("send_email: finished (attempt 3)"),
        "{failing}"
    );
    assert!(failing.contains("send_push: finished"), "{failing}");
    assert!(
        failing.contains("send_sms: failed (attempt 1): SMS gateway unreachable"),
        "{failing}"
    );
    assert!(
        failing.contains("failed: parallel block (send_email, send_sms, send_push) failed"),
        "{failing}"
    );
    assert!(
        failing.contains("failed step `send_sms` after 1 attempt(s)"),
        "{failing}"
    );
    assert!(!failing.contains("log_results: started"), "{failing}");
    // The succeeding run reaches log_results.
    assert!(
        succeeding.contains("send_email: finished (attempt 3)"),
        "{succeeding}"
    );
    assert!(succeeding.contains("send_sms: finished"), "{succeeding}");
    assert!(succeeding.contains("log_results: finished"), "{succeeding}");
    assert!(
        succeeding.contains("completed; final state:"),
        "{succeeding}"
    );
    assert!(!succeeding.contains("error:"), "{succeeding}");
}

#[test]
fn order_processing_without_a_directory_prints_the_graph_and_writes_nothing() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("order-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = stdout_of(example(env!("CARGO_BIN_EXE_order_processing")).current_dir(&dir));
    assert!(
        out.contains("check_inventory --> reserve_inventory"),
        "{out}"
    );
    let written: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        written.is_empty(),
        "wrote into the current directory: {written:?}"
    );
}

#[test]
fn order_processing_takes_about_its_critical_path_and_writes_the_graph() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Real durations (not the fast mode's tenth): the 300 ms between the critical path and
    // the sum leave room for a loaded machine.
    let out = stdout_of(
        example(env!("CARGO_BIN_EXE_order_processing"))
            .env("DURABLE_EXAMPLE_FAST", "0")
            .arg(&dir),
    );
    assert!(out.contains("send_email: finished"), "{out}");
    // The critical path is 750 ms and the sum of the steps 1050 ms.
    let took: u64 = out
        .split("took ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .expect("a duration");
    assert!(
        took >= 750,
        "took {took} ms, less than the critical path\n{out}"
    );
    // The two steps after validate_order run at once: both start before either finishes
    // (their 200 and 300 ms of work leave a busy machine room to start the second).
    let at = |line: &str| {
        out.find(line)
            .unwrap_or_else(|| panic!("no `{line}` in\n{out}"))
    };
    for started in ["check_inventory: started", "process_payment: started"] {
        assert!(
            at(started) < at("check_inventory: finished"),
            "the dag ran its steps one after another\n{out}"
        );
    }
    let mermaid = std::fs::read_to_string(dir.join("order_processing.mmd")).unwrap();
    assert!(
        mermaid.contains("check_inventory --> reserve_inventory"),
        "{mermaid}"
    );
    let dot = std::fs::read_to_string(dir.join("order_processing.dot")).unwrap();
    assert!(
        dot.contains("\"create_shipment\" -> \"send_email\";"),
        "{dot}"
    );
}

#[test]
fn bulk_notify_tolerates_the_bounces() {
    let out = stdout_of(&mut example(env!("CARGO_BIN_EXE_bulk_notify")));
    assert!(
        out.contains("campaign completed (every item ran to its end): 10 sent, 2 failed of 12"),
        "{out}"
    );
    assert!(
        out.contains("user4@bounce.invalid: mailbox does not exist"),
        "{out}"
    );
}

#[test]
fn rate_limited_batch_retries_only_the_failed_calls() {
    let out = stdout_of(&mut example(env!("CARGO_BIN_EXE_rate_limited_batch")));
    assert!(
        out.contains("attempt 1: 36 imported, 4 failed, at most 5 calls at once"),
        "{out}"
    );
    assert!(out.contains("imported 40 rows with 44 API calls"), "{out}");
}

#[test]
fn tenant_sync_syncs_every_user_of_every_tenant() {
    let db = scratch_db("tenant_sync");
    let out = stdout_of(example(env!("CARGO_BIN_EXE_tenant_sync")).arg(&db));
    for line in [
        "tenant acme: 4 of 4 users synced",
        "tenant initech: 2 of 2",
        "tenant umbrella: 1 of 1",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    assert!(
        out.contains("tenants_synced[0]/users_synced[3]/sync_user"),
        "{out}"
    );
    remove_db(&db);
}

#[test]
fn reminder_sleeps_through_an_engine_restart_and_sends_once_on_time() {
    let db = scratch_db("reminder");
    let out = stdout_of(example(env!("CARGO_BIN_EXE_reminder")).arg(&db));
    for step in ["schedule", "send_reminder"] {
        assert_eq!(
            count(&out, &format!("{step}: started")),
            1,
            "{step}:\n{out}"
        );
    }
    assert!(out.contains("the run sleeps: status suspended"), "{out}");
    assert!(out.contains("new engine: the run is suspended"), "{out}");
    assert!(out.contains("sent = true"), "{out}");
    assert!(out.contains("until_due"), "{out}");
    assert!(out.contains("sleep started, wakes at"), "{out}");
    // Sent after it was due, and not long after (a heartbeat is 10 s): the line reads
    // "sent, N ms after it was due".
    let lag: u64 = out
        .split("sent, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the lag is printed");
    assert!(lag < 5_000, "sent {lag} ms late:\n{out}");
    remove_db(&db);
}
