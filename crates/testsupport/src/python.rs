//! Running Python (the interop venv from `.ci/setup-python.sh`) from tests.
//!
//! Tests are the only users: a missing venv or a failing script panics with
//! the output and the fix, which is how a test reports it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with ZODB, BTrees and numpy: `$WENDELIN_PYTHON`, else the
/// `.venv/bin/python` of the workspace. Panics with the fix if neither exists.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WENDELIN_PYTHON") {
        return PathBuf::from(p);
    }
    let p = crate::workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "interop tests need Python ZODB, BTrees and numpy: run `bash .ci/setup-python.sh` (creates .venv) or set WENDELIN_PYTHON"
    );
    p
}

/// Run `script` with `args`; `modules` are (path under the import root,
/// source) written into a fresh `PYTHONPATH` directory (packages get their
/// `__init__.py`). Panics with the output if Python fails; returns stdout.
pub fn run_python_with(
    dir: &Path,
    script: &str,
    args: &[&str],
    modules: &[(&str, &str)],
) -> String {
    let root = dir.join("py");
    for (rel, src) in modules {
        let file = root.join(rel);
        let mut pkg = file.parent().map(Path::to_path_buf);
        while let Some(p) = pkg.filter(|p| p.starts_with(&root) && *p != root) {
            std::fs::create_dir_all(&p).expect("mkdir");
            let init = p.join("__init__.py");
            if !init.exists() {
                std::fs::write(&init, "").expect("__init__");
            }
            pkg = p.parent().map(Path::to_path_buf);
        }
        std::fs::write(&file, src).expect("module");
    }
    let file = dir.join("script.py");
    std::fs::write(&file, script).expect("write script");
    let out = Command::new(python())
        .arg(&file)
        .args(args)
        .env("PYTHONPATH", &root)
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

/// Run `script` with `args` (no extra modules).
pub fn run_python(dir: &Path, script: &str, args: &[&str]) -> String {
    run_python_with(dir, script, args, &[])
}
