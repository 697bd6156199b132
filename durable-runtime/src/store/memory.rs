//! A store in memory, for tests: fast, shared by every engine built on the same value, and
//! gone with the process.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::{
    inbox_kinds, Claim, ClaimableWatch, Finish, InboxMessage, JournalEntry, Rejected, RunFilter,
    RunRecord, RunStatus, Store, StoreError, Write,
};
use crate::clock::now_millis;
use crate::step::BoxFuture;
use crate::RunId;

/// A store that keeps everything in memory.
///
/// Cloning it shares the same contents, so a test can drop an engine and build another on
/// the same store to see runs resume.
///
/// ```
/// use durable::store::memory::MemoryStore;
///
/// let store = MemoryStore::new();
/// let same = store.clone();
/// # let _ = same;
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<RunId, Stored>,
    /// Every run by (creation time, id): listing walks it from a cursor and stops at the
    /// page's end.
    order: BTreeSet<(u64, RunId)>,
    /// Bumped when a run without an owner appears, or a cancellation is requested (see
    /// [`Store::watch_claimable`]).
    claimable: u64,
    /// The suspended runs that wake by themselves, by (wake_at, id): a claim takes the due
    /// ones from its front, without looking at the others.
    wakes: BTreeSet<(u64, RunId)>,
}

struct Stored {
    record: RunRecord,
    lease_expires_at: u64,
    journal: Vec<JournalEntry>,
    /// Signals and callback completions, in delivery order (see [`Store::deliver`]).
    inbox: Vec<InboxMessage>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied batch (each write is
        // checked before any is applied), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply(inner: &mut Inner, write: Write, now: u64) -> Result<(), Rejected> {
    match write {
        Write::CreateRun(new) => {
            if inner.runs.contains_key(&new.id) {
                return Err(Rejected::DuplicateRun);
            }
            if new.owner.is_empty() {
                inner.claimable += 1;
            }
            inner.order.insert((now, new.id.clone()));
            inner.runs.insert(
                new.id.clone(),
                Stored {
                    record: RunRecord {
                        id: new.id,
                        workflow: new.workflow,
                        fingerprint: new.fingerprint,
                        status: RunStatus::Running,
                        input: new.input,
                        output: None,
                        error: None,
                        // No owner: a client's run, for an engine to claim.
                        owner: (!new.owner.is_empty()).then_some(new.owner),
                        lease_token: 1,
                        created_at: now,
                        updated_at: now,
                        wake_at: None,
                        cancel_requested: None,
                        parent: new.parent,
                    },
                    lease_expires_at: new.lease_expires_at,
                    journal: Vec::new(),
                    inbox: Vec::new(),
                },
            );
            Ok(())
        }
        Write::Append {
            run,
            lease_token,
            entries,
            finish,
        } => {
            let stored = inner.runs.get_mut(&run).ok_or(Rejected::UnknownRun)?;
            if stored.record.lease_token != lease_token {
                return Err(Rejected::Fenced {
                    current: stored.record.lease_token,
                });
            }
            if stored.record.status != RunStatus::Running {
                return Err(Rejected::Finished);
            }
            let last = stored.journal.last().map_or(0, |e| e.seq);
            super::check_sequence(last, entries.iter().map(|e| e.seq))?;
            stored.journal.extend(entries);
            // A child's end reaches its parent's inbox in this same step (the lock is held).
            let to_parent = match (&stored.record.parent, &finish) {
                (Some(link), Some(finish)) => {
                    super::child_end_payload(finish).map(|payload| (link.clone(), payload))
                }
                _ => None,
            };
            if finish
                .as_ref()
                .is_some_and(|f| !matches!(f, Finish::Suspended { .. }))
            {
                // Finishing carries out (or overtakes) a requested cancellation.
                stored.record.cancel_requested = None;
            }
            match finish {
                Some(Finish::Completed(output)) => {
                    stored.record.updated_at = now;
                    stored.record.status = RunStatus::Completed;
                    stored.record.output = Some(output);
                }
                Some(Finish::Failed(error)) => {
                    stored.record.updated_at = now;
                    stored.record.status = RunStatus::Failed;
                    stored.record.error = Some(error);
                }
                Some(Finish::Cancelled(reason)) => {
                    stored.record.updated_at = now;
                    stored.record.status = RunStatus::Cancelled;
                    stored.record.error = Some(reason);
                }
                Some(Finish::Suspended { inbox_seen, .. })
                    if stored.record.cancel_requested.is_some()
                        || inbox_seen.is_some_and(|seen| {
                            stored.inbox.last().is_some_and(|m| m.seq > seen)
                        }) =>
                {
                    // A cancellation asked for, or a message delivered, before the suspension
                    // landed (after its worker last looked): the run stays awake, nobody's,
                    // for whichever worker claims it next to carry the cancellation out or
                    // take the message.
                    stored.record.updated_at = now;
                    stored.record.owner = None;
                    stored.lease_expires_at = 0;
                    inner.claimable += 1;
                }
                Some(Finish::Suspended { wake_at, .. }) => {
                    // Unfinished, and nobody's: no lease until something wakes it.
                    stored.record.updated_at = now;
                    stored.record.status = RunStatus::Suspended;
                    stored.record.owner = None;
                    stored.record.wake_at = wake_at;
                    stored.lease_expires_at = 0;
                    if let Some(at) = wake_at {
                        inner.wakes.insert((at, run.clone()));
                    }
                }
                None => {}
            }
            if let Some((link, payload)) = to_parent {
                // A parent that finished (or vanished) meanwhile has nobody to tell.
                let _ = deliver(
                    inner,
                    &link.run,
                    inbox_kinds::CHILD,
                    &link.step,
                    &payload,
                    now,
                );
            }
            Ok(())
        }
    }
}

/// Appends a message to `run`'s inbox and wakes it if suspended (see [`Store::deliver`]).
fn deliver(
    inner: &mut Inner,
    run: &RunId,
    kind: &str,
    name: &str,
    payload: &str,
    now: u64,
) -> Result<u64, Rejected> {
    let appended = match inner.runs.get_mut(run) {
        None => Err(Rejected::UnknownRun),
        Some(stored) if stored.record.status.is_finished() => Err(Rejected::Finished),
        Some(stored) => {
            let used = (kind == inbox_kinds::CALLBACK)
                .then(|| {
                    stored
                        .inbox
                        .iter()
                        .find(|m| m.kind == kind && m.name == name)
                })
                .flatten();
            match used {
                Some(first) => Err(Rejected::DuplicateEntry { seq: first.seq }),
                None => {
                    let seq = stored.inbox.last().map_or(0, |m| m.seq) + 1;
                    stored.inbox.push(InboxMessage {
                        seq,
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        payload: payload.to_owned(),
                        at: now,
                    });
                    Ok(seq)
                }
            }
        }
    };
    // A suspended run wakes in the same step (the lock is held throughout).
    appended.inspect(|_| {
        wake(inner, run);
    })
}

/// Sets a suspended run running, unowned, claimable; whether it was suspended.
fn wake(inner: &mut Inner, run: &RunId) -> bool {
    let Some(stored) = inner.runs.get_mut(run) else {
        return false;
    };
    if stored.record.status != RunStatus::Suspended {
        return false;
    }
    if let Some(at) = stored.record.wake_at.take() {
        inner.wakes.remove(&(at, run.clone()));
    }
    stored.record.status = RunStatus::Running;
    stored.record.owner = None;
    stored.lease_expires_at = 0;
    inner.claimable += 1;
    true
}

/// Reads [`Inner::claimable`] while the store exists.
struct Watch(Weak<Mutex<Inner>>);

impl ClaimableWatch for Watch {
    fn version(&mut self) -> Result<u64, StoreError> {
        Ok(self.0.upgrade().map_or(0, |inner| {
            inner.lock().unwrap_or_else(|p| p.into_inner()).claimable
        }))
    }
}

impl Store for MemoryStore {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        let now = now_millis();
        let mut inner = self.lock();
        let outcomes = batch
            .iter()
            .map(|w| apply(&mut inner, w.clone(), now))
            .collect();
        Box::pin(std::future::ready(Ok(outcomes)))
    }

    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        let run = self.lock().runs.get(id).map(|s| s.record.clone());
        Box::pin(std::future::ready(Ok(run)))
    }

    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let journal = self
            .lock()
            .runs
            .get(id)
            .map(|s| s.journal.clone())
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(journal)))
    }

    fn claim_runs<'a>(
        &'a self,
        claim: Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        let (owner, lease) = (claim.owner, claim.lease);
        let now = now_millis();
        let mut inner = self.lock();
        let inner = &mut *inner;
        // The due sleepers first, from the front of the index: running again, unowned.
        while let Some((at, id)) = inner.wakes.first().cloned() {
            if at > now {
                break;
            }
            wake(inner, &id);
        }
        let mut claimed = Vec::new();
        for (_, id) in &inner.order {
            if claimed.len() >= claim.limit {
                break;
            }
            let stored = inner.runs.get_mut(id).expect("order lists stored runs");
            let free = match stored.record.owner.as_deref() {
                None => true,
                Some(holder) => holder != owner && stored.lease_expires_at <= now,
            };
            if stored.record.status == RunStatus::Running
                && free
                && claim.accepts(&stored.record.workflow, &stored.record.fingerprint)
            {
                stored.record.owner = Some(owner.to_owned());
                stored.record.lease_token += 1;
                stored.lease_expires_at = now + lease.as_millis() as u64;
                claimed.push(stored.record.clone());
            }
        }
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let until = now_millis() + lease.as_millis() as u64;
        let mut held = 0;
        for stored in self.lock().runs.values_mut() {
            if stored.record.status == RunStatus::Running
                && stored.record.owner.as_deref() == Some(owner)
            {
                stored.lease_expires_at = until;
                held += 1;
            }
        }
        Box::pin(std::future::ready(Ok(held)))
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        let mut released = false;
        for stored in inner.runs.values_mut() {
            if stored.record.owner.as_deref() == Some(owner) {
                stored.record.owner = None;
                stored.lease_expires_at = 0;
                released |= stored.record.status == RunStatus::Running;
            }
        }
        if released {
            inner.claimable += 1;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn watch_claimable(&self) -> Result<Option<Box<dyn ClaimableWatch>>, StoreError> {
        Ok(Some(Box::new(Watch(Arc::downgrade(&self.inner)))))
    }

    fn next_wake_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let next = self.lock().wakes.first().map(|(at, _)| *at);
        Box::pin(std::future::ready(Ok(next)))
    }

    fn wake<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<bool, StoreError>> {
        let woken = wake(&mut self.lock(), run);
        Box::pin(std::future::ready(Ok(woken)))
    }

    fn request_cancel<'a>(
        &'a self,
        run: &'a RunId,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        let mut inner = self.lock();
        let outcome = match inner.runs.get(run) {
            None => Err(Rejected::UnknownRun),
            Some(stored) if stored.record.status.is_finished() => Err(Rejected::Finished),
            Some(_) => {
                // The run, then its unfinished children, theirs, and so on (a cascade).
                let mut todo = vec![run.clone()];
                while let Some(id) = todo.pop() {
                    let stored = inner.runs.get_mut(&id).expect("listed runs exist");
                    stored
                        .record
                        .cancel_requested
                        .get_or_insert_with(|| reason.to_owned());
                    if !wake(&mut inner, &id) {
                        // Running: its driver notices through the watch.
                        inner.claimable += 1;
                    }
                    todo.extend(
                        inner
                            .runs
                            .values()
                            .filter(|s| {
                                !s.record.status.is_finished()
                                    && s.record.parent.as_ref().is_some_and(|p| p.run == id)
                            })
                            .map(|s| s.record.id.clone()),
                    );
                }
                Ok(())
            }
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn cancel_requests<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RunId, String)>, StoreError>> {
        let requests = self
            .lock()
            .runs
            .values()
            .filter(|s| {
                s.record.status == RunStatus::Running && s.record.owner.as_deref() == Some(owner)
            })
            .filter_map(|s| Some((s.record.id.clone(), s.record.cancel_requested.clone()?)))
            .collect();
        Box::pin(std::future::ready(Ok(requests)))
    }

    fn reopen<'a>(
        &'a self,
        run: &'a RunId,
        entries: &'a [JournalEntry],
    ) -> BoxFuture<'a, Result<Result<(), Rejected>, StoreError>> {
        let now = now_millis();
        let mut inner = self.lock();
        let outcome = match inner.runs.get_mut(run) {
            None => Err(Rejected::UnknownRun),
            Some(stored) if stored.record.status != RunStatus::Failed => Err(Rejected::Finished),
            Some(stored) => {
                let last = stored.journal.last().map_or(0, |e| e.seq);
                super::check_sequence(last, entries.iter().map(|e| e.seq)).map(|()| {
                    stored.journal.extend_from_slice(entries);
                    stored.record.status = RunStatus::Running;
                    stored.record.error = None;
                    stored.record.owner = None;
                    stored.record.updated_at = now;
                    stored.lease_expires_at = 0;
                })
            }
        };
        if outcome.is_ok() {
            inner.claimable += 1;
        }
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn deliver<'a>(
        &'a self,
        run: &'a RunId,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, Result<Result<u64, Rejected>, StoreError>> {
        let now = now_millis();
        let outcome = deliver(&mut self.lock(), run, kind, name, payload, now);
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn load_inbox<'a>(
        &'a self,
        run: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, StoreError>> {
        let inbox = self
            .lock()
            .runs
            .get(run)
            .map(|s| s.inbox.clone())
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(inbox)))
    }

    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        let inner = self.lock();
        let newest_first: Box<dyn Iterator<Item = &(u64, RunId)>> = match &filter.after {
            Some(cursor) => Box::new(
                inner
                    .order
                    .range(..(cursor.created_at, cursor.id.clone()))
                    .rev(),
            ),
            None => Box::new(inner.order.iter().rev()),
        };
        let runs = newest_first
            .map(|(_, id)| &inner.runs[id].record)
            .filter(|r| filter.workflow.as_deref().is_none_or(|w| r.workflow == w))
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(runs)))
    }
}
