//! Claims, leases and reads.

use std::time::Duration;

use tokio_postgres::Row;

use super::Inner;
use crate::store::{
    Claim, EntryKind, JournalEntry, ParentLink, RunFilter, RunRecord, RunStatus, StoreError,
};
use crate::RunId;

pub(crate) fn run_from_row(inner: &Inner, row: &Row) -> Result<RunRecord, StoreError> {
    let status: String = row.get(3);
    let parent = match (row.get::<_, Option<String>>(13), row.get(14)) {
        (Some(run), Some(step)) => Some(ParentLink {
            run: RunId::from(run),
            step,
        }),
        _ => None,
    };
    Ok(RunRecord {
        parent,
        id: RunId::from(row.get::<_, String>(0)),
        workflow: row.get(1),
        fingerprint: row.get(2),
        status: RunStatus::parse(&status)
            .ok_or_else(|| inner.error_text(format!("unknown run status `{status}`")))?,
        input: row.get(4),
        output: row.get(5),
        error: row.get(6),
        owner: row.get(7),
        lease_token: row.get::<_, i64>(8) as u64,
        created_at: row.get::<_, i64>(9) as u64,
        updated_at: row.get::<_, i64>(10) as u64,
        wake_at: row.get::<_, Option<i64>>(11).map(|at| at.max(0) as u64),
        cancel_requested: row.get(12),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// One `UPDATE … FROM (SELECT … ORDER BY created_at LIMIT n FOR UPDATE SKIP LOCKED)`: runs
/// other workers are claiming right now are skipped, not waited for, and never taken twice.
pub(crate) async fn claim_runs(
    inner: &Inner,
    claim: Claim<'_>,
) -> Result<Vec<RunRecord>, StoreError> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    let client = inner.client().await?;
    // The due sleepers first: running again and nobody's, for this claim (or another's).
    let wake = client
        .prepare_cached(&inner.sql.wake_due)
        .await
        .map_err(|e| inner.error(e))?;
    client
        .execute(&wake, &[&inner.sql.channel])
        .await
        .map_err(|e| inner.error(e))?;
    let stmt = client
        .prepare_cached(&inner.sql.claim)
        .await
        .map_err(|e| inner.error(e))?;
    let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
    let names: Option<Vec<&str>> = claim.workflows.map(|w| w.iter().map(|p| p.0).collect());
    let prints: Option<Vec<&str>> = claim.workflows.map(|w| w.iter().map(|p| p.1).collect());
    let rows = client
        .query(
            &stmt,
            &[&claim.owner, &millis(claim.lease), &limit, &names, &prints],
        )
        .await
        .map_err(|e| inner.error(e))?;
    let mut runs = rows
        .iter()
        .map(|row| Ok((row.get::<_, i64>(15), run_from_row(inner, row)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    runs.sort_by_key(|(pos, run)| (run.created_at, *pos));
    Ok(runs.into_iter().map(|(_, run)| run).collect())
}

pub(crate) async fn renew_leases(
    inner: &Inner,
    owner: &str,
    lease: Duration,
) -> Result<usize, StoreError> {
    let client = inner.client().await?;
    let stmt = client
        .prepare_cached(&inner.sql.renew)
        .await
        .map_err(|e| inner.error(e))?;
    let n = client
        .execute(&stmt, &[&owner, &millis(lease)])
        .await
        .map_err(|e| inner.error(e))?;
    Ok(n as usize)
}

/// Releases `owner`'s leases and, if it held any, wakes idle workers to claim them now.
pub(crate) async fn release_leases(inner: &Inner, owner: &str) -> Result<(), StoreError> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(|e| inner.error(e))?;
    let n = tx
        .execute(&inner.sql.release, &[&owner])
        .await
        .map_err(|e| inner.error(e))?;
    if n > 0 {
        inner.work.bump();
        tx.execute(&inner.sql.notify, &[&inner.sql.channel])
            .await
            .map_err(|e| inner.error(e))?;
    }
    tx.commit().await.map_err(|e| inner.error(e))
}

pub(crate) async fn load_run(inner: &Inner, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
    let client = inner.client().await?;
    let stmt = client
        .prepare_cached(&inner.sql.load_run)
        .await
        .map_err(|e| inner.error(e))?;
    let row = client
        .query_opt(&stmt, &[&id.as_str()])
        .await
        .map_err(|e| inner.error(e))?;
    row.map(|row| run_from_row(inner, &row)).transpose()
}

pub(crate) async fn load_journal(
    inner: &Inner,
    id: &RunId,
) -> Result<Vec<JournalEntry>, StoreError> {
    let client = inner.client().await?;
    let stmt = client
        .prepare_cached(&inner.sql.load_journal)
        .await
        .map_err(|e| inner.error(e))?;
    let rows = client
        .query(&stmt, &[&id.as_str()])
        .await
        .map_err(|e| inner.error(e))?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get(2);
            Ok(JournalEntry {
                seq: r.get::<_, i64>(0) as u64,
                step: r.get(1),
                kind: EntryKind::parse(&kind).ok_or_else(|| {
                    inner.error_text(format!("run {id}: unknown journal entry kind `{kind}`"))
                })?,
                attempt: r.get::<_, i32>(3) as u32,
                payload: r.get(4),
                at: r.get::<_, i64>(5) as u64,
            })
        })
        .collect()
}

pub(crate) async fn list_runs(
    inner: &Inner,
    filter: RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    use tokio_postgres::types::ToSql;
    let client = inner.client().await?;
    let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let after_at = filter
        .after
        .as_ref()
        .map(|c| c.created_at.min(i64::MAX as u64) as i64);
    let after_id = filter.after.as_ref().map(|c| c.id.as_str());
    let status = filter.status.map(RunStatus::as_str);
    // One statement per combination of filters, each condition written only when it is
    // given: the connection's generic plans cannot drop an `$1 IS NULL OR …` condition, so
    // the filter and the page would not reach the listing indexes.
    let mut conditions = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(workflow) = &filter.workflow {
        params.push(workflow);
        conditions.push(format!("workflow = ${}", params.len()));
    }
    if let Some(status) = &status {
        params.push(status);
        conditions.push(format!("status = ${}", params.len()));
    }
    if let (Some(at), Some(id)) = (&after_at, &after_id) {
        params.push(at);
        params.push(id);
        let n = params.len();
        conditions.push(format!("(created_at, id) < (${}, ${n})", n - 1));
    }
    params.push(&limit);
    let sql = inner.sql.list_runs(&conditions, params.len());
    let stmt = client
        .prepare_cached(&sql)
        .await
        .map_err(|e| inner.error(e))?;
    let rows = client
        .query(&stmt, &params)
        .await
        .map_err(|e| inner.error(e))?;
    rows.iter().map(|row| run_from_row(inner, row)).collect()
}
