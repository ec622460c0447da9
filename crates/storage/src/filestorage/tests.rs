use super::*;
use serde_json::Value as J;
use sha2::{Digest, Sha256};

use testsupport::testdata;

const FILES: &[&str] = testsupport::PYTHON_DATABASES;

fn json(f: &str) -> J {
    serde_json::from_slice(&std::fs::read(testdata().join(format!("{f}.json"))).expect("json"))
        .expect("parse")
}

fn tid(j: &J) -> Tid {
    j.as_str().and_then(Tid::from_hex).expect("tid")
}

fn oid(j: &J) -> Oid {
    j.as_str().and_then(Oid::from_hex).expect("oid")
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn meta(desc: &str) -> TxnMeta {
    TxnMeta {
        user: b"tester".to_vec(),
        description: desc.as_bytes().to_vec(),
        extension: Vec::new(),
    }
}

#[test]
fn vector_files_index_and_iterate_as_described() {
    for f in FILES {
        let j = json(f);
        let path = testdata().join(format!("{f}.fs"));
        let raw = std::fs::read(&path).expect("read");
        let fs = FileStorage::open_read_only(&path).expect("open");
        let info = fs.scan_info();
        assert_eq!(info.end, raw.len() as u64, "{f}");
        assert_eq!(info.tail, Tail::Clean);
        assert_eq!(fs.last_tid(), tid(&j["last_tid"]), "{f}");
        assert_eq!(&fs.magic(), j["magic"].as_str().expect("magic").as_bytes());
        let want_txns: Vec<&J> = j["transactions"]
            .as_array()
            .expect("txns")
            .iter()
            .filter(|t| t["status"] != "u")
            .collect();
        let got: Vec<TxnInfo> = fs
            .iter_txns(Tid::ZERO, Tid::MAX)
            .expect("iter")
            .collect::<Result<_>>()
            .expect("txns");
        assert_eq!(got.len(), want_txns.len(), "{f}");
        for (g, w) in got.iter().zip(&want_txns) {
            assert_eq!(g.tid, tid(&w["tid"]));
            assert_eq!(
                g.tid.time_string().replace(' ', "T") + "Z",
                w["tid_time_utc"].as_str().expect("t")
            );
            assert_eq!(
                Some(g.status as char),
                w["status"].as_str().and_then(|s| s.chars().next())
            );
            assert_eq!(
                Some(String::from_utf8_lossy(&g.meta.user).as_ref()),
                w["user"].as_str()
            );
            assert_eq!(
                Some(String::from_utf8_lossy(&g.meta.description).as_ref()),
                w["description"].as_str()
            );
            assert_eq!(
                Some(hex::encode(&g.meta.extension).as_str()),
                w["extension_hex"].as_str()
            );
            let wr = w["records"].as_array().expect("records");
            assert_eq!(g.records.len(), wr.len());
            for (gr, wr) in g.records.iter().zip(wr) {
                assert_eq!(gr.oid, oid(&wr["oid"]));
                let len = wr["data_len"].as_u64().expect("len") as usize;
                let pos = wr["pos"].as_u64().expect("pos") as usize;
                if len > 0 {
                    assert_eq!(gr.data.as_deref(), Some(&raw[pos + 42..pos + 42 + len]));
                } else if wr["backpointer"].as_u64() == Some(0) {
                    assert_eq!(gr.data, None, "{f}: deleted at {pos}");
                } else {
                    assert!(gr.data.is_some(), "{f}: backpointer at {pos} resolves");
                }
            }
        }
        let max_oid = j["max_oid"]
            .as_str()
            .and_then(Oid::from_hex)
            .expect("max oid");
        assert_eq!(fs.new_oid().expect("oid"), Oid(max_oid.0 + 1), "{f}");
    }
}

#[test]
fn load_and_load_before_agree_with_python_zodb() {
    for f in ["formats/history", "formats/history_packed"] {
        let j = json(f);
        let e = &j["python_zodb_expectations"];
        let fs = FileStorage::open_read_only(testdata().join(format!("{f}.fs"))).expect("open");
        assert_eq!(fs.last_tid(), tid(&e["lastTransaction"]));
        let mut n = 0;
        for (o, want) in e["load"].as_object().expect("load") {
            let o = Oid::from_hex(o).expect("oid");
            match fs.load(o) {
                Ok(r) => {
                    assert_eq!(r.serial, tid(&want["serial"]), "{f} {o}");
                    assert_eq!(Some(sha(&r.data).as_str()), want["data_sha256"].as_str());
                }
                Err(Error::NotFound { .. }) => assert_eq!(want["error"], "POSKeyError", "{f} {o}"),
                Err(err) => panic!("{f} {o}: {err}"),
            }
            n += 1;
        }
        for c in e["loadBefore"].as_array().expect("lb") {
            let o = oid(&c["oid"]);
            let got = fs.load_before(o, tid(&c["before"])).expect("load_before");
            match (&got, c.get("result")) {
                // Python raises POSKeyError for "deleted at that revision";
                // here that is "no object" as well.
                (None, None) => assert_eq!(c["error"], "POSKeyError"),
                (None, Some(J::Null)) => {}
                (Some(r), Some(w)) if !w.is_null() => {
                    assert_eq!(r.serial, tid(&w["serial"]), "{f} {c}");
                    assert_eq!(
                        r.next_serial,
                        w["next_serial"].as_str().and_then(Tid::from_hex),
                        "{f} {c}"
                    );
                    assert_eq!(
                        Some(sha(&r.data).as_str()),
                        w["data_sha256"].as_str(),
                        "{f} {c}"
                    );
                }
                _ => panic!("{f}: {c} -> {got:?}"),
            }
            n += 1;
        }
        assert!(n > 60, "{f}: {n} cases");
    }
}

#[test]
fn load_serial_walks_history_and_follows_backpointers() {
    let j = json("formats/history");
    let fs = FileStorage::open_read_only(testdata().join("formats/history.fs")).expect("open");
    let raw = std::fs::read(testdata().join("formats/history.fs")).expect("read");
    for (o, chain) in j["revision_chains"].as_object().expect("chains") {
        let o = Oid::from_hex(o).expect("oid");
        for rev in chain.as_array().expect("chain") {
            let t = tid(&rev["tid"]);
            let len = rev["data_len"].as_u64().expect("len") as usize;
            let got = fs.load_serial(o, t);
            match (len, rev["backpointer"].as_u64()) {
                (0, Some(0)) => assert!(matches!(got, Err(Error::NotFound { .. }))),
                (0, Some(back)) => {
                    // the target record's data
                    let b = back as usize;
                    let plen =
                        u64::from_be_bytes(raw[b + 34..b + 42].try_into().expect("8")) as usize;
                    assert_eq!(got.expect("data"), raw[b + 42..b + 42 + plen].to_vec());
                }
                _ => {
                    let p = rev["pos"].as_u64().expect("pos") as usize;
                    assert_eq!(got.expect("data"), raw[p + 42..p + 42 + len].to_vec());
                }
            }
        }
    }
}

#[test]
fn new_database_gets_the_root_mapping_like_zodb() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("Data.fs");
    let fs = FileStorage::open(&p).expect("create");
    let root = fs.load(Oid::ROOT).expect("root");
    assert_eq!(
        pickle::record_class(&root.data).expect("class"),
        "persistent.mapping.PersistentMapping"
    );
    let (_, state) = pickle::decode_record(&root.data).expect("decode");
    assert_eq!(state.dict_get("data"), Some(&Value::Dict(vec![])));
    let txns: Vec<_> = fs
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .collect::<Result<_>>()
        .expect("ok");
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].meta.description, b"initial database creation");
    let bytes = std::fs::read(&p).expect("read");
    assert_eq!(&bytes[..4], b"FS30");
    // layout of FORMATS.md §2.15 (tid aside; Python's pickles also memoize,
    // which makes its record 8 bytes longer)
    let tlen = (23 + 25 + 42 + root.data.len()) as u64;
    assert_eq!(&bytes[12..20], &tlen.to_be_bytes());
    assert_eq!(bytes[20], b' ');
    assert_eq!(&bytes[bytes.len() - 8..], &tlen.to_be_bytes());
    assert_eq!(bytes.len() as u64, 4 + tlen + 8);
    drop(fs);
    // reopening does not create a second root
    let fs = FileStorage::open(&p).expect("reopen");
    assert_eq!(fs.scan_info().transactions, 1);
    // the lock file holds " <pid>\n" like zc.lockfile
    let lock = std::fs::read_to_string(dir.path().join("Data.fs.lock")).expect("lock");
    assert_eq!(lock, format!(" {}\n", std::process::id()));
}

#[test]
fn commit_reopen_and_mvcc() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("Data.fs");
    let fs = FileStorage::open(&p).expect("create");
    let t0 = fs.last_tid();
    let a = fs.new_oid().expect("oid");
    let b = fs.new_oid().expect("oid");
    assert_eq!((a, b), (Oid(1), Oid(2)));
    let mut t = fs.tpc_begin(meta("one"), None).expect("begin");
    t.store(a, Tid::ZERO, b"\x80\x03cm\nA\n.\x80\x03K\x01.".to_vec())
        .expect("store");
    t.store(b, Tid::ZERO, b"\x80\x03cm\nB\n.\x80\x03K\x02.".to_vec())
        .expect("store");
    assert!(t.vote().expect("vote").is_empty());
    let t1 = t.finish().expect("finish");
    assert!(t1 > t0);
    let mut t = fs.tpc_begin(meta("two"), None).expect("begin");
    t.store(a, t1, b"\x80\x03cm\nA\n.\x80\x03K\x03.".to_vec())
        .expect("store");
    let t2 = t.finish().expect("finish");
    assert!(t2 > t1);
    assert_eq!(fs.changed_oids(t0, t2).expect("changed"), vec![a, b]);
    assert_eq!(fs.changed_oids(t1, t2).expect("changed"), vec![a]);
    drop(fs);
    let fs = FileStorage::open_read_only(&p).expect("reopen");
    assert_eq!(fs.last_tid(), t2);
    let r = fs.load(a).expect("a");
    assert_eq!((r.serial, r.next_serial), (t2, None));
    assert!(r.data.ends_with(b"K\x03."));
    let r = fs.load_before(a, t2).expect("lb").expect("exists");
    assert_eq!((r.serial, r.next_serial), (t1, Some(t2)));
    assert!(r.data.ends_with(b"K\x01."));
    assert_eq!(fs.load_before(a, t1).expect("lb"), None);
    assert_eq!(
        fs.load_serial(b, t1).expect("b"),
        b"\x80\x03cm\nB\n.\x80\x03K\x02."
    );
    assert!(matches!(
        fs.tpc_begin(meta("x"), None),
        Err(Error::ReadOnly { .. })
    ));
}

#[test]
fn stale_serial_conflicts_and_resolver_merges() {
    struct Concat;
    impl ConflictResolver for Concat {
        fn resolve(
            &self,
            _: Oid,
            old: &[u8],
            cur: &[u8],
            new: &[u8],
        ) -> std::result::Result<Vec<u8>, String> {
            if new == b"refuse" {
                return Err("cannot merge".into());
            }
            let mut v = cur.to_vec();
            v.extend_from_slice(&new[old.len()..]);
            Ok(v)
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let fs = FileStorage::open(dir.path().join("Data.fs")).expect("create");
    let o = fs.new_oid().expect("oid");
    let mut t = fs.tpc_begin(meta("a"), None).expect("begin");
    t.store(o, Tid::ZERO, b"base".to_vec()).expect("store");
    let t1 = t.finish().expect("finish");
    let mut t = fs.tpc_begin(meta("b"), None).expect("begin");
    t.store(o, t1, b"base+x".to_vec()).expect("store");
    let t2 = t.finish().expect("finish");
    // writer based on t1 without a resolver: conflict naming both serials
    let mut t = fs.tpc_begin(meta("c"), None).expect("begin");
    let e = t.store(o, t1, b"base+y".to_vec()).expect_err("conflict");
    match e {
        Error::Conflict {
            loaded, committed, ..
        } => assert_eq!((loaded, committed), (t1, t2)),
        other => panic!("{other}"),
    }
    t.abort();
    // a new object stored over an existing one conflicts too
    let mut t = fs.tpc_begin(meta("d"), None).expect("begin");
    assert!(
        t.store(o, Tid::ZERO, b"new".to_vec())
            .expect_err("exists")
            .is_conflict()
    );
    drop(t); // dropping aborts
    // with a resolver: merged data is stored and reported by vote
    let mut t = fs
        .tpc_begin(meta("e"), Some(Arc::new(Concat)))
        .expect("begin");
    t.store(o, t1, b"base+y".to_vec()).expect("resolved");
    assert_eq!(t.vote().expect("vote"), vec![o]);
    let t3 = t.finish().expect("finish");
    assert_eq!(fs.load(o).expect("load").data, b"base+x+y");
    let mut t = fs
        .tpc_begin(meta("f"), Some(Arc::new(Concat)))
        .expect("begin");
    let e = t
        .store(o, t1, b"refuse".to_vec())
        .expect_err("unresolvable");
    assert!(e.to_string().contains("cannot merge"), "{e}");
    t.abort();
    assert_eq!(fs.last_tid(), t3);
}

#[test]
fn abort_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("Data.fs");
    let fs = FileStorage::open(&p).expect("create");
    let before = std::fs::read(&p).expect("read");
    let o = fs.new_oid().expect("oid");
    let mut t = fs.tpc_begin(meta("x"), None).expect("begin");
    t.store(o, Tid::ZERO, vec![7u8; 10_000]).expect("store");
    t.vote().expect("vote");
    t.abort();
    assert_eq!(std::fs::read(&p).expect("read"), before);
    assert_eq!(fs.load_before(o, Tid::MAX).expect("lb"), None);
}

/// A copy of history.fs damaged by `damage`, opened with `read_only`.
fn damaged(
    damage: impl FnOnce(&mut Vec<u8>),
    read_only: bool,
) -> (tempfile::TempDir, PathBuf, Result<FileStorage>) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("history.fs");
    let mut b = std::fs::read(testdata().join("formats/history.fs")).expect("read");
    damage(&mut b);
    std::fs::write(&p, &b).expect("write");
    let r = FileStorage::open_with(
        &p,
        Options {
            read_only,
            create: false,
            ..Options::default()
        },
    );
    (dir, p, r)
}

const LAST_TXN: usize = 1521; // FORMATS.md §2.10

#[test]
fn torn_tails_behave_like_zodb() {
    let full_len = std::fs::read(testdata().join("formats/history.fs"))
        .expect("read")
        .len() as u64;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage, bool)> = vec![
        (
            "status c",
            Box::new(|b: &mut Vec<u8>| b[LAST_TXN + 16] = b'c'),
            true,
        ),
        (
            "cut in body",
            Box::new(|b: &mut Vec<u8>| b.truncate(LAST_TXN + 40)),
            true,
        ),
        (
            "cut in header",
            Box::new(|b: &mut Vec<u8>| b.truncate(LAST_TXN + 10)),
            false,
        ),
        (
            "trailer cut",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 3)),
            true,
        ),
    ];
    for (name, damage, tr_file) in cases {
        let (_d, _p, r) = damaged(&damage, true);
        let fs = r.unwrap_or_else(|e| panic!("{name}: ro open: {e}"));
        assert_eq!(fs.scan_info().end, LAST_TXN as u64, "{name}");
        assert_ne!(fs.scan_info().tail, Tail::Clean, "{name}");
        let (dir, p, r) = damaged(&damage, false);
        let fs = r.unwrap_or_else(|e| panic!("{name}: rw open: {e}"));
        assert_eq!(
            std::fs::metadata(&p).expect("stat").len(),
            LAST_TXN as u64,
            "{name}: truncated"
        );
        assert_eq!(
            dir.path().join("history.fs.tr0").exists(),
            tr_file,
            "{name}"
        );
        // the next commit overwrites the torn bytes and gets a later tid
        let o = fs.new_oid().expect("oid");
        let mut t = fs.tpc_begin(meta("after crash"), None).expect("begin");
        t.store(o, Tid::ZERO, b"x".to_vec()).expect("store");
        let tid = t.finish().expect("finish");
        assert!(
            tid > Tid::from_hex("03fdba813ccccccc").expect("hex"),
            "{name}"
        );
        drop(fs);
        let fs = FileStorage::open_read_only(&p).expect("reopen");
        assert_eq!(fs.last_tid(), tid);
        assert!(fs.scan_info().end > LAST_TXN as u64 && fs.scan_info().end != full_len);
    }
    // a wrong redundant length is corruption, even read-only
    let (_d, _p, r) = damaged(
        |b| {
            let n = b.len();
            b[n - 1] ^= 1;
        },
        true,
    );
    let e = r.err().expect("corrupt");
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("redundant transaction length"),
        "{e}"
    );
}

#[test]
fn bad_files_are_errors_with_offsets() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("x.fs");
    std::fs::write(&p, b"hello world").expect("write");
    let e = FileStorage::open_read_only(&p).err().expect("bad magic");
    assert!(e.to_string().contains("not a FileStorage"), "{e}");
    std::fs::write(&p, b"FS").expect("write");
    assert!(FileStorage::open_read_only(&p).is_err());
    // a record length pointing past its transaction
    let mut b = std::fs::read(testdata().join("formats/tiny.fs")).expect("read");
    b[52 + 34..52 + 42].copy_from_slice(&u64::MAX.to_be_bytes());
    std::fs::write(&p, &b).expect("write");
    let e = FileStorage::open_read_only(&p).err().expect("bad plen");
    assert!(e.to_string().contains("at byte 52"), "{e}");
    // a tloc that is not its transaction
    let mut b = std::fs::read(testdata().join("formats/tiny.fs")).expect("read");
    b[52 + 31] = 9;
    std::fs::write(&p, &b).expect("write");
    let e = FileStorage::open_read_only(&p).err().expect("bad tloc");
    assert!(e.to_string().contains("tloc"), "{e}");
}

#[test]
fn concurrent_committers_in_one_process_serialize() {
    let dir = tempfile::tempdir().expect("tmp");
    let fs = FileStorage::open(dir.path().join("Data.fs")).expect("create");
    let fs = &fs;
    let tids: Vec<Tid> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..20u8 {
                        let o = fs.new_oid().expect("oid");
                        let mut t = fs
                            .tpc_begin(meta(&format!("{i}/{k}")), None)
                            .expect("begin");
                        t.store(o, Tid::ZERO, vec![i, k]).expect("store");
                        out.push(t.finish().expect("finish"));
                    }
                    out
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("join"))
            .collect()
    });
    assert_eq!(tids.len(), 80);
    let all: Vec<Tid> = fs
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .map(|t| t.expect("t").tid)
        .collect();
    assert_eq!(all.len(), 81);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(fs.scan_info().objects, 81);
}

#[test]
fn second_handle_sees_commits_at_sync() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("Data.fs");
    let w = FileStorage::open(&p).expect("create");
    let r = FileStorage::open_read_only(&p).expect("reader");
    let t0 = r.last_tid();
    let o = w.new_oid().expect("oid");
    let mut t = w.tpc_begin(meta("x"), None).expect("begin");
    t.store(o, Tid::ZERO, b"v1".to_vec()).expect("store");
    // voted but not finished: a reader syncing now does not see it
    t.vote().expect("vote");
    assert_eq!(r.sync().expect("sync"), t0);
    let t1 = t.finish().expect("finish");
    assert_eq!(r.sync().expect("sync"), t1);
    assert_eq!(r.changed_oids(t0, t1).expect("changed"), vec![o]);
    assert_eq!(r.load(o).expect("load").data, b"v1");
    // a second writer handle allocates past the first one's reserved oids
    let w2 = FileStorage::open(&p).expect("w2");
    let o2 = w2.new_oid().expect("oid");
    assert!(o2 > o);
    assert_ne!(w.new_oid().expect("oid"), o2);
}

mod model {
    //! Model-based test: random commits, aborts, stores with stale serials,
    //! syncs and reopens against a model that keeps every committed
    //! snapshot as a map oid -> bytes. A store based on a serial that is no
    //! longer current (an older serial of the object, or "new" over an
    //! existing one) must fail with the typed conflict naming the oid and
    //! both serials, and the transaction, aborted, must leave the storage as
    //! it was: same last tid, same file length, same data at every snapshot
    //! (checked at the end, and again after reopening the file).
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Commit writes of (object index, bytes, based on a stale serial);
        /// abort instead if `abort`.
        Commit {
            writes: Vec<(u8, Vec<u8>, bool)>,
            abort: bool,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (proptest::collection::vec((0u8..6, proptest::collection::vec(any::<u8>(), 1..64), proptest::bool::weighted(0.15)), 0..4), any::<bool>())
                .prop_map(|(writes, a)| Op::Commit { abort: a && !writes.is_empty(), writes }),
            1 => Just(Op::Reopen),
        ]
    }

    /// Every snapshot's data, loaded through `fs`, equals the model's.
    fn agree(
        fs: &FileStorage,
        snapshots: &[(Tid, BTreeMap<u8, Vec<u8>>)],
        oids: &BTreeMap<u8, (Oid, Vec<Tid>)>,
    ) -> std::result::Result<(), TestCaseError> {
        prop_assert_eq!(fs.last_tid(), snapshots.last().expect("s").0);
        for (at, state) in snapshots {
            for (k, (o, _)) in oids {
                let got = fs
                    .load_before(*o, at.successor())
                    .expect("load_before")
                    .map(|r| r.data);
                prop_assert_eq!(got.as_ref(), state.get(k), "oid {} at {}", o, at);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn filestorage_matches_snapshot_model(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().expect("tmp");
            let p = dir.path().join("Data.fs");
            let mut fs = FileStorage::open(&p).expect("create");
            let mut snapshots: Vec<(Tid, BTreeMap<u8, Vec<u8>>)> = vec![(fs.last_tid(), BTreeMap::new())];
            // object index -> (oid, its serials, oldest first)
            let mut oids: BTreeMap<u8, (Oid, Vec<Tid>)> = BTreeMap::new();
            let file_len = |p: &std::path::Path| std::fs::metadata(p).expect("stat").len();
            for op in ops {
                match op {
                    Op::Reopen => {
                        drop(fs);
                        fs = FileStorage::open(&p).expect("reopen");
                    }
                    Op::Commit { writes, abort } => {
                        let (last, len) = (fs.last_tid(), file_len(&p));
                        let mut state = snapshots.last().expect("snap").1.clone();
                        let mut t = fs.tpc_begin(meta("m"), None).expect("begin");
                        let mut stored = BTreeMap::new();
                        let mut conflicted = false;
                        for (k, v, stale) in writes {
                            if stored.contains_key(&k) { continue; }
                            let (o, serial, current) = match oids.get(&k) {
                                // a stale base: an older serial, or "new" over an existing object
                                Some((o, serials)) if stale => {
                                    let cur = *serials.last().expect("serial");
                                    let old = serials.len().checked_sub(2).map_or(Tid::ZERO, |i| serials[i]);
                                    (*o, old, Some(cur))
                                }
                                Some((o, serials)) => (*o, *serials.last().expect("serial"), None),
                                None => (fs.new_oid().expect("oid"), Tid::ZERO, None),
                            };
                            match (t.store(o, serial, v.clone()), current) {
                                (Ok(_), None) => {}
                                (Err(Error::Conflict { oid, loaded, committed, .. }), Some(cur)) => {
                                    prop_assert_eq!((oid, loaded, committed), (o, serial, cur));
                                    conflicted = true;
                                    break;
                                }
                                (r, cur) => prop_assert!(false, "store of {} based on {} (current {:?}): {:?}", o, serial, cur, r.err()),
                            }
                            stored.insert(k, o);
                            state.insert(k, v);
                        }
                        if abort || conflicted {
                            t.abort();
                            prop_assert_eq!(fs.last_tid(), last, "an aborted transaction moved last_tid");
                            prop_assert_eq!(file_len(&p), len, "an aborted transaction left bytes");
                        } else {
                            let tid = t.finish().expect("finish");
                            prop_assert!(tid > snapshots.last().expect("s").0);
                            for (k, o) in stored {
                                oids.entry(k).or_insert_with(|| (o, Vec::new())).1.push(tid);
                            }
                            snapshots.push((tid, state));
                        }
                    }
                }
            }
            agree(&fs, &snapshots, &oids)?;
            drop(fs);
            let fs = FileStorage::open(&p).expect("reopen");
            agree(&fs, &snapshots, &oids)?;
        }
    }
}

#[test]
fn load_before_range_equals_slices_of_load_before() {
    for f in [
        "formats/history",
        "formats/history_packed",
        "zblk/py3_pickle3/zblk",
    ] {
        let fs = FileStorage::open_read_only(testdata().join(format!("{f}.fs"))).expect("open");
        let txns: Vec<TxnInfo> = fs
            .iter_txns(Tid::ZERO, Tid::MAX)
            .expect("iter")
            .collect::<Result<_>>()
            .expect("txns");
        let mut n = 0;
        for t in &txns {
            for r in &t.records {
                for before in [t.tid.successor(), Tid::MAX] {
                    let full = fs.load_before(r.oid, before).expect("lb");
                    for (off, len) in [(0u64, 7usize), (3, 100), (40, 1 << 20), (1 << 30, 4)] {
                        let mut buf = vec![0u8; len];
                        let got = fs
                            .load_before_range(r.oid, before, off, &mut buf)
                            .expect("range");
                        match (&full, got) {
                            (None, None) => {}
                            (Some(full), Some(g)) => {
                                assert_eq!(g.serial, full.serial);
                                assert_eq!(g.total_len, full.data.len() as u64);
                                let s = (off as usize).min(full.data.len());
                                let e = (s + len).min(full.data.len());
                                assert_eq!(
                                    &buf[..g.copied],
                                    &full.data[s..e],
                                    "{f} {} off {off}",
                                    r.oid
                                );
                                n += 1;
                            }
                            (a, b) => panic!("{f} {}: {a:?} vs {b:?}", r.oid),
                        }
                    }
                }
            }
        }
        assert!(n > 20, "{f}: {n}");
    }
}

#[test]
fn damaged_length_in_the_middle_is_damage_not_a_torn_tail() {
    // history.fs has 8 transactions; the second starts at byte 166, its
    // length field at 174. Its high bytes flipped, or its status set to 'c',
    // make it look torn, but 6 committed transactions follow.
    let raw = std::fs::read(testdata().join("formats/history.fs")).expect("read");
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<Damage> = vec![
        Box::new(|b: &mut Vec<u8>| {
            b[174] ^= 0xff;
            b[175] ^= 0xff;
        }),
        Box::new(|b: &mut Vec<u8>| b[166 + 16] = b'c'),
    ];
    for (damage, read_only) in cases.iter().flat_map(|d| [(d, true), (d, false)]) {
        let (dir, p, r) = damaged(damage, read_only);
        let e = r.err().expect("damage is an error");
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(
            e.to_string().contains("committed transaction follows"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&p).expect("read").len(),
            raw.len(),
            "nothing cut"
        );
        assert!(!dir.path().join("history.fs.tr0").exists());
    }
}

#[test]
fn new_oids_are_unique_across_handles_of_one_file() {
    // Two opens of one file share nothing but the file and its lock files,
    // like two processes.
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("Data.fs");
    let a = FileStorage::open(&p).expect("a");
    let b = FileStorage::open(&p).expect("b");
    let mut seen = std::collections::HashSet::new();
    for i in 0..600 {
        let fs = if i % 3 == 0 { &a } else { &b };
        assert!(
            seen.insert(fs.new_oid().expect("oid")),
            "oid handed out twice"
        );
    }
    // both commit objects created with their fresh oids: no conflict
    for fs in [&a, &b] {
        let o = fs.new_oid().expect("oid");
        let mut t = fs.tpc_begin(meta("new"), None).expect("begin");
        t.store(o, Tid::ZERO, b"x".to_vec()).expect("store");
        // an oid taken while our transaction holds the lock
        let o2 = fs.new_oid().expect("oid under the lock");
        t.store(o2, Tid::ZERO, b"y".to_vec()).expect("store");
        t.finish().expect("finish");
        assert!(seen.insert(o) && seen.insert(o2));
    }
    // a new handle starts above everything reserved
    let c = FileStorage::open(&p).expect("c");
    let o = c.new_oid().expect("oid");
    assert!(seen.iter().all(|s| *s < o));
}

/// Comparable form of a batch or single load (errors as their message).
fn loads(
    fs: &FileStorage,
    oids: &[Oid],
    before: Tid,
) -> (Vec<Option<LoadedRecord>>, Vec<Option<LoadedRecord>>) {
    let many = fs.load_many_before(oids, before).expect("load_many_before");
    let one = oids
        .iter()
        .map(|&o| fs.load_before(o, before).expect("load_before"))
        .collect();
    (many, one)
}

#[test]
fn load_many_before_equals_single_loads_on_python_histories() {
    for f in ["formats/history", "formats/history_packed"] {
        let j = json(f);
        let e = &j["python_zodb_expectations"];
        let fs = FileStorage::open_read_only(testdata().join(format!("{f}.fs"))).expect("open");
        let mut oids: Vec<Oid> = e["load"]
            .as_object()
            .expect("load")
            .keys()
            .map(|o| Oid::from_hex(o).expect("oid"))
            .collect();
        oids.push(Oid(0xdead_beef)); // never existed: None
        oids.reverse(); // not in file order
        let mut befores: Vec<Tid> = e["loadBefore"]
            .as_array()
            .expect("lb")
            .iter()
            .map(|c| tid(&c["before"]))
            .collect();
        befores.push(Tid::MAX);
        for before in befores {
            let (many, one) = loads(&fs, &oids, before);
            assert_eq!(many, one, "{f} before {before}");
        }
    }
}

#[test]
fn load_many_before_reads_many_small_records_like_single_loads() {
    let dir = tempfile::tempdir().expect("tmp");
    let fs = FileStorage::open(dir.path().join("Data.fs")).expect("create");
    let oids: Vec<Oid> = (0..600).map(|_| fs.new_oid().expect("oid")).collect();
    let rec = |i: usize, v: u8| {
        let mut d = b"\x80\x03cm\nZ\n.".to_vec();
        d.extend(std::iter::repeat_n(v, 4096 + i % 7));
        d
    };
    let mut t = fs.tpc_begin(meta("one"), None).expect("begin");
    for (i, &o) in oids.iter().enumerate() {
        let d = rec(i, 1);
        let (head, body) = d.split_at(10);
        t.store_parts(o, Tid::ZERO, &[head, body]).expect("store");
    }
    let t1 = t.finish().expect("finish");
    let mut t = fs.tpc_begin(meta("two"), None).expect("begin");
    for (i, &o) in oids.iter().enumerate().step_by(5) {
        t.store(o, t1, rec(i, 2)).expect("store");
    }
    let t2 = t.finish().expect("finish");
    let mut ask = oids.clone();
    ask.insert(3, Oid(1 << 40)); // missing
    ask.push(oids[0]); // twice
    for before in [t1, t1.successor(), t2, t2.successor(), Tid::MAX] {
        let (many, one) = loads(&fs, &ask, before);
        assert_eq!(many.len(), ask.len());
        assert_eq!(many, one, "before {before}");
    }
    let got = fs.load_many_before(&oids, t1.successor()).expect("many");
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, r)| r.as_ref().map(|r| &r.data) == Some(&rec(i, 1)))
    );
}

#[test]
fn read_split_before_reads_what_single_loads_read_or_leaves_records_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let fs = FileStorage::open(dir.path().join("Data.fs")).expect("create");
    let oids: Vec<Oid> = (0..600).map(|_| fs.new_oid().expect("oid")).collect();
    // head "HEAD", a payload of 4090..=4096 bytes, tail "T".
    let rec = |i: usize, v: u8| {
        let mut d = b"HEAD".to_vec();
        d.extend(std::iter::repeat_n(v, 4096 - i % 7));
        d.push(b'T');
        d
    };
    let mut t = fs.tpc_begin(meta("one"), None).expect("begin");
    for (i, &o) in oids.iter().enumerate() {
        t.store(o, Tid::ZERO, rec(i, 1)).expect("store");
    }
    let t1 = t.finish().expect("finish");
    let mut t = fs.tpc_begin(meta("two"), None).expect("begin");
    for (i, &o) in oids.iter().enumerate().step_by(5) {
        t.store(o, t1, rec(i, 2)).expect("store");
    }
    let t2 = t.finish().expect("finish");
    let shape = crate::SplitShape {
        head: 4,
        tail: 1,
        plen: 4 + 4096 + 1,
    };
    let mut ask = oids.clone();
    ask.insert(3, Oid(1 << 40)); // missing
    ask.push(oids[0]); // twice
    for before in [t1, t1.successor(), t2, t2.successor(), Tid::MAX] {
        let mut mem = vec![0xEEu8; ask.len() * 4096];
        let mut bodies: Vec<&mut [u8]> = mem.chunks_mut(4096).collect();
        let got = fs
            .read_split_before(&ask, &mut bodies, shape, before)
            .expect("split")
            .expect("supported");
        let mut read = 0;
        for (k, &o) in ask.iter().enumerate() {
            let Some((g, head, tail)) = got.get(k) else {
                continue;
            };
            read += 1;
            let one = fs.load_before(o, before).expect("load").expect("exists");
            assert_eq!(g.serial, one.serial, "oid {o}");
            let d = &one.data;
            assert_eq!(head, &d[..4]);
            assert_eq!(tail, &d[d.len() - 1..]);
            assert_eq!(&bodies[k][..g.body_len], &d[4..d.len() - 1], "oid {o}");
        }
        // Revisions newer than the snapshot are left out; most others are
        // read (not the last record of a run if its payload is short: its
        // length was predicted as the shape's usual one).
        let expect = if before <= t1 { 0 } else { 300 };
        assert!(read >= expect, "before {before}: {read} read");
    }
}
