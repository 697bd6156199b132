//! Runs the `workers` example: three worker processes on one PostgreSQL database share the
//! runs a client starts.

use std::process::Command;

/// Runs the command to its end, asserts it succeeded and returns its stdout.
fn stdout_of(command: &mut Command) -> String {
    let output = command.output().expect("the example starts");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    assert!(
        output.status.success(),
        "the example failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn workers_spread_runs_over_worker_processes_on_postgres() {
    let Some(url) = std::env::var("DURABLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED workers_spread_runs_over_worker_processes_on_postgres: \
             DURABLE_TEST_POSTGRES_URL is not set (see the README)"
        );
        return;
    };
    let schema = format!("durable_example_{}", std::process::id());
    let out = stdout_of(
        Command::new(env!("CARGO_BIN_EXE_workers"))
            .args(["3", "60"])
            .env("DURABLE_EXAMPLE_POSTGRES_URL", &url)
            .env("DURABLE_EXAMPLE_SCHEMA", &schema),
    );
    // Leave nothing behind.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
    });
    assert!(out.contains("3 worker processes started"), "{out}");
    assert!(out.contains("60 runs completed in"), "{out}");
    let per_worker: Vec<usize> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("worker-"))
        .map(|l| l.split(": ").nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 60, "{out}");
    assert!(
        per_worker.len() >= 2,
        "runs spread over several workers:\n{out}"
    );
    assert!(!out.contains("client:"), "the client drove nothing:\n{out}");
}
