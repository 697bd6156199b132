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

// What a database can hold that the Store API never writes (a run an earlier version left
// asleep through a message, an inbox row edited by hand): the stores whose data outlives the
// process. A memory store's can do neither.
mod behind_its_back {
    use super::*;
    use durable_tests::store_conformance_behind_its_back;

    store_conformance_behind_its_back!(sqlite, || async { TestStore::new(Backend::Sqlite) });
    store_conformance_behind_its_back!(postgres, || async {
        postgres_url_or_skip("store_conformance::behind_its_back::postgres")
            .map(|_| TestStore::new(Backend::Postgres))
    });
}
