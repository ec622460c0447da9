//! Two processes on one FileStorage: one commits block changes, the other
//! sees exactly the changed blocks after its next transaction boundary; and
//! two processes committing at the same time from the same snapshot:
//! different new blocks both commit (the blktab bucket conflict is resolved
//! across processes), the same block conflicts in exactly one of them.
//!
//! The racing children print their snapshot and `READY` once their block is
//! written, then wait for a line on stdin: the parent releases both only
//! when both are ready, so both transactions really start from the same
//! snapshot and the second commit really meets the first one's changes.

use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use storage::{DB, TransactionManager, Value};
use testsupport::process::child_command;

mod common;

use common::BS;

fn opts() -> HandleOptions {
    common::opts(ZBlkFormat::ZBlk0)
}

/// Child: write to blocks 1 and 3 of root['f'] and commit.
#[test]
#[ignore = "child process entry point, started by other_process_sees_exactly_the_changed_blocks"]
fn child_writes_blocks() {
    let Some(path) = std::env::var_os("WENDELIN_BIGFILE_CHILD") else {
        return;
    };
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = c
        .root()
        .expect("root")
        .get("f")
        .and_then(Value::ref_oid)
        .expect("f");
    let fh = ZBigFileH::open(&c, &tm, f, opts()).expect("fh");
    fh.write(BS + 3, b"child was here").expect("w");
    fh.write(3 * BS, b"and here").expect("w");
    tm.commit().expect("commit");
    println!("DONE");
}

#[test]
fn other_process_sees_exactly_the_changed_blocks() {
    let (dir, db) = common::new_db();
    let path = dir.path().join("Data.fs");
    let f = common::with_file(&db);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts()).expect("fh");
    for b in 0..4u64 {
        fh.write(b * BS, &[b as u8 + 1; 100]).expect("w");
    }
    tm.commit().expect("commit");
    let before: Vec<Vec<u8>> = (0..4)
        .map(|b| fh.read(b * BS, BS as usize).expect("r"))
        .collect();
    let loads = fh.stats().expect("stats").loads;
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--ignored", "--exact", "child_writes_blocks", "--nocapture"])
        .env("WENDELIN_BIGFILE_CHILD", &path)
        .output()
        .expect("child");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // still our snapshot
    assert_eq!(fh.read(BS, 20).expect("r"), before[1][..20].to_vec());
    tm.abort(); // boundary: sync picks up the other process's commit
    let after: Vec<Vec<u8>> = (0..4)
        .map(|b| fh.read(b * BS, BS as usize).expect("r"))
        .collect();
    assert_eq!(
        fh.stats().expect("stats").loads - loads,
        2,
        "only blocks 1 and 3 reloaded"
    );
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    assert_eq!(&after[1][3..17], b"child was here");
    assert_eq!(&after[3][..8], b"and here");
}

/// Child: write `$WENDELIN_RACE_TAG` at the start of block
/// `$WENDELIN_RACE_BLK` of root['f'], print `AT=` and `READY`, wait for a
/// line on stdin, commit, print `RESULT=ok` or `RESULT=conflict`.
#[test]
#[ignore = "child process entry point of the racing-commit tests"]
fn child_races_to_commit() {
    let Some(path) = std::env::var_os("WENDELIN_RACE_DB") else {
        return;
    };
    let blk: u64 = std::env::var("WENDELIN_RACE_BLK")
        .expect("blk")
        .parse()
        .expect("blk");
    let tag = std::env::var("WENDELIN_RACE_TAG").expect("tag");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, common::root_file(&c), opts()).expect("fh");
    fh.write(blk * BS, tag.as_bytes()).expect("w");
    println!("AT={}", fh.at().0);
    println!("READY");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go");
    match tm.commit() {
        Ok(_) => println!("RESULT=ok"),
        Err(e) if e.is_conflict() => println!("RESULT=conflict {e}"),
        Err(e) => panic!("commit: {e}"),
    }
}

/// Run two racing children on root['f'] of `path` (block, tag each);
/// returns their `RESULT` lines after checking they started from one snapshot.
fn race(path: &std::path::Path, a: (u64, &str), b: (u64, &str)) -> [String; 2] {
    let mut kids: Vec<_> = [a, b]
        .iter()
        .map(|(blk, tag)| {
            let mut k = child_command("child_races_to_commit")
                .env("WENDELIN_RACE_DB", path)
                .env("WENDELIN_RACE_BLK", blk.to_string())
                .env("WENDELIN_RACE_TAG", tag)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("child");
            let out = BufReader::new(k.stdout.take().expect("stdout"));
            (k, out.lines())
        })
        .collect();
    let mut ats = Vec::new();
    for (_, lines) in &mut kids {
        let mut at = None;
        for l in lines.by_ref() {
            let l = l.expect("line");
            if let Some(v) = l.split("AT=").nth(1) {
                at = Some(v.trim().to_owned());
            }
            if l.contains("READY") {
                break;
            }
        }
        ats.push(at.expect("the child printed its snapshot"));
    }
    assert_eq!(ats[0], ats[1], "both transactions start from one snapshot");
    // both have written: release them at once
    for (k, _) in &mut kids {
        k.stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("go");
    }
    let results: Vec<String> = kids
        .into_iter()
        .map(|(mut k, lines)| {
            let rest: Vec<String> = lines.map_while(Result::ok).collect();
            let st = k.wait().expect("wait");
            assert!(st.success(), "child failed: {st}: {rest:?}");
            rest.into_iter()
                .find_map(|l| l.split("RESULT=").nth(1).map(str::to_owned))
                .expect("RESULT")
        })
        .collect();
    [results[0].clone(), results[1].clone()]
}

fn fresh_read(path: &std::path::Path, blk: u64, len: usize) -> Vec<u8> {
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, common::root_file(&c), opts()).expect("fh");
    fh.read(blk * BS, len).expect("read")
}

/// Two processes add different new blocks at once: both commit (the second
/// resolves the conflict on the blktab bucket both changed) and the file
/// holds both writes.
#[test]
fn two_processes_commit_different_new_blocks_at_once() {
    let (dir, db) = common::new_db();
    let path = dir.path().join("Data.fs");
    common::with_file(&db);
    drop(db);
    let r = race(&path, (1, "process one"), (3, "process two"));
    assert_eq!(r, ["ok".to_owned(), "ok".to_owned()], "both commit");
    assert_eq!(fresh_read(&path, 1, 11), b"process one");
    assert_eq!(fresh_read(&path, 3, 11), b"process two");
}

/// Two processes change the same block at once: exactly one gets a
/// ConflictError, and the block holds the other one's data.
#[test]
fn two_processes_commit_the_same_block_at_once_one_conflicts() {
    let (dir, db) = common::new_db();
    let path = dir.path().join("Data.fs");
    let f = common::with_file(&db);
    {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("conn");
        let fh = ZBigFileH::open(&c, &tm, f, opts()).expect("fh");
        fh.write(2 * BS, b"original").expect("w");
        tm.commit().expect("commit");
    }
    drop(db);
    let r = race(&path, (2, "AAAAAAAA"), (2, "BBBBBBBB"));
    let ok: Vec<usize> = (0..2).filter(|i| r[*i] == "ok").collect();
    let conflicts = r.iter().filter(|x| x.starts_with("conflict")).count();
    assert!(
        ok.len() == 1 && conflicts == 1,
        "exactly one conflict: {r:?}"
    );
    let winner: &[u8] = if ok[0] == 0 { b"AAAAAAAA" } else { b"BBBBBBBB" };
    assert_eq!(fresh_read(&path, 2, 8), winner);
}
