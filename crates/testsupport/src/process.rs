//! Child processes of a test binary, and their real memory.
//!
//! Tests that measure a process (its peak RSS, what it leaves behind when
//! killed) run their subject in a child: the test binary itself re-run with
//! `--ignored --exact NAME`, where `NAME` is an `#[ignore]`d entry point that
//! does nothing unless its environment variable is set (so it never counts
//! as a passing test by itself). Memory is read from `/proc/self/status`:
//! `VmRSS` now, `VmHWM` the peak since start or since the last
//! [`reset_peak_rss`] (writing `5` to `/proc/self/clear_refs`), so a child
//! can measure one phase of its work against the RSS it started it with.

use std::process::{Child, Command, Output, Stdio};

/// The command re-running this test binary's `#[ignore]`d entry point
/// `name` (add `.env(...)` and run it).
pub fn child_command(name: &str) -> Command {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Run the entry point `name` with `envs` to the end; panic with its output
/// unless it succeeded. Returns its stdout.
pub fn run_child(name: &str, envs: &[(&str, &str)]) -> String {
    let out: Output = child_command(name)
        .envs(envs.iter().copied())
        .output()
        .expect("child process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Start the entry point `name` with `envs`, stdout piped (to follow its
/// progress lines), stderr inherited.
pub fn spawn_child(name: &str, envs: &[(&str, &str)]) -> Child {
    child_command(name)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child process")
}

/// The value `KEY=...` printed by a child on a line of `stdout`.
pub fn child_value(stdout: &str, key: &str) -> Option<u64> {
    let tag = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.split(&tag).nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"))
}

/// Resident set size of this process now, in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Peak resident set size of this process, in KiB (`VmHWM`), since start or
/// the last [`reset_peak_rss`].
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Reset the peak RSS to the current RSS (Linux >= 4.0); returns the RSS
/// the peak starts from, in KiB.
pub fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    rss_kib()
}
