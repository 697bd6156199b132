//! `wait_for NAME(...)` and `callback NAME = submit(...)`: waits for a message of the run's
//! inbox (a signal, a callback's completion).
//!
//! A wait journals its deadline once per attempt (`WaitStarted`, the absolute time, never the
//! duration), then looks in the run's inbox for a message it has not taken (oldest first); a
//! message taken is journaled with its inbox seq (`Received`), which is what marks it taken,
//! so that two waits of one name take two successive signals. With nothing there and time
//! left, the run suspends until the deadline; a delivery wakes it and the walk, replayed,
//! comes back here. A look that found nothing records how far it saw the inbox, and the
//! suspension carries it to the store, which leaves the run awake if a message came after
//! the look (`Finish::Suspended`'s `inbox_seen`): in the transaction that suspends, so a
//! crash can never come between the message and the wake. A deadline passed is a failed attempt, retried (a new wait) or failing
//! the item, which `optional` skips.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use crate::callback::{new_token, Callback};
use crate::clock::now_millis;
use crate::definition::{CallbackNode, StepOptions, WaitNode};
use crate::error::{Error, StepFailure};
use crate::step::ErasedStep;
use crate::store::{inbox_kinds, Event, InboxMessage, StoreError};

use super::step::skip_or_fail;
use super::{path_in, Abort, Done, RunTask, StepHistory};

impl RunTask {
    pub(super) async fn exec_wait(
        self: &Arc<Self>,
        wait: &WaitNode,
        input: Value,
        scope: &str,
    ) -> Result<Done, Abort> {
        let path = path_in(scope, wait.name);
        let optional = wait.options.optional;
        let history = self.history.get(&path);
        let input = match self.finished_wait(&path, wait.name, history, optional, input) {
            Ok(done) => return done,
            Err(input) => input,
        };
        let policy = &wait.options.retry;
        let timeout = wait.options.timeout;
        let mut attempt = history.map_or(0, |h| h.failed_attempts) + 1;
        let mut deadline = match history.and_then(|h| h.waiting) {
            Some((started, deadline)) if started == attempt => deadline,
            _ => {
                // A retry's wait runs from when the retry was due (a crash between the failed
                // attempt and the next wait's start does not move it), a first from now.
                let from = match history.and_then(|h| h.retry_at) {
                    Some(due) if attempt > 1 => due,
                    _ => now_millis(),
                };
                self.start_wait(&path, attempt, &wait.options, from).await?
            }
        };
        loop {
            if let Some(message) = self.take(&path, inbox_kinds::SIGNAL, wait.name).await? {
                let event = Event::Received {
                    inbox: message.seq,
                    value: message.payload.clone(),
                };
                let seq = self
                    .append(vec![self.entry(&path, attempt, event)], None)
                    .await?;
                return self.put(&path, wait.name, input, &message.payload, seq);
            }
            let now = now_millis();
            match deadline {
                Some(due) if due <= now => {
                    let error = format!(
                        "timed out after {:?} waiting for signal `{}`",
                        timeout.unwrap_or_default(),
                        wait.name
                    );
                    if attempt >= policy.max_attempts {
                        return self
                            .wait_failed(&path, attempt, error, optional, input)
                            .await;
                    }
                    let retry_at = now + policy.jittered_delay_after(attempt).as_millis() as u64;
                    let event = Event::AttemptFailed { error, retry_at };
                    self.append(vec![self.entry(&path, attempt, event)], None)
                        .await?;
                    attempt += 1;
                    // The next attempt waits anew, from when the retry is due.
                    deadline = self
                        .start_wait(&path, attempt, &wait.options, retry_at)
                        .await?;
                }
                _ => {
                    return Err(Abort::Suspend {
                        until: deadline,
                        reason: format!("waits for signal `{}` ({path})", wait.name),
                    })
                }
            }
        }
    }

    pub(super) async fn exec_callback(
        self: &Arc<Self>,
        callback: &CallbackNode,
        input: Value,
        scope: &str,
    ) -> Result<Done, Abort> {
        let path = path_in(scope, callback.name);
        let optional = callback.options.optional;
        let history = self.history.get(&path);
        let input = match self.finished_wait(&path, callback.name, history, optional, input) {
            Ok(done) => return done,
            Err(input) => input,
        };
        // The token is journaled before the submit function first runs: every attempt, and a
        // run resumed after a crash, hands out the same one.
        let token: Arc<str> = match history.and_then(|h| h.token.as_deref()) {
            Some(token) => token.into(),
            None => {
                let token = new_token(&self.run_id);
                let event = Event::CallbackCreated {
                    token: token.clone(),
                };
                self.append(vec![self.entry(&path, 1, event)], None).await?;
                token.into()
            }
        };
        let submit = Arc::clone(&callback.submit);
        let handed = Arc::clone(&token);
        let func: ErasedStep =
            Arc::new(move |ctx, state| submit(Callback::new(Arc::clone(&handed), ctx), state));
        let submit_options = StepOptions {
            retry: callback.options.retry,
            timeout: None,
            optional,
        };
        let submitted = self
            .exec_step_at(
                format!("{path}/submit").into(),
                &func,
                &submit_options,
                input,
            )
            .await?;
        if !submitted.skipped.is_empty() {
            // An optional callback whose submit function failed for good: skipped.
            return Ok(submitted);
        }
        let state = submitted.state;
        let deadline = match history.and_then(|h| h.waiting) {
            Some((_, deadline)) => deadline,
            None => {
                self.start_wait(&path, 1, &callback.options, now_millis())
                    .await?
            }
        };
        if let Some(message) = self.take(&path, inbox_kinds::CALLBACK, &token).await? {
            return match completion(&message.payload) {
                Ok(value) => {
                    let event = Event::Received {
                        inbox: message.seq,
                        value: value.clone(),
                    };
                    let seq = self.append(vec![self.entry(&path, 1, event)], None).await?;
                    self.put(&path, callback.name, state, &value, seq)
                }
                Err(error) => {
                    let error = format!("callback `{}` failed: {error}", callback.name);
                    self.wait_failed(&path, 1, error, optional, state).await
                }
            };
        }
        match deadline {
            Some(due) if due <= now_millis() => {
                let error = format!(
                    "timed out after {:?} waiting for callback `{}`",
                    callback.options.timeout.unwrap_or_default(),
                    callback.name
                );
                self.wait_failed(&path, 1, error, optional, state).await
            }
            _ => Err(Abort::Suspend {
                until: deadline,
                reason: format!("waits for callback `{}` ({path})", callback.name),
            }),
        }
    }

    /// A wait the journal says is over: replayed from what it took, or failed for good;
    /// `Err(input)` when it is not over.
    pub(super) fn finished_wait(
        &self,
        path: &str,
        name: &str,
        history: Option<&StepHistory>,
        optional: bool,
        input: Value,
    ) -> Result<Result<Done, Abort>, Value> {
        let Some(h) = history else {
            return Err(input);
        };
        if let Some((seq, _, value)) = &h.received {
            return Ok(self.put(path, name, input, value, *seq));
        }
        if let Some(message) = &h.unreadable {
            let message = format!("its journal entry {message}");
            return Ok(Err(Abort::Engine(self.bad_state(path, message))));
        }
        if let Some((attempts, error)) = &h.failed {
            let failure = StepFailure {
                step: path.to_owned(),
                attempts: *attempts,
                error: error.clone(),
            };
            return Ok(skip_or_fail(optional, failure, input, 0));
        }
        Err(input)
    }

    /// Journals the start of a wait's `attempt` at `from`: its absolute deadline.
    async fn start_wait(
        &self,
        path: &str,
        attempt: u32,
        options: &StepOptions,
        from: u64,
    ) -> Result<Option<u64>, Abort> {
        let deadline = options
            .timeout
            .map(|t| from.saturating_add(t.as_millis() as u64));
        let event = Event::WaitStarted { deadline };
        self.append(vec![self.entry(path, attempt, event)], None)
            .await?;
        Ok(deadline)
    }

    /// The oldest inbox message of `kind` named `name` that no wait took, now taken.
    pub(super) async fn take(
        &self,
        path: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<InboxMessage>, Abort> {
        let store = self.journal.store().ok_or_else(|| {
            Abort::Engine(Error::Store(StoreError::closed(format!(
                "workflow `{}` run {} step `{path}`: the store is gone (the engine was dropped)",
                self.def.name(),
                self.run_id
            ))))
        })?;
        let inbox = store.load_inbox(&self.run_id).await.map_err(|e| {
            Abort::Engine(Error::Store(e.context(format_args!(
                "workflow `{}` run {} step `{path}`: cannot read the run's inbox",
                self.def.name(),
                self.run_id
            ))))
        })?;
        let last = inbox.last().map_or(0, |m| m.seq);
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let found = inbox
            .into_iter()
            .find(|m| m.kind == kind && m.name == name && !taken.contains(&m.seq));
        match &found {
            Some(message) => {
                taken.insert(message.seq);
            }
            // This wait may suspend the run, having seen the inbox up to `last`: a message
            // after it, come meanwhile, must keep the run awake (see `RunTask::inbox_seen`).
            None => {
                self.inbox_seen.fetch_min(last, Ordering::SeqCst);
            }
        }
        Ok(found)
    }

    /// Journals a wait's final failure and fails the run, or skips the item if optional.
    pub(super) async fn wait_failed(
        &self,
        path: &str,
        attempt: u32,
        error: String,
        optional: bool,
        input: Value,
    ) -> Result<Done, Abort> {
        let event = Event::StepFailed {
            error: error.clone(),
        };
        let seq = self
            .append(vec![self.entry(path, attempt, event)], None)
            .await?;
        let failure = StepFailure {
            step: path.to_owned(),
            attempts: attempt,
            error,
        };
        skip_or_fail(optional, failure, input, seq)
    }

    /// `state` with `value` (JSON text) under `name`.
    pub(super) fn put(
        &self,
        path: &str,
        name: &str,
        mut state: Value,
        value: &str,
        seq: u64,
    ) -> Result<Done, Abort> {
        let value = crate::encode::decode(value)
            .map_err(|e| Abort::Engine(self.bad_state(path, format!("its payload {e}"))))?;
        match &mut state {
            Value::Object(map) => {
                map.insert(name.to_owned(), value);
            }
            other => {
                let message = format!(
                    "the state is not an object ({other}), so the payload has no key `{name}` \
                     to go under"
                );
                return Err(Abort::Engine(self.bad_state(path, message)));
            }
        }
        Ok(Done {
            state,
            seq,
            skipped: Vec::new(),
        })
    }
}

/// What a callback message says: `{"ok": value}` (the value as JSON text) or
/// `{"error": "..."}`.
fn completion(payload: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut map)) => {
            if let Some(value) = map.remove("ok") {
                return Ok(value.to_string());
            }
            match map.remove("error") {
                Some(Value::String(error)) => Err(error),
                Some(other) => Err(other.to_string()),
                None => Err(format!("its completion is unreadable: {payload}")),
            }
        }
        _ => Err(format!("its completion is unreadable: {payload}")),
    }
}
