//! Conditions instead of timings: bounded waits that fail saying what they waited for, steps
//! that hold until the engine cancels them, and signals between a test and its steps.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use durable::{Engine, RunId, RunStatus, StepContext};

use crate::{events, note};

/// How long a test waits for anything before failing: long enough for a loaded machine, short
/// enough that a wrong engine fails the test instead of hanging it.
pub const BOUND: Duration = Duration::from_secs(60);

/// `fut`'s output, or a panic naming `what` after [`BOUND`].
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("waited {BOUND:?} for {what}, in vain"))
}

/// Waits (bounded) until `check` holds, looking every few milliseconds.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    bounded(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// Waits (bounded) until run `id` has recorded `event` (see [`note`]) `times` times.
pub async fn until_noted(id: &RunId, event: &str, times: usize) {
    let what = format!("run {id} to note `{event}` {times} time(s)");
    until(&what, || crate::count(id, event) >= times).await
}

/// Waits (bounded) until the store says run `id` has `status`.
pub async fn until_status(engine: &Engine, id: &RunId, status: RunStatus) {
    let what = format!("run {id} to be {status:?}");
    bounded(&what, async {
        loop {
            if engine.status(id).await.unwrap().status == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// Notes `dropped WHAT` when dropped: what a step's future holds to show it was cancelled.
pub struct DropNote(pub StepContext, pub String);

impl Drop for DropNote {
    fn drop(&mut self) {
        note(&self.0, format!("dropped {}", self.1));
    }
}

/// Like [`DropNote`], but its drop first blocks its thread for 200 ms, as the cancellation of
/// a step that closes a connection may: a cancelled step not yet dropped stays in the way long
/// enough to be seen. (The time is not what a test waits for: it only widens the window in
/// which a wrong engine shows.)
pub struct SlowDropNote(pub StepContext, pub String);

impl Drop for SlowDropNote {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(200));
        note(&self.0, format!("dropped {}", self.1));
    }
}

/// [`hold_until_cancelled`] whose cancellation takes a while ([`SlowDropNote`]).
pub async fn hold_until_cancelled_slowly(ctx: &StepContext, what: &str) {
    let _guard = SlowDropNote(ctx.clone(), what.to_owned());
    note(ctx, format!("holding {what}"));
    std::future::pending::<()>().await;
    note(ctx, format!("finished {what}"));
}

/// Notes `holding WHAT`, then never returns: only a cancellation ends it, which notes
/// `dropped WHAT`. Should it ever return, it notes `finished WHAT` first.
pub async fn hold_until_cancelled(ctx: &StepContext, what: &str) {
    let _guard = DropNote(ctx.clone(), what.to_owned());
    note(ctx, format!("holding {what}"));
    std::future::pending::<()>().await;
    note(ctx, format!("finished {what}"));
}

/// Tokens handed out by callback submit functions, per run: (run, callback path, token).
static TOKENS: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

/// Records a token a submit function was given.
pub fn hand_out(callback: &durable::callback::Callback) {
    let path = callback.context().step().to_owned();
    TOKENS.lock().unwrap().push((
        callback.run_id().to_string(),
        path,
        callback.token().to_owned(),
    ));
}

/// The tokens handed out to run `id` so far, in order, with the submit step's path; one per
/// callback (a retried submit function hands out its token again: kept once).
pub fn tokens(id: &RunId) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for (run, path, token) in TOKENS.lock().unwrap().iter() {
        if run == id.as_str() && !seen.iter().any(|(_, t)| t == token) {
            seen.push((path.clone(), token.clone()));
        }
    }
    seen
}

/// Every event noted for run `id` that starts with `prefix`.
pub fn noted_with(id: &RunId, prefix: &str) -> Vec<String> {
    events(id)
        .into_iter()
        .filter(|e| e.starts_with(prefix))
        .collect()
}
