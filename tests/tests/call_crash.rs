//! A real crash (SIGKILL) while child runs run: after the restart every parent completes
//! exactly as without the kill, attached to the one child it started (no second child), and
//! every step that had finished ran once (only the step in flight at the kill runs again).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable::store::sqlite::SqliteStore;
use durable::{Client, RunStatus};
use durable_tests::scratch_dir;

const CHILD: &str = env!("CARGO_BIN_EXE_call_crash_child");
const RUNS: usize = 3;

fn spawn(db: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(CHILD)
        .args([db.to_str().unwrap(), &RUNS.to_string()])
        .env("CRASH_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// How often each `<run> <step> <what>` line was logged.
fn log_counts(log: &std::path::Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

#[test]
fn a_process_killed_while_children_run_completes_every_parent_with_one_child_each() {
    let dir = scratch_dir();
    let (db, log) = (dir.join("runs.db"), dir.join("log"));
    let child = spawn(&db, &log);
    // Every child is inside its `charge` step.
    let limit = Instant::now() + Duration::from_secs(30);
    while (0..RUNS)
        .any(|i| !log_counts(&log).contains_key(&format!("order-{i}/payment charge start")))
    {
        assert!(Instant::now() < limit, "the children never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = child;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    std::fs::write(format!("{}.release", db.display()), "").unwrap();
    let out = spawn(&db, &log).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the restarted process failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, output) in outputs.iter().enumerate() {
        let expected = serde_json::json!({
            "payment": { "n": i, "charged": i * 10, "did_receipt": true },
            "did_after": true,
        });
        assert_eq!(output, &expected, "order-{i}");
    }
    assert_eq!(outputs.len(), RUNS);
    let counts = log_counts(&log);
    for i in 0..RUNS {
        let (parent, child) = (format!("order-{i}"), format!("order-{i}/payment"));
        // Finished before the kill, or after it: once each.
        for line in [
            format!("{parent} prepare done"),
            format!("{child} charge done"),
            format!("{child} receipt done"),
            format!("{parent} after done"),
        ] {
            assert_eq!(counts.get(&line), Some(&1), "{line}: {counts:?}");
        }
        // The step in flight at the kill ran again, in the same child.
        assert_eq!(
            counts.get(&format!("{child} charge start")),
            Some(&2),
            "{counts:?}"
        );
    }
    // One child per parent, each completed, each naming its parent.
    let client = Client::open(SqliteStore::open_client(&db).unwrap());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let runs = client.list(Default::default()).await.unwrap();
            assert_eq!(runs.len(), 2 * RUNS, "{runs:?}");
            for run in runs {
                assert_eq!(run.status, RunStatus::Completed, "{}", run.id);
                if run.workflow == "payment_flow" {
                    let parent = run.parent.expect("a child names its parent");
                    assert_eq!(format!("{}/payment", parent.run), run.id.as_str());
                }
            }
        });
}
