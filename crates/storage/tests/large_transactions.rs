//! Transactions larger than the early-flush threshold (32 MiB: their
//! records are flushed by a helper thread while the rest is written):
//! committed ones read back whole after reopening, aborted ones leave the
//! file exactly as it was.

use storage::{FileStorage, Oid, Storage, Tid, TxnMeta};

/// 48 records of 1 MiB (48 MiB: the early flush runs once or more).
fn records(seed: u8) -> Vec<(Oid, Vec<u8>)> {
    (0..48u64)
        .map(|i| {
            let b = (i as u8) ^ seed;
            let mut d = vec![b; 1 << 20];
            d[..8].copy_from_slice(&i.to_le_bytes());
            (Oid(1000 + i), d)
        })
        .collect()
}

#[test]
fn a_large_transaction_commits_whole_and_an_aborted_one_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path).expect("open");
    let recs = records(0x5a);
    let mut t = fs.tpc_begin(TxnMeta::default(), None).expect("begin");
    for (oid, d) in &recs {
        t.store(*oid, Tid::ZERO, d.clone()).expect("store");
    }
    t.vote().expect("vote");
    let tid = t.finish().expect("finish");
    let len_committed = std::fs::metadata(&path).expect("meta").len();
    assert!(len_committed > 48 << 20);

    // A second large transaction, aborted after everything was written
    // (and flushed early): the file is cut back to where it was.
    let mut t = fs.tpc_begin(TxnMeta::default(), None).expect("begin");
    for (oid, d) in records(0xa5) {
        t.store(oid, tid, d).expect("store");
    }
    t.vote().expect("vote");
    t.abort();
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), len_committed);
    drop(fs);

    // Reopened (the index rebuilt from the file): the committed records,
    // byte for byte.
    let fs = FileStorage::open(&path).expect("reopen");
    for (oid, d) in &recs {
        let r = fs
            .load_before(*oid, Tid::MAX)
            .expect("load")
            .expect("present");
        assert_eq!(r.serial, tid);
        assert!(r.data == *d, "record {oid:?}");
    }
}
