//! Running the real Nexedi wendelin.core (0.13, Python 3.7) from tests.
//!
//! The stand-ins of [`crate::standins`] mirror wendelin.core's classes as we
//! understand them; interop tests that must prove compatibility with the real
//! thing run scripts under the venv `.ci/build-wendelin-core.sh` builds
//! (`.wendelin-core/` at the workspace root, or `$WENDELIN_CORE_PYTHON`).
//!
//! Absent venv: outside CI the test prints why it is skipped and passes (a
//! developer machine may lack pyenv's 3.7); in CI (`$CI` set) it fails, since
//! `.ci/run` builds the venv first and a skip there would hide a regression.
//! wendelin.core 0.13 only has the userfaultfd-less "uvmm" virtual memory,
//! selected by `WENDELIN_CORE_VIRTMEM=rw:uvmm`, and reads its write format
//! from `WENDELIN_CORE_ZBLK_FMT` (ZBlk0 or ZBlk1: 0.13 predates `auto`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python of the wendelin.core venv, or `None` (after printing why) when
/// it is absent outside CI. Panics in CI, where it must have been built.
pub fn python() -> Option<PathBuf> {
    let p = match std::env::var_os("WENDELIN_CORE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => crate::workspace_root().join(".wendelin-core/bin/python"),
    };
    if p.exists() {
        return Some(p);
    }
    let why = format!(
        "real wendelin.core not found at {}: run `bash .ci/build-wendelin-core.sh` (or set WENDELIN_CORE_PYTHON)",
        p.display()
    );
    assert!(std::env::var_os("CI").is_none(), "in CI: {why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// Run `script` with `args` under real wendelin.core writing blocks in
/// `zblk_fmt` (`ZBlk0` or `ZBlk1`). Returns stdout, or `None` when skipped
/// (see [`python`]); panics with the output if the script fails.
pub fn run(dir: &Path, script: &str, args: &[&str], zblk_fmt: &str) -> Option<String> {
    let py = python()?;
    let file = dir.join(format!("wendelin_core_{}.py", zblk_fmt));
    std::fs::write(&file, script).expect("write script");
    let out = Command::new(py)
        .arg(&file)
        .args(args)
        .env("WENDELIN_CORE_VIRTMEM", "rw:uvmm")
        .env("WENDELIN_CORE_ZBLK_FMT", zblk_fmt)
        .env_remove("PYTHONPATH")
        .current_dir(dir)
        .output()
        .expect("start wendelin.core python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wendelin.core script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}
