//! Changes to a store made behind its back, as a person editing the database by hand, or an
//! earlier version of durable, would leave them: for the checks of what a store does with
//! rows its own API never writes.

use durable::RunId;

use crate::{Backend, TestStore};

/// Writes to a store's tables directly, bypassing the store.
pub trait Backdoor {
    /// Makes `run`'s last suspension count as having seen none of its inbox: what a run
    /// suspended by a version of durable before `inbox_seen` existed looks like once its
    /// database is migrated.
    fn forget_inbox_seen(&self, run: &RunId);
    /// Replaces the payload of `run`'s inbox message `seq`, leaving its checksum as it is.
    fn edit_inbox_payload(&self, run: &RunId, seq: u64, payload: &str);
    /// Removes the checksums of `run`'s inbox messages, as messages delivered before inbox
    /// checksums existed have none.
    fn clear_inbox_checksums(&self, run: &RunId);
}

/// `text` as an SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl TestStore {
    /// Runs `sql` (with `{runs}` and `{inbox}` naming the tables) on the store's database,
    /// beside the store; returns how many rows it changed.
    fn execute_behind(&self, sql: &str) -> u64 {
        match self.backend() {
            Backend::Memory => panic!("a memory store has no tables to change behind its back"),
            Backend::Sqlite => {
                let sql = sql
                    .replace("{runs}", "durable_runs")
                    .replace("{inbox}", "durable_inbox");
                let conn = rusqlite::Connection::open(self.db_path()).expect("the SQLite file");
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .expect("a busy timeout");
                conn.execute(&sql, []).expect("the change") as u64
            }
            Backend::Postgres => {
                let (url, schema) = self.postgres().expect("set for postgres");
                let sql = sql
                    .replace("{runs}", &format!("\"{schema}\".durable_runs"))
                    .replace("{inbox}", &format!("\"{schema}\".durable_inbox"));
                let url = url.to_owned();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        let (client, connection) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                                .await
                                .expect("a connection");
                        let conn = tokio::spawn(connection);
                        let changed = client.execute(&sql, &[]).await.expect("the change");
                        drop(client);
                        let _ = conn.await;
                        changed
                    })
                })
                .join()
                .expect("the change's thread")
            }
        }
    }
}

impl Backdoor for TestStore {
    fn forget_inbox_seen(&self, run: &RunId) {
        let id = quoted(run.as_str());
        let changed = self.execute_behind(&format!(
            "UPDATE {{runs}} SET inbox_seen = 0 WHERE id = {id}"
        ));
        assert_eq!(changed, 1, "no run {run}");
    }

    fn edit_inbox_payload(&self, run: &RunId, seq: u64, payload: &str) {
        let (id, payload) = (quoted(run.as_str()), quoted(payload));
        let changed = self.execute_behind(&format!(
            "UPDATE {{inbox}} SET payload = {payload} WHERE run_id = {id} AND seq = {seq}"
        ));
        assert_eq!(changed, 1, "no message {seq} in the inbox of run {run}");
    }

    fn clear_inbox_checksums(&self, run: &RunId) {
        let id = quoted(run.as_str());
        // SQLite keeps each algorithm's checksum in a column of its own.
        let columns = match self.backend() {
            Backend::Sqlite => "crc32c = NULL, checksum = NULL",
            Backend::Memory | Backend::Postgres => "checksum = NULL",
        };
        self.execute_behind(&format!(
            "UPDATE {{inbox}} SET {columns} WHERE run_id = {id}"
        ));
    }
}

/// The store held, when there is one (a check is skipped without).
impl<T: Backdoor> Backdoor for Option<T> {
    fn forget_inbox_seen(&self, run: &RunId) {
        self.as_ref().expect("a store").forget_inbox_seen(run);
    }

    fn edit_inbox_payload(&self, run: &RunId, seq: u64, payload: &str) {
        self.as_ref()
            .expect("a store")
            .edit_inbox_payload(run, seq, payload);
    }

    fn clear_inbox_checksums(&self, run: &RunId) {
        self.as_ref().expect("a store").clear_inbox_checksums(run);
    }
}
