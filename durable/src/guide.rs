//! Guides: how to write, run and keep workflows, one page each. They hold no items; every
//! example in them is compiled (and run, unless marked `no_run`) as a doc test.
//!
//! - [`dsl`]: the `workflow!` language, a tour, then every item, option and default, and
//!   the mistakes the macro reports.
//! - [`engine`]: running workflows: the engine, the client in other processes, run
//!   statuses, cancelling and resuming runs, stopping, what a step must not do.
//! - [`stores`]: memory, SQLite and PostgreSQL, and the cargo features that bring them.
//! - [`waiting`]: durable sleeps, signals, callbacks and child workflows.
//! - [`postgres`]: many worker processes sharing runs in PostgreSQL, and the example that
//!   shows it.
//! - [`guarantees`]: what durable promises, failure semantics, what the journal accepts,
//!   versioning and limitations.

// The pages are Markdown files in `durable/docs/`, inside the package so that a published
// crate still builds them; the README links to the same files.

pub mod dsl {
    #![doc = include_str!("../docs/dsl.md")]
}

pub mod engine {
    #![doc = include_str!("../docs/engine.md")]
}

pub mod stores {
    #![doc = include_str!("../docs/stores.md")]
}

pub mod waiting {
    #![doc = include_str!("../docs/waiting.md")]
}

pub mod postgres {
    #![doc = include_str!("../docs/postgres.md")]
}

pub mod guarantees {
    #![doc = include_str!("../docs/guarantees.md")]
}
