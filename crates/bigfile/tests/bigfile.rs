//! ZBigFile through the object layer and virtmem: the wendelin test
//! databases, every write/format rule, exact invalidation, isolation,
//! conflicts, and a model-based test.

use bigfile::reader::SnapshotFile;
use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat, ZBlkKind};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use storage::{DB, FileStorage, Oid, Storage, Tid, TransactionManager};

mod common;

use common::{BS, new_db, opts, testdata, with_file};

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn wendelin_test_databases_read_byte_for_byte() {
    for f in ["zblk/py3_pickle3/zblk", "zblk/py2_pickle3/zblk"] {
        let js: serde_json::Value = serde_json::from_slice(
            &std::fs::read(testdata().join(format!("{f}.json"))).expect("json"),
        )
        .expect("parse");
        let fs = FileStorage::open_read_only(testdata().join(format!("{f}.fs"))).expect("open");
        let db = DB::new(Arc::new(fs));
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("conn");
        let zbigf = c
            .root()
            .expect("root")
            .get("zbigf")
            .and_then(storage::Value::ref_oid)
            .expect("zbigf");
        let want = &js["zbigfiles"][zbigf.to_string()];
        let fh = ZBigFileH::open(&c, &tm, zbigf, opts(ZBlkFormat::ZBlk0)).expect("handle");
        assert_eq!(
            fh.blksize() as u64,
            want["blksize"].as_u64().expect("blksize")
        );
        let size = fh.size().expect("size");
        assert_eq!(Some(size), want["size"].as_u64(), "{f}");
        let nblk = size / fh.blksize() as u64;
        for blk in 0..nblk {
            let data = fh
                .read(blk * fh.blksize() as u64, fh.blksize())
                .expect("read");
            match want["blocks"].get(blk.to_string()) {
                Some(b) => assert_eq!(
                    Some(hex::encode(Sha256::digest(&data)).as_str()),
                    b["sha256_full_block"].as_str(),
                    "{f} block {blk}"
                ),
                None => assert!(
                    data.iter().all(|&x| x == 0),
                    "{f}: hole {blk} reads as zeros"
                ),
            }
        }
        // formats as described
        let sf = SnapshotFile::open(db.storage().as_ref(), c.at(), zbigf).expect("snapshot");
        let kinds: Vec<(u64, ZBlkKind)> = sf
            .blocks()
            .expect("blocks")
            .into_iter()
            .map(|(b, o)| (b, sf.zblk_kind(o).expect("kind")))
            .collect();
        assert_eq!(kinds, vec![(1, ZBlkKind::ZBlk0), (3, ZBlkKind::ZBlk1)]);
    }
}

#[test]
fn fast_payload_equals_the_decoded_state() {
    let mut n = 0;
    for f in ["zblk/py3_pickle3/zblk", "zblk/py2_pickle3/zblk"] {
        let fs = FileStorage::open_read_only(testdata().join(format!("{f}.fs"))).expect("open");
        for t in fs.iter_txns(Tid::ZERO, Tid::MAX).expect("iter") {
            for r in t.expect("txn").records {
                let data = r.data.expect("data");
                let class = storage::pickle::record_class(&data).expect("class");
                if class.ends_with("ZBlk0") || class.ends_with("ZData") {
                    let (_, state) = storage::pickle::decode_record(&data).expect("decode");
                    let fast = bigfile::objects::fast_payload(&data, &["ZBlk0", "ZBlk", "ZData"])
                        .expect("fast path");
                    assert_eq!(Some(fast), state.as_bytes());
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 2 * 65);
    // other classes and odd states are refused
    let rec = storage::pickle::encode_record(
        "wendelin.bigfile.file_zodb",
        "ZBlk0",
        &storage::Value::Int(1),
        storage::pickle::Dialect::Py3,
    )
    .expect("enc");
    assert!(bigfile::objects::fast_payload(&rec, &["ZBlk0"]).is_none());
}

/// Records of the last transaction: (oid, class).
fn last_txn_classes(db: &DB) -> Vec<(Oid, String)> {
    let t = db
        .storage()
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .last()
        .expect("txn")
        .expect("ok");
    t.records
        .iter()
        .map(|r| {
            (
                r.oid,
                storage::pickle::record_class(r.data.as_deref().expect("data")).expect("class"),
            )
        })
        .collect()
}

#[test]
fn write_commit_reread_in_every_format() {
    for format in [ZBlkFormat::ZBlk0, ZBlkFormat::ZBlk1, ZBlkFormat::Auto] {
        let (_d, db) = new_db();
        let f = with_file(&db);
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("conn");
        let fh = ZBigFileH::open(&c, &tm, f, opts(format)).expect("fh");
        let full = pattern(1, BS as usize);
        fh.write(0, &full).expect("write"); // block 0: full
        fh.write(2 * BS + 100, b"abc").expect("write"); // block 2: small; block 1 stays a hole
        tm.commit().expect("commit");
        assert!(fh.dirty_blocks().expect("dirty").is_empty());
        // a fresh connection reads the committed bytes
        let tm2 = TransactionManager::new();
        let c2 = db.open_connection(&tm2).expect("conn2");
        let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(format)).expect("fh2");
        assert_eq!(fh2.read(0, BS as usize).expect("read"), full);
        assert!(
            fh2.read(BS, BS as usize)
                .expect("read")
                .iter()
                .all(|&b| b == 0)
        );
        let b2 = fh2.read(2 * BS, BS as usize).expect("read");
        assert_eq!(&b2[100..103], b"abc");
        assert_eq!(fh2.size().expect("size"), 3 * BS);
        let sf = SnapshotFile::open(db.storage().as_ref(), c2.at(), f).expect("sf");
        let kinds: Vec<(u64, ZBlkKind)> = sf
            .blocks()
            .expect("blocks")
            .into_iter()
            .map(|(b, o)| (b, sf.zblk_kind(o).expect("kind")))
            .collect();
        let want = match format {
            ZBlkFormat::ZBlk0 => vec![(0, ZBlkKind::ZBlk0), (2, ZBlkKind::ZBlk0)],
            ZBlkFormat::ZBlk1 => vec![(0, ZBlkKind::ZBlk1), (2, ZBlkKind::ZBlk1)],
            // auto: a full block is ZBlk0 (big change); a small change to a new
            // (non-append) block is ZBlk1
            ZBlkFormat::Auto => vec![(0, ZBlkKind::ZBlk0), (2, ZBlkKind::ZBlk1)],
        };
        assert_eq!(kinds, want, "{format:?}");
        // writing the same bytes again writes nothing
        let before = db.storage().last_tid();
        fh.write(0, &full).expect("same bytes");
        tm.commit().expect("commit");
        assert_eq!(
            db.storage().last_tid(),
            before,
            "{format:?}: unchanged block not stored"
        );
        // one changed byte rewrites the block's ZBlk (and, for ZBlk1, one ZData)
        fh.write(2 * BS + 101, b"X").expect("write");
        tm.commit().expect("commit");
        let classes = last_txn_classes(&db);
        let zblk_oid = sf.blocks().expect("blocks")[1].1;
        assert!(
            classes.iter().any(|(o, _)| *o == zblk_oid),
            "{format:?}: ZBlk re-stored: {classes:?}"
        );
        if kinds[1].1 == ZBlkKind::ZBlk1 {
            assert_eq!(
                classes.iter().filter(|(_, c)| c.ends_with("ZData")).count(),
                1,
                "{classes:?}"
            );
        }
        assert!(!classes.iter().any(|(_, c)| c.ends_with("ZBigFile")));
    }
}

#[test]
fn format_change_replaces_the_zblk_object() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk1)).expect("fh");
    fh.write(10, b"one").expect("write");
    tm.commit().expect("commit");
    let sf = SnapshotFile::open(db.storage().as_ref(), c.at(), f).expect("sf");
    let z1 = sf.blocks().expect("blocks")[0].1;
    drop(fh);
    let fh0 = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh0");
    fh0.write(20, b"two").expect("write");
    tm.commit().expect("commit");
    let sf = SnapshotFile::open(db.storage().as_ref(), c.at(), f).expect("sf");
    let (blk, z0) = sf.blocks().expect("blocks")[0];
    assert_eq!(blk, 0);
    assert_ne!(z0, z1, "a new ZBlk object");
    assert_eq!(sf.zblk_kind(z0).expect("kind"), ZBlkKind::ZBlk0);
    let mut buf = vec![0u8; BS as usize];
    sf.read_block(0, &mut buf).expect("read");
    assert_eq!(&buf[10..13], b"one");
    assert_eq!(&buf[20..23], b"two");
}

#[test]
fn isolation_and_exact_invalidation_between_connections() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    let fh1 = ZBigFileH::open(&c1, &tm1, f, opts(ZBlkFormat::ZBlk0)).expect("fh1");
    for blk in 0..4 {
        fh1.write(blk * BS, &pattern(blk as u8, BS as usize))
            .expect("write");
    }
    tm1.commit().expect("commit");
    let c2 = db.open_connection(&tm2).expect("c2");
    let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(ZBlkFormat::ZBlk0)).expect("fh2");
    let read_all = |fh: &ZBigFileH| {
        (0..5)
            .map(|b| fh.read(b * BS, BS as usize).expect("read"))
            .collect::<Vec<_>>()
    };
    let v0 = read_all(&fh2);
    let loads0 = fh2.stats().expect("stats").loads;
    // c1 changes block 1, fills hole 4; block 0, 2, 3 untouched
    fh1.write(BS + 7, b"changed").expect("write");
    fh1.write(4 * BS, b"new block").expect("write");
    let fh1_loads = fh1.stats().expect("stats").loads;
    tm1.commit().expect("commit");
    // the committing handle keeps its pages
    let _ = read_all(&fh1);
    assert_eq!(
        fh1.stats().expect("stats").loads,
        fh1_loads,
        "committer keeps its pages"
    );
    // isolation: fh2 still sees its snapshot
    assert_eq!(read_all(&fh2), v0);
    assert_eq!(fh2.stats().expect("stats").loads, loads0);
    tm2.abort(); // boundary
    let v1 = read_all(&fh2);
    assert_eq!(
        fh2.stats().expect("stats").loads - loads0,
        2,
        "exactly blocks 1 and 4 reloaded"
    );
    assert_eq!(&v1[1][7..14], b"changed");
    assert_eq!(&v1[4][..9], b"new block");
    assert_eq!(v1[0], v0[0]);
    assert_eq!(v1[3], v0[3]);
}

#[test]
fn conflicts_on_one_block_and_merges_on_different_blocks() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    let c2 = db.open_connection(&tm2).expect("c2");
    let fh1 = ZBigFileH::open(&c1, &tm1, f, opts(ZBlkFormat::ZBlk0)).expect("fh1");
    let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(ZBlkFormat::ZBlk0)).expect("fh2");
    // different new blocks: both commit (blktab bucket resolution)
    fh1.write(0, b"from 1").expect("w");
    fh2.write(3 * BS, b"from 2").expect("w");
    tm1.commit().expect("c1 commits");
    tm2.commit().expect("c2 commits too");
    tm1.abort();
    assert_eq!(fh1.read(3 * BS, 6).expect("r"), b"from 2");
    assert_eq!(fh2.read(0, 6).expect("r"), b"from 1");
    // the same block: the second commit conflicts, its dirty pages are
    // discarded and the handle then shows the committed data
    fh1.write(10, b"AAAA").expect("w");
    fh2.write(20, b"BBBB").expect("w");
    tm1.commit().expect("first");
    let e = tm2.commit().expect_err("conflict");
    assert!(e.is_conflict(), "{e}");
    assert!(fh2.dirty_blocks().expect("dirty").is_empty());
    let b = fh2.read(0, 32).expect("r");
    assert_eq!(&b[10..14], b"AAAA");
    assert_eq!(&b[20..24], &[0, 0, 0, 0]);
    // and the handle is usable again
    fh2.write(20, b"BBBB").expect("w");
    tm2.commit().expect("retry");
}

#[test]
fn abort_discards_dirty_blocks() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    fh.write(0, b"keep").expect("w");
    tm.commit().expect("commit");
    fh.write(0, b"drop").expect("w");
    assert_eq!(fh.dirty_blocks().expect("dirty"), vec![0]);
    tm.abort();
    assert!(fh.dirty_blocks().expect("dirty").is_empty());
    assert_eq!(fh.read(0, 4).expect("r"), b"keep");
}

mod model {
    //! Two connections with a handle each: random writes, commits and aborts
    //! against a model (committed file bytes + each handle's view).
    use super::*;
    use proptest::prelude::*;

    const NBLK: u64 = 4;

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            h: usize,
            off: u64,
            len: usize,
            seed: u8,
        },
        Commit {
            h: usize,
        },
        Abort {
            h: usize,
        },
        Check {
            h: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, 0..NBLK * BS, 1..3000usize, any::<u8>()).prop_map(|(h, off, len, seed)| Op::Write { h, off, len, seed }),
            2 => (0..2usize).prop_map(|h| Op::Commit { h }),
            1 => (0..2usize).prop_map(|h| Op::Abort { h }),
            1 => (0..2usize).prop_map(|h| Op::Check { h }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn handles_match_model(ops in proptest::collection::vec(op(), 1..30), fmt in 0..3u8, spill in any::<bool>()) {
            let format = [ZBlkFormat::ZBlk0, ZBlkFormat::ZBlk1, ZBlkFormat::Auto][fmt as usize];
            let (_d, db) = new_db();
            let f = with_file(&db);
            let tms = [TransactionManager::new(), TransactionManager::new()];
            let conns: Vec<_> = tms.iter().map(|tm| db.open_connection(tm).expect("c")).collect();
            // with `spill`, any second dirty block spills the first to the temp file
            let o = HandleOptions { spill_threshold: spill.then_some(BS), ..opts(format) };
            let fhs: Vec<_> = (0..2).map(|i| ZBigFileH::open(&conns[i], &tms[i], f, o.clone()).expect("fh")).collect();
            let size = (NBLK * BS) as usize;
            // committed history: (tid, bytes); each handle: base snapshot + own edits
            let mut history: Vec<(Tid, Vec<u8>)> = vec![(db.storage().last_tid(), vec![0; size])];
            let mut view: Vec<Vec<u8>> = vec![vec![0; size]; 2];
            let mut dirty: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); 2];
            let snapshot = |history: &Vec<(Tid, Vec<u8>)>, at: Tid| history.iter().rev().find(|(t, _)| *t <= at).map(|(_, b)| b.clone()).expect("snapshot");
            for op in ops {
                match op {
                    Op::Write { h, off, len, seed } => {
                        let len = len.min(size - off as usize);
                        let data = pattern(seed, len);
                        fhs[h].write(off, &data).expect("write");
                        view[h][off as usize..off as usize + len].copy_from_slice(&data);
                        for b in off / BS..=(off + len as u64 - 1) / BS { dirty[h].insert(b); }
                    }
                    Op::Commit { h } => {
                        let at = conns[h].at();
                        let latest = history.last().expect("h").1.clone();
                        let base = snapshot(&history, at);
                        // blocks changed by others since our snapshot
                        let changed: Vec<u64> = (0..NBLK).filter(|b| {
                            let r = (*b * BS) as usize..((*b + 1) * BS) as usize;
                            latest[r.clone()] != base[r]
                        }).collect();
                        // our really changed blocks (same bytes = nothing stored)
                        let ours: Vec<u64> = dirty[h].iter().copied().filter(|b| {
                            let r = (*b * BS) as usize..((*b + 1) * BS) as usize;
                            view[h][r.clone()] != base[r]
                        }).collect();
                        // Blocks whose ZBlk object others replaced since our
                        // snapshot (a format switch): Python's bucket resolver
                        // cannot compare two different persistent references,
                        // so a blktab bucket both sides changed then conflicts
                        // (we resolve as Python does).
                        let blocks_at = |t: Tid| -> std::collections::BTreeMap<u64, Oid> {
                            SnapshotFile::open(db.storage().as_ref(), t, f)
                                .and_then(|sf| sf.blocks())
                                .map(|v| v.into_iter().collect())
                                .unwrap_or_default()
                        };
                        let (then, now) = (blocks_at(at), blocks_at(db.storage().last_tid()));
                        let replaced = then.iter().any(|(b, o)| now.get(b).is_some_and(|n| n != o));
                        let r = tms[h].commit();
                        if ours.iter().any(|b| changed.contains(b)) {
                            prop_assert!(r.is_err(), "expected a conflict");
                        } else if replaced && r.is_err() {
                            let msg = format!("{:?}", r);
                            prop_assert!(msg.contains("do not compare in Python"), "unexpected: {}", msg);
                        } else {
                            // disjoint blocks: the blktab bucket conflict resolves
                            prop_assert!(r.is_ok(), "model predicts success: {:?}", r);
                            if !ours.is_empty() {
                                let mut next = latest.clone();
                                for b in &ours {
                                    let rg = (*b * BS) as usize..((*b + 1) * BS) as usize;
                                    next[rg.clone()].copy_from_slice(&view[h][rg]);
                                }
                                history.push((db.storage().last_tid(), next));
                            }
                        }
                        dirty[h].clear();
                        view[h] = snapshot(&history, conns[h].at());
                    }
                    Op::Abort { h } => {
                        tms[h].abort();
                        dirty[h].clear();
                        view[h] = snapshot(&history, conns[h].at());
                    }
                    Op::Check { h } => {
                        let got = fhs[h].read(0, size).expect("read");
                        prop_assert!(got == view[h], "handle {} differs from the model", h);
                    }
                }
            }
            for h in 0..2 {
                tms[h].abort();
                let got = fhs[h].read(0, size).expect("read");
                prop_assert!(got == history.last().expect("h").1, "final state of handle {}", h);
            }
        }
    }
}

#[test]
fn transaction_bigger_than_the_budget_spills_and_commits() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let budget = 4 * BS;
    let o = HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options {
            readahead: false,
            reserve: 1 << 32,
            budget: Some(budget),
            ..virtmem::Options::default()
        },
        spill_threshold: None,
    };
    let fh = ZBigFileH::open(&c, &tm, f, o.clone()).expect("fh");
    let n = 16u64; // 4x the budget
    for b in 0..n {
        fh.write(b * BS, &pattern(b as u8, BS as usize))
            .expect("write");
        assert!(
            fh.dirty_blocks().expect("dirty").len() as u64 * BS <= budget + BS,
            "dirty stays bounded"
        );
    }
    assert!(
        fh.spilled_blocks().len() as u64 >= n - 5,
        "spilled: {:?}",
        fh.spilled_blocks()
    );
    assert!(
        fh.stats().expect("stats").evictions > 0,
        "spilled blocks were evicted under the budget"
    );
    // reading back inside the transaction sees our changes (from the spill file)
    assert_eq!(
        fh.read(0, BS as usize).expect("read"),
        pattern(0, BS as usize)
    );
    tm.commit().expect("commit");
    assert!(fh.spilled_blocks().is_empty());
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    let fh2 = ZBigFileH::open(&c2, &tm2, f, o.clone()).expect("fh2");
    for b in 0..n {
        assert_eq!(
            fh2.read(b * BS, BS as usize).expect("read"),
            pattern(b as u8, BS as usize),
            "block {b}"
        );
    }
    // an aborted big transaction leaves nothing behind
    for b in 0..n {
        fh.write(b * BS, &pattern(b as u8 ^ 0x55, BS as usize))
            .expect("write");
    }
    assert!(!fh.spilled_blocks().is_empty());
    tm.abort();
    assert!(fh.spilled_blocks().is_empty());
    for b in 0..n {
        assert_eq!(
            fh.read(b * BS, BS as usize).expect("read"),
            pattern(b as u8, BS as usize),
            "block {b} after abort"
        );
    }
}
