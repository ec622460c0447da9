//! Two processes on one FileStorage: one commits block changes, the other
//! sees exactly the changed blocks after its next transaction boundary.

use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat};
use std::process::Command;
use storage::{DB, TransactionManager, Value};

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
