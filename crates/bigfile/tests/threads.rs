//! One DB shared by many threads: each thread has its own transaction
//! manager, connection and handle on one ZBigFile, and they commit and read
//! at the same time.
//!
//! Thread `i` owns blocks `2i` and `2i + 1` and in round `r` writes `r`
//! over the whole of both, in one transaction. Every snapshot any thread
//! reads must be consistent: for every thread `j` both of its blocks hold
//! the same round (a commit is atomic), each block holds one round from
//! head to tail (no torn block), and the rounds a thread sees of another
//! never go back in time, nor behind what had committed before the snapshot
//! was taken (each thread publishes its last committed round). At the end a fresh connection sees every
//! thread's last round.

use bigfile::{ZBigFileH, ZBlkFormat};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use storage::TransactionManager;

mod common;

use common::{BS, new_db, opts, with_file};

const THREADS: usize = 8;
const ROUNDS: u8 = 8;

/// The round held by block `blk` in `fh`'s snapshot, checking the block is
/// not torn (every byte the same).
fn round_of(fh: &ZBigFileH, blk: u64) -> u8 {
    let b = fh.read(blk * BS, BS as usize).expect("read");
    assert!(
        b.iter().all(|x| *x == b[0]),
        "block {blk} is torn in snapshot {:?}",
        fh.at()
    );
    b[0]
}

#[test]
fn one_db_many_threads_commit_and_read_consistent_snapshots() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let db = Arc::new(db);
    let start = Arc::new(Barrier::new(THREADS));
    let committed: Arc<[AtomicU8; THREADS]> = Arc::new(std::array::from_fn(|_| AtomicU8::new(0)));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let db = Arc::clone(&db);
            let start = Arc::clone(&start);
            let committed = Arc::clone(&committed);
            std::thread::spawn(move || {
                let tm = TransactionManager::new();
                let c = db.open_connection(&tm).expect("conn");
                let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
                let mut seen = [0u8; THREADS];
                let mut retries = 0;
                start.wait();
                for r in 1..=ROUNDS {
                    loop {
                        for blk in [2 * i as u64, 2 * i as u64 + 1] {
                            fh.write(blk * BS, &vec![r; BS as usize]).expect("w");
                        }
                        match tm.commit() {
                            Ok(_) => {
                                committed[i].store(r, Ordering::SeqCst);
                                break;
                            }
                            Err(e) if e.is_conflict() => retries += 1,
                            Err(e) => panic!("thread {i}: commit: {e}"),
                        }
                    }
                    // a new snapshot: consistent, never older than the last,
                    // and holding every commit finished before it was taken
                    let before: Vec<u8> =
                        committed.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                    tm.abort();
                    for (j, last) in seen.iter_mut().enumerate() {
                        let a = round_of(&fh, 2 * j as u64);
                        let b = round_of(&fh, 2 * j as u64 + 1);
                        assert_eq!(a, b, "thread {i} sees half of a commit of thread {j}");
                        assert!(a >= *last, "thread {i}: thread {j} went back in time");
                        assert!(
                            a >= before[j],
                            "thread {i}: commit {} of thread {j} missing from a later snapshot",
                            before[j]
                        );
                        *last = a;
                    }
                    assert_eq!(seen[i], r, "thread {i} sees its own commit");
                }
                retries
            })
        })
        .collect();
    let retries: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    for j in 0..THREADS as u64 {
        assert_eq!(round_of(&fh, 2 * j), ROUNDS, "block {}", 2 * j);
        assert_eq!(round_of(&fh, 2 * j + 1), ROUNDS, "block {}", 2 * j + 1);
    }
    // different blocks never conflict: the concurrent inserts into the
    // blktab bucket (round 1) are resolved
    assert_eq!(
        retries, 0,
        "conflicts between threads writing different blocks"
    );
}
