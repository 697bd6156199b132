//! Compile-time errors of `workflow!`: each `ui/*.rs` must fail to build with its `.stderr`.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p durable-tests --test ui`
//! and read every changed `.stderr` before committing it.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("ui/*.rs");
}
