//! Compatibility shim for `torn_reads.rs` (being changed elsewhere): the test support moved
//! to the `testkit` crate (crates/testkit), which every other test uses directly.
#![allow(dead_code, unused_imports)]

pub use testkit::{
    pystackd_bin, source_line, targets_dir, workspace_root, FrameTruth, GroundTruth, Interpreter,
    SelfCheck, Target, ThreadTruth,
};

/// Every supported interpreter of `tests/pythons/list` (empty when there is none).
pub fn interpreters() -> Vec<Interpreter> {
    testkit::pythons::all().unwrap_or_default()
}
