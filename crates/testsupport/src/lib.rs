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
//!   interop tests that run without a wendelin.core build;
//! - [`zeo`]: a real ZEO server (`runzeo`) on a free port or a unix socket,
//!   killed on drop.
//! - [`wendelin_core`]: the real wendelin.core 0.13 (built by
//!   `.ci/build-wendelin-core.sh`), for interop with the real thing.
//! - [`process`]: re-running the test binary's `#[ignore]`d entry points
//!   as child processes, and their real memory (`VmRSS`, `VmHWM`).

#![forbid(unsafe_code)]

pub mod process;
pub mod python;
pub mod standins;
pub mod wendelin_core;
pub mod zeo;

use std::path::PathBuf;

/// The workspace root (where `Cargo.lock`, `testdata/` and `.venv/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's test databases (`testdata/`).
pub fn testdata() -> PathBuf {
    workspace_root().join("testdata")
}

/// The databases under `testdata/` written by Python ZODB / wendelin.core
/// (each `NAME.fs` with its `NAME.json` description).
pub const PYTHON_DATABASES: &[&str] = &[
    "formats/tiny",
    "formats/history",
    "formats/history_packed",
    "formats/refs",
    "formats/legacy_py2",
    "formats/zbigarray_py3_pickle3",
    "formats/zbigarray_py2_pickle2",
    "zblk/py3_pickle3/zblk",
    "zblk/py2_pickle3/zblk",
];

/// Threads of this process whose name starts with `prefix` (e.g.
/// `virtmem`: the handler threads of open handles).
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}
