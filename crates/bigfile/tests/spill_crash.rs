//! A killed process leaves no spill file behind.
//!
//! A transaction bigger than its spill threshold moves dirty blocks to a
//! temporary file (`handle/spill.rs`). That file is unnamed from birth
//! (`O_TMPFILE`, or unlinked right after creation), so when the process
//! dies without a chance to clean up (SIGKILL, OOM killer) the kernel frees
//! it with the last descriptor. The test kills a child in the middle of a
//! spilled transaction and checks that its temporary directory is empty,
//! after checking (through `/proc/PID/fd`) that the spill file really was
//! in that directory while the child lived.

use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat};
use std::io::{BufRead, BufReader};
use storage::{DB, TransactionManager};
use testsupport::process::spawn_child;

mod common;

use common::BS;

/// Child: write 8 blocks of root['f'] of `$WENDELIN_SPILL_DB` in one
/// transaction with a spill threshold of one block, print `SPILLED`, then
/// wait to be killed.
#[test]
#[ignore = "child process entry point of a_killed_spilling_process_leaves_no_spill_file"]
fn spilling_child() {
    let Ok(path) = std::env::var("WENDELIN_SPILL_DB") else {
        return;
    };
    let db = DB::open(&path).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = common::root_file(&c);
    let o = HandleOptions {
        spill_threshold: Some(BS),
        ..common::opts(ZBlkFormat::ZBlk0)
    };
    let fh = ZBigFileH::open(&c, &tm, f, o).expect("fh");
    for b in 0..8 {
        fh.write(b * BS, &vec![b as u8 + 1; BS as usize])
            .expect("write");
    }
    assert!(!fh.spilled_blocks().is_empty(), "the transaction spilled");
    println!("SPILLED");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn a_killed_spilling_process_leaves_no_spill_file() {
    let (dir, db) = common::new_db();
    common::with_file(&db);
    drop(db);
    let tmp = tempfile::tempdir().expect("tmp");
    let db_path = dir.path().join("Data.fs");
    let mut child = spawn_child(
        "spilling_child",
        &[
            ("WENDELIN_SPILL_DB", db_path.to_str().expect("utf8")),
            ("TMPDIR", tmp.path().to_str().expect("utf8")),
        ],
    );
    let stdout = child.stdout.take().expect("stdout");
    let spilled = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("SPILLED"));
    let pid = child.id();
    // While the child lives: its spill file is open in our directory...
    let in_tmp = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| t.starts_with(tmp.path()))
                .count()
        })
        .unwrap_or(0);
    // ...and has no name there.
    let names_alive: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    assert!(spilled, "the child never spilled (status {status})");
    assert!(
        in_tmp > 0,
        "the child's spill file was not in its TMPDIR {}",
        tmp.path().display()
    );
    assert!(
        names_alive.is_empty(),
        "the spill file has a name while in use: {names_alive:?}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(left.is_empty(), "left behind after SIGKILL: {left:?}");
}
