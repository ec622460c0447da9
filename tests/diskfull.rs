//! Disk full and read-only file systems (issue 11): a command that cannot
//! write fails with one error line saying what happened first, and leaves
//! the database as it was. Needs root to mount a small tmpfs; skipped with
//! a printed reason otherwise.

mod common;

use common::{ok, wendelin};
use std::path::Path;
use std::process::Command;

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(st.success(), "remount {opt}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn fails_with(args: &[&str], want: &str) {
    let o = wendelin(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("wendelin:"))
        .unwrap_or_else(|| panic!("{args:?}: no error line: {err}"));
    assert!(line.contains(want), "{args:?}: {want:?} not in {line}");
}

#[test]
fn disk_full_and_read_only_fail_cleanly_and_keep_the_database() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let db = fs.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "1000", "--dtype", "f8"]);
    let before = std::fs::read(&db).expect("read");
    // 16 MB of data does not fit
    let src = tempfile::tempdir().expect("tmp");
    let big = src.path().join("big.npy");
    let h = "{'descr': '|u1', 'fortran_order': False, 'shape': (16777216,), }";
    let h = format!("{h}{}\n", " ".repeat(64 - (10 + h.len() + 1) % 64));
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend((0..16usize << 20).map(|i| (i % 251) as u8 + 1));
    std::fs::write(&big, b).expect("npy");
    fails_with(
        &["--ram-budget", "16MiB", "import", s(&db), "BIG", s(&big)],
        "No space left",
    );
    let out = ok(&["ls", s(&db)]);
    assert!(out.contains("A\t") && !out.contains("BIG"), "{out}");
    assert_eq!(std::fs::read(&db).expect("read"), before);
    // an export that does not fit leaves no partial .npy
    let npy = tempfile::tempdir().expect("tmp");
    ok(&["create", s(&db), "M", "--shape", "600000", "--dtype", "f8"]);
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![1u8; 8 << 20]);
    fails_with(
        &["export", s(&db), "M", s(&fs.path().join("m.npy"))],
        "No space left",
    );
    assert!(!fs.path().join("m.npy").exists());
    let _ = std::fs::remove_file(&filler);
    ok(&["export", s(&db), "M", s(&npy.path().join("m.npy"))]);
    // read-only file system: reads work, writes fail with the cause
    let before = std::fs::read(&db).expect("read");
    fs.remount("ro");
    ok(&["stat", s(&db), "A"]);
    fails_with(
        &["create", s(&db), "C", "--shape", "3", "--dtype", "u1"],
        "Read-only file system",
    );
    fs.remount("rw");
    assert_eq!(std::fs::read(&db).expect("read"), before);
}
