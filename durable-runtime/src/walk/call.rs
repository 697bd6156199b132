//! `call NAME = other_workflow(...)`: runs a registered workflow as a child run and waits
//! for its end, suspended.
//!
//! The child's run id is derived from the parent's id and the item's path
//! ([`child_run_id`]), so creating it is idempotent: a parent resumed after a crash between
//! the child's creation and its own journal entry finds the child there, with itself as
//! parent, and attaches to it. The child is created with no owner (any engine that drives
//! its workflow claims it), then `ChildStarted` and the wait's deadline (`WaitStarted`) are
//! journaled in the parent. The store delivers the child's end to the parent's inbox (kind
//! `child`, named by the item's path) in the transaction that finishes the child, waking the
//! parent; the parent takes it like a signal (`Received`), so the child's output lands under
//! `NAME`. A failed or cancelled child fails the item (`optional` skips it); a timeout fails
//! it too and cancels the child.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::now_millis;
use crate::definition::{fnv1a, CallNode};
use crate::error::Error;
use crate::store::{inbox_kinds, Event, NewRun, ParentLink, Rejected, StoreError, Write};
use crate::writer::CommitError;
use crate::RunId;

use super::{path_in, Abort, Done, RunTask};

/// The run id of the child that `call` item `path` of run `parent` starts:
/// `"<parent>/<path>"`, or when that is longer than [`RunId::MAX_LEN`], a prefix of it, `~`
/// and a hash of the whole.
pub(crate) fn child_run_id(parent: &RunId, path: &str) -> RunId {
    let full = format!("{parent}/{path}");
    if full.len() <= RunId::MAX_LEN {
        return RunId::from(full);
    }
    let mut cut = RunId::MAX_LEN - 17;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    RunId::from(format!("{}~{:016x}", &full[..cut], fnv1a(full.as_bytes())))
}

impl RunTask {
    pub(super) async fn exec_call(
        self: &Arc<Self>,
        call: &CallNode,
        input: Value,
        scope: &str,
    ) -> Result<Done, Abort> {
        let path = path_in(scope, call.name);
        let optional = call.options.optional;
        let history = self.history.get(&path);
        let input = match self.finished_wait(&path, call.name, history, optional, input) {
            Ok(done) => return done,
            Err(input) => input,
        };
        let child = child_run_id(&self.run_id, &path);
        let deadline = match history.and_then(|h| h.child.as_ref().zip(h.waiting)) {
            Some((_, (_, deadline))) => deadline,
            None => {
                // Creating the child is not fenced by the parent's token: the lease must hold.
                self.hold_lease().await?;
                self.create_child(call, &path, &child, &input).await?;
                let deadline = call
                    .options
                    .timeout
                    .map(|t| now_millis().saturating_add(t.as_millis() as u64));
                let started = Event::ChildStarted {
                    child: child.to_string(),
                };
                let entries = vec![
                    self.entry(&path, 1, started),
                    self.entry(&path, 1, Event::WaitStarted { deadline }),
                ];
                self.append(entries, None).await?;
                deadline
            }
        };
        if let Some(message) = self.take(&path, inbox_kinds::CHILD, &path).await? {
            return match child_end(&message.payload) {
                Ok(value) => {
                    let event = Event::Received {
                        inbox: message.seq,
                        value: value.clone(),
                    };
                    let seq = self.append(vec![self.entry(&path, 1, event)], None).await?;
                    self.put(&path, call.name, input, &value, seq)
                }
                Err(end) => {
                    let error = format!("child run {child} of workflow `{}` {end}", call.workflow);
                    self.wait_failed(&path, 1, error, optional, input).await
                }
            };
        }
        match deadline {
            Some(due) if due <= now_millis() => {
                // Nobody waits for it any more.
                self.hold_lease().await?;
                if let Some(store) = self.journal.store() {
                    let reason = format!("its parent run {} stopped waiting", self.run_id);
                    let _ = store.request_cancel(&child, &reason).await;
                }
                let error = format!(
                    "timed out after {:?} waiting for child run {child} of workflow `{}`",
                    call.options.timeout.unwrap_or_default(),
                    call.workflow
                );
                self.wait_failed(&path, 1, error, optional, input).await
            }
            _ => Err(Abort::Suspend {
                until: deadline,
                reason: format!("waits for child run {child} ({path})"),
            }),
        }
    }

    /// Creates the child run, or finds it created by an earlier walk of this run (attach).
    async fn create_child(
        &self,
        call: &CallNode,
        path: &str,
        child: &RunId,
        state: &Value,
    ) -> Result<(), Abort> {
        let input = match state.get(call.name) {
            Some(value) => value.clone(),
            None => Value::Object(Default::default()),
        };
        let input = crate::encode::to_text(&input).map_err(|e| {
            Abort::Engine(
                self.bad_state(path, format!("the child's input cannot be journaled: {e}")),
            )
        })?;
        let link = ParentLink {
            run: self.run_id.clone(),
            step: path.to_owned(),
        };
        let write = Write::CreateRun(NewRun {
            id: child.clone(),
            workflow: call.workflow.to_owned(),
            fingerprint: (call.definition)().fingerprint().to_owned(),
            input,
            // Nobody's: the next claim of an engine that drives the workflow takes it.
            owner: String::new(),
            lease_expires_at: 0,
            parent: Some(link.clone()),
        });
        match self.journal.write(write).await {
            Ok(()) => Ok(()),
            Err(CommitError::Rejected(Rejected::DuplicateRun)) => {
                let store = self.journal.store().ok_or_else(|| {
                    Abort::Engine(Error::Store(StoreError::closed(format!(
                        "workflow `{}` run {} step `{path}`: the store is gone",
                        self.def.name(),
                        self.run_id
                    ))))
                })?;
                let existing = store.load_run(child).await.map_err(|e| {
                    Abort::Engine(Error::Store(e.context(format_args!(
                        "workflow `{}` run {} step `{path}`: cannot read child run {child}",
                        self.def.name(),
                        self.run_id
                    ))))
                })?;
                match existing {
                    // Started by this item before a crash: attach.
                    Some(run) if run.parent.as_ref() == Some(&link) => Ok(()),
                    _ => Err(Abort::Engine(self.bad_state(
                        path,
                        format!(
                            "its child's run id {child} is taken by a run that is not this \
                             item's child"
                        ),
                    ))),
                }
            }
            Err(e) => Err(Abort::Engine(self.commit_error(e))),
        }
    }
}

/// What a child's end message says: the child's output (JSON text), or why it did not
/// complete, in words that follow "child run X of workflow `w`".
fn child_end(payload: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut map)) => {
            if let Some(value) = map.remove("ok") {
                return Ok(value.to_string());
            }
            if let Some(Value::String(error)) = map.remove("error") {
                // A run's failure is journaled as its `RunFailure`; show its message.
                let message = serde_json::from_str::<crate::error::RunFailure>(&error)
                    .map(|f| f.message)
                    .unwrap_or(error);
                return Err(format!("failed: {message}"));
            }
            if let Some(Value::String(reason)) = map.remove("cancelled") {
                return Err(format!("was cancelled: {reason}"));
            }
            Err(format!("ended unreadably: {payload}"))
        }
        _ => Err(format!("ended unreadably: {payload}")),
    }
}
