//! The contract every `Store` backend keeps (see `durable_tests::conformance`), checked on
//! the memory, the SQLite and the PostgreSQL store. Another backend runs the same suite from
//! its own test file with one `store_conformance!` line.

use std::sync::Arc;

use durable::store::memory::MemoryStore;
use durable::Store;
use durable_tests::{postgres_url_or_skip, store_conformance, Backend, TestStore};

store_conformance!(memory, || async {
    Arc::new(MemoryStore::new()) as Arc<dyn Store>
});
store_conformance!(sqlite, || async { TestStore::new(Backend::Sqlite) });
// Each check in a schema of its own, dropped after; skipped (and said so) without a server.
store_conformance!(postgres, || async {
    postgres_url_or_skip("store_conformance::postgres").map(|_| TestStore::new(Backend::Postgres))
});

// Child runs (`call`), in their own modules: `children::memory::...`.
mod children {
    use super::*;
    use durable_tests::store_conformance_children;

    store_conformance_children!(memory, || async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    });
    store_conformance_children!(sqlite, || async { TestStore::new(Backend::Sqlite) });
    store_conformance_children!(postgres, || async {
        postgres_url_or_skip("store_conformance::children::postgres")
            .map(|_| TestStore::new(Backend::Postgres))
    });
}
