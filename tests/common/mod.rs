//! Helpers shared by integration tests.

#![allow(dead_code)] // each test binary uses a subset

#[allow(unused_imports)] // each test binary uses a subset
pub use testsupport::python::{python, run_python};
#[allow(unused_imports)] // each test binary uses a subset
pub use testsupport::testdata;

/// Run the `wendelin` binary of this build.
pub fn wendelin(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wendelin"))
        .args(args)
        .output()
        .expect("run")
}

/// Run `wendelin` and require success; its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = wendelin(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
