//! The fuzz harness (`harness.rs`), also compiled into tests/fuzz_regressions.rs.
pub mod harness;
