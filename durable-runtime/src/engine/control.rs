//! Steering runs from outside: cancelling one, resuming a failed one.

use super::Engine;
use crate::error::Error;
use crate::RunId;

impl Engine {
    /// Cancels an unfinished run: its steps in flight are cancelled (their futures dropped),
    /// no further step starts, and it ends [`Cancelled`](crate::RunStatus::Cancelled) with
    /// `reason`; a cancelled run never resumes. A run this engine drives is cancelled at
    /// once; a sleeping one is woken and ended; one another engine drives is ended by it
    /// when its watch or heartbeat sees the request (see [`Client::cancel`]). Returns once
    /// the request is stored: [`wait`](Self::wait) then reports
    /// [`Error::RunCancelled`] with the reason.
    ///
    /// # Errors
    ///
    /// [`Error::RunNotFound`] for an unknown run; [`Error::RunNotInState`] for a finished one
    /// (completed, failed or cancelled), which is left as it is.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use durable::{workflow, Data, Engine, Error, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// async fn wait_long(d: Data) -> Result<Data, StepError> {
    ///     tokio::time::sleep(Duration::from_secs(3600)).await;
    ///     Ok(d)
    /// }
    /// workflow! { slow { step wait_long; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let engine = Engine::builder(MemoryStore::new()).register(slow).build().await?;
    /// let run = engine.start(slow, Data::new()).await?;
    /// engine.cancel(run.id(), "not needed any more").await?;
    /// match run.wait().await {
    ///     Err(Error::RunCancelled { reason, .. }) => assert_eq!(reason, "not needed any more"),
    ///     other => panic!("{other:?}"),
    /// }
    /// // A finished run cannot be cancelled.
    /// assert!(matches!(
    ///     engine.cancel(run.id(), "again").await,
    ///     Err(Error::RunNotInState { .. })
    /// ));
    /// # Ok(()) }
    /// ```
    ///
    /// [`Client::cancel`]: crate::Client::cancel
    pub async fn cancel(&self, id: &RunId, reason: impl Into<String>) -> Result<(), Error> {
        let reason = reason.into();
        self.shared.client.cancel(id, reason.clone()).await?;
        if !self.shared.cancel_local(id, reason) {
            // Not driven here: woken if it slept, or unclaimed: claim it now, and it ends
            // cancelled as it resumes (another engine's run is ended by that engine).
            let _beat = self.shared.beat.lock().await;
            if !self
                .shared
                .stopped
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                self.shared.recover().await?;
            }
        }
        Ok(())
    }

    /// Resumes a failed run from the step that failed it, with a fresh attempt budget for
    /// that step (its failed attempts no longer count); every step that had finished is
    /// kept and not run again. For the usual fix: correct the step's code, deploy, resume.
    /// The journal records it (a `resumed` entry at the step, see [`StepEvent::Resumed`]),
    /// the run is set running and this engine drives it on; [`wait`](Self::wait) waits for
    /// its new end.
    ///
    /// The run resumes on the definition it started under, which must be registered (the
    /// step's code may change, its structure not: see [`Definition::fingerprint`]).
    ///
    /// # Errors
    ///
    /// [`Error::RunNotFound`] for an unknown run; [`Error::RunNotInState`] for a run that has
    /// not failed; [`Error::UnknownWorkflow`] or [`Error::DefinitionChanged`] when this
    /// engine cannot drive it (nothing is changed then).
    ///
    /// ```
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # use durable::{workflow, Data, Engine, Error, StepError};
    /// # use durable::store::memory::MemoryStore;
    /// static FIXED: AtomicBool = AtomicBool::new(false);
    /// async fn charge(d: Data) -> Result<Data, StepError> {
    ///     match FIXED.load(Ordering::SeqCst) {
    ///         true => Ok(d.assign("charged", true)),
    ///         false => Err(StepError::terminal("bug")),
    ///     }
    /// }
    /// workflow! { order { step charge; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let engine = Engine::builder(MemoryStore::new()).register(order).build().await?;
    /// let run = engine.start(order, Data::new()).await?;
    /// assert!(run.wait().await.is_err());
    /// FIXED.store(true, Ordering::SeqCst); // the fix is deployed
    /// engine.resume_failed(run.id()).await?;
    /// assert_eq!(run.wait().await?.get::<bool>("charged"), Some(true));
    /// # Ok(()) }
    /// ```
    ///
    /// [`StepEvent::Resumed`]: crate::StepEvent::Resumed
    /// [`Definition::fingerprint`]: crate::Definition::fingerprint
    pub async fn resume_failed(&self, id: &RunId) -> Result<(), Error> {
        id.check()?;
        self.shared
            .client
            .reopen_failed(id, |run| self.shared.check_resumable(run).map(drop))
            .await?;
        let _beat = self.shared.beat.lock().await;
        if !self
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.shared.recover().await?;
        }
        Ok(())
    }
}
