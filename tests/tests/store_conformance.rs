//! The contract every `Store` backend keeps (see `durable_tests::conformance`), checked on
//! the memory and the SQLite store. Another backend runs the same suite from its own test file
//! with one `store_conformance!` line.

use std::sync::Arc;

use durable::store::memory::MemoryStore;
use durable::Store;
use durable_tests::{store_conformance, Backend, TestStore};

store_conformance!(memory, || async {
    Arc::new(MemoryStore::new()) as Arc<dyn Store>
});
store_conformance!(sqlite, || async { TestStore::new(Backend::Sqlite) });
