//! Helpers shared by integration tests.

#![allow(dead_code)] // each test binary uses a subset

pub mod python;

#[allow(unused_imports)] // each test binary uses a subset
pub use python::{python, run_python};

use std::path::PathBuf;

/// Path to the repository's test databases.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}
