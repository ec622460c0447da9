//! Helpers shared by the tests of every crate of the workspace (a
//! `publish = false` dev-dependency, so no test reaches into another
//! crate's files by path).
//!
//! - [`testdata`]: the databases written by Python ZODB / wendelin.core that
//!   the tests read (`testdata/` at the workspace root);
//! - [`python`]: running the interop venv's Python (ZODB, BTrees, numpy;
//!   made by `.ci/setup-python.sh`) with extra modules on `PYTHONPATH`;
//! - [`standins`]: pure-Python stand-ins of wendelin.core's ZBigFile and
//!   ZBigArray classes (same module and class names, same states), for
//!   interop tests that run without a wendelin.core build.

#![forbid(unsafe_code)]

pub mod python;
pub mod standins;

use std::path::PathBuf;

/// The workspace root (where `Cargo.lock`, `testdata/` and `.venv/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's test databases (`testdata/`).
pub fn testdata() -> PathBuf {
    workspace_root().join("testdata")
}
