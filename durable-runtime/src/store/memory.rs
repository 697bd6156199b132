//! A store in memory, for tests: fast, shared by every engine built on the same value, and
//! gone with the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Claim, Finish, JournalEntry, Rejected, RunFilter, RunRecord, RunStatus, Store, StoreError,
    Write,
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
    order: Vec<RunId>,
}

struct Stored {
    record: RunRecord,
    lease_expires_at: u64,
    journal: Vec<JournalEntry>,
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
            inner.order.push(new.id.clone());
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
                        owner: (!new.owner.is_empty()).then_some(new.owner),
                        lease_token: 1,
                        created_at: now,
                        updated_at: now,
                    },
                    lease_expires_at: new.lease_expires_at,
                    journal: Vec::new(),
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
            let mut expected = last;
            for entry in &entries {
                if entry.seq <= expected {
                    return Err(Rejected::DuplicateEntry { seq: entry.seq });
                }
                expected = entry.seq;
            }
            stored.journal.extend(entries);
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
                None => {}
            }
            Ok(())
        }
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
        let mut claimed = Vec::new();
        for id in &inner.order {
            if claimed.len() >= claim.limit {
                break;
            }
            let stored = inner.runs.get_mut(id).expect("order lists stored runs");
            let free = match stored.record.owner.as_deref() {
                None => true,
                Some(holder) => holder != owner && stored.lease_expires_at <= now,
            };
            if stored.record.status == RunStatus::Running && free {
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
        for stored in self.lock().runs.values_mut() {
            if stored.record.owner.as_deref() == Some(owner) {
                stored.record.owner = None;
                stored.lease_expires_at = 0;
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        let inner = self.lock();
        let runs = inner
            .order
            .iter()
            .rev()
            .map(|id| &inner.runs[id].record)
            .filter(|r| filter.workflow.as_deref().is_none_or(|w| r.workflow == w))
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(runs)))
    }
}
