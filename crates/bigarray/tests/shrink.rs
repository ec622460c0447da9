//! Shrinking an array drops the data past the new end everywhere: in memory
//! (clean, dirty and spilled blocks), in the block table, and in what the
//! shrinking commit stores. Growing back reads zeros past the cut, in the
//! shrinking connection and in a fresh one.
//!
//! Regression tests for the shrink-after-spill bug: with a spill threshold of
//! one block, the shrink commit used to store the removed blocks from the
//! spill file (786432 non-zero elements came back past the cut); with
//! committed data, the same connection saw old values and the shrink commit
//! wrote unreachable blocks.

use bigarray::array::BLKSIZE;
use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use storage::{DB, Oid, TransactionManager, Value};

/// f64 elements per 2 MiB block.
const PER_BLK: usize = (BLKSIZE / 8) as usize;

fn opts(spill: Option<u64>) -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: spill,
    }
}

fn new_db() -> (tempfile::TempDir, DB, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    (dir, db, path)
}

fn keep(c: &storage::Connection, name: &str, oid: Oid) {
    let r = c.ref_to(oid).expect("ref");
    c.root_mut().expect("root").insert(name, r);
}

fn root_oid(c: &storage::Connection, name: &str) -> Oid {
    c.root()
        .expect("root")
        .get(name)
        .and_then(Value::ref_oid)
        .expect("ref")
}

/// Non-zero elements at or past `from`.
fn nonzero_past(a: &ZBigArray<f64>, from: usize) -> usize {
    a.with_view(|v| {
        let flat = v.as_slice_memory_order().expect("contiguous");
        flat[from..].iter().filter(|x| **x != 0.0).count()
    })
    .expect("view")
}

/// Bytes appended to the database file by `f`.
fn growth(path: &std::path::Path, f: impl FnOnce()) -> u64 {
    let before = std::fs::metadata(path).expect("meta").len();
    f();
    std::fs::metadata(path).expect("meta").len() - before
}

/// What a fresh connection sees past `from` after growing the array back.
fn fresh_nonzero_past(db: &DB, name: &str, grow_to: usize, from: usize) -> usize {
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("fresh");
    let a = ZBigArray::<f64>::open(&c, &tm, root_oid(&c, name), opts(None)).expect("open");
    a.resize(&[grow_to]).expect("grow");
    nonzero_past(&a, from)
}

#[test]
fn shrink_of_spilled_new_blocks_stores_nothing_past_the_end() {
    let (_d, db, path) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let a = ZBigArray::<f64>::create(&c, &tm, &[4 * PER_BLK], Order::C, opts(Some(BLKSIZE)))
        .expect("create");
    keep(&c, "A", a.oid());
    for b in 0..4 {
        // one block at a time: each view's drop spills past the threshold
        a.with_view_mut(|mut v| {
            let flat = v.as_slice_memory_order_mut().expect("contiguous");
            flat[b * PER_BLK..(b + 1) * PER_BLK].fill(1.0 + b as f64);
        })
        .expect("write");
    }
    assert!(
        a.file().spilled_blocks().len() >= 3,
        "the test needs spilled blocks: {:?}",
        a.file().spilled_blocks()
    );
    a.resize(&[PER_BLK]).expect("shrink");
    let grown = growth(&path, || {
        tm.commit().expect("commit");
    });
    assert!(
        grown < 2 * BLKSIZE,
        "the shrink commit stored {grown} bytes: blocks past the end were written"
    );
    a.resize(&[4 * PER_BLK]).expect("grow");
    assert_eq!(nonzero_past(&a, PER_BLK), 0, "same connection");
    let kept = a
        .with_view(|v| {
            v.as_slice_memory_order().expect("c")[..PER_BLK]
                .iter()
                .all(|x| *x == 1.0)
        })
        .expect("view");
    assert!(kept, "the kept block keeps its data");
    tm.abort();
    assert_eq!(
        fresh_nonzero_past(&db, "A", 4 * PER_BLK, PER_BLK),
        0,
        "fresh connection"
    );
}

#[test]
fn shrink_of_committed_blocks_reads_zeros_and_stores_nothing_past_the_end() {
    for spill in [None, Some(BLKSIZE)] {
        let (_d, db, path) = new_db();
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("c");
        let a = ZBigArray::<f64>::create(&c, &tm, &[4 * PER_BLK], Order::C, opts(spill))
            .expect("create");
        keep(&c, "A", a.oid());
        a.with_view_mut(|mut v| v.fill(7.0)).expect("fill");
        tm.commit().expect("commit data");
        // Dirty some blocks past the future cut (and spill them, with a
        // threshold), then shrink to half a block.
        for b in 1..4 {
            a.with_view_mut(|mut v| {
                let flat = v.as_slice_memory_order_mut().expect("contiguous");
                flat[b * PER_BLK..(b + 1) * PER_BLK].fill(9.0);
            })
            .expect("write");
        }
        let cut = PER_BLK / 2;
        a.resize(&[cut]).expect("shrink");
        a.resize(&[4 * PER_BLK])
            .expect("grow in the same transaction");
        assert_eq!(nonzero_past(&a, cut), 0, "same transaction ({spill:?})");
        let grown = growth(&path, || {
            tm.commit().expect("commit shrink");
        });
        assert!(
            grown < BLKSIZE + 4096,
            "the shrink commit stored {grown} bytes ({spill:?}): blocks past the end were written"
        );
        assert_eq!(
            nonzero_past(&a, cut),
            0,
            "same connection after commit ({spill:?})"
        );
        assert_eq!(
            fresh_nonzero_past(&db, "A", 4 * PER_BLK, cut),
            0,
            "fresh connection ({spill:?})"
        );
        // What is kept is intact.
        let head = a
            .with_view(|v| {
                v.as_slice_memory_order().expect("c")[..cut]
                    .iter()
                    .all(|x| *x == 7.0)
            })
            .expect("view");
        assert!(head, "the kept half block keeps its data ({spill:?})");
        // Nothing past the end is referenced by the file's block table.
        let st = db.storage();
        let last = bigfile::SnapshotFile::open(st.as_ref(), st.last_tid(), a.state().zfile)
            .expect("file")
            .last_block()
            .expect("blktab");
        assert_eq!(last, Some(0), "blocks past the end in blktab ({spill:?})");
    }
}

#[test]
fn shrink_then_abort_restores_the_committed_data() {
    let (_d, db, _path) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let a =
        ZBigArray::<f64>::create(&c, &tm, &[3 * PER_BLK], Order::C, opts(None)).expect("create");
    keep(&c, "A", a.oid());
    a.with_view_mut(|mut v| v.fill(3.0)).expect("fill");
    tm.commit().expect("commit");
    a.resize(&[PER_BLK]).expect("shrink");
    a.resize(&[3 * PER_BLK]).expect("grow");
    assert_eq!(nonzero_past(&a, PER_BLK), 0, "zeros inside the transaction");
    tm.abort();
    let a = ZBigArray::<f64>::open(&c, &tm, root_oid(&c, "A"), opts(None)).expect("reopen");
    assert_eq!(a.shape(), &[3 * PER_BLK]);
    assert_eq!(
        nonzero_past(&a, 0),
        3 * PER_BLK,
        "abort brings the data back"
    );
}
