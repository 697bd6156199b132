//! Issue 9's operations: due times, waking, cancellation requests, reopening failed runs,
//! and the inbox. Each is one transaction; whatever makes a run claimable (or asks its
//! holder to cancel it) NOTIFYs the workers, so the worker that is free picks it up at once,
//! whichever process made the change.

use tokio_postgres::Transaction;

use super::Inner;
use crate::clock::now_millis;
use crate::store::{
    check_sequence, inbox_kinds, InboxMessage, JournalEntry, Rejected, RunStatus, StoreError,
    StoreErrorKind,
};
use crate::RunId;

pub(crate) async fn next_wake_at(inner: &Inner) -> Result<Option<u64>, StoreError> {
    let client = inner.client().await?;
    let stmt = client
        .prepare_cached(&inner.sql.next_wake)
        .await
        .map_err(|e| inner.error(e))?;
    let row = client
        .query_opt(&stmt, &[])
        .await
        .map_err(|e| inner.error(e))?;
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
}

/// NOTIFYs the workers of every process at commit, and this process's watch at once (its
/// listener hears the NOTIFY only later).
async fn notify(inner: &Inner, tx: &Transaction<'_>) -> Result<(), StoreError> {
    inner.work.bump();
    tx.execute(&inner.sql.notify, &[&inner.sql.channel])
        .await
        .map(drop)
        .map_err(|e| inner.error(e))
}

/// The run's status, locked for the transaction; `None` for an unknown run.
async fn lock_status(
    inner: &Inner,
    tx: &Transaction<'_>,
    run: &RunId,
) -> Result<Option<(RunStatus, u64)>, StoreError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT status, (SELECT coalesce(max(seq), 0) FROM {} WHERE run_id = $1) \
                 FROM {} WHERE id = $1 FOR UPDATE",
                inner.sql.journal, inner.sql.runs
            ),
            &[&run.as_str()],
        )
        .await
        .map_err(|e| inner.error(e))?;
    match row {
        None => Ok(None),
        Some(row) => {
            let status: String = row.get(0);
            let status = RunStatus::parse(&status)
                .ok_or_else(|| inner.error_text(format!("unknown run status `{status}`")))?;
            Ok(Some((status, row.get::<_, i64>(1) as u64)))
        }
    }
}

pub(crate) async fn wake(inner: &Inner, run: &RunId) -> Result<bool, StoreError> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(|e| inner.error(e))?;
    let woken = tx
        .execute(&inner.sql.wake, &[&run.as_str()])
        .await
        .map_err(|e| inner.error(e))?
        == 1;
    if woken {
        notify(inner, &tx).await?;
    }
    tx.commit().await.map_err(|e| inner.error(e))?;
    Ok(woken)
}

pub(crate) async fn request_cancel(
    inner: &Inner,
    run: &RunId,
    reason: &str,
) -> Result<Result<(), Rejected>, StoreError> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(|e| inner.error(e))?;
    match lock_status(inner, &tx, run).await? {
        None => return Ok(Err(Rejected::UnknownRun)),
        Some((status, _)) if status.is_finished() => return Ok(Err(Rejected::Finished)),
        Some(_) => {}
    }
    // The run, then its unfinished children, theirs, and so on (a cascade), found through
    // the index by parent, each asked to cancel and woken if it sleeps.
    let runs = &inner.sql.runs;
    tx.execute(
        &format!(
            "WITH RECURSIVE tree AS (SELECT $1::text AS id UNION \
             SELECT r.id FROM {runs} r JOIN tree t ON r.parent_run = t.id \
             WHERE r.status IN ('running', 'suspended')) \
             UPDATE {runs} r SET cancel_requested = coalesce(r.cancel_requested, $2), \
             status = CASE WHEN r.status = 'suspended' THEN 'running' ELSE r.status END, \
             wake_at = CASE WHEN r.status = 'suspended' THEN NULL ELSE r.wake_at END, \
             owner = CASE WHEN r.status = 'suspended' THEN NULL ELSE r.owner END, \
             lease_expires_at = CASE WHEN r.status = 'suspended' THEN 0 \
             ELSE r.lease_expires_at END \
             FROM tree WHERE r.id = tree.id"
        ),
        &[&run.as_str(), &reason],
    )
    .await
    .map_err(|e| inner.error(e))?;
    // The worker holding it (in any process) hears of it and cancels it.
    notify(inner, &tx).await?;
    tx.commit().await.map_err(|e| inner.error(e))?;
    Ok(Ok(()))
}

pub(crate) async fn cancel_requests(
    inner: &Inner,
    owner: &str,
) -> Result<Vec<(RunId, String)>, StoreError> {
    let client = inner.client().await?;
    let stmt = client
        .prepare_cached(&inner.sql.cancel_requests)
        .await
        .map_err(|e| inner.error(e))?;
    let rows = client
        .query(&stmt, &[&owner])
        .await
        .map_err(|e| inner.error(e))?;
    Ok(rows
        .iter()
        .map(|r| (RunId::from(r.get::<_, String>(0)), r.get(1)))
        .collect())
}

pub(crate) async fn reopen(
    inner: &Inner,
    run: &RunId,
    entries: &[JournalEntry],
) -> Result<Result<(), Rejected>, StoreError> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(|e| inner.error(e))?;
    let last = match lock_status(inner, &tx, run).await? {
        None => return Ok(Err(Rejected::UnknownRun)),
        Some((RunStatus::Failed, last)) => last,
        Some(_) => return Ok(Err(Rejected::Finished)),
    };
    if let Err(rejected) = check_sequence(last, entries.iter().map(|e| e.seq)) {
        return Ok(Err(rejected));
    }
    let run_ids: Vec<&str> = entries.iter().map(|_| run.as_str()).collect();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq as i64).collect();
    let steps: Vec<&str> = entries.iter().map(|e| e.step.as_str()).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let attempts: Vec<i32> = entries.iter().map(|e| e.attempt as i32).collect();
    let payloads: Vec<&str> = entries.iter().map(|e| e.payload.as_str()).collect();
    let ats: Vec<i64> = entries.iter().map(|e| e.at as i64).collect();
    tx.execute(
        &inner.sql.insert_entries,
        &[&run_ids, &seqs, &steps, &kinds, &attempts, &payloads, &ats],
    )
    .await
    .map_err(|e| inner.error(e))?;
    tx.execute(
        &format!(
            "UPDATE {} SET status = 'running', error = NULL, owner = NULL, \
             lease_expires_at = 0, updated_at = $2 WHERE id = $1",
            inner.sql.runs
        ),
        &[&run.as_str(), &(now_millis() as i64)],
    )
    .await
    .map_err(|e| inner.error(e))?;
    notify(inner, &tx).await?;
    tx.commit().await.map_err(|e| inner.error(e))?;
    Ok(Ok(()))
}

pub(crate) async fn deliver(
    inner: &Inner,
    run: &RunId,
    kind: &str,
    name: &str,
    payload: &str,
) -> Result<Result<u64, Rejected>, StoreError> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(|e| inner.error(e))?;
    // The run's row lock orders deliveries to one run, so their numbers never collide.
    match lock_status(inner, &tx, run).await? {
        None => return Ok(Err(Rejected::UnknownRun)),
        Some((status, _)) if status.is_finished() => return Ok(Err(Rejected::Finished)),
        Some(_) => {}
    }
    let inbox = &inner.sql.inbox;
    if kind == inbox_kinds::CALLBACK {
        let first = tx
            .query_opt(
                &format!(
                    "SELECT seq FROM {inbox} WHERE run_id = $1 AND name = $2 \
                     AND kind = 'callback'"
                ),
                &[&run.as_str(), &name],
            )
            .await
            .map_err(|e| inner.error(e))?;
        if let Some(row) = first {
            return Ok(Err(Rejected::DuplicateEntry {
                seq: row.get::<_, i64>(0) as u64,
            }));
        }
    }
    let seq: i64 = tx
        .query_one(
            &format!(
                "INSERT INTO {inbox} (run_id, seq, kind, name, payload, at) \
                 SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5 FROM {inbox} \
                 WHERE run_id = $1 RETURNING seq"
            ),
            &[
                &run.as_str(),
                &kind,
                &name,
                &payload,
                &(now_millis() as i64),
            ],
        )
        .await
        .map_err(|e| inner.error(e))?
        .get(0);
    // A suspended run wakes: running, nobody's, claimable at once by any worker.
    let woken = tx
        .execute(&inner.sql.wake, &[&run.as_str()])
        .await
        .map_err(|e| inner.error(e))?;
    if woken == 1 {
        notify(inner, &tx).await?;
    }
    tx.commit().await.map_err(|e| inner.error(e))?;
    Ok(Ok(seq as u64))
}

pub(crate) async fn load_inbox(
    inner: &Inner,
    run: &RunId,
) -> Result<Vec<InboxMessage>, StoreError> {
    let client = inner.client().await?;
    let stmt = client
        .prepare_cached(&inner.sql.load_inbox)
        .await
        .map_err(|e| inner.error(e))?;
    let rows = client
        .query(&stmt, &[&run.as_str()])
        .await
        .map_err(|e| inner.error(e))?;
    let mut inbox = Vec::with_capacity(rows.len());
    for r in &rows {
        let message = InboxMessage {
            seq: r.get::<_, i64>(0) as u64,
            kind: r.get(1),
            name: r.get(2),
            payload: r.get(3),
            at: r.get::<_, i64>(4) as u64,
        };
        // Messages delivered before schema version 4 have no checksum and are read as they
        // are.
        if !r.get::<_, bool>(5) {
            let why = crate::store::inbox::damaged_message(run, &message);
            return Err(inner.error_kind(StoreErrorKind::Corrupt, why));
        }
        inbox.push(message);
    }
    Ok(inbox)
}
