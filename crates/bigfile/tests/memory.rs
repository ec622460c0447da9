//! Real memory of the read, write and spill paths: peak RSS measured by
//! the kernel (`VmHWM` of a child process), not the engine's own counters.
//!
//! Each path runs in a child process (this binary re-run on the `#[ignore]`d
//! entry point `memory_child`) on a file four times its handle's RAM budget;
//! the child resets its peak RSS just before the phase it measures and
//! prints how far above its starting RSS the peak went. The limit is the
//! budget plus a small fixed slack (a few blocks in flight: the record being
//! decoded, the block being copied in, read-ahead), far below the file's
//! size, so a path that keeps the file in memory (no eviction, no spill, a
//! commit that gathers the transaction) fails.

use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat};
use common::root_file;
use storage::{Connection, DB, TransactionManager};

mod common;
use testsupport::process::{child_value, peak_rss_kib, reset_peak_rss, run_child};

/// Block size: wendelin.core's 2 MiB.
const BS: u64 = 2 << 20;
/// The handle's RAM budget.
const BUDGET: u64 = 16 << 20;
/// Blocks of the file: 4x the budget.
const BLOCKS: u64 = 4 * BUDGET / BS;
/// Allowed peak above budget: blocks in flight and allocator slack.
const SLACK: u64 = 12 << 20;

fn opts() -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options {
            budget: Some(BUDGET),
            reserve: 1 << 32,
            ..virtmem::Options::default()
        },
        spill_threshold: None,
    }
}

/// root["f"] of the database at `path`, through the budgeted handle.
fn open_handle(path: &str) -> (DB, TransactionManager, Connection, ZBigFileH) {
    let db = DB::open(path).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, root_file(&c), opts()).expect("fh");
    (db, tm, c, fh)
}

fn fill(blk: u64) -> u8 {
    (blk % 251) as u8 + 1
}

/// A database with an empty 2 MiB-block file as root["f"].
fn new_db() -> (tempfile::TempDir, String) {
    let (dir, db) = common::new_db();
    common::with_file_of(&db, BS);
    let path = dir
        .path()
        .join("Data.fs")
        .to_str()
        .expect("utf8")
        .to_owned();
    (dir, path)
}

/// Child: open root["f"] of `$WENDELIN_MEM_DB` with the budgeted handle and
/// run `$WENDELIN_MEM_CHILD` (`read` or `write`), printing the peak RSS
/// above the start of each measured phase (`NAME_kib=`).
#[test]
#[ignore = "child process entry point of the memory tests"]
fn memory_child() {
    let Ok(mode) = std::env::var("WENDELIN_MEM_CHILD") else {
        return;
    };
    let path = std::env::var("WENDELIN_MEM_DB").expect("WENDELIN_MEM_DB");
    let (_db, tm, _c, fh) = open_handle(&path);
    match mode.as_str() {
        "read" => {
            // One raw view over the whole file, every page touched.
            let start = reset_peak_rss();
            let fr = fh.fileh_read().expect("fileh");
            let v = fr.bytes(0..BLOCKS * BS).expect("view");
            let sum: u64 = v.iter().map(|b| u64::from(*b)).sum();
            let expect: u64 = (0..BLOCKS).map(|b| u64::from(fill(b)) * BS).sum();
            assert_eq!(sum, expect, "the scan read the file's bytes");
            println!("read_kib={}", peak_rss_kib() - start);
            println!("evictions={}", fr.stats().evictions);
        }
        "write" => {
            let start = reset_peak_rss();
            let mut buf = vec![0u8; BS as usize];
            for b in 0..BLOCKS {
                buf.fill(fill(b));
                fh.write(b * BS, &buf).expect("write");
            }
            drop(buf);
            println!("write_kib={}", peak_rss_kib() - start);
            println!("spilled={}", fh.spilled_blocks().len());
            let start = reset_peak_rss();
            tm.commit().expect("commit");
            println!("commit_kib={}", peak_rss_kib() - start);
        }
        other => panic!("unknown mode {other}"),
    }
    println!("DONE");
}

fn child(mode: &str, db: &str) -> String {
    let out = run_child(
        "memory_child",
        &[("WENDELIN_MEM_CHILD", mode), ("WENDELIN_MEM_DB", db)],
    );
    assert!(out.contains("DONE"), "the child did not run: {out}");
    out
}

fn assert_within_budget(out: &str, phase: &str) {
    let kib = child_value(out, &format!("{phase}_kib"))
        .unwrap_or_else(|| panic!("no {phase} measurement:\n{out}"));
    let limit = (BUDGET + SLACK) / 1024;
    eprintln!(
        "{phase}: peak {kib} KiB above start (limit {limit} KiB, file {} KiB)",
        BLOCKS * BS / 1024
    );
    assert!(
        kib <= limit,
        "{phase}: peak RSS {kib} KiB above start, over budget + slack {limit} KiB (file {} KiB)",
        BLOCKS * BS / 1024
    );
}

/// Scanning a file of 4x the budget through one raw view keeps the peak
/// RSS within the budget plus slack.
#[test]
fn scan_of_a_file_bigger_than_the_budget_stays_within_it() {
    let (_d, path) = new_db();
    {
        let (_db, tm, _c, fh) = open_handle(&path);
        for b in 0..BLOCKS {
            fh.write(b * BS, &vec![fill(b); BS as usize]).expect("w");
            if b % 4 == 3 {
                tm.commit().expect("commit");
            }
        }
        tm.commit().expect("commit");
    }
    let out = child("read", &path);
    assert_within_budget(&out, "read");
    assert!(
        child_value(&out, "evictions").is_some_and(|n| n > 0),
        "the scan evicted blocks:\n{out}"
    );
}

/// Writing a file of 4x the budget in one transaction spills, and both the
/// writing and the commit of the spilled transaction stay within the
/// budget plus slack; the data committed is what was written.
#[test]
fn one_transaction_bigger_than_the_budget_spills_and_commits_within_it() {
    let (_d, path) = new_db();
    let out = child("write", &path);
    assert!(
        child_value(&out, "spilled").is_some_and(|n| n >= BLOCKS / 2),
        "the transaction spilled:\n{out}"
    );
    assert_within_budget(&out, "write");
    assert_within_budget(&out, "commit");
    let (_db, _tm, _c, fh) = open_handle(&path);
    for b in 0..BLOCKS {
        let got = fh.read(b * BS, BS as usize).expect("read");
        assert!(got.iter().all(|x| *x == fill(b)), "block {b}");
    }
}
