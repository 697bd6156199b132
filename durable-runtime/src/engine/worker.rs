//! The worker: claims runs, renews their leases on a heartbeat, resumes them from their
//! journals and drives them; the place timers and schedules will live. Its errors are
//! reported (logged, and kept for [`Engine::health`](super::Engine::health)), not dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::{lock, Active, Shared, Slot};
use crate::clock::now_millis;
use crate::definition::Definition;
use crate::error::Error;
use crate::lease::RunLease;
use crate::store::{Claim, ClaimableWatch, JournalEntry, RunRecord, RunStatus, StoreErrorKind};
use crate::walk::{RunTask, Walked};
use crate::RunId;

impl Shared {
    /// Why this engine does not drive `run`, unless the run has finished (then whatever
    /// stopped this engine is stale, and forgotten).
    pub(super) fn stalled_for(&self, run: &RunRecord) -> Option<Error> {
        let mut stalled = lock(&self.stalled);
        if run.status == RunStatus::Running {
            // Not claimed here because this engine cannot drive it: say why all the same.
            return stalled
                .get(&run.id)
                .cloned()
                .or_else(|| self.check_resumable(run).err());
        }
        match stalled.get(&run.id) {
            Some(Error::ShutDown { .. }) | None => None,
            Some(_) => {
                stalled.remove(&run.id);
                None
            }
        }
    }

    /// Claims the unfinished runs no live worker holds, up to this engine's free capacity,
    /// and resumes those it can.
    pub(super) async fn recover(self: &Arc<Self>) -> Result<(), Error> {
        // Reserve the free capacity first, so a local start meanwhile cannot spend it too.
        let (free, mut reserved) = match &self.slots {
            None => (usize::MAX, None),
            Some(slots) => {
                let free = slots
                    .available_permits()
                    .saturating_sub(self.stalled_held());
                let free = u32::try_from(free).unwrap_or(u32::MAX);
                match Arc::clone(slots).try_acquire_many_owned(free) {
                    Ok(permits) if free > 0 => (free as usize, Some(permits)),
                    _ => (0, None),
                }
            }
        };
        if free > 0 {
            // Only runs this engine can drive (another worker may know the others): a
            // registered workflow, under a registered definition (current or kept).
            let definitions: Vec<(&str, &str)> = self
                .versions
                .keys()
                .map(|(name, fingerprint)| (*name, fingerprint.as_str()))
                .collect();
            let claim = Claim::new(&self.owner, self.lease)
                .limit(free)
                .workflows(&definitions);
            // Read before the claim is sent: each claimed lease lasts from then on at least.
            let sent = self.leases.now();
            let claimed = self.store.claim_runs(claim).await?;
            self.backlog.store(
                reserved.is_some() && claimed.len() == free,
                Ordering::SeqCst,
            );
            for run in claimed {
                let slot = reserved.as_mut().and_then(|permits| permits.split(1));
                self.resume(run, sent, slot).await?;
            }
            // Whatever was not claimed goes back with `reserved`.
        }
        // Runs this engine stopped driving because the store failed: drive them again now
        // that it answers (the store calls above succeeded), from their journals.
        let failed: Vec<RunId> = lock(&self.stalled)
            .iter()
            // Not a damaged journal or a foreign file: those stay as they are until a person
            // restores them, so driving the run again would only fail again (and, meanwhile,
            // hide why it stalled).
            .filter(|(_, error)| {
                matches!(error, Error::Store(e)
                    if !matches!(e.kind(), StoreErrorKind::Corrupt | StoreErrorKind::Foreign))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in failed {
            // A run read afterwards as this engine's, under the token it is read with, was
            // so when the last renewal ran: its lease lasts from that renewal on (`lease.rs`).
            // Before any renewal, from the epoch of `leases`: this engine took it after.
            let renewed = self.leases.last_renewal().unwrap_or(0);
            match self.store.load_run(&id).await {
                Ok(Some(run))
                    if run.status == RunStatus::Running
                        && run.owner.as_deref() == Some(self.owner.as_str()) =>
                {
                    let slot = match &self.slots {
                        None => None,
                        Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                            Ok(slot) => Some(slot),
                            Err(_) => continue, // at capacity: on a later beat
                        },
                    };
                    lock(&self.stalled).remove(&id);
                    self.resume(run, renewed, slot).await?;
                }
                // Finished meanwhile, or taken over by another worker: nothing to drive here.
                Ok(_) => {
                    lock(&self.stalled).remove(&id);
                }
                // Its record cannot be read (damaged, or the store failing again): it stays
                // stalled with the error it has, and the others go on.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Runs this engine holds but does not drive (they cannot resume here, or the store
    /// failed under them): they count against its capacity while it holds their leases.
    fn stalled_held(&self) -> usize {
        if self.max_runs == usize::MAX {
            return 0;
        }
        lock(&self.stalled)
            .values()
            .filter(|e| !matches!(e, Error::ShutDown { .. } | Error::LeaseLost { .. }))
            .count()
    }

    /// Cancels the runs this engine drives whose cancellation was requested, from this
    /// process or another ([`Store::cancel_requests`](crate::store::Store::cancel_requests)).
    pub(super) async fn carry_out_cancels(&self) -> Result<(), Error> {
        for (id, reason) in self.store.cancel_requests(&self.owner).await? {
            self.cancel_local(&id, reason);
        }
        Ok(())
    }

    /// Cancels `id` if this engine drives it; whether it does.
    pub(super) fn cancel_local(&self, id: &RunId, reason: String) -> bool {
        match lock(&self.active).get(id) {
            Some(active) => {
                // The first reason stands.
                active.cancel.send_if_modified(|current| {
                    current.is_none() && {
                        *current = Some(reason);
                        true
                    }
                });
                true
            }
            None => false,
        }
    }

    /// Drives a claimed run again from its journal, or records why it cannot be; its lease
    /// was taken (or last shown this engine's) by a request sent at `sent` (see `lease.rs`).
    async fn resume(self: &Arc<Self>, run: RunRecord, sent: u64, slot: Slot) -> Result<(), Error> {
        let def = match self.check_resumable(&run) {
            Ok(def) => def,
            Err(error) => {
                self.stall(&run, error);
                return Ok(());
            }
        };
        // The journal first: a store that checks what it reads (SQLite's checksums) checks the
        // run's input with it, so a changed input is reported as changed (what `status` and
        // `wait` say too), not as whatever its text fails on.
        let journal = match self.store.load_journal(&run.id).await {
            Ok(journal) => journal,
            Err(e) => {
                // A damaged journal (or a store failing now) stops this run only: it stays
                // unfinished in the store, is retried on the heartbeat, and the others go on.
                let error = Error::Store(e.context(format_args!(
                    "workflow `{}` run {}: cannot load its journal",
                    run.workflow, run.id
                )));
                self.stall(&run, error);
                return Ok(());
            }
        };
        let input = match crate::encode::decode(&run.input) {
            Ok(input) => input,
            Err(e) => {
                let error = Error::BadState {
                    workflow: run.workflow.clone(),
                    run_id: run.id.clone(),
                    step: None,
                    message: format!("its stored input {e}"),
                };
                self.stall(&run, error);
                return Ok(());
            }
        };
        lock(&self.resumed).push(run.id.clone());
        let cancel = run.cancel_requested;
        let lease = self.leases.run(run.id.clone(), run.lease_token, sent);
        self.spawn_run(def, run.id, lease, journal, input, cancel, slot);
        Ok(())
    }

    pub(super) fn check_resumable(&self, run: &RunRecord) -> Result<Arc<Definition>, Error> {
        let def =
            self.workflows
                .get(run.workflow.as_str())
                .ok_or_else(|| Error::UnknownWorkflow {
                    workflow: run.workflow.clone(),
                    run_id: run.id.clone(),
                })?;
        // The run resumes on the definition it started under, current or kept as a version.
        match self.versions.get(&(def.name(), run.fingerprint.clone())) {
            Some(version) => Ok(Arc::clone(version)),
            None => Err(Error::DefinitionChanged {
                workflow: run.workflow.clone(),
                run_id: run.id.clone(),
                started_under: run.fingerprint.clone(),
                registered: def.fingerprint().to_owned(),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)] // a run's parts, and the permit to drive it
    pub(super) fn spawn_run(
        self: &Arc<Self>,
        def: Arc<Definition>,
        id: RunId,
        lease: Arc<RunLease>,
        journal: Vec<JournalEntry>,
        input: Value,
        cancel_requested: Option<String>,
        slot: Slot,
    ) {
        let (tx, rx) = watch::channel(None);
        // A reason here cancels the run (see `RunTask::run_cancellable`).
        let (cancel, cancelled) = watch::channel(cancel_requested);
        let workflow = def.name();
        let task = Arc::new(RunTask::new(
            def,
            id.clone(),
            Arc::clone(&lease),
            self.journal.clone(),
            journal,
        ));
        // Driven again: whatever stopped it before no longer holds.
        lock(&self.stalled).remove(&id);
        // Hold the lock across the spawn so the task cannot finish (and remove itself)
        // before it is listed.
        let mut active = lock(&self.active);
        let (all_active, stalled) = (Arc::clone(&self.active), Arc::clone(&self.stalled));
        let changed = Arc::clone(&self.changed);
        let timer = Arc::clone(&self.timer);
        let (wake, backlog) = (Arc::clone(&self.wake), Arc::clone(&self.backlog));
        let health = Arc::clone(&self.health);
        let run_id = id.clone();
        let handle = tokio::spawn(async move {
            // A panic of the engine itself (never a step's: those are caught per attempt) must
            // still reach the waiters, or they would wait for a run nobody drives.
            let walked = task.run_cancellable(input, cancelled).await;
            match &walked {
                // Journaled as finished (failed or cancelled), or as suspended: the store
                // says the rest.
                Walked::Ended(Ok(_))
                | Walked::Ended(Err(Error::RunFailed { .. } | Error::RunCancelled { .. })) => {}
                Walked::Suspended { until, reason } => {
                    tracing::debug!(
                        run = run_id.as_str(),
                        workflow,
                        until,
                        reason,
                        "run suspended"
                    );
                    // The worker's timer may sleep past this wake time: it looks again.
                    if until.is_some() {
                        timer.notify_one();
                    }
                }
                // Stopped by a shutdown: it resumes on the next start.
                Walked::Ended(Err(error @ Error::ShutDown { .. })) => {
                    lock(&stalled).insert(run_id.clone(), error.clone());
                }
                Walked::Ended(Err(error)) => {
                    // Not journaled as finished: remember why, for later waiters, and tell
                    // `Engine::health` (a lost lease, a store that failed under the run).
                    tracing::warn!(
                        workflow,
                        run = run_id.as_str(),
                        error = %error,
                        "durable stopped driving a run; it stays unfinished"
                    );
                    keep(&health, "driving a run", Some(&run_id), error);
                    lock(&stalled).insert(run_id.clone(), error.clone());
                }
            }
            lock(&all_active).remove(&run_id);
            drop(slot);
            if backlog.load(Ordering::SeqCst) {
                // Capacity freed while runs wait: claim the next one now.
                wake.notify_one();
            }
            let _ = tx.send(Some(walked));
            changed.notify_waiters();
        });
        active.insert(
            id,
            Active {
                workflow,
                outcome: rx,
                task: handle.abort_handle(),
                cancel,
                lease,
            },
        );
        drop(active);
        // Waiters on this run that looked before it was listed look again.
        self.changed.notify_waiters();
    }

    /// Records why this engine cannot drive a run it claimed, and reports it.
    fn stall(&self, run: &RunRecord, error: Error) {
        self.report("resuming a run", Some(run), &error);
        lock(&self.stalled).insert(run.id.clone(), error);
    }

    /// Reports an error of the worker: logs it, and keeps it for [`Engine::health`].
    ///
    /// [`Engine::health`]: super::Engine::health
    pub(super) fn report(&self, during: &'static str, run: Option<&RunRecord>, error: &Error) {
        tracing::warn!(
            engine = %self.owner,
            workflow = run.map(|r| r.workflow.as_str()),
            run = run.map(|r| r.id.as_str()),
            during,
            error = %error,
            "durable worker error"
        );
        keep(&self.health, during, run.map(|r| &r.id), error);
    }
}

/// Keeps `error` as the worker's last, for [`Engine::health`](super::Engine::health).
fn keep(health: &Mutex<Health>, during: &'static str, run: Option<&RunId>, error: &Error) {
    let mut health = lock(health);
    health.errors += 1;
    health.last_error = Some(WorkerError {
        during,
        run: run.cloned(),
        error: error.clone(),
        at: now_millis(),
    });
}

/// How an engine's worker fares (see [`Engine::health`](super::Engine::health)).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Health {
    /// The worker's last error, if any.
    pub last_error: Option<WorkerError>,
    /// How many errors the worker met since the engine was built.
    pub errors: u64,
}

/// One error of an engine's worker: its heartbeat, its claims, or resuming a run.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
#[error("{during}{}: {error}", run.as_ref().map(|run| format!(" (run {run})")).unwrap_or_default())]
pub struct WorkerError {
    /// What the worker was doing, e.g. "renewing leases".
    pub during: &'static str,
    /// The run it was about, if one.
    pub run: Option<RunId>,
    /// The error.
    #[source]
    pub error: Error,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// How often the worker asks the store whether a client started a run (see
/// [`Store::watch_claimable`](crate::store::Store::watch_claimable)).
const PICKUP: Duration = Duration::from_millis(50);

/// Starts the worker's loops: the heartbeat, the timer of suspended runs, and the pickup of
/// runs clients start (or wake, or cancel).
pub(super) fn spawn(shared: &Arc<Shared>) {
    tokio::spawn(heartbeat(Arc::downgrade(shared), Arc::clone(&shared.wake)));
    tokio::spawn(timers(Arc::downgrade(shared), Arc::clone(&shared.timer)));
    match shared.store.watch_claimable() {
        Ok(Some(watch)) => {
            tokio::spawn(pickup(
                Arc::downgrade(shared),
                Arc::clone(&shared.stopped),
                watch,
            ));
        }
        Ok(None) => {}
        Err(error) => shared.report(
            "watching the store for new runs",
            None,
            &Error::Store(error),
        ),
    }
}

/// Renews this engine's leases every third of the lease, and claims runs (queued ones, and
/// those of workers that died) every poll interval (a third of the lease unless set), or at
/// once when a finished run freed capacity while runs wait.
async fn heartbeat(shared: Weak<Shared>, wake: Arc<Notify>) {
    let Some((lease, poll)) = shared.upgrade().map(|s| (s.lease, s.poll)) else {
        return;
    };
    let beat = (lease / 3).max(Duration::from_millis(10));
    let mut renew_at = tokio::time::Instant::now() + beat;
    loop {
        let until = (tokio::time::Instant::now() + poll).min(renew_at);
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = wake.notified() => {}
        }
        let Some(s) = shared.upgrade() else { return };
        let _beat = s.beat.lock().await;
        if s.stopped.load(Ordering::SeqCst) {
            return;
        }
        let renew = tokio::time::Instant::now() >= renew_at;
        if renew {
            // A failed renewal is retried on the next beat (and reported); meanwhile a run
            // whose deadline passes shows its lease before its next step (`lease.rs`), and the
            // fencing token protects the journal if a lease expires in between.
            let sent = s.leases.now();
            match s.store.renew_leases(&s.owner, s.lease).await {
                Ok(_) => {
                    let active = lock(&s.active);
                    s.leases
                        .renewed(sent, active.values().map(|run| &*run.lease));
                }
                Err(error) => s.report("renewing leases", None, &Error::Store(error)),
            }
            renew_at = tokio::time::Instant::now() + beat;
        }
        // Take over queued runs and the runs of workers that died (their leases expired).
        if let Err(error) = s.recover().await {
            s.report("claiming and resuming runs", None, &error);
        }
        if renew {
            if let Err(error) = s.carry_out_cancels().await {
                s.report("cancelling runs", None, &error);
            }
        }
    }
}

/// Wakes the suspended runs when they fall due: sleeps until the store's earliest wake time
/// ([`Store::next_wake_at`](crate::store::Store::next_wake_at)), at most a heartbeat, or
/// until a run of this engine suspends (it may wake earlier), then claims the due runs. A
/// run that fell due while no engine ran is claimed at start, by the first claim.
async fn timers(shared: Weak<Shared>, timer: Arc<Notify>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.stopped.load(Ordering::SeqCst) {
            return;
        }
        let beat = (s.lease / 3).max(Duration::from_millis(10));
        // Listen before looking, so a run suspending meanwhile is not missed.
        let suspended = timer.notified();
        tokio::pin!(suspended);
        suspended.as_mut().enable();
        let delay = match s.store.next_wake_at().await {
            Ok(Some(at)) => Duration::from_millis(at.saturating_sub(now_millis())).min(beat),
            Ok(None) => beat,
            Err(error) => {
                s.report("looking for runs to wake", None, &Error::Store(error));
                beat
            }
        };
        if delay.is_zero() {
            let _beat = s.beat.lock().await;
            if s.stopped.load(Ordering::SeqCst) {
                return;
            }
            if let Err(error) = s.recover().await {
                s.report("waking runs", None, &error);
                drop(_beat);
                drop(s);
                tokio::time::sleep(beat).await;
            }
            continue;
        }
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = suspended => {}
        }
    }
}

/// Claims the runs clients start as soon as the store's watch tells they appeared, instead
/// of on the next heartbeat. Holds the engine only to claim: its watch does not keep the
/// store open, so dropping the engine lets go of the store at once.
async fn pickup(
    shared: Weak<Shared>,
    stopped: Arc<AtomicBool>,
    mut watch: Box<dyn ClaimableWatch>,
) {
    let mut seen = None;
    loop {
        if stopped.load(Ordering::SeqCst) || shared.strong_count() == 0 {
            return;
        }
        match watch.version() {
            Ok(version) if seen != Some(version) => {
                seen = Some(version);
                let Some(s) = shared.upgrade() else { return };
                let _beat = s.beat.lock().await;
                if s.stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(error) = s.recover().await {
                    s.report("claiming runs clients started", None, &error);
                }
                if let Err(error) = s.carry_out_cancels().await {
                    s.report("cancelling runs", None, &error);
                }
            }
            Ok(_) => {}
            Err(error) => match shared.upgrade() {
                Some(s) => s.report(
                    "watching the store for new runs",
                    None,
                    &Error::Store(error),
                ),
                None => return,
            },
        }
        watch.changed(PICKUP).await;
    }
}
