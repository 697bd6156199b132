//! What a worker knows of its leases: until when each run it drives is surely still its own,
//! by its own monotonic clock, so that it never starts a step of a run another worker may
//! have taken over (see "Fencing" in ARCHITECTURE.md for the whole argument).
//!
//! # The deadline
//!
//! A store sets a lease's expiry when a claim, a start or a renewal *executes*: the store's
//! "now" plus the lease. The worker reads its monotonic clock *before* it sends that request
//! (`sent`), so the expiry is no earlier than `sent + lease` (a worker's monotonic clock and
//! the store's clock run at the same rate, to a few parts per million). The run's deadline is
//! `sent + lease - margin`: until then nobody else can have claimed the run.
//!
//! Before anything of the user's starts (a step's attempt, a sub-operation, a child run's
//! creation), the run task compares its clock with the deadline ([`RunLease::live`]: one
//! clock read and one atomic load, nothing more while the lease is fresh). The comparison
//! comes after every await, so a pause of the process (SIGSTOP, a VM frozen, a thread
//! starved) before it is seen.
//!
//! # Renewals
//!
//! The heartbeat renews all the owner's leases at once ([`Leases::renewed`]). A renewal whose
//! answer came back before a run's deadline executed while that run's lease was live, so
//! nobody had claimed the run, and the renewal extended it: the deadline moves to the
//! renewal's `sent + lease - margin`. A run whose deadline had passed when the answer came
//! may have been claimed by another worker meanwhile: the renewal tells nothing about it.
//!
//! Such a run shows its lease before it starts anything more ([`RunLease::confirm`]): after
//! a renewal (the engine's last successful one if its deadline is still ahead, or a new one,
//! shared by the runs that find themselves late together), it reads its record. Still this
//! owner's, under the same token, and running: the renewal found it so (a token only grows,
//! and only a claim, which bumps it, makes an owner), so it extended it, and the deadline
//! moves to that renewal's. Anything else: the lease is lost, and the run task stops
//! without writing anything; the worker that holds the run now (or the next claim) drives
//! it from its journal.
//!
//! # The margin
//!
//! A fifth of the lease. It absorbs the drift of the two clocks over one lease, and bounds
//! the one window the check cannot close: between the check and the user code's first side
//! effect (synchronous code, microseconds, in the same poll), a pause longer than the margin
//! would let the lease expire unseen. It does not cover a store's clock that is *stepped*
//! forward (a lease would expire early in the store's eyes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{RunStatus, Store, StoreError};
use crate::RunId;

/// How many renewals a late run tries before it gives up on showing its lease: each took
/// longer than the lease left it.
const CONFIRM_TRIES: usize = 3;

/// An engine's leases as a whole: its clock, and its last successful renewal.
pub(crate) struct Leases {
    /// Times are nanoseconds after this instant (tokio's clock, so that a paused test clock
    /// moves leases as it moves the stores' lease times).
    epoch: Instant,
    store: Weak<dyn Store>,
    owner: String,
    lease: Duration,
    /// `lease - margin`, in nanoseconds: a deadline is this long after its `sent`.
    term: u64,
    /// The `sent` of the last successful renewal, plus one (0: none yet).
    renewed: AtomicU64,
    /// Held by a late run while it renews, so the runs that find themselves late together
    /// share one renewal.
    renewing: tokio::sync::Mutex<()>,
}

/// Why a run cannot show its lease live.
#[derive(Debug)]
pub(crate) enum Unconfirmed {
    /// Another worker holds the run, or it is not running any more: stop driving it.
    Lost,
    /// The store failed (or was too slow to show it): the run stops, and this engine drives
    /// it again from its journal once the store answers, if it is still its own.
    Store(StoreError),
}

impl Leases {
    /// The leases `owner` holds in `store`, each `lease` long.
    pub(crate) fn new(store: Weak<dyn Store>, owner: String, lease: Duration) -> Arc<Self> {
        let lease_ns = u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX / 4);
        Arc::new(Self {
            epoch: Instant::now(),
            store,
            owner,
            lease,
            term: lease_ns - lease_ns / 5,
            renewed: AtomicU64::new(0),
            renewing: tokio::sync::Mutex::new(()),
        })
    }

    /// Now, in nanoseconds after the epoch: read it before sending a claim, a start or a
    /// renewal, and hand it over as the lease's `sent`.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn deadline_after(&self, sent: u64) -> u64 {
        sent.saturating_add(self.term)
    }

    /// The lease of `run` under `token`, taken (claimed, or created) by a request sent at
    /// `sent`.
    pub(crate) fn run(self: &Arc<Self>, run: RunId, token: u64, sent: u64) -> Arc<RunLease> {
        Arc::new(RunLease {
            deadline: AtomicU64::new(self.deadline_after(sent)),
            leases: Arc::clone(self),
            run,
            token,
        })
    }

    /// The `sent` of the last successful renewal, if any. A run found afterwards (a read sent
    /// after this was read) still this owner's under the token it was read with holds its
    /// lease until [`deadline_after`](Self::deadline_after) it.
    pub(crate) fn last_renewal(&self) -> Option<u64> {
        self.renewed.load(Ordering::SeqCst).checked_sub(1)
    }

    /// A renewal sent at `sent` succeeded: extends the deadline of each of `runs` that was
    /// still ahead now that its answer came (see the module's documentation).
    pub(crate) fn renewed<'a>(&self, sent: u64, runs: impl Iterator<Item = &'a RunLease>) {
        let answered = self.now();
        self.renewed.fetch_max(sent + 1, Ordering::SeqCst);
        let deadline = self.deadline_after(sent);
        for run in runs {
            // Only if it held at the answer: it held when the renewal executed, before.
            if run.deadline.load(Ordering::SeqCst) > answered {
                run.deadline.fetch_max(deadline, Ordering::SeqCst);
            }
        }
    }

    /// A renewal whose deadline is still ahead: the last one, or a new one.
    async fn fresh_renewal(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let _renewing = self.renewing.lock().await;
        if let Some(sent) = self.last_renewal() {
            if self.deadline_after(sent) > self.now() {
                return Ok(sent);
            }
        }
        let sent = self.now();
        store.renew_leases(&self.owner, self.lease).await?;
        self.renewed.fetch_max(sent + 1, Ordering::SeqCst);
        Ok(sent)
    }
}

/// The lease of one run this engine drives: its token, and until when it surely holds.
pub(crate) struct RunLease {
    leases: Arc<Leases>,
    run: RunId,
    token: u64,
    /// Nanoseconds after the engine's epoch; only grows.
    deadline: AtomicU64,
}

impl RunLease {
    /// A lease that never runs out, for the walk's unit tests.
    #[cfg(test)]
    pub(crate) fn unbounded(run: RunId, token: u64) -> Arc<Self> {
        let store: Weak<dyn Store> = Weak::<crate::store::memory::MemoryStore>::new();
        let leases = Leases::new(store, String::new(), Duration::from_secs(1));
        Arc::new(Self {
            deadline: AtomicU64::new(u64::MAX),
            leases,
            run,
            token,
        })
    }

    /// The token every write of the run carries.
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// Whether the lease surely holds now: the per-attempt check, one clock read and one
    /// atomic load. When it does not, [`confirm`](Self::confirm) before starting anything.
    #[inline]
    pub(crate) fn live(&self) -> bool {
        // Relaxed: a stale (earlier) deadline only sends the run to `confirm`.
        self.leases.now() < self.deadline.load(Ordering::Relaxed)
    }

    /// Shows the lease live again after its deadline passed (see the module's
    /// documentation), or says why it cannot.
    pub(crate) async fn confirm(&self) -> Result<(), Unconfirmed> {
        let leases = &self.leases;
        for _ in 0..CONFIRM_TRIES {
            if self.live() {
                return Ok(());
            }
            let store = leases.store.upgrade().ok_or_else(|| {
                Unconfirmed::Store(StoreError::closed(
                    "the store is gone: the engine was dropped",
                ))
            })?;
            let sent = leases
                .fresh_renewal(&*store)
                .await
                .map_err(Unconfirmed::Store)?;
            // Read after the renewal answered: what it shows, the renewal found.
            let record = store
                .load_run(&self.run)
                .await
                .map_err(Unconfirmed::Store)?;
            match record {
                Some(run)
                    if run.owner.as_deref() == Some(leases.owner.as_str())
                        && run.lease_token == self.token
                        && run.status == RunStatus::Running =>
                {
                    self.deadline
                        .fetch_max(leases.deadline_after(sent), Ordering::SeqCst);
                }
                _ => return Err(Unconfirmed::Lost),
            }
        }
        if self.live() {
            return Ok(());
        }
        Err(Unconfirmed::Store(StoreError::transient(format!(
            "its lease could not be shown live: renewing it and reading it back took longer \
             than the lease ({:?}) {CONFIRM_TRIES} times",
            leases.lease
        ))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Leases, RunLease, Unconfirmed};
    use crate::clock::now_millis;
    use crate::store::memory::MemoryStore;
    use crate::store::{Claim, NewRun, Store, Write};
    use crate::RunId;

    const LEASE: Duration = Duration::from_secs(1);

    /// A memory store (on tokio's paused clock, as its lease times are) and `me`'s leases.
    fn setup() -> (Arc<dyn Store>, Arc<Leases>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let leases = Leases::new(Arc::downgrade(&store), "me".into(), LEASE);
        (store, leases)
    }

    /// Starts run `id` held by `me`, as `Engine::start` does: the lease read before it is sent.
    async fn start(store: &Arc<dyn Store>, leases: &Arc<Leases>, id: &str) -> Arc<RunLease> {
        let sent = leases.now();
        let new = NewRun {
            id: id.into(),
            workflow: "wf".into(),
            fingerprint: "f".into(),
            input: "{}".into(),
            owner: "me".into(),
            lease_expires_at: now_millis() + LEASE.as_millis() as u64,
            parent: None,
        };
        assert_eq!(
            store.commit(&[Write::CreateRun(new)]).await.unwrap(),
            [Ok(())]
        );
        leases.run(RunId::from(id), 1, sent)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_holds_until_a_fifth_of_it_is_left_then_is_shown_again_by_a_renewal() {
        let (store, leases) = setup();
        let run = start(&store, &leases, "r").await;
        tokio::time::advance(Duration::from_millis(799)).await;
        assert!(run.live(), "the deadline is at 4/5 of the lease");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            !run.live(),
            "past the deadline (the store's lease still has 1/5 left)"
        );
        run.confirm().await.unwrap();
        assert!(run.live());
        assert!(leases.last_renewal().is_some(), "it renewed");
        // The store's lease was renewed too: at the old expiry, nobody else may take the run.
        tokio::time::advance(Duration::from_millis(300)).await;
        let claimed = store.claim_runs(Claim::new("other", LEASE)).await.unwrap();
        assert!(claimed.is_empty(), "{claimed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_another_worker_claimed_while_this_one_was_paused_is_lost() {
        let (store, leases) = setup();
        let run = start(&store, &leases, "r").await;
        // Paused past the lease: another worker claims the run.
        tokio::time::advance(LEASE + Duration::from_millis(1)).await;
        let claimed = store.claim_runs(Claim::new("other", LEASE)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(!run.live());
        assert!(matches!(run.confirm().await, Err(Unconfirmed::Lost)));
        // Even after a renewal of this engine's other leases succeeded.
        let _other = start(&store, &leases, "s").await;
        let sent = leases.now();
        store.renew_leases("me", LEASE).await.unwrap();
        leases.renewed(sent, [&*run].into_iter());
        assert!(
            !run.live(),
            "a renewal answered after its deadline says nothing of it"
        );
        assert!(matches!(run.confirm().await, Err(Unconfirmed::Lost)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_extends_only_the_runs_still_held_when_it_answered() {
        let (store, leases) = setup();
        let early = start(&store, &leases, "early").await;
        tokio::time::advance(Duration::from_millis(500)).await;
        let late = start(&store, &leases, "late").await;
        tokio::time::advance(Duration::from_millis(400)).await;
        // `early`'s deadline (800 ms) has passed, `late`'s (1,300 ms) has not.
        let sent = leases.now();
        store.renew_leases("me", LEASE).await.unwrap();
        leases.renewed(sent, [&*early, &*late].into_iter());
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(late.live(), "extended to 1,700 ms");
        assert!(!early.live(), "not extended: another worker might hold it");
        // It shows its lease itself: still `me`'s under its token, so the renewal held it.
        early.confirm().await.unwrap();
        assert!(early.live());
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_run_is_not_shown_live() {
        let (store, leases) = setup();
        let run = start(&store, &leases, "r").await;
        let end = Write::Append {
            run: "r".into(),
            lease_token: 1,
            entries: Vec::new(),
            finish: Some(crate::store::Finish::Completed("{}".into())),
        };
        assert_eq!(store.commit(&[end]).await.unwrap(), [Ok(())]);
        tokio::time::advance(LEASE).await;
        assert!(matches!(run.confirm().await, Err(Unconfirmed::Lost)));
    }
}
