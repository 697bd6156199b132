//! Bounded waits on example processes: a test waits for an example (whose run ends when the
//! process does) at most [`BOUND`], then kills it and fails saying what it waited for and what
//! the example printed, so an engine that loses a wake-up fails the test instead of hanging
//! the suite. Generous, since a test must pass on a busy machine.

// Each test file that includes this module uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a test waits for an example to end, or to print what it waits for.
pub const BOUND: Duration = Duration::from_secs(60);

/// `command.output()`, killing the process and failing the test if it has not ended within
/// [`BOUND`]; `what` says what its end waits for.
pub fn output_within(command: &mut Command, what: &str) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let status = wait_within(&mut child, what, || "(read only at its end)".to_owned());
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `child.wait()`, killing it and failing the test if it has not ended within [`BOUND`]; the
/// failure tells `what` it waited for and `so_far()`, what it printed.
pub fn wait_within(child: &mut Child, what: &str, so_far: impl FnOnce() -> String) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("the example's status") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the example did not end within {} s: it was waiting for {what}; its output: {}",
                BOUND.as_secs(),
                so_far()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines a process prints, read on a thread of their own, so a test can wait for one
/// with a bound.
pub struct Lines {
    lines: Receiver<String>,
    /// Every line received so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `output` line by line.
    pub fn of(output: impl Read + Send + 'static) -> Self {
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line containing `marker`, waiting at most [`BOUND`]; `None` when the
    /// output ended without one. Fails the test when the bound passes first.
    pub fn until(&mut self, marker: &str) -> Option<String> {
        self.until_where(&format!("a line with `{marker}`"), |line| {
            line.contains(marker)
        })
    }

    /// The first line that is `what` (`found` says), as [`until`](Self::until) waits.
    pub fn until_where(&mut self, what: &str, found: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if found(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the example printed no {what} within {} s; its output: {:?}",
                    BOUND.as_secs(),
                    self.seen
                ),
            }
        }
    }

    /// Every line received so far, without waiting.
    pub fn so_far(&mut self) -> &[String] {
        self.seen.extend(self.lines.try_iter());
        &self.seen
    }

    /// Every line, up to the end of the output (the process has ended).
    pub fn rest(mut self) -> Vec<String> {
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// Reads all of `output` on a thread.
fn drain(mut output: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = output.read_to_end(&mut bytes);
        bytes
    })
}
