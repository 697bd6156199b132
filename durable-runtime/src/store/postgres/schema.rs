//! The schema, its versioned migrations, and the SQL text of every statement.

use super::Inner;
use crate::store::{StoreError, StoreErrorKind};

/// The schema version this code writes and reads (the number of migrations it knows).
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The database's clock, in milliseconds since the Unix epoch: every lease is computed on it.
pub(crate) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Migration `i` takes the schema from version `i` to `i + 1`. `{s}` is the quoted schema.
/// Append only: a released migration never changes.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: runs and journals.
    "CREATE TABLE {s}.durable_runs (
         id text PRIMARY KEY,
         pos bigint GENERATED ALWAYS AS IDENTITY,
         workflow text NOT NULL,
         fingerprint text NOT NULL,
         status text NOT NULL,
         input text NOT NULL,
         output text,
         error text,
         owner text,
         lease_token bigint NOT NULL,
         lease_expires_at bigint NOT NULL,
         created_at bigint NOT NULL,
         updated_at bigint NOT NULL
     );
     CREATE INDEX durable_runs_runnable ON {s}.durable_runs (created_at, pos)
         WHERE status = 'running';
     CREATE INDEX durable_runs_owner ON {s}.durable_runs (owner) WHERE status = 'running';
     CREATE INDEX durable_runs_newest ON {s}.durable_runs (created_at DESC, pos DESC);
     CREATE TABLE {s}.durable_journal (
         run_id text NOT NULL,
         seq bigint NOT NULL,
         step text NOT NULL,
         kind text NOT NULL,
         attempt integer NOT NULL,
         payload text NOT NULL,
         at bigint NOT NULL,
         PRIMARY KEY (run_id, seq)
     );",
    // 2: suspension (wake_at, indexed where suspended), requested cancellation, the inbox,
    // and listing in (created_at, id) order.
    "ALTER TABLE {s}.durable_runs ADD COLUMN wake_at bigint, ADD COLUMN cancel_requested text;
     CREATE INDEX durable_runs_wake ON {s}.durable_runs (wake_at) WHERE status = 'suspended';
     CREATE INDEX durable_runs_cancel ON {s}.durable_runs (owner)
         WHERE cancel_requested IS NOT NULL AND status = 'running';
     CREATE INDEX durable_runs_listing ON {s}.durable_runs (created_at DESC, id DESC);
     CREATE INDEX durable_runs_listing_workflow
         ON {s}.durable_runs (workflow, created_at DESC, id DESC);
     CREATE INDEX durable_runs_listing_status
         ON {s}.durable_runs (status, created_at DESC, id DESC);
     CREATE TABLE {s}.durable_inbox (
         run_id text NOT NULL,
         seq bigint NOT NULL,
         kind text NOT NULL,
         name text NOT NULL,
         payload text NOT NULL,
         at bigint NOT NULL,
         PRIMARY KEY (run_id, seq)
     );
     CREATE UNIQUE INDEX durable_inbox_callbacks ON {s}.durable_inbox (run_id, name)
         WHERE kind = 'callback';",
    // 3: child runs (`call`): the parent link, indexed where set (a cancellation cascades
    // down it), and a trigger that delivers a child's end to its parent's inbox in the very
    // statement that finishes the child, so whichever path or process commits the end, the
    // message commits with it or not at all. The payload is `inbox::child_end_payload`'s.
    // The parent's row lock orders this delivery with every other one to that parent.
    "ALTER TABLE {s}.durable_runs ADD COLUMN parent_run text, ADD COLUMN parent_step text;
     CREATE INDEX durable_runs_parent ON {s}.durable_runs (parent_run)
         WHERE parent_run IS NOT NULL;
     CREATE FUNCTION {s}.durable_child_ended() RETURNS trigger LANGUAGE plpgsql AS $body$
     DECLARE
         parent_status text;
     BEGIN
         SELECT status INTO parent_status FROM {s}.durable_runs
             WHERE id = NEW.parent_run FOR UPDATE;
         -- A parent that finished (or vanished) meanwhile has nobody to tell.
         IF parent_status IS NULL OR parent_status IN ('completed', 'failed', 'cancelled') THEN
             RETURN NULL;
         END IF;
         INSERT INTO {s}.durable_inbox (run_id, seq, kind, name, payload, at)
             SELECT NEW.parent_run, coalesce(max(seq), 0) + 1, 'child', NEW.parent_step,
                 CASE NEW.status
                     WHEN 'completed' THEN '{\"ok\":' || NEW.output || '}'
                     WHEN 'failed' THEN '{\"error\":' || to_json(NEW.error)::text || '}'
                     ELSE '{\"cancelled\":' || to_json(NEW.error)::text || '}'
                 END,
                 (extract(epoch from clock_timestamp()) * 1000)::bigint
             FROM {s}.durable_inbox WHERE run_id = NEW.parent_run;
         -- A suspended parent wakes, nobody's, for whichever worker is free.
         UPDATE {s}.durable_runs SET status = 'running', wake_at = NULL, owner = NULL,
             lease_expires_at = 0
             WHERE id = NEW.parent_run AND status = 'suspended';
         IF FOUND THEN
             PERFORM pg_notify(TG_TABLE_SCHEMA || '_work', '');
         END IF;
         RETURN NULL;
     END
     $body$;
     CREATE TRIGGER durable_child_ended AFTER UPDATE OF status ON {s}.durable_runs
         FOR EACH ROW
         WHEN (NEW.parent_run IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
             AND NEW.status IN ('completed', 'failed', 'cancelled'))
         EXECUTE FUNCTION {s}.durable_child_ended();",
    // 4: no run sleeps through a message. Each run keeps the number of its last inbox message
    // (`inbox_last`) and how far its last suspension had seen (`inbox_seen`); every statement
    // that records a suspension leaves the run awake when a message past what its waits saw
    // is there (see `end_assignments`), reading `inbox_last` from the run's row, which the
    // suspension locks and every delivery updates (so a delivery that commits while the
    // suspension waits for the lock is seen too). A trigger sets `inbox_last` on every insert
    // into the inbox, whoever inserts (a delivery, the child-ended trigger, an older durable
    // still running beside this one during an upgrade), and gives the message its checksum: a
    // SHA-256 of its fields computed by the server (`durable_inbox_sum`, the one definition
    // both the trigger and `load_inbox` use), so a payload edited in the table is refused
    // instead of taken. Messages from before have none and are read as they are. A suspended
    // run with `inbox_last > inbox_seen` slept through a message (runs suspended before this
    // version count as having seen nothing): the claim wakes those, found through an index
    // that holds only them.
    "ALTER TABLE {s}.durable_inbox ADD COLUMN checksum bytea;
     ALTER TABLE {s}.durable_runs ADD COLUMN inbox_last bigint NOT NULL DEFAULT 0,
         ADD COLUMN inbox_seen bigint NOT NULL DEFAULT 0;
     UPDATE {s}.durable_runs r SET inbox_last = i.last
         FROM (SELECT run_id, max(seq) AS last FROM {s}.durable_inbox GROUP BY run_id) i
         WHERE r.id = i.run_id;
     CREATE INDEX durable_runs_unread ON {s}.durable_runs (created_at)
         WHERE status = 'suspended' AND inbox_last > inbox_seen;
     CREATE FUNCTION {s}.durable_inbox_sum(bigint, text, text, text, bigint) RETURNS bytea
         LANGUAGE sql STABLE
         AS $sum$ SELECT sha256(convert_to(json_build_array($1, $2, $3, $4, $5)::text, 'UTF8')) $sum$;
     CREATE FUNCTION {s}.durable_inbox_written() RETURNS trigger LANGUAGE plpgsql AS $body$
     BEGIN
         NEW.checksum := {s}.durable_inbox_sum(NEW.seq, NEW.kind, NEW.name, NEW.payload, NEW.at);
         UPDATE {s}.durable_runs SET inbox_last = greatest(inbox_last, NEW.seq)
             WHERE id = NEW.run_id;
         RETURN NEW;
     END
     $body$;
     CREATE TRIGGER durable_inbox_written BEFORE INSERT ON {s}.durable_inbox
         FOR EACH ROW EXECUTE FUNCTION {s}.durable_inbox_written();",
];

/// Refuses a schema name that would need quoting games (it is spliced into SQL text).
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::other(format!(
            "postgres store: `{name}` is not a usable schema name: use lowercase letters, digits \
             and `_`, at most 48 characters, not starting with a digit"
        )))
    }
}

/// The SQL text of every statement, with the schema spliced in once.
///
/// Every statement that ends a run's walk with a suspension leaves a run whose cancellation
/// was asked for, or that has an inbox message past what its waits saw (after its worker
/// last looked, before the suspension landed), awake and nobody's instead: the next claim
/// carries the cancellation out or takes the message (see `end_assignments`).
pub(crate) struct Sql {
    pub(crate) create_runs: String,
    pub(crate) lock_runs: String,
    pub(crate) append_runs: String,
    pub(crate) append_step: String,
    pub(crate) finish_step: String,
    pub(crate) append_one: String,
    pub(crate) finish_one: String,
    pub(crate) insert_entries: String,
    pub(crate) finish_runs: String,
    pub(crate) notify: String,
    pub(crate) claim: String,
    pub(crate) renew: String,
    pub(crate) release: String,
    pub(crate) load_run: String,
    pub(crate) load_journal: String,
    pub(crate) wake_due: String,
    pub(crate) next_wake: String,
    pub(crate) wake: String,
    pub(crate) cancel_requests: String,
    pub(crate) runs: String,
    pub(crate) journal: String,
    pub(crate) inbox: String,
    /// A run's inbox, each message with whether it matches its checksum.
    pub(crate) load_inbox: String,
    /// The NOTIFY channel of this schema.
    pub(crate) channel: String,
}

pub(crate) const RUN_COLUMNS: &str = "id, workflow, fingerprint, status, input, output, error, \
                                      owner, lease_token, created_at, updated_at, wake_at, \
                                      cancel_requested, parent_run, parent_step";

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let runs = format!("{s}.durable_runs");
        let journal = format!("{s}.durable_journal");
        let cols = RUN_COLUMNS;
        let r_cols = RUN_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            // An empty owner queues the run: nobody holds it, any worker may claim it at once.
            create_runs: format!(
                "INSERT INTO {runs} (id, workflow, fingerprint, status, input, owner, \
                 lease_token, lease_expires_at, created_at, updated_at, parent_run, parent_step) \
                 SELECT u.id, u.workflow, u.fingerprint, 'running', u.input, NULLIF(u.owner, ''), \
                 1, CASE WHEN u.owner = '' THEN 0 ELSE n.now + u.lease_ms END, n.now, n.now, \
                 u.parent_run, u.parent_step \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::bigint[], $7::text[], $8::text[]) WITH ORDINALITY AS u(id, workflow, \
                 fingerprint, input, owner, lease_ms, parent_run, parent_step, i), \
                 (SELECT {NOW_MS} AS now) n ORDER BY u.i \
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            // In id order, so two transactions locking overlapping runs cannot deadlock; with
            // the parents of the runs the batch ends ($2), whose rows the child-ended trigger
            // locks: all taken at once in id order, two batches committing at once (or two
            // workers) cannot each hold a parent the other's trigger waits for. Each parent
            // is looked up by its child's key (a generic plan could otherwise walk the whole
            // index of runs that have a parent).
            lock_runs: format!(
                "SELECT t.id, t.lease_token, t.status, \
                 (SELECT max(j.seq) FROM {journal} j WHERE j.run_id = t.id) \
                 FROM (SELECT unnest($1::text[]) AS id UNION \
                 SELECT (SELECT c.parent_run FROM {runs} c WHERE c.id = e.id) \
                 FROM unnest($2::text[]) AS e(id)) k \
                 JOIN {runs} t ON t.id = k.id ORDER BY t.id FOR UPDATE OF t"
            ),
            // The one-statement append of a batch that appends to each run at most once:
            // lock the runs (and, as `lock_runs`, the parents of those it ends), decide each
            // write's verdict, insert the accepted entries and
            // finish the accepted runs, and return the verdicts. Entries found already there
            // are a duplicate even on a finished run: a retried commit whose first try landed
            // (and finished the run) then counts as committed, not as a lost lease.
            append_runs: format!(
                "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], \
                 $4::text[], $5::text[], $6::bigint[], $14::bigint[], $15::bool[], \
                 $16::bigint[]) WITH ORDINALITY \
                 AS u(id, token, fstatus, output, error, first_seq, wake_at, consecutive, seen, \
                 w)), \
                 r AS (SELECT t.id, t.lease_token, t.status, \
                 (SELECT max(j.seq) FROM {journal} j WHERE j.run_id = t.id) AS last \
                 FROM (SELECT u.id FROM u UNION \
                 SELECT (SELECT c.parent_run FROM {runs} c WHERE c.id = u.id) FROM u \
                 WHERE u.fstatus IN ('completed', 'failed', 'cancelled')) k \
                 JOIN {runs} t ON t.id = k.id ORDER BY t.id FOR UPDATE OF t), \
                 v AS (SELECT u.w, u.id, u.fstatus, u.output, u.error, u.first_seq, u.wake_at, \
                 u.seen, \
                 r.lease_token AS current, \
                 CASE WHEN r.id IS NULL THEN 'unknown' \
                 WHEN r.lease_token <> u.token THEN 'fenced' \
                 WHEN r.status <> 'running' THEN 'finished' \
                 WHEN u.first_seq IS NOT NULL AND (NOT u.consecutive \
                 OR u.first_seq <> coalesce(r.last, 0) + 1) THEN 'sequence' \
                 ELSE 'ok' END AS verdict, \
                 coalesce(r.last, 0) AS last \
                 FROM u LEFT JOIN r ON r.id = u.id), \
                 ins AS (INSERT INTO {journal} (run_id, seq, step, kind, attempt, payload, at) \
                 SELECT v.id, e.seq, e.step, e.kind, e.attempt, e.payload, e.at \
                 FROM unnest($7::bigint[], $8::bigint[], $9::text[], $10::text[], \
                 $11::integer[], $12::text[], $13::bigint[]) \
                 AS e(w, seq, step, kind, attempt, payload, at) \
                 JOIN v ON v.w = e.w AND v.verdict = 'ok'), \
                 fin AS (UPDATE {runs} t SET {end} FROM v \
                 WHERE t.id = v.id AND v.verdict = 'ok' AND v.fstatus IS NOT NULL) \
                 SELECT w, verdict, current, last FROM v",
                end = end_assignments("v.fstatus", "v.output", "v.error", "v.wake_at", "v.seen")
            ),
            // A lone run's step (and its end), the commonest writes of all, in the cheapest
            // statement that fences them; see `one_entry_append`.
            append_step: one_entry_append(&runs, &journal, false),
            finish_step: one_entry_append(&runs, &journal, true),
            // Any other batch of one append: the same verdicts as `append_runs`, decided in
            // Rust from the locked row it returns, with what it wrote to check them against.
            // A simpler plan than `append_runs`'s (0.29 against 0.35 ms per commit with
            // pgbench); `finish_one` also ends the run.
            append_one: one_run_append(&runs, &journal, false),
            finish_one: one_run_append(&runs, &journal, true),
            insert_entries: format!(
                "INSERT INTO {journal} (run_id, seq, step, kind, attempt, payload, at) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], \
                 $5::integer[], $6::text[], $7::bigint[])"
            ),
            finish_runs: format!(
                "UPDATE {runs} t SET {} \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                 $6::bigint[]) AS u(id, status, output, error, wake_at, seen) WHERE t.id = u.id",
                end_assignments("u.status", "u.output", "u.error", "u.wake_at", "u.seen")
            ),
            notify: "SELECT pg_notify($1, '')".into(),
            // A CTE: PostgreSQL never inlines one with FOR UPDATE, so LIMIT holds.
            claim: format!(
                "WITH picked AS ( \
                 SELECT id FROM {runs} \
                 WHERE status = 'running' \
                 AND (owner IS NULL OR (owner <> $1 AND lease_expires_at <= {NOW_MS})) \
                 AND ($4::text[] IS NULL OR (workflow, fingerprint) IN \
                 (SELECT * FROM unnest($4::text[], $5::text[]))) \
                 ORDER BY created_at, pos LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE {runs} r SET owner = $1, lease_token = r.lease_token + 1, \
                 lease_expires_at = {NOW_MS} + $2 \
                 FROM picked WHERE r.id = picked.id RETURNING {r_cols}, r.pos"
            ),
            // Due sleepers become running and nobody's (for whichever worker is free), and
            // the workers hear of it.
            // So do the runs that slept through a message (a version before 4 suspended them
            // with one there), through the index that holds only them.
            wake_due: format!(
                "WITH due AS (SELECT id FROM {runs} WHERE status = 'suspended' \
                 AND wake_at <= {NOW_MS} ORDER BY wake_at LIMIT 1000 FOR UPDATE SKIP LOCKED), \
                 unread AS (SELECT id FROM {runs} WHERE status = 'suspended' \
                 AND inbox_last > inbox_seen LIMIT 1000 FOR UPDATE SKIP LOCKED), \
                 woken AS (UPDATE {runs} r SET status = 'running', wake_at = NULL, owner = NULL, \
                 lease_expires_at = 0 FROM (SELECT id FROM due UNION SELECT id FROM unread) d \
                 WHERE r.id = d.id RETURNING r.id) \
                 SELECT pg_notify($1, '') FROM (SELECT 1 FROM woken LIMIT 1) w"
            ),
            next_wake: format!(
                "SELECT wake_at FROM {runs} WHERE status = 'suspended' AND wake_at IS NOT NULL \
                 ORDER BY wake_at LIMIT 1"
            ),
            wake: format!(
                "UPDATE {runs} SET status = 'running', wake_at = NULL, owner = NULL, \
                 lease_expires_at = 0 WHERE id = $1 AND status = 'suspended'"
            ),
            cancel_requests: format!(
                "SELECT id, cancel_requested FROM {runs} WHERE owner = $1 \
                 AND cancel_requested IS NOT NULL AND status = 'running'"
            ),
            runs: runs.clone(),
            journal: journal.clone(),
            inbox: format!("{s}.durable_inbox"),
            load_inbox: format!(
                "SELECT seq, kind, name, payload, at, checksum IS NULL \
                 OR checksum = {s}.durable_inbox_sum(seq, kind, name, payload, at) \
                 FROM {s}.durable_inbox WHERE run_id = $1 ORDER BY seq"
            ),
            renew: format!(
                "WITH mine AS (SELECT id FROM {runs} WHERE owner = $1 AND status = 'running' \
                 ORDER BY id FOR UPDATE) \
                 UPDATE {runs} r SET lease_expires_at = {NOW_MS} + $2 \
                 FROM mine WHERE r.id = mine.id"
            ),
            // Only running runs hold a lease; the partial index by owner (running runs) serves
            // it, where `owner = $1` alone read the whole table.
            release: format!(
                "WITH mine AS (SELECT id FROM {runs} WHERE owner = $1 AND status = 'running' \
                 ORDER BY id FOR UPDATE) \
                 UPDATE {runs} r SET owner = NULL, lease_expires_at = 0 \
                 FROM mine WHERE r.id = mine.id"
            ),
            load_run: format!("SELECT {cols} FROM {runs} WHERE id = $1"),
            load_journal: format!(
                "SELECT seq, step, kind, attempt, payload, at FROM {journal} \
                 WHERE run_id = $1 ORDER BY seq"
            ),
            channel: format!("{schema}_work"),
        }
    }
}

impl Sql {
    /// The listing, newest first, under `conditions` (on `$1`… in order), `LIMIT $limit`.
    pub(crate) fn list_runs(&self, conditions: &[String], limit: usize) -> String {
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {} ", conditions.join(" AND "))
        };
        format!(
            "SELECT {RUN_COLUMNS} FROM {} {filter}ORDER BY created_at DESC, id DESC LIMIT ${limit}",
            self.runs
        )
    }
}

/// The columns an accepted end writes on run `t`, from the end's `status`, `output`, `error`,
/// `wake_at` and, for a suspension, the inbox seq its waits had seen (`seen`; NULL when none
/// looked) (SQL expressions): the meaning of an end in one place, for every statement that
/// writes one. A suspension lets go of the run (no owner, no lease); one that finds the run's
/// cancellation asked for, or a message past `seen` in its inbox (`t.inbox_last`, which every
/// delivery sets under the row lock this statement holds), leaves it running instead, for the
/// next claim to carry out or take. Either way the run has seen its inbox up to there.
fn end_assignments(status: &str, output: &str, error: &str, wake_at: &str, seen: &str) -> String {
    let awake =
        format!("(t.cancel_requested IS NOT NULL OR coalesce(t.inbox_last > {seen}, false))");
    format!(
        "status = CASE WHEN {status} = 'suspended' AND {awake} \
         THEN 'running' ELSE {status} END, \
         output = coalesce({output}, t.output), error = coalesce({error}, t.error), \
         wake_at = CASE WHEN {status} <> 'suspended' OR NOT {awake} \
         THEN {wake_at} END, \
         inbox_seen = CASE WHEN {status} = 'suspended' THEN t.inbox_last \
         ELSE t.inbox_seen END, \
         owner = CASE WHEN {status} = 'suspended' THEN NULL ELSE t.owner END, \
         lease_expires_at = CASE WHEN {status} = 'suspended' THEN 0 \
         ELSE t.lease_expires_at END, \
         cancel_requested = CASE WHEN {status} = 'suspended' THEN t.cancel_requested \
         ELSE NULL END, \
         updated_at = {NOW_MS}"
    )
}

/// The statement of a batch of one append of one entry to one run, the cheapest that fences
/// it: insert the entry if the run, locked, is running under this lease and holds the entry
/// before it, and with `finish` end the run too. Whether the journal runs without a gap from
/// 1 is decided by that one entry, not `max(seq)`: every path keeps it so. It writes the entry
/// (and the end) or nothing: a duplicate fails on the journal's key, anything else refused
/// writes nothing; then `one_run_append`'s statement tells why. Parameters: run, lease token,
/// the entry's columns ($3 to $8), and with `finish` the end's status, output, error, wake
/// time and inbox seq seen ($9 to $13). Returns the number of entries written, or with `finish` of runs ended.
/// In a tight loop of commits: 0.27 against `one_run_append`'s 0.31 ms.
fn one_entry_append(runs: &str, journal: &str, finish: bool) -> String {
    let insert = format!(
        "INSERT INTO {journal} (run_id, seq, step, kind, attempt, payload, at) \
         SELECT $1, $3, $4, $5, $6, $7, $8 FROM {runs} t \
         WHERE t.id = $1 AND t.lease_token = $2 AND t.status = 'running' \
         AND ($3::bigint = 1 OR EXISTS (SELECT 1 FROM {journal} j \
         WHERE j.run_id = $1 AND j.seq = $3::bigint - 1)) \
         FOR UPDATE OF t"
    );
    if !finish {
        return insert;
    }
    format!(
        "WITH ins AS ({insert} RETURNING 1) \
         UPDATE {runs} t SET {} WHERE t.id = $1 AND EXISTS (SELECT 1 FROM ins)",
        end_assignments("$9", "$10", "$11", "$12::bigint", "$13::bigint")
    )
}

/// The statement of a batch of one append to one run: lock the run, read its lease, status
/// and last position, insert the entries if the write passes, and with `finish` end the run
/// too. Parameters: run, lease token, the entries' columns ($3 to $8), whether their
/// positions are consecutive ($9), and with `finish` the end's status, output, error, wake
/// time and inbox seq seen ($10 to $14). Returns the locked row's token, status and last position, and how many
/// entries (and ends) it wrote.
fn one_run_append(runs: &str, journal: &str, finish: bool) -> String {
    let fin = if finish {
        format!(
            ", fin AS (UPDATE {runs} t SET {} \
             WHERE t.id = $1 AND EXISTS (SELECT 1 FROM ok) RETURNING 1)",
            end_assignments("$10", "$11", "$12", "$13::bigint", "$14::bigint")
        )
    } else {
        String::new()
    };
    let ended = if finish {
        "(SELECT count(*) FROM fin)"
    } else {
        "0::bigint"
    };
    format!(
        "WITH r AS (SELECT t.lease_token, t.status, \
         (SELECT max(j.seq) FROM {journal} j WHERE j.run_id = t.id) AS last \
         FROM {runs} t WHERE t.id = $1 FOR UPDATE), \
         ok AS (SELECT 1 FROM r WHERE r.lease_token = $2 AND r.status = 'running' \
         AND $9::bool AND (cardinality($3::bigint[]) = 0 \
         OR ($3::bigint[])[1] = coalesce(r.last, 0) + 1)), \
         ins AS (INSERT INTO {journal} (run_id, seq, step, kind, attempt, payload, at) \
         SELECT $1, e.seq, e.step, e.kind, e.attempt, e.payload, e.at \
         FROM unnest($3::bigint[], $4::text[], $5::text[], $6::integer[], $7::text[], \
         $8::bigint[]) AS e(seq, step, kind, attempt, payload, at) \
         WHERE EXISTS (SELECT 1 FROM ok) RETURNING 1){fin} \
         SELECT r.lease_token, r.status, coalesce(r.last, 0), \
         (SELECT count(*) FROM ins), {ended} FROM r"
    )
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction under an advisory lock keyed by
/// the schema's name: a second worker starting at once waits, then finds it current.
pub(crate) async fn migrate(inner: &Inner) -> Result<(), StoreError> {
    let mut client = inner.client().await?;
    let s = format!("\"{}\"", inner.schema);
    let tx = client.transaction().await.map_err(|e| inner.error(e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('durable schema ' || $1, 0))",
        &[&inner.schema],
    )
    .await
    .map_err(|e| inner.error(e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.durable_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(|e| inner.error(e))?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.durable_migrations"),
            &[],
        )
        .await
        .map_err(|e| inner.error(e))?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(inner.error_kind(
            StoreErrorKind::Foreign,
            format!(
            "the schema has version {current}, written by a newer version of durable; this one \
             knows versions up to {SCHEMA_VERSION}: upgrade durable (the tables were not touched)"
        ),
        ));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(&migration.replace("{s}", &s))
            .await
            .map_err(|e| {
                inner.error_text(format!("migration {version}: {}", super::describe(&e)))
            })?;
        tx.execute(
            &format!("INSERT INTO {s}.durable_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(|e| inner.error(e))?;
    }
    tx.commit().await.map_err(|e| inner.error(e))
}
