//! The contract every `Store` backend keeps (see `durable_tests::conformance`), checked on
//! the memory and the SQLite store. Another backend runs the same suite from its own test file
//! with one `store_conformance!` line.

use durable_tests::conformance;
use durable_tests::store_conformance;

store_conformance!(memory, conformance::memory);
store_conformance!(sqlite, conformance::sqlite);
