//! `wendelin fsdump --json` agrees with the JSON description of every test
//! database (written by Python ZODB / wendelin.core), and bad input gives a
//! one-line error with the file and byte offset, exit status 1, no panic.

use serde_json::Value as J;
use std::path::Path;
use std::process::Command;

use testsupport::testdata;

fn fsdump(path: &Path, json: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wendelin"));
    c.arg("fsdump").arg(path);
    if json {
        c.arg("--json");
    }
    c.output().expect("run wendelin")
}

const FILES: &[&str] = testsupport::PYTHON_DATABASES;

#[test]
fn fsdump_json_agrees_with_vector_descriptions() {
    let mut checked_records = 0;
    let mut checked_hashes = 0;
    for f in FILES {
        let out = fsdump(&testdata().join(format!("{f}.fs")), true);
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: J = serde_json::from_slice(&out.stdout).expect("json output");
        let want: J = serde_json::from_slice(
            &std::fs::read(testdata().join(format!("{f}.json"))).expect("read"),
        )
        .expect("json");
        for k in ["magic", "file_size", "last_tid", "max_oid"] {
            assert_eq!(got[k], want[k], "{f}: {k}");
        }
        let gt = got["transactions"].as_array().expect("txns");
        let wt = want["transactions"].as_array().expect("txns");
        assert_eq!(gt.len(), wt.len(), "{f}");
        for (g, w) in gt.iter().zip(wt) {
            for k in [
                "pos",
                "tid",
                "tid_time_utc",
                "tlen",
                "status",
                "user",
                "description",
                "extension_hex",
            ] {
                assert_eq!(g[k], w[k], "{f}: txn {} {k}", w["tid"]);
            }
            let gr = g["records"].as_array().expect("records");
            let wr = w["records"].as_array().expect("records");
            assert_eq!(gr.len(), wr.len(), "{f}");
            for (g, w) in gr.iter().zip(wr) {
                for k in [
                    "pos",
                    "oid",
                    "tid",
                    "prev",
                    "tloc",
                    "data_len",
                    "backpointer",
                    "class",
                    "bytes_len",
                    "sha256",
                ] {
                    if let Some(wv) = w.get(k) {
                        assert_eq!(&g[k], wv, "{f}: record at {} {k}", w["pos"]);
                        if k == "sha256" {
                            checked_hashes += 1;
                        }
                    }
                }
                checked_records += 1;
            }
        }
    }
    assert!(checked_records > 170, "{checked_records}");
    assert!(checked_hashes >= 130, "{checked_hashes}");
}

#[test]
fn fsdump_text_lists_every_transaction_and_record() {
    let out = fsdump(&testdata().join("formats/history.fs"), false);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(s.lines().filter(|l| l.starts_with("Trans #")).count(), 8);
    assert!(s.contains("tid=03fdba8116666666"));
    assert!(s.contains("description=\"h4: undo h3\""));
    assert!(s.contains("bp=481"));
    assert!(s.contains("(object does not exist"));
}

/// Run fsdump on `bytes`; it must fail with exit status 1 and a single line
/// naming the file and containing `want`.
fn bad(name: &str, bytes: &[u8], want: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    let out = fsdump(&p, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
    assert!(err.contains(&p.display().to_string()), "{name}: {err}");
    assert!(err.contains(want), "{name}: want {want:?} in {err}");
}

#[test]
fn bad_input_is_a_one_line_error_with_offset() {
    let tiny = std::fs::read(testdata().join("formats/tiny.fs")).expect("read");
    bad(
        "notfs.fs",
        b"PK\x03\x04 this is a zip",
        "at byte 0: not a FileStorage",
    );
    bad("empty.fs", b"", "at byte 0");
    // corrupt lengths: tlen of the first transaction too small for its header
    let mut b = tiny.clone();
    b[12..20].copy_from_slice(&10u64.to_be_bytes());
    bad("tlen.fs", &b, "at byte 4");
    // record data length running past the transaction
    let mut b = tiny.clone();
    b[52 + 34..52 + 42].copy_from_slice(&1_000_000u64.to_be_bytes());
    bad("plen.fs", &b, "at byte 52");
    // redundant length mismatch
    let mut b = tiny.clone();
    b[4 + 154 + 7] ^= 0xff;
    bad("trailer.fs", &b, "at byte 158");
    // garbage inside a pickle: an unknown opcode in the state of the root
    let mut b = tiny.clone();
    b[0x5e + 45] = 0xfe;
    bad("pickle.fs", &b, &format!("at byte {}", 0x5e + 45));
    // a nonexistent file
    let out = fsdump(Path::new("/nonexistent/Data.fs"), false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/Data.fs"));
}

#[test]
fn truncated_file_dumps_the_complete_transactions() {
    let b = std::fs::read(testdata().join("formats/history.fs")).expect("read");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("cut.fs");
    std::fs::write(&p, &b[..1521 + 40]).expect("write");
    let out = fsdump(&p, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: J = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["transactions"].as_array().map(Vec::len), Some(7));
    // nothing was written: fsdump opens read-only
    assert_eq!(std::fs::read(&p).expect("read").len(), 1521 + 40);
}
