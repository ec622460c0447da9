//! Helpers shared by integration tests: the Python interpreter of the
//! interop venv (created by `.ci/setup-python.sh`).

#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with ZODB, BTrees and numpy: `$WENDELIN_PYTHON`, else
/// `<repo>/.venv/bin/python`. Panics with the fix if neither exists.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WENDELIN_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "interop tests need Python ZODB: run `bash .ci/setup-python.sh` (creates .venv) or set WENDELIN_PYTHON"
    );
    p
}

/// Run `script` with the venv Python and `args`; panics with its output if it fails.
/// Returns stdout.
pub fn run_python(dir: &Path, script: &str, args: &[&str]) -> String {
    let file = dir.join("script.py");
    std::fs::write(&file, script).expect("write script");
    let out = Command::new(python())
        .arg(&file)
        .args(args)
        .output()
        .expect("start python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Path to the repository's test databases.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}
