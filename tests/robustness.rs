//! The CLI under damage, odd inputs and concurrent writers (issue 11): every
//! failure is one clean error line with exit 1, nothing is lost or poisoned.

mod common;

use common::{ok, wendelin};

use std::path::{Path, PathBuf};
use storage::{DB, TransactionManager, Value};

/// Runs a command that must fail with exit 1 and exactly one `wendelin:`
/// line (no colour codes); returns that line.
fn fails(args: &[&str]) -> String {
    let o = wendelin(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains('\x1b'), "colour codes on a pipe: {err:?}");
    // A read that returns its error as a value does not also announce the
    // SIGBUS a raw view would get.
    assert!(!err.contains("SIGBUS"), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("wendelin:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    lines[0].to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// An .npy of `n` little-endian f64 `0, 1, 2, ...`.
fn write_npy(path: &Path, n: usize) {
    let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n},), }}");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let h = format!("{dict}{}\n", " ".repeat(pad));
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    for i in 0..n {
        b.extend_from_slice(&(i as f64).to_le_bytes());
    }
    std::fs::write(path, b).expect("write npy");
}

/// The (data offset, record header offset) of every data record, by walking
/// the transactions.
fn records(b: &[u8]) -> Vec<(usize, usize)> {
    let be = |x: &[u8]| u64::from_be_bytes(x.try_into().expect("8")) as usize;
    let mut out = Vec::new();
    let mut pos = 4;
    while pos + 23 <= b.len() {
        let tlen = be(&b[pos + 8..pos + 16]);
        let hl = 23
            + usize::from(u16::from_be_bytes([b[pos + 17], b[pos + 18]]))
            + usize::from(u16::from_be_bytes([b[pos + 19], b[pos + 20]]))
            + usize::from(u16::from_be_bytes([b[pos + 21], b[pos + 22]]));
        let mut p = pos + hl;
        while p < pos + tlen {
            let plen = be(&b[p + 34..p + 42]);
            out.push((p + 42, p));
            p += 42 + if plen == 0 { 8 } else { plen };
        }
        pos += tlen + 8;
    }
    out
}

#[test]
fn damaged_blocks_are_one_error_line_naming_array_block_and_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    write_npy(&d.join("a.npy"), 300_000);
    let db = d.join("db.fs");
    ok(&["import", s(&db), "A", s(&d.join("a.npy"))]);
    let raw = std::fs::read(&db).expect("read");
    let zblk = raw
        .windows(5)
        .position(|w| w == b"ZBlk0")
        .expect("a ZBlk0 record");
    let (data, hdr) = records(&raw)
        .into_iter()
        .rfind(|&(data, _)| data < zblk)
        .expect("its record");
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "byte after ZBlk0",
            Box::new(move |b: &mut Vec<u8>| b[zblk + 5 + 5] = b'X'),
        ),
        // the block's object is gone: its record now belongs to another oid
        (
            "missing ZBlk",
            Box::new(move |b: &mut Vec<u8>| b[hdr..hdr + 8].fill(0x7f)),
        ),
        (
            "broken pickle",
            Box::new(move |b: &mut Vec<u8>| b[data] = 0xff),
        ),
    ];
    for (what, damage) in cases {
        let copy = d.join("copy.fs");
        let mut b = raw.clone();
        damage(&mut b);
        std::fs::write(&copy, &b).expect("write");
        let line = fails(&["stat", s(&copy), "A"]);
        for want in ["A", "block", s(&copy)] {
            assert!(line.contains(want), "{what}: {want:?} missing in {line}");
        }
        let out = d.join("out.npy");
        fails(&["export", s(&copy), "A", s(&out)]);
        assert!(!out.exists(), "{what}: a failed export leaves no .npy");
        let left: Vec<_> = std::fs::read_dir(d)
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{what}: temporary files left: {left:?}");
    }
}

#[test]
fn huge_shapes_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let new = dir.path().join("new.fs");
    let line = fails(&[
        "create",
        s(&new),
        "BAD",
        "--shape",
        "18446744073709551615",
        "--dtype",
        "u1",
    ]);
    assert!(line.contains("18446744073709551615"), "{line}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert!(left.is_empty(), "a failed create leaves files: {left:?}");
    // into an existing database: nothing committed
    let db = dir.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "4", "--dtype", "u1"]);
    let before = std::fs::read(&db).expect("read");
    fails(&[
        "create",
        s(&db),
        "BAD",
        "--shape",
        "4611686018427387904,4",
        "--dtype",
        "u1",
    ]);
    assert_eq!(std::fs::read(&db).expect("read"), before);
    // a failed import at a new path leaves no database either
    let npy = dir.path().join("bad.npy");
    std::fs::write(&npy, b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f8', 'fortran_order': 'True', 'shape': (3,), }           \n").expect("w");
    let line = fails(&["import", s(&dir.path().join("other.fs")), "X", s(&npy)]);
    assert!(line.contains("fortran_order"), "{line}");
    assert!(!dir.path().join("other.fs").exists());
}

#[test]
fn ls_lists_a_poisoned_entry_with_its_error_and_plain_values_as_python() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "4", "--dtype", "u1"]);
    {
        // the old way: a state with a dimension > i64::MAX, stored wrapped
        let d = DB::open(s(&db)).expect("open");
        let tm = TransactionManager::new();
        let c = d.open_connection(&tm).expect("conn");
        let a = c
            .root()
            .expect("root")
            .get("A")
            .and_then(|v| v.ref_oid())
            .expect("A");
        let mut st = bigarray::open_untyped(&c, a).expect("state");
        st.shape = vec![usize::MAX];
        let bad = c.add(st).expect("add");
        let r = c.ref_to(bad).expect("ref");
        let mut root = c.root_mut().expect("root");
        root.insert("BAD", r);
        root.insert("n", Value::Int(42));
        root.insert("t", Value::Str("text".into()));
        drop(root);
        tm.commit().expect("commit");
    }
    let out = ok(&["ls", s(&db)]);
    let line = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{k}\t")))
            .unwrap_or_else(|| panic!("{k} not listed: {out}"))
            .to_owned()
    };
    assert!(line("A").contains("shape=[4]"), "{out}");
    assert!(line("BAD").contains("error:"), "{out}");
    assert!(line("BAD").contains("ZBigArray"), "{out}");
    assert_eq!(line("n"), "n\t42");
    assert_eq!(line("t"), "t\t'text'");
    let j: serde_json::Value = serde_json::from_str(&ok(&["ls", s(&db), "--json"])).expect("json");
    assert!(
        j.as_array()
            .expect("arr")
            .iter()
            .any(|e| e["name"] == "BAD" && e["error"].is_string())
    );
}

#[test]
fn concurrent_imports_into_one_database_all_succeed() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    write_npy(&d.join("a.npy"), 400_000);
    let db = d.join("db.fs");
    let procs: Vec<_> = (0..4)
        .map(|p| {
            let (db, npy) = (db.clone(), d.join("a.npy"));
            std::thread::spawn(move || {
                for i in 0..4 {
                    let name = format!("P{p}_{i}");
                    let o = wendelin(&["--ram-budget", "16MiB", "import", s(&db), &name, s(&npy)]);
                    assert!(
                        o.status.success(),
                        "{name}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            })
        })
        .collect();
    for p in procs {
        p.join().expect("an import failed");
    }
    let out = ok(&["ls", s(&db)]);
    assert_eq!(out.lines().count(), 16, "{out}");
    for p in 0..4 {
        for i in 0..4 {
            let st = ok(&["stat", s(&db), &format!("P{p}_{i}")]);
            assert!(st.contains("sum 79999800000"), "{st}");
        }
    }
}

/// A database with several transactions whose second one's length field is
/// damaged (its high bytes flipped).
fn damaged_db(d: &Path) -> (PathBuf, Vec<u8>) {
    let db = d.join("db.fs");
    for n in ["A", "B", "C", "D"] {
        ok(&["create", s(&db), n, "--shape", "1000", "--dtype", "f8"]);
    }
    let mut b = std::fs::read(&db).expect("read");
    let second = 4 + u64::from_be_bytes(b[12..20].try_into().expect("8")) as usize + 8;
    b[second + 8] ^= 0xff;
    b[second + 9] ^= 0xff;
    std::fs::write(&db, &b).expect("write");
    (db, b)
}

#[test]
fn damage_in_the_middle_is_reported_never_cut_and_fsrecover_salvages() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (db, raw) = damaged_db(d);
    for args in [
        vec!["ls", s(&db)],
        vec!["stat", s(&db), "A"],
        vec!["create", s(&db), "E", "--shape", "3", "--dtype", "u1"],
    ] {
        let line = fails(&args);
        assert!(line.contains(s(&db)) && line.contains("at byte"), "{line}");
    }
    let fsdump = wendelin(&["fsdump", s(&db)]);
    assert_eq!(fsdump.status.code(), Some(1));
    assert_eq!(
        std::fs::read(&db).expect("read"),
        raw,
        "nothing cut or written"
    );
    assert!(!d.join("db.fs.tr0").exists());
    let out = d.join("out.fs");
    let report = ok(&["fsrecover", s(&db), s(&out)]);
    assert!(report.contains("skipped bytes"), "{report}");
    // the damaged transaction was the root's creation... the rest is intact
    let ls = ok(&["ls", s(&out)]);
    assert!(
        ls.contains("B\t") && ls.contains("C\t") && ls.contains("D\t"),
        "{ls}"
    );
    ok(&["stat", s(&out), "D"]);
    fails(&["fsrecover", s(&db), s(&out)]); // an existing output is refused
    // Python ZODB's fstest accepts the recovered file
    {
        let o = common::run_python(
            d,
            "import sys\nfrom ZODB.scripts import fstest\nfstest.check(sys.argv[1])\nprint('ok')\n",
            &[s(&out)],
        );
        assert!(o.contains("ok"), "{o}");
    }
}

#[test]
fn a_genuine_torn_tail_is_still_ignored_and_cut() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "10", "--dtype", "u1"]);
    let good = std::fs::read(&db).expect("read");
    ok(&["create", s(&db), "B", "--shape", "10", "--dtype", "u1"]);
    let full = std::fs::read(&db).expect("read");
    std::fs::write(&db, &full[..full.len() - 20]).expect("tear");
    let ls = ok(&["ls", s(&db)]);
    assert!(ls.contains("A\t") && !ls.contains("B\t"), "{ls}");
    ok(&["create", s(&db), "C", "--shape", "10", "--dtype", "u1"]);
    assert!(dir.path().join("db.fs.tr0").exists());
    assert_eq!(&std::fs::read(&db).expect("read")[..good.len()], &good[..]);
}

#[test]
fn export_refuses_to_write_onto_the_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "10", "--dtype", "u1"]);
    let before = std::fs::read(&db).expect("read");
    let line = fails(&["export", s(&db), "A", s(&db)]);
    assert!(line.contains("refusing"), "{line}");
    // another spelling of the same file, and a hard link
    let other = format!("{}/./db.fs", dir.path().display());
    fails(&["export", s(&db), "A", &other]);
    std::fs::hard_link(&db, dir.path().join("link.fs")).expect("link");
    fails(&["export", s(&db), "A", s(&dir.path().join("link.fs"))]);
    assert_eq!(std::fs::read(&db).expect("read"), before);
    let out = dir.path().join("a.npy");
    ok(&["export", s(&db), "A", s(&out)]);
    assert_eq!(std::fs::read(&out).expect("npy").len(), 128 + 10);
}

#[test]
fn bad_npy_headers_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "1", "--dtype", "u1"]);
    for (what, dict) in [
        (
            "fortran_order",
            "{'descr': '<f8', 'fortran_order': 'True', 'shape': (3,), }",
        ),
        (
            "unknown key",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1, }",
        ),
        (
            "overflows",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }",
        ),
        (
            "larger than numpy",
            "{'descr': '<u1', 'fortran_order': False, 'shape': (18446744073709551615,), }",
        ),
    ] {
        let npy = dir.path().join("x.npy");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = format!("{dict}\n");
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0u8; 24]);
        std::fs::write(&npy, b).expect("w");
        let line = fails(&["import", s(&db), "X", s(&npy)]);
        assert!(line.contains("x.npy"), "{what}: {line}");
    }
    assert!(!ok(&["ls", s(&db)]).contains("X\t"));
}

#[test]
fn a_lock_wait_is_announced_once_with_the_holder() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("db.fs");
    ok(&["create", s(&db), "A", "--shape", "1", "--dtype", "u1"]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("db.fs.lock"))
        .expect("lock file");
    std::fs::write(dir.path().join("db.fs.lock"), " 4242\n").expect("pid");
    let held = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(held);
    });
    let o = wendelin(&["create", s(&db), "B", "--shape", "1", "--dtype", "u1"]);
    release.join().expect("join");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("waiting").count(), 1, "{err}");
    assert!(err.contains("db.fs.lock") && err.contains("4242"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn side_files_do_not_follow_symlinks() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("db.fs");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").expect("w");
    std::os::unix::fs::symlink(&victim, dir.path().join("db.fs.lock")).expect("symlink");
    let line = fails(&["create", s(&db), "A", "--shape", "1", "--dtype", "u1"]);
    assert!(line.contains("db.fs.lock"), "{line}");
    assert_eq!(std::fs::read(&victim).expect("r"), b"precious");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("d.fs");
    ok(&["create", s(&db), "A", "--shape", "4", "--dtype", "f8"]);
    for args in [
        vec!["stat", s(&db), "A"],
        vec!["ls", s(&db)],
        vec!["log", s(&db)],
    ] {
        // The reader is gone before the command writes anything.
        let (rd, wr) = std::io::pipe().expect("pipe");
        drop(rd);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wendelin"))
            .args(&args)
            .stdout(wr)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
    }
}
