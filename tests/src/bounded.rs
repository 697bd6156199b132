//! Bounded waits on runs: a test waits for a run's end at most [`RUN_BOUND`] of real time, and
//! otherwise fails saying which run it waited for and what that run was waiting for, so an
//! engine that loses a wake-up fails its test instead of hanging the suite (and CI with it).
//!
//! The bound is real time, not tokio's: on a paused clock (`in_paused_runtime`) a run may sleep
//! for hours of tokio time in a few milliseconds, and must still end well within the bound.
//! It is generous, since a test must pass on a busy machine; a run that has not ended in a
//! minute waits for something that will not come.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use durable::{Client, ClientRun, Engine, Error, RunHandle, RunId, State, StepEvent, Workflow};

/// How long a test waits for a run to end.
pub const RUN_BOUND: Duration = Duration::from_secs(60);

/// `engine.wait(id)`, failing the test if the run has not ended within [`RUN_BOUND`].
pub async fn wait_for_run<S: State>(engine: &Engine, id: &RunId) -> Result<S, Error> {
    bounded(Reader::Engine(engine), id, engine.wait(id)).await
}

/// `run.wait()`, failing the test if the run has not ended within [`RUN_BOUND`]; `engine` is
/// the one that started it (it tells what the run waits for).
pub async fn wait_for_handle<W: Workflow>(
    engine: &Engine,
    run: &RunHandle<W>,
) -> Result<W::State, Error> {
    bounded(Reader::Engine(engine), run.id(), run.wait()).await
}

/// `engine.run(workflow, input)`: starts a run and waits for its end, failing the test if it
/// has not ended within [`RUN_BOUND`].
pub async fn run_to_end<W: Workflow>(
    engine: &Engine,
    workflow: W,
    input: W::State,
) -> Result<W::State, Error> {
    let run = engine.start(workflow, input).await?;
    wait_for_handle(engine, &run).await
}

/// `client.wait(id)`, failing the test if the run has not ended within [`RUN_BOUND`].
pub async fn client_wait_for_run<S: State>(client: &Client, id: &RunId) -> Result<S, Error> {
    bounded(Reader::Client(client), id, client.wait(id)).await
}

/// What reads the run when it did not end: an engine also tells why it does not drive it.
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    /// The engine the test drives the run with.
    Engine(&'a Engine),
    /// A client of the store.
    Client(&'a Client),
}

/// `run.wait()` of a run a client started, failing the test if the run has not ended within
/// [`RUN_BOUND`].
pub async fn client_wait_for_handle<W: Workflow>(
    client: &Client,
    run: &ClientRun<W>,
) -> Result<W::State, Error> {
    bounded(Reader::Client(client), run.id(), run.wait()).await
}

/// `wait`, a wait for the end of run `id`, unless [`RUN_BOUND`] of real time passes first:
/// then the test fails, telling what the run was waiting for (read through `reader`).
pub async fn bounded<T>(reader: Reader<'_>, id: &RunId, wait: impl Future<Output = T>) -> T {
    match within_real_time(RUN_BOUND, wait).await {
        Some(out) => out,
        None => panic!("{}", not_ended(reader, id).await),
    }
}

/// `fut`'s output, or `None` when `bound` of real time passes first. A thread keeps the time,
/// so a paused tokio clock does not move it; it ends as soon as `fut` does.
pub async fn within_real_time<F: Future>(bound: Duration, fut: F) -> Option<F::Output> {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let (expire, expired) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(bound) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = expire.send(());
        }
    });
    let out = tokio::select! {
        out = fut => Some(out),
        _ = expired => None,
    };
    drop(done);
    out
}

/// "run X of workflow `W` did not end within 60 s: it is suspended, and was waiting for
/// `approved`: a message, until T ms", from what the
/// store holds: its status, why the engine does not drive it, and the items of its journal
/// that started and did not end.
async fn not_ended(reader: Reader<'_>, id: &RunId) -> String {
    let mut text = format!("run {id}");
    let status = match reader {
        Reader::Engine(engine) => engine.status(id).await,
        Reader::Client(client) => client.status(id).await,
    };
    let info = match status {
        Ok(info) => info,
        Err(e) => {
            return format!(
                "{text} did not end within {} s, and its status cannot be read: {e}",
                RUN_BOUND.as_secs()
            )
        }
    };
    let _ = write!(
        text,
        " of workflow `{}` did not end within {} s: it is {}",
        info.workflow,
        RUN_BOUND.as_secs(),
        info.status.as_str()
    );
    if let Some(why) = &info.stalled {
        let _ = write!(text, " and not driven by this engine ({why})");
    }
    let history = match reader {
        Reader::Engine(engine) => engine.history(id).await,
        Reader::Client(client) => client.history(id).await,
    };
    let history = match history {
        Ok(history) => history,
        Err(e) => return format!("{text}, and its journal cannot be read: {e}"),
    };
    // The items that started something (a wait, a sleep, a child, an attempt) and have no
    // later entry that ends it.
    let mut open: Vec<(String, String)> = Vec::new();
    for record in &history {
        open.retain(|(step, _)| *step != record.step);
        let waits = match &record.event {
            StepEvent::Waiting { deadline: None } => "a message, with no deadline".to_owned(),
            StepEvent::Waiting { deadline: Some(at) } => format!("a message, until {at} ms"),
            StepEvent::SleepStarted { wake_at } => format!("its wake time {wake_at} ms"),
            StepEvent::ChildStarted { child } => format!("the end of its child run {child}"),
            StepEvent::CallbackCreated { .. } => "its callback's submit function".to_owned(),
            StepEvent::AttemptFailed { retry_at, .. } => format!("a retry at {retry_at} ms"),
            _ => continue,
        };
        open.push((record.step.clone(), waits));
    }
    text.push_str(", and was waiting for ");
    if open.is_empty() {
        let last = history.last().map_or("none".to_owned(), |r| {
            format!("entry {} of step `{}`: {:?}", r.seq, r.step, r.event)
        });
        let _ = write!(
            text,
            "nothing its journal tells ({} entries; the last: {last})",
            history.len()
        );
    } else {
        let items: Vec<String> = open
            .iter()
            .map(|(step, waits)| format!("`{step}`: {waits}"))
            .collect();
        text.push_str(&items.join("; "));
    }
    text
}
