//! One step: replay it from the journal or run it attempt by attempt, with retries,
//! timeouts and panics, and journal each outcome; and the journal its sub-operations use.
//! Every attempt (and every sub-operation) starts only while the run's lease surely holds
//! (`RunTask::hold_lease`, `lease.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::changes;
use crate::clock::now_millis;
use crate::definition::{StepNode, StepOptions};
use crate::error::{Error, RunFailure, StepFailure};
use crate::panic::CatchUnwind;
use crate::step::{BoxFuture, ErasedStep, OpJournal, StepContext, StepError};
use crate::store::{Event, Finish, JournalEntry};

use super::{describe, path_in, Abort, Done, RunTask};

impl RunTask {
    pub(super) async fn exec_step(
        self: &Arc<Self>,
        step: &StepNode,
        input: Value,
        scope: &str,
    ) -> Result<Done, Abort> {
        let path: Arc<str> = path_in(scope, step.name).into();
        self.exec_step_at(path, &step.func, &step.options, input)
            .await
    }

    /// A step at journal path `path` (a step's, or a callback's submit function's).
    pub(super) async fn exec_step_at(
        self: &Arc<Self>,
        path: Arc<str>,
        func: &ErasedStep,
        options: &StepOptions,
        input: Value,
    ) -> Result<Done, Abort> {
        let name = &*path;
        let optional = options.optional;
        let history = self.history.get(name);
        if let Some(h) = history {
            if let Some(done) = &h.completed {
                return self.replay(name, done, input);
            }
            if let Some(message) = &h.unreadable {
                let message = format!("its journal entry {message}");
                return Err(Abort::Engine(self.bad_state(name, message)));
            }
            if let Some((attempts, error)) = &h.failed {
                let failure = StepFailure {
                    step: name.to_owned(),
                    attempts: *attempts,
                    error: error.clone(),
                };
                return skip_or_fail(optional, failure, input, 0);
            }
        }
        let policy = &options.retry;
        let mut attempt = history.map_or(0, |h| h.failed_attempts) + 1;
        if let Some(due) = history.and_then(|h| h.retry_at) {
            // The backoff survives a restart: wait only what is left of it.
            sleep_until(due).await;
        }
        // One journal handle for all the step's attempts.
        let ops: Arc<dyn OpJournal> = Arc::new(Ops(Arc::clone(self)));
        loop {
            let last = attempt >= policy.max_attempts;
            // The input is kept: the step's changes are journaled against it (instead of its
            // whole output: cheaper to write than serializing the output, and a few bytes when
            // it set one field), another attempt may need it, an optional step may hand it on.
            let state = input.clone();
            if self.journal.closing() {
                // The engine shuts down: no new attempt; the run resumes on the next start.
                return Err(Abort::Engine(Error::ShutDown {
                    run_id: self.run_id.clone(),
                }));
            }
            // The lease must hold as the attempt starts: checked last, so nothing is awaited
            // between the check and the step's first poll (see `lease.rs`).
            self.hold_lease().await?;
            let ctx = StepContext::with_journal(
                self.def.name(),
                self.run_id.clone(),
                Arc::clone(&path),
                attempt,
                Some(Arc::clone(&ops)),
            );
            let result = run_attempt(func, options.timeout, ctx, state)
                .await
                .and_then(|output| {
                    let event = match changes::encode(&input, &output) {
                        Some(changes) => changes.map(|changes| Event::StepChanged { changes }),
                        None => crate::encode::to_text(&output)
                            .map(|output| Event::StepCompleted { output }),
                    };
                    // Never journal what cannot be read back: the step fails instead (for good:
                    // the same input gives the same output again).
                    let event = event.map_err(|e| {
                        StepError::terminal(format!("the step's output cannot be journaled: {e}"))
                    })?;
                    Ok((output, event))
                });
            match result {
                Ok((output, event)) => {
                    drop(input);
                    // The run's output is its whole final state.
                    let finish = (self.final_step == Some(name))
                        .then(|| Finish::Completed(output.to_string()));
                    let entry = self.entry(name, attempt, event);
                    let seq = self.append(vec![entry], finish).await?;
                    return Ok(Done {
                        state: output,
                        seq,
                        skipped: Vec::new(),
                    });
                }
                Err(error) if error.is_terminal() || last => {
                    let event = Event::StepFailed {
                        error: error.message().to_owned(),
                    };
                    let entry = self.entry(name, attempt, event);
                    let seq = self.append(vec![entry], None).await?;
                    let failure = StepFailure {
                        step: name.to_owned(),
                        attempts: attempt,
                        error: error.message().to_owned(),
                    };
                    return skip_or_fail(optional, failure, input, seq);
                }
                Err(error) => {
                    // The next attempt is due `delay` from now, not from the commit below
                    // (which may take milliseconds): the same instant the journal records,
                    // and the same the resume path waits for.
                    let delay = policy.jittered_delay_after(attempt);
                    let due = tokio::time::Instant::now() + delay;
                    let failed_at = now_millis();
                    let event = Event::AttemptFailed {
                        error: error.message().to_owned(),
                        retry_at: failed_at + delay.as_millis() as u64,
                    };
                    // Stamped with the same instant: `retry_at - at` is the backoff exactly.
                    let entry = JournalEntry {
                        at: failed_at,
                        ..self.entry(name, attempt, event)
                    };
                    self.append(vec![entry], None).await?;
                    tokio::time::sleep_until(due).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The journal of a run as its steps' sub-operations use it.
struct Ops(Arc<RunTask>);

impl OpJournal for Ops {
    fn tasks(&self) -> Arc<crate::tasks::Tasks> {
        Arc::clone(&self.0.tasks)
    }

    fn lease_live(&self) -> bool {
        self.0.lease.live()
    }

    fn confirm_lease(&self) -> BoxFuture<'static, Result<(), StepError>> {
        let run = Arc::clone(&self.0);
        Box::pin(async move {
            run.lease
                .confirm()
                .await
                .map_err(|why| StepError::retryable(run.unconfirmed(why)))
        })
    }

    fn finished(&self, path: &str) -> Option<String> {
        self.0
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    fn record(
        &self,
        path: String,
        attempt: u32,
        outcome: Result<String, String>,
    ) -> BoxFuture<'static, Result<(), StepError>> {
        let run = Arc::clone(&self.0);
        Box::pin(async move {
            let event = match &outcome {
                Ok(output) => Event::OpCompleted {
                    output: output.clone(),
                },
                // Journaled for the history only: a failed operation runs again on a retry.
                Err(error) => Event::OpFailed {
                    error: error.clone(),
                },
            };
            let entry = run.entry(&path, attempt, event);
            run.append(vec![entry], None)
                .await
                .map_err(|abort| match abort {
                    Abort::Engine(error) => StepError::retryable(error),
                    Abort::Failed(failure) => StepError::retryable(failure.message),
                    Abort::Suspend { reason, .. } | Abort::Cancel { reason } => {
                        StepError::retryable(reason)
                    }
                })?;
            if let Ok(output) = outcome {
                run.ops
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path, output);
            }
            Ok(())
        })
    }
}

/// Runs one attempt of a step: panics and timeouts become failed attempts.
async fn run_attempt(
    func: &ErasedStep,
    timeout: Option<Duration>,
    ctx: StepContext,
    state: Value,
) -> Result<Value, StepError> {
    let attempt = CatchUnwind(func(ctx, state));
    let result = match timeout {
        // Dropping the attempt's future on timeout cancels it.
        Some(limit) => {
            let started = tokio::time::Instant::now();
            match tokio::time::timeout(limit, attempt).await {
                // An attempt that blocked its thread could not be cancelled while it ran: it
                // still took too long, so it fails like one that was cancelled.
                Ok(_) if started.elapsed() > limit => {
                    let took = started.elapsed();
                    return Err(StepError::retryable(format!(
                        "the attempt timed out after {limit:?}: it took {took:?}, blocking its \
                         thread so that it could not be cancelled on time (run blocking code \
                         with durable::step::blocking)"
                    )));
                }
                Ok(result) => result,
                Err(_) => {
                    return Err(StepError::retryable(format!(
                        "the attempt timed out after {limit:?}"
                    )))
                }
            }
        }
        None => attempt.await,
    };
    result.unwrap_or_else(|panic| Err(StepError::retryable(format!("the step panicked: {panic}"))))
}

/// A step's final failure: the run fails, unless the step is optional, when the workflow goes
/// on with the step's input.
pub(super) fn skip_or_fail(
    optional: bool,
    failure: StepFailure,
    input: Value,
    seq: u64,
) -> Result<Done, Abort> {
    if optional {
        Ok(Done {
            state: input,
            seq,
            skipped: vec![failure],
        })
    } else {
        Err(Abort::Failed(RunFailure {
            message: describe(&failure),
            steps: vec![failure],
        }))
    }
}

async fn sleep_until(due_millis: u64) {
    let now = now_millis();
    if due_millis > now {
        tokio::time::sleep(Duration::from_millis(due_millis - now)).await;
    }
}
