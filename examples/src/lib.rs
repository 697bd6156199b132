//! Shared helpers of the runnable examples in `src/bin/`: where the database lives, how long a
//! step pretends to work, and how steps and histories are printed.
//!
//! Two environment variables tune every example:
//! - `DURABLE_EXAMPLE_DB`: the SQLite file (a first command-line argument wins over it);
//! - `DURABLE_EXAMPLE_FAST=1`: every simulated wait is ten times shorter (the tests set it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use durable::{StepContext, StepEvent, StepRecord};

/// The SQLite file to use: the first command-line argument, else `$DURABLE_EXAMPLE_DB`, else
/// `default` (relative to the current directory).
///
/// `-h` / `--help` prints the usage and exits; any other argument starting with `-`, or a
/// second argument, is an error (exit code 2), so a typo never becomes a database file.
pub fn db_path(default: &str) -> PathBuf {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map_or_else(|| p.clone(), |n| n.to_owned())
        })
        .unwrap_or_default();
    let program = program.to_string_lossy();
    let usage = format!(
        "usage: {program} [DATABASE]\n\n  DATABASE  the SQLite file to keep the runs in \
         (default: ./{default}, or $DURABLE_EXAMPLE_DB)\n  -h, --help  print this help"
    );
    let rest: Vec<_> = args.collect();
    if let Some(first) = rest.first() {
        let text = first.to_string_lossy();
        if text == "-h" || text == "--help" {
            println!("{usage}");
            std::process::exit(0);
        }
        if text.starts_with('-') {
            eprintln!("error: unknown option `{text}`\n{usage}");
            std::process::exit(2);
        }
    }
    if rest.len() > 1 {
        eprintln!(
            "error: unexpected argument `{}`\n{usage}",
            rest[1].to_string_lossy()
        );
        std::process::exit(2);
    }
    rest.into_iter()
        .next()
        .or_else(|| std::env::var_os("DURABLE_EXAMPLE_DB"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Whether `DURABLE_EXAMPLE_FAST` is set (to anything but `0` or nothing).
pub fn fast() -> bool {
    std::env::var("DURABLE_EXAMPLE_FAST").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `duration`, or a tenth of it in fast mode.
pub fn scaled(duration: Duration) -> Duration {
    if fast() {
        duration / 10
    } else {
        duration
    }
}

/// Pretends to work for [`scaled`]`(duration)`.
pub async fn work(duration: Duration) {
    tokio::time::sleep(scaled(duration)).await;
}

/// Prints a line prefixed with the time since the first call, e.g. `[ 1.003s] message`.
pub fn say(message: impl std::fmt::Display) {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    println!("[{:>6.3}s] {message}", elapsed.as_secs_f64());
}

/// Prints `<step>: started (attempt N)`.
pub fn started(ctx: &StepContext) {
    say(format!(
        "{}: started (attempt {})",
        ctx.step(),
        ctx.attempt()
    ));
}

/// Prints `<step>: finished (attempt N)`.
pub fn finished(ctx: &StepContext) {
    say(format!(
        "{}: finished (attempt {})",
        ctx.step(),
        ctx.attempt()
    ));
}

/// Prints `<step>: failed (attempt N): <error>`.
pub fn failed(ctx: &StepContext, error: impl std::fmt::Display) {
    say(format!(
        "{}: failed (attempt {}): {error}",
        ctx.step(),
        ctx.attempt()
    ));
}

/// A time the engine reports (Unix milliseconds) as people read it: RFC 3339 in UTC, to the
/// millisecond.
pub fn time(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{unix_ms} ms after 1970"), |t| format!("{t:.3}"))
}

/// Prints a run's journal (from `Engine::history`) as a table: step, attempt, event.
pub fn print_history(history: &[StepRecord]) {
    println!("  {:<4} {:<22} {:<8} event", "seq", "step", "attempt");
    for record in history {
        let event = match &record.event {
            StepEvent::Completed { .. } => "completed".to_owned(),
            StepEvent::AttemptFailed { error, .. } => format!("attempt failed: {error}"),
            StepEvent::Failed {
                error,
                optional: false,
            } => format!("failed: {error}"),
            StepEvent::Failed {
                error,
                optional: true,
            } => format!("failed (optional, went on): {error}"),
            StepEvent::SleepStarted { wake_at } => {
                format!("sleep started, wakes at {}", time(*wake_at))
            }
            StepEvent::Resumed { attempts } => {
                format!("resumed after {attempts} failed attempts")
            }
            StepEvent::Waiting { deadline: None } => "waiting".to_owned(),
            StepEvent::Waiting { deadline: Some(at) } => {
                format!("waiting (times out at {})", time(*at))
            }
            StepEvent::Received { inbox, value } => format!("received #{inbox}: {value}"),
            StepEvent::CallbackCreated { .. } => "callback token made".to_owned(),
            StepEvent::ChildStarted { child } => format!("child run {child} started"),
            // `StepEvent` is non-exhaustive: an event of a later version prints as it is.
            other => format!("{other:?}"),
        };
        println!(
            "  {:<4} {:<22} {:<8} {event}",
            record.seq, record.step, record.attempt
        );
    }
}

/// Ends `main`: prints an error with its chain of causes on one line (not `Debug`) and fails
/// the process.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
