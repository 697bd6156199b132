//! The hot path: one batch of writes from many runs, one transaction, one or two round trips.
//!
//! A batch of one append (a lone run's step, or its end) is one statement, its own
//! transaction: it locks the run, writes the entries (and the end) if the write passes, and
//! returns the locked row, from which the verdict is decided here ([`append_one`]).
//!
//! A batch that appends to each run at most once is one round trip ([`run_fast`]): one
//! statement decides every append's verdict under the runs' row locks and inserts and
//! finishes what passes; with creates or a NOTIFY besides, they are pipelined between
//! `BEGIN` and `COMMIT`.
//!
//! Any other batch (several appends to one run, say the branches of a parallel block finishing
//! together) takes two round trips ([`run`]). Round trip 1 (pipelined): `BEGIN`; one
//! multi-row insert of the batch's new runs; one `SELECT … FOR UPDATE` of every run the batch
//! appends to, with its lease token, status and last journal position. The verdict of each
//! write is then decided here, in batch order, on rows nobody else can change until the
//! commit. Round trip 2 (pipelined): one multi-row insert of every accepted journal entry,
//! one update of the runs that finished, `COMMIT`.
//!
//! A refused write (fenced, finished, duplicate) is simply left out, so it never aborts the
//! others.

use std::collections::HashMap;

use deadpool_postgres::Object;

use super::Inner;
use crate::clock::now_millis;
use crate::store::{
    check_sequence, Finish, JournalEntry, NewRun, Rejected, RunStatus, StoreError, Write,
};

/// The longest first lease a new run gets (keeps `now + lease` far from overflowing).
const MAX_LEASE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The batch's new runs, column by column: the parameters of `Sql::create_runs`.
#[derive(Default)]
struct Creates<'a> {
    ids: Vec<&'a str>,
    workflows: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    inputs: Vec<&'a str>,
    owners: Vec<&'a str>,
    /// Lease lengths, not ends: the database's clock sets the end.
    leases: Vec<i64>,
    parent_runs: Vec<Option<&'a str>>,
    parent_steps: Vec<Option<&'a str>>,
}

impl<'a> Creates<'a> {
    fn push(&mut self, new: &'a NewRun, now: u64) {
        self.ids.push(new.id.as_str());
        self.workflows.push(new.workflow.as_str());
        self.fingerprints.push(new.fingerprint.as_str());
        self.inputs.push(new.input.as_str());
        self.owners.push(new.owner.as_str());
        self.leases
            .push(new.lease_expires_at.saturating_sub(now).min(MAX_LEASE_MS) as i64);
        self.parent_runs
            .push(new.parent.as_ref().map(|p| p.run.as_str()));
        self.parent_steps
            .push(new.parent.as_ref().map(|p| p.step.as_str()));
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 8] {
        [
            &self.ids,
            &self.workflows,
            &self.fingerprints,
            &self.inputs,
            &self.owners,
            &self.leases,
            &self.parent_runs,
            &self.parent_steps,
        ]
    }
}

/// A run the batch appends to, as locked in the database and updated by the batch so far.
struct Locked {
    token: u64,
    running: bool,
    last_seq: u64,
}

pub(crate) async fn commit(
    inner: &Inner,
    batch: &[Write],
) -> Result<Vec<Result<(), Rejected>>, StoreError> {
    let client = inner.client().await?;
    let mut guard = TxGuard {
        client: Some(client),
        open: false,
    };
    let result = match batch {
        [Write::Append {
            run,
            lease_token,
            entries,
            finish,
        }] => {
            let (run, token) = (run.as_str(), *lease_token);
            let verdict = if entries.len() == 1 {
                append_step(inner, &mut guard, run, token, entries, finish).await
            } else {
                append_one(inner, &mut guard, run, token, entries, finish).await
            };
            verdict.map(|verdict| vec![verdict])
        }
        _ if one_round_trip(batch) => run_fast(inner, &mut guard, batch).await,
        _ => run(inner, &mut guard, batch).await,
    };
    if result.is_err() {
        // Never hand a connection back in an unknown transaction state.
        guard.discard();
    } else if batch.iter().any(|w| {
        matches!(
            w,
            Write::Append {
                finish: Some(Finish::Suspended { .. }),
                ..
            }
        )
    }) {
        // A suspension that found its run's cancellation asked for, or a message it had not
        // seen, left the run awake and nobody's (see `Sql`): this process's worker looks for
        // claimable runs at once.
        inner.work.bump();
    }
    result
}

/// A batch of one append of one entry (a lone run's step, or its end): `Sql::append_step`
/// (or `finish_step`), which writes the entry (and the end) if it passes and nothing else. If
/// it wrote nothing, or found the entry there already, [`append_one`] decides the verdict
/// (and writes, if meanwhile the write passes): the write lands at one of the two statements
/// or at neither.
async fn append_step(
    inner: &Inner,
    guard: &mut TxGuard,
    run: &str,
    lease_token: u64,
    entries: &[JournalEntry],
    finish: &Option<Finish>,
) -> Result<Result<(), Rejected>, StoreError> {
    let client = guard.client.as_ref().expect("held until the end");
    let sql = match finish {
        Some(_) => &inner.sql.finish_step,
        None => &inner.sql.append_step,
    };
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| inner.error(e))?;
    let entry = &entries[0];
    let (token, seq, attempt, at) = (
        lease_token as i64,
        entry.seq as i64,
        entry.attempt as i32,
        entry.at as i64,
    );
    let kind = entry.kind.as_str();
    let end = EndColumns::of(finish.as_ref());
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &run,
        &token,
        &seq,
        &entry.step,
        &kind,
        &attempt,
        &entry.payload,
        &at,
    ];
    if finish.is_some() {
        params.extend(end.params());
    }
    guard.open = true;
    let wrote = client.execute(&stmt, &params).await;
    guard.open = false;
    match wrote {
        Ok(1) => Ok(Ok(())),
        Ok(0) => append_one(inner, guard, run, lease_token, entries, finish).await,
        // The entry is there already (a retried commit whose first try landed, say).
        Err(e) if e.as_db_error().and_then(|e| e.constraint()) == Some("durable_journal_pkey") => {
            append_one(inner, guard, run, lease_token, entries, finish).await
        }
        Ok(n) => Err(inner.error_text(format!(
            "run `{run}`: the append of one entry wrote {n} rows"
        ))),
        Err(e) => Err(inner.error(e)),
    }
}

/// A batch of one append (a lone run's step, or its end): one statement, its own
/// transaction. It locks the run, writes the entries (and the end) if the write passes, and
/// returns the locked row, from which the verdict is decided here, in `run`'s order, and
/// checked against what the statement wrote.
async fn append_one(
    inner: &Inner,
    guard: &mut TxGuard,
    run: &str,
    lease_token: u64,
    entries: &[JournalEntry],
    finish: &Option<Finish>,
) -> Result<Result<(), Rejected>, StoreError> {
    let client = guard.client.as_ref().expect("held until the end");
    let db = |e| inner.error(e);
    let sql = if finish.is_some() {
        &inner.sql.finish_one
    } else {
        &inner.sql.append_one
    };
    let stmt = client.prepare_cached(sql).await.map_err(db)?;
    let seq: Vec<i64> = entries.iter().map(|e| e.seq as i64).collect();
    let step: Vec<&str> = entries.iter().map(|e| e.step.as_str()).collect();
    let kind: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let attempt: Vec<i32> = entries.iter().map(|e| e.attempt as i32).collect();
    let payload: Vec<&str> = entries.iter().map(|e| e.payload.as_str()).collect();
    let at: Vec<i64> = entries.iter().map(|e| e.at as i64).collect();
    let consecutive = entries.windows(2).all(|p| p[1].seq == p[0].seq + 1);
    let token = lease_token as i64;
    let end = EndColumns::of(finish.as_ref());
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &run,
        &token,
        &seq,
        &step,
        &kind,
        &attempt,
        &payload,
        &at,
        &consecutive,
    ];
    if finish.is_some() {
        params.extend(end.params());
    }
    guard.open = true;
    let rows = client.query(&stmt, &params).await.map_err(db)?;
    guard.open = false;
    let Some(row) = rows.first() else {
        return Ok(Err(Rejected::UnknownRun));
    };
    let current = row.get::<_, i64>(0) as u64;
    let run_status: &str = row.get(1);
    let last = row.get::<_, i64>(2) as u64;
    let wrote = (row.get::<_, i64>(3) as usize, row.get::<_, i64>(4) as usize);
    let verdict = if current != lease_token {
        Err(Rejected::Fenced { current })
    } else if run_status != RunStatus::Running.as_str() {
        Err(Rejected::Finished)
    } else {
        check_sequence(last, entries.iter().map(|e| e.seq))
    };
    let expected = match verdict {
        Ok(()) => (entries.len(), usize::from(finish.is_some())),
        Err(_) => (0, 0),
    };
    if wrote != expected {
        return Err(inner.error_text(format!(
            "run `{run}`: the append wrote (entries, ends) {wrote:?} where its verdict \
             ({verdict:?}) needs {expected:?}"
        )));
    }
    Ok(verdict)
}

/// Whether the batch can be committed in one round trip: it appends to each run at most once,
/// creates no run it appends to, creates no id twice, and each append's entries are in
/// increasing order. Then the verdicts depend on the database only, and one statement can
/// decide them (see [`run_fast`]). Otherwise (several appends to one run, say the branches of
/// a parallel block finishing together) the two-round-trip path decides them in order here.
fn one_round_trip(batch: &[Write]) -> bool {
    let mut created = std::collections::HashSet::new();
    let mut appended = std::collections::HashSet::new();
    batch.iter().all(|write| match write {
        Write::CreateRun(new) => {
            !appended.contains(new.id.as_str()) && created.insert(new.id.as_str())
        }
        Write::Append { run, .. } => {
            !created.contains(run.as_str()) && appended.insert(run.as_str())
        }
    })
}

/// One round trip, pipelined: `BEGIN`; the creates; one statement that locks the appended
/// runs, decides each append's verdict, inserts the accepted entries and finishes the
/// accepted runs; `COMMIT`. A batch that needs one statement only sends it alone.
async fn run_fast(
    inner: &Inner,
    guard: &mut TxGuard,
    batch: &[Write],
) -> Result<Vec<Result<(), Rejected>>, StoreError> {
    let client = guard.client.as_ref().expect("held until the end");
    let sql = &inner.sql;
    let db = |e| inner.error(e);
    let now = now_millis();
    let mut creates = Creates::default();
    let (mut a_run, mut a_token, mut a_status, mut a_output, mut a_error, mut a_first) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut a_wake, mut a_consecutive, mut a_seen) = (vec![], vec![], vec![]);
    let (mut e_w, mut e_seq, mut e_step, mut e_kind, mut e_attempt, mut e_payload, mut e_at) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut queued = false;
    for write in batch {
        match write {
            Write::CreateRun(new) => {
                creates.push(new, now);
                queued |= new.owner.is_empty();
            }
            Write::Append {
                run,
                lease_token,
                entries,
                finish,
            } => {
                a_run.push(run.as_str());
                a_token.push(*lease_token as i64);
                let (status, output, error, wake_at, seen) = finish_columns(finish.as_ref());
                a_status.push(status.map(RunStatus::as_str));
                a_wake.push(wake_at);
                a_seen.push(seen);
                a_consecutive.push(entries.windows(2).all(|p| p[1].seq == p[0].seq + 1));
                a_output.push(output);
                a_error.push(error);
                a_first.push(entries.first().map(|e| e.seq as i64));
                let w = a_run.len() as i64; // WITH ORDINALITY counts from 1
                for entry in entries {
                    e_w.push(w);
                    e_seq.push(entry.seq as i64);
                    e_step.push(entry.step.as_str());
                    e_kind.push(entry.kind.as_str());
                    e_attempt.push(entry.attempt as i32);
                    e_payload.push(entry.payload.as_str());
                    e_at.push(entry.at as i64);
                }
            }
        }
    }
    let create_stmt = if creates.ids.is_empty() {
        None
    } else {
        Some(client.prepare_cached(&sql.create_runs).await.map_err(db)?)
    };
    let append_stmt = if a_run.is_empty() {
        None
    } else {
        Some(client.prepare_cached(&sql.append_runs).await.map_err(db)?)
    };
    if queued {
        // This process's watch at once; the others' through the NOTIFY.
        inner.work.bump();
    }
    let notify_stmt = if queued {
        Some(client.prepare_cached(&sql.notify).await.map_err(db)?)
    } else {
        None
    };
    // One statement is a transaction of its own: no `BEGIN` and `COMMIT` around it, which
    // saves a lone run two messages and two server replies per step.
    let statements = [
        create_stmt.is_some(),
        append_stmt.is_some(),
        notify_stmt.is_some(),
    ];
    let explicit = statements.iter().filter(|&&s| s).count() > 1;
    let begin = async {
        if explicit {
            client.batch_execute("BEGIN").await
        } else {
            Ok(())
        }
    };
    guard.open = true;
    let create = async {
        match &create_stmt {
            Some(stmt) => client.query(stmt, &creates.params()).await,
            None => Ok(Vec::new()),
        }
    };
    let append = async {
        match &append_stmt {
            Some(stmt) => {
                client
                    .query(
                        stmt,
                        &[
                            &a_run,
                            &a_token,
                            &a_status,
                            &a_output,
                            &a_error,
                            &a_first,
                            &e_w,
                            &e_seq,
                            &e_step,
                            &e_kind,
                            &e_attempt,
                            &e_payload,
                            &e_at,
                            &a_wake,
                            &a_consecutive,
                            &a_seen,
                        ],
                    )
                    .await
            }
            None => Ok(Vec::new()),
        }
    };
    let notify = async {
        match &notify_stmt {
            Some(stmt) => client.execute(stmt, &[&sql.channel]).await,
            None => Ok(0),
        }
    };
    let commit = async {
        if explicit {
            client.batch_execute("COMMIT").await
        } else {
            Ok(())
        }
    };
    let ((), created, appended, _, ()) =
        tokio::try_join!(begin, create, append, notify, commit).map_err(db)?;
    guard.open = false;

    let created: std::collections::HashSet<String> =
        created.iter().map(|row| row.get::<_, String>(0)).collect();
    let appends: Vec<&Write> = batch
        .iter()
        .filter(|w| matches!(w, Write::Append { .. }))
        .collect();
    let mut verdicts_of_appends = vec![Err(Rejected::UnknownRun); a_run.len()];
    for row in &appended {
        let w = row.get::<_, i64>(0) as usize - 1;
        let verdict: &str = row.get(1);
        let current: Option<i64> = row.get(2);
        let last: i64 = row.get(3);
        verdicts_of_appends[w] = match verdict {
            "ok" => Ok(()),
            "unknown" => Err(Rejected::UnknownRun),
            "fenced" => Err(Rejected::Fenced {
                current: current.unwrap_or(0) as u64,
            }),
            "finished" => Err(Rejected::Finished),
            "sequence" => {
                let Write::Append { entries, .. } = appends[w] else {
                    unreachable!("only appends")
                };
                match check_sequence(last as u64, entries.iter().map(|e| e.seq)) {
                    Err(rejected) => Err(rejected),
                    Ok(()) => {
                        return Err(inner.error_text("a sequence verdict on consecutive entries"))
                    }
                }
            }
            other => return Err(inner.error_text(format!("unexpected verdict `{other}`"))),
        };
    }
    let mut appends = verdicts_of_appends.into_iter();
    Ok(batch
        .iter()
        .map(|write| match write {
            Write::CreateRun(new) if created.contains(new.id.as_str()) => Ok(()),
            Write::CreateRun(_) => Err(Rejected::DuplicateRun),
            Write::Append { .. } => appends.next().expect("one verdict per append"),
        })
        .collect())
}

async fn run(
    inner: &Inner,
    guard: &mut TxGuard,
    batch: &[Write],
) -> Result<Vec<Result<(), Rejected>>, StoreError> {
    let client = guard.client.as_ref().expect("held until the end");
    let sql = &inner.sql;
    let db = |e| inner.error(e);

    // New runs: the first of each id in the batch is inserted, a repeat is a duplicate.
    let now = now_millis();
    let mut create_at: HashMap<&str, usize> = HashMap::new();
    let mut creates = Creates::default();
    let mut queued = false;
    // The runs the batch appends to, and those it may end (their parents are locked too).
    let mut appended: Vec<&str> = Vec::new();
    let mut ending: Vec<&str> = Vec::new();
    for (i, write) in batch.iter().enumerate() {
        match write {
            Write::CreateRun(new) => {
                if create_at.contains_key(new.id.as_str()) {
                    continue;
                }
                create_at.insert(new.id.as_str(), i);
                creates.push(new, now);
                queued |= new.owner.is_empty();
            }
            Write::Append { run, finish, .. } => {
                appended.push(run.as_str());
                let ends = matches!(
                    finish,
                    Some(Finish::Completed(_) | Finish::Failed(_) | Finish::Cancelled(_))
                );
                if ends {
                    ending.push(run.as_str());
                }
            }
        }
    }
    appended.sort_unstable();
    appended.dedup();

    let create_stmt = client.prepare_cached(&sql.create_runs).await.map_err(db)?;
    let lock_stmt = client.prepare_cached(&sql.lock_runs).await.map_err(db)?;
    if queued {
        // This process's watch at once; the others' through the NOTIFY.
        inner.work.bump();
    }
    let notify_stmt = if queued {
        Some(client.prepare_cached(&sql.notify).await.map_err(db)?)
    } else {
        None
    };
    let begin = client.batch_execute("BEGIN");
    guard.open = true;
    let create = async {
        if creates.ids.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&create_stmt, &creates.params()).await
    };
    let lock = async {
        if appended.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&lock_stmt, &[&appended, &ending]).await
    };
    // Wakes idle workers once this commits (NOTIFY is delivered at commit, never before).
    let notify = async {
        match &notify_stmt {
            Some(stmt) => client.execute(stmt, &[&sql.channel]).await,
            None => Ok(0),
        }
    };
    let ((), created, locked, _) = tokio::try_join!(begin, create, lock, notify).map_err(db)?;
    let created: std::collections::HashSet<String> =
        created.iter().map(|row| row.get::<_, String>(0)).collect();
    let mut runs: HashMap<String, Locked> = locked
        .iter()
        .map(|row| {
            let status: String = row.get(2);
            let last: Option<i64> = row.get(3);
            (
                row.get::<_, String>(0),
                Locked {
                    token: row.get::<_, i64>(1) as u64,
                    running: status == RunStatus::Running.as_str(),
                    last_seq: last.unwrap_or(0) as u64,
                },
            )
        })
        .collect();

    // Verdicts, in batch order.
    let mut verdicts = Vec::with_capacity(batch.len());
    let (mut e_run, mut e_seq, mut e_step, mut e_kind, mut e_attempt, mut e_payload, mut e_at) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut f_run, mut f_status, mut f_output, mut f_error, mut f_wake, mut f_seen) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (i, write) in batch.iter().enumerate() {
        let verdict = match write {
            Write::CreateRun(new) => {
                let first = create_at.get(new.id.as_str()) == Some(&i);
                if first && created.contains(new.id.as_str()) {
                    Ok(())
                } else {
                    Err(Rejected::DuplicateRun)
                }
            }
            Write::Append {
                run,
                lease_token,
                entries,
                finish,
            } => {
                // A run created later in this batch does not exist yet for this write.
                let later = create_at.get(run.as_str()).is_some_and(|&at| at > i);
                match runs.get_mut(run.as_str()).filter(|_| !later) {
                    None => Err(Rejected::UnknownRun),
                    Some(locked) if locked.token != *lease_token => Err(Rejected::Fenced {
                        current: locked.token,
                    }),
                    Some(locked) if !locked.running => Err(Rejected::Finished),
                    Some(locked) => {
                        match check_sequence(locked.last_seq, entries.iter().map(|e| e.seq)) {
                            Err(rejected) => Err(rejected),
                            Ok(()) => {
                                if let Some(entry) = entries.last() {
                                    locked.last_seq = entry.seq;
                                }
                                for entry in entries {
                                    e_run.push(run.as_str());
                                    e_seq.push(entry.seq as i64);
                                    e_step.push(entry.step.as_str());
                                    e_kind.push(entry.kind.as_str());
                                    e_attempt.push(entry.attempt as i32);
                                    e_payload.push(entry.payload.as_str());
                                    e_at.push(entry.at as i64);
                                }
                                if let Some(finish) = finish {
                                    locked.running = false;
                                    let (status, output, error, wake_at, seen) =
                                        finish_columns(Some(finish));
                                    f_run.push(run.as_str());
                                    f_status.push(status.map_or("running", RunStatus::as_str));
                                    f_output.push(output);
                                    f_error.push(error);
                                    f_wake.push(wake_at);
                                    f_seen.push(seen);
                                }
                                Ok(())
                            }
                        }
                    }
                }
            }
        };
        verdicts.push(verdict);
    }

    let insert_stmt = if e_run.is_empty() {
        None
    } else {
        Some(
            client
                .prepare_cached(&sql.insert_entries)
                .await
                .map_err(db)?,
        )
    };
    let finish_stmt = if f_run.is_empty() {
        None
    } else {
        Some(client.prepare_cached(&sql.finish_runs).await.map_err(db)?)
    };
    let insert = async {
        match &insert_stmt {
            Some(stmt) => {
                client
                    .execute(
                        stmt,
                        &[
                            &e_run, &e_seq, &e_step, &e_kind, &e_attempt, &e_payload, &e_at,
                        ],
                    )
                    .await
            }
            None => Ok(0),
        }
    };
    let finish = async {
        match &finish_stmt {
            Some(stmt) => {
                client
                    .execute(
                        stmt,
                        &[&f_run, &f_status, &f_output, &f_error, &f_wake, &f_seen],
                    )
                    .await
            }
            None => Ok(0),
        }
    };
    let commit = client.batch_execute("COMMIT");
    let (_, _, ()) = tokio::try_join!(insert, finish, commit).map_err(db)?;
    guard.open = false;
    Ok(verdicts)
}

/// A lone run's end as the parameters of `finish_step` and `finish_one` (`$9`/`$10` on).
struct EndColumns<'a> {
    status: Option<&'static str>,
    output: Option<&'a str>,
    error: Option<&'a str>,
    wake_at: Option<i64>,
    seen: Option<i64>,
}

impl<'a> EndColumns<'a> {
    fn of(finish: Option<&'a Finish>) -> Self {
        let (status, output, error, wake_at, seen) = finish_columns(finish);
        Self {
            status: status.map(RunStatus::as_str),
            output,
            error,
            wake_at,
            seen,
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [
            &self.status,
            &self.output,
            &self.error,
            &self.wake_at,
            &self.seen,
        ]
    }
}

/// The status, output, error, wake time and inbox seq seen that a run's end writes.
type EndParts<'a> = (
    Option<RunStatus>,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
    Option<i64>,
);

fn finish_columns(finish: Option<&Finish>) -> EndParts<'_> {
    let end = |status, output, error| (Some(status), output, error, None, None);
    match finish {
        Some(Finish::Completed(o)) => end(RunStatus::Completed, Some(o.as_str()), None),
        Some(Finish::Failed(e)) => end(RunStatus::Failed, None, Some(e.as_str())),
        Some(Finish::Cancelled(r)) => end(RunStatus::Cancelled, None, Some(r.as_str())),
        Some(Finish::Suspended {
            wake_at,
            inbox_seen,
        }) => (
            Some(RunStatus::Suspended),
            None,
            None,
            wake_at.map(|at| at.min(i64::MAX as u64) as i64),
            inbox_seen.map(|seen| seen.min(i64::MAX as u64) as i64),
        ),
        None => (None, None, None, None, None),
    }
}

/// Holds the batch's connection; if the batch is abandoned mid-transaction (an error, or the
/// future dropped), the connection is closed instead of going back to the pool, so the
/// server rolls the transaction back and no later user inherits it.
struct TxGuard {
    client: Option<Object>,
    open: bool,
}

impl TxGuard {
    fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

impl Drop for TxGuard {
    fn drop(&mut self) {
        if self.open {
            self.discard();
        }
    }
}
