//! Sending signals and completing callbacks: [`Engine::signal`],
//! [`Engine::complete_callback`], [`Engine::fail_callback`] and their [`Client`] twins.
//!
//! Each checks what it can first (the run exists and is unfinished, the workflow waits for
//! that signal, the run made that token), then appends one message to the run's inbox with
//! [`Store::deliver`], which checks the run again in its own transaction and wakes the run if
//! it is suspended. A refused message is an error naming the run (and workflow and step where
//! known), and nothing is stored.
//!
//! A [`Client`] has no definitions registered, so [`Client::signal`] takes the workflow, as
//! [`Client::start`] does, to check the signal's name against it.

use serde::Serialize;
use serde_json::{json, Value};

use super::{Client, Engine};
use crate::callback::token_run;
use crate::definition::{Definition, Workflow};
use crate::error::Error;
use crate::store::{inbox_kinds, EntryKind, Event, Rejected, RunRecord, Store};
use crate::RunId;

impl Engine {
    /// Sends signal `name` with `payload` to run `id`: the run's `wait_for name` takes it
    /// (now, or when it gets there: a signal sent before the run waits is kept), and its
    /// payload goes into the state under `name`. Two signals of one name go to two
    /// successive waits, in the order sent. A suspended run wakes at once.
    ///
    /// Refused with [`Error::SignalRefused`], storing nothing, when the run is unknown or
    /// finished, or its workflow (as registered with this engine) never waits for `name`.
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
    /// let err = engine.signal(run.id(), "aproved", true).await.unwrap_err();
    /// assert!(err.to_string().contains("never waits for signal `aproved`"), "{err}");
    /// engine.signal(run.id(), "approved", "ann").await?;
    /// let output = run.wait().await?;
    /// assert_eq!(output.get::<String>("approved").as_deref(), Some("ann"));
    /// // So is a signal to a finished run.
    /// assert!(engine.signal(run.id(), "approved", "bob").await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn signal(
        &self,
        id: &RunId,
        name: &str,
        payload: impl Serialize,
    ) -> Result<(), Error> {
        id.check()?;
        let store = &self.shared.store;
        let run = existing_run(&**store, id, name).await?;
        let def = self
            .shared
            .versions
            .get(&(run.workflow.as_str(), run.fingerprint.clone()))
            .or_else(|| self.shared.workflows.get(run.workflow.as_str()));
        let Some(def) = def else {
            return Err(refused(
                Some(&run),
                id,
                name,
                "its workflow is not registered with this engine, so the signal's name cannot \
                 be checked: register the workflow, or send it with Client::signal"
                    .into(),
            ));
        };
        deliver_signal(&**store, def, &run, name, payload).await
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
    /// message through its watch and wakes the run. The workflow is given to check the name
    /// against (a client has no definitions registered); a run of another workflow is refused.
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
        let run = existing_run(&*self.store, id, name).await?;
        if run.workflow != W::NAME {
            let reason = format!(
                "the run is of workflow `{}`, not `{}`",
                run.workflow,
                W::NAME
            );
            return Err(refused(Some(&run), id, name, reason));
        }
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

/// The run, if it exists and is unfinished.
async fn existing_run(store: &dyn Store, id: &RunId, name: &str) -> Result<RunRecord, Error> {
    match store.load_run(id).await.map_err(Error::Store)? {
        None => Err(refused(None, id, name, "no run with this id".into())),
        Some(run) if run.status.is_finished() => {
            let reason = format!("the run has finished ({})", run.status.as_str());
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

fn payload_text(payload: impl Serialize) -> Result<String, String> {
    let value = serde_json::to_value(payload)
        .map_err(|e| format!("the payload does not encode as JSON: {e}"))?;
    crate::encode::to_text(&value).map_err(|e| format!("the payload cannot be journaled: {e}"))
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
    if run.status.is_finished() {
        let reason = format!(
            "the run has finished ({}): its tokens are good no more",
            run.status.as_str()
        );
        return Err(refuse(workflow, Some(&id), None, reason));
    }
    // The run must have made this token (journaled before its submit function ran).
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
    let payload = match outcome {
        Ok(value) => {
            let value = serde_json::to_value(value).map_err(|e| {
                refuse(
                    workflow,
                    Some(&id),
                    Some(&step),
                    format!("the payload does not encode as JSON: {e}"),
                )
            })?;
            json!({ "ok": value })
        }
        Err(error) => json!({ "error": Value::String(error) }),
    };
    let text = crate::encode::to_text(&payload).map_err(|e| {
        refuse(
            workflow,
            Some(&id),
            Some(&step),
            format!("the payload cannot be journaled: {e}"),
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
