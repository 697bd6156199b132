//! Sending signals and completing callbacks: [`Engine::signal`],
//! [`Engine::complete_callback`], [`Engine::fail_callback`] and their [`Client`] twins.
//!
//! Each checks what it can first (the run exists and is unfinished, the workflow waits for
//! that signal, the run made that token), then appends one message to the run's inbox with
//! [`Store::deliver`], which checks the run again in its own transaction and wakes the run if
//! it is suspended. A refused message is an error naming the run (and workflow and step where
//! known), and nothing is stored.
//!
//! Both [`Engine::signal`] and [`Client::signal`] take the workflow, as `start` does: a client
//! has no definitions registered, and one call with the same checks serves both (the run is
//! of that workflow, the workflow waits for that signal).
//!
//! A payload is encoded by the journal's encoder (`encode.rs`), never through a
//! `serde_json::Value` first: that would turn NaN and infinities into `null`, changing what
//! was sent; the encoder refuses them instead.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::{Client, Engine};
use crate::callback::token_run;
use crate::definition::{Definition, Workflow};
use crate::error::Error;
use crate::store::{inbox_kinds, EntryKind, Event, Rejected, RunRecord, Store};
use crate::RunId;

impl Engine {
    /// Sends signal `name` with `payload` to run `id` of `workflow`: the run's `wait_for name`
    /// takes it (now, or when it gets there: a signal sent before the run waits is kept), and
    /// its payload goes into the state under `name`. Two signals of one name go to two
    /// successive waits, in the order sent. A suspended run wakes at once.
    ///
    /// The workflow is given, as to [`start`](Self::start), so that the run is checked to be
    /// one of it and `name` to be a signal it waits for, on the definition the run started
    /// under when this engine registers it (else on `workflow`'s): the same call, with the
    /// same checks, as [`Client::signal`] in a process that drives nothing.
    ///
    /// Refused with [`Error::SignalRefused`], storing nothing, when the run is unknown,
    /// finished or of another workflow, the workflow never waits for `name`, or the payload
    /// does not encode as JSON (NaN or an infinity, nesting past
    /// [`MAX_DEPTH`](crate::data::MAX_DEPTH)): it is never stored changed.
    ///
    /// ```
    /// use durable::{workflow, Data, Engine, StepError};
    /// use durable::store::memory::MemoryStore;
    ///
    /// async fn ask(d: Data) -> Result<Data, StepError> { Ok(d.assign("asked", true)) }
    /// workflow! { review { step ask; wait_for approved(timeout = 1h); } }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let engine = Engine::builder(MemoryStore::new()).register(review).build().await?;
    /// let run = engine.start(review, Data::new()).await?;
    /// // A name the workflow never waits for is refused.
    /// let err = engine.signal(review, run.id(), "aproved", true).await.unwrap_err();
    /// assert!(err.to_string().contains("never waits for signal `aproved`"), "{err}");
    /// // So is a number JSON cannot hold, rather than sent as `null`.
    /// let err = engine.signal(review, run.id(), "approved", f64::NAN).await.unwrap_err();
    /// assert!(err.to_string().contains("it holds the number NaN"), "{err}");
    /// engine.signal(review, run.id(), "approved", "ann").await?;
    /// let output = run.wait().await?;
    /// assert_eq!(output.get::<String>("approved").as_deref(), Some("ann"));
    /// // So is a signal to a finished run.
    /// assert!(engine.signal(review, run.id(), "approved", "bob").await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn signal<W: Workflow>(
        &self,
        workflow: W,
        id: &RunId,
        name: &str,
        payload: impl Serialize,
    ) -> Result<(), Error> {
        id.check()?;
        let store = &*self.shared.store;
        let run = run_of::<W>(store, id, name).await?;
        // The definition the run started under, when registered here: it may wait for a
        // signal the current one no longer does.
        let started_under = self
            .shared
            .versions
            .get(&(W::NAME, run.fingerprint.clone()))
            .cloned();
        let def = started_under.unwrap_or_else(|| Arc::new(workflow.definition()));
        deliver_signal(store, &def, &run, name, payload).await
    }

    /// Completes the callback whose token a `callback` item's submit function handed out:
    /// the run takes `payload` into its state under the callback's name and goes on.
    ///
    /// Refused with [`Error::CallbackRefused`], storing nothing, when `token` is no token,
    /// its run is unknown or finished, or the token was used already (a token is good once).
    pub async fn complete_callback(
        &self,
        token: &str,
        payload: impl Serialize,
    ) -> Result<(), Error> {
        complete(&*self.shared.store, token, Ok(payload)).await
    }

    /// Fails the callback whose token a `callback` item's submit function handed out: the
    /// item fails with `error` (the run fails, unless the item is `optional`). Refused as
    /// [`complete_callback`](Self::complete_callback) is.
    pub async fn fail_callback(
        &self,
        token: &str,
        error: impl std::fmt::Display,
    ) -> Result<(), Error> {
        complete::<()>(&*self.shared.store, token, Err(error.to_string())).await
    }
}

impl Client {
    /// Sends signal `name` with `payload` to run `id` of `workflow` (see [`Engine::signal`]),
    /// from any process, beside the engine that drives the store: the engine notices the
    /// message through its watch and wakes the run. The name is checked against `workflow`'s
    /// definition; a run of another workflow is refused.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use durable::{workflow, Client, Data, Engine, StepError};
    /// use durable::store::memory::MemoryStore;
    ///
    /// async fn ask(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// workflow! { review { step ask; wait_for approved; } }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let store = Arc::new(MemoryStore::new());
    /// let engine = Engine::builder_shared(store.clone()).register(review).build().await?;
    /// let run = engine.start(review, Data::new()).await?;
    /// let client = Client::new(store);
    /// client.signal(review, run.id(), "approved", true).await?;
    /// assert_eq!(run.wait().await?.get::<bool>("approved"), Some(true));
    /// # Ok(()) }
    /// ```
    pub async fn signal<W: Workflow>(
        &self,
        workflow: W,
        id: &RunId,
        name: &str,
        payload: impl Serialize,
    ) -> Result<(), Error> {
        id.check()?;
        let run = run_of::<W>(&*self.store, id, name).await?;
        deliver_signal(&*self.store, &workflow.definition(), &run, name, payload).await
    }

    /// [`Engine::complete_callback`], from any process.
    pub async fn complete_callback(
        &self,
        token: &str,
        payload: impl Serialize,
    ) -> Result<(), Error> {
        complete(&*self.store, token, Ok(payload)).await
    }

    /// [`Engine::fail_callback`], from any process.
    pub async fn fail_callback(
        &self,
        token: &str,
        error: impl std::fmt::Display,
    ) -> Result<(), Error> {
        complete::<()>(&*self.store, token, Err(error.to_string())).await
    }
}

fn refused(run: Option<&RunRecord>, id: &RunId, name: &str, reason: String) -> Error {
    Error::SignalRefused {
        workflow: run.map(|r| r.workflow.clone()),
        run_id: id.clone(),
        signal: name.to_owned(),
        reason,
    }
}

/// The run, if it exists, is unfinished and is a run of workflow `W`.
async fn run_of<W: Workflow>(
    store: &dyn Store,
    id: &RunId,
    name: &str,
) -> Result<RunRecord, Error> {
    match store.load_run(id).await.map_err(Error::Store)? {
        None => Err(refused(None, id, name, "no run with this id".into())),
        Some(run) if run.status.is_finished() => {
            let reason = format!("the run has finished ({})", run.status.as_str());
            Err(refused(Some(&run), id, name, reason))
        }
        Some(run) if run.workflow != W::NAME => {
            let reason = format!(
                "the run is of workflow `{}`, not `{}`",
                run.workflow,
                W::NAME
            );
            Err(refused(Some(&run), id, name, reason))
        }
        Some(run) => Ok(run),
    }
}

/// Checks `name` against `def` and delivers the signal.
async fn deliver_signal(
    store: &dyn Store,
    def: &Definition,
    run: &RunRecord,
    name: &str,
    payload: impl Serialize,
) -> Result<(), Error> {
    let names = def.signal_names();
    if !names.contains(&name) {
        let waits = if names.is_empty() {
            "it waits for no signal".to_owned()
        } else {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("it waits for {}", list.join(", "))
        };
        let reason = format!(
            "workflow `{}` never waits for signal `{name}` ({waits})",
            run.workflow
        );
        return Err(refused(Some(run), &run.id, name, reason));
    }
    let text = payload_text(payload).map_err(|e| refused(Some(run), &run.id, name, e))?;
    match store
        .deliver(&run.id, inbox_kinds::SIGNAL, name, &text)
        .await
        .map_err(Error::Store)?
    {
        Ok(_) => Ok(()),
        Err(Rejected::UnknownRun) => {
            Err(refused(None, &run.id, name, "no run with this id".into()))
        }
        Err(Rejected::Finished) => Err(refused(
            Some(run),
            &run.id,
            name,
            "the run has finished".into(),
        )),
        Err(other) => Err(refused(Some(run), &run.id, name, other.to_string())),
    }
}

/// The payload as inbox text, through the journal's own encoder: serde_json alone would turn
/// NaN and infinities into `null` (changing what was sent) and recurse through any nesting.
fn payload_text(payload: impl Serialize) -> Result<String, String> {
    crate::encode::into_text(payload)
        .map_err(|e| format!("the payload does not encode as JSON: {e}"))
}

/// A callback's completion as the inbox holds it: `{"ok": payload}`.
#[derive(Serialize)]
struct Completion<T> {
    ok: T,
}

/// Delivers a callback's completion (`Ok`) or failure (`Err`) for `token`.
async fn complete<T: Serialize>(
    store: &dyn Store,
    token: &str,
    outcome: Result<T, String>,
) -> Result<(), Error> {
    let refuse =
        |workflow: Option<&str>, run: Option<&RunId>, step: Option<&str>, reason: String| {
            Error::CallbackRefused {
                workflow: workflow.map(str::to_owned),
                run_id: run.cloned(),
                step: step.map(str::to_owned),
                reason,
            }
        };
    let id = token_run(token).map_err(|reason| refuse(None, None, None, reason))?;
    if id.check().is_err() {
        return Err(refuse(
            None,
            None,
            None,
            "the token names no valid run id".into(),
        ));
    }
    let Some(run) = store.load_run(&id).await.map_err(Error::Store)? else {
        return Err(refuse(None, Some(&id), None, "no run with this id".into()));
    };
    let workflow = Some(run.workflow.as_str());
    // The run must have made this token (journaled before its submit function ran); that
    // entry names the callback's step, for a finished run too. A token the run did not make
    // (a forged secret) names no step: nothing tells which one it was meant for.
    let journal = store.load_journal(&id).await.map_err(Error::Store)?;
    let step = journal.into_iter().find_map(|entry| {
        (entry.kind == EntryKind::CallbackCreated)
            .then(|| Event::decode(entry.kind, &entry.step, entry.payload))
            .and_then(Result::ok)
            .and_then(|event| match event {
                Event::CallbackCreated { token: made } if made == token => Some(entry.step),
                _ => None,
            })
    });
    let Some(step) = step else {
        return Err(refuse(
            workflow,
            Some(&id),
            None,
            "the run made no callback with this token".into(),
        ));
    };
    if run.status.is_finished() {
        let reason = format!(
            "the run has finished ({}): its tokens are good no more",
            run.status.as_str()
        );
        return Err(refuse(workflow, Some(&id), Some(&step), reason));
    }
    // `{"ok": payload}`, encoded in one pass with the payload itself (not a `Value` made of it
    // first, which would have turned NaN and infinities into `null`).
    let text = match outcome {
        Ok(value) => crate::encode::into_text(Completion { ok: value }),
        Err(error) => crate::encode::to_text(&json!({ "error": Value::String(error) })),
    }
    .map_err(|e| {
        refuse(
            workflow,
            Some(&id),
            Some(&step),
            format!("the payload does not encode as JSON: {e}"),
        )
    })?;
    match store
        .deliver(&id, inbox_kinds::CALLBACK, token, &text)
        .await
        .map_err(Error::Store)?
    {
        Ok(_) => Ok(()),
        Err(Rejected::DuplicateEntry { .. }) => Err(refuse(
            workflow,
            Some(&id),
            Some(&step),
            "the token was used already: a token is good once".into(),
        )),
        Err(Rejected::Finished) => Err(refuse(
            workflow,
            Some(&id),
            Some(&step),
            "the run has finished: its tokens are good no more".into(),
        )),
        Err(other) => Err(refuse(workflow, Some(&id), Some(&step), other.to_string())),
    }
}
