use super::node::{bucket_state, parse_bucket_state, ref_value};
use super::*;
use crate::db::DB;
use crate::ids::Tid;
use crate::persistent::Persistent;
use crate::pickle::{self, Dialect};
use crate::transaction::TransactionManager;
use std::collections::BTreeMap;

use testsupport::testdata;

fn new_db() -> (tempfile::TempDir, DB) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = DB::open(dir.path().join("Data.fs").to_str().expect("utf8")).expect("db");
    (dir, db)
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

/// The shape [`check_shape`] measured.
#[derive(Debug, Default, Clone, Copy)]
struct Shape {
    /// Levels including the buckets: 1 for an empty or inline tree, 2 for a
    /// root over buckets, 3 for root, interior nodes, buckets, ...
    depth: usize,
    /// Interior nodes other than the root.
    interior: usize,
}

/// Check structure invariants: sorted keys, bucket sizes, separators, the
/// bucket chain equals the in-order leaves; returns (items, bucket sizes).
fn check(conn: &Connection, t: &BTree) -> (Vec<(Value, Value)>, Vec<usize>) {
    let (items, sizes, _) = check_shape(conn, t);
    (items, sizes)
}

/// [`check`], also asserting that every bucket is at the same depth (Python
/// trees grow only at the root), and measuring the shape.
fn check_shape(conn: &Connection, t: &BTree) -> (Vec<(Value, Value)>, Vec<usize>, Shape) {
    #[allow(clippy::too_many_arguments)]
    fn walk(
        conn: &Connection,
        f: &Family,
        oid: Oid,
        lo: Option<&Value>,
        hi: Option<&Value>,
        leaves: &mut Vec<Oid>,
        is_root: bool,
        level: usize,
        shape: &mut Shape,
    ) {
        if !is_root {
            shape.interior += 1;
        }
        let n = BTree::node(conn, oid).expect("node");
        let TreeState::General {
            children,
            keys,
            first,
        } = n.state
        else {
            panic!("interior node {oid} not general")
        };
        assert_eq!(keys.len() + 1, children.len());
        assert!(
            keys.windows(2)
                .all(|w| key_cmp(&w[0], &w[1]).expect("cmp") == Ordering::Less),
            "separators of {oid} not increasing"
        );
        if is_root {
            assert!(children.len() < 2 * f.max_internal, "root too long");
        } else {
            assert!(children.len() <= f.max_internal, "interior node too long");
        }
        let start = leaves.len();
        for (i, c) in children.iter().enumerate() {
            let clo = if i == 0 { lo } else { Some(&keys[i - 1]) };
            let chi = keys.get(i).or(hi);
            if c.1 {
                let b = conn.get::<Bucket>(c.0).expect("bucket");
                assert!(!b.items.is_empty(), "empty bucket left in tree");
                assert!(
                    b.items.len() <= f.max_leaf,
                    "bucket too long: {}",
                    b.items.len()
                );
                for (k, _) in &b.items {
                    if let Some(l) = clo {
                        assert_ne!(key_cmp(k, l).expect("cmp"), Ordering::Less);
                    }
                    if let Some(h) = chi {
                        assert_eq!(key_cmp(k, h).expect("cmp"), Ordering::Less);
                    }
                }
                leaves.push(c.0);
                // every bucket at one depth
                let depth = level + 1;
                if shape.depth == 0 {
                    shape.depth = depth;
                }
                assert_eq!(shape.depth, depth, "bucket {} at another depth", c.0);
            } else {
                walk(conn, f, c.0, clo, chi, leaves, false, level + 1, shape);
            }
        }
        assert_eq!(first, leaves[start], "firstbucket of {oid}");
    }
    let n = BTree::node(conn, t.oid).expect("root");
    let items = t.items(conn).expect("items");
    assert!(
        items
            .windows(2)
            .all(|w| key_cmp(&w[0].0, &w[1].0).expect("cmp") == Ordering::Less)
    );
    let mut sizes = Vec::new();
    let mut shape = Shape::default();
    if let TreeState::General { .. } = n.state {
        let mut leaves = Vec::new();
        walk(
            conn,
            t.family,
            t.oid,
            None,
            None,
            &mut leaves,
            true,
            1,
            &mut shape,
        );
        // the chain links exactly the leaves, in order
        for (i, l) in leaves.iter().enumerate() {
            let b = conn.get::<Bucket>(*l).expect("bucket");
            sizes.push(b.items.len());
            assert_eq!(
                b.next.as_ref().and_then(Value::ref_oid),
                leaves.get(i + 1).copied(),
                "next of bucket {l}"
            );
        }
    } else {
        shape.depth = 1;
        if let TreeState::Inline(its) = &n.state {
            assert!(
                !its.is_empty() && its.len() <= t.family.max_leaf,
                "inline bucket size"
            );
        }
    }
    (items, sizes, shape)
}

#[test]
fn first_split_at_61_gives_30_and_31_and_states_match_python() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let t = BTree::create(&c, &LO).expect("tree");
    assert_eq!(
        c.get::<TreeNode>(t.oid)
            .expect("node")
            .state()
            .expect("state"),
        Value::None
    );
    for k in 0..60 {
        t.insert(&c, int(k), int(k * 2)).expect("insert");
    }
    // 60 items: still the inline single bucket ((items,),)
    let st = c
        .get::<TreeNode>(t.oid)
        .expect("node")
        .state()
        .expect("state");
    let Value::Tuple(outer) = &st else {
        panic!("{st:?}")
    };
    assert_eq!(outer.len(), 1);
    t.insert(&c, int(60), int(120)).expect("insert");
    let (items, sizes) = check(&c, &t);
    assert_eq!(items.len(), 61);
    assert_eq!(sizes, vec![30, 31]);
    let st = c
        .get::<TreeNode>(t.oid)
        .expect("node")
        .state()
        .expect("state");
    let Value::Tuple(parts) = &st else { panic!() };
    assert_eq!(parts.len(), 2, "general form");
    assert_eq!(
        parts[0].as_seq().map(<[Value]>::len),
        Some(3),
        "(child, key, child)"
    );
    assert_eq!(
        parts[0].as_seq().map(|s| s[1].clone()),
        Some(int(30)),
        "separator = right min"
    );
    tm.commit().expect("commit");
}

#[test]
fn sequential_inserts_grow_a_level_like_the_c_code() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let t = BTree::create(&c, &LO).expect("tree");
    for k in 0..40_000 {
        t.insert(&c, int(k), int(k)).expect("insert");
    }
    let (items, sizes) = check(&c, &t);
    assert_eq!(items.len(), 40_000);
    assert!(sizes.iter().all(|&s| (30..=60).contains(&s)));
    let root = BTree::node(&c, t.oid).expect("root");
    let TreeState::General { children, keys, .. } = &root.state else {
        panic!()
    };
    // The same shape Python BTrees 6.5 (C) builds for 40000 sequential keys
    // (measured with the venv's BTrees): 4 interior children of
    // 500/250/250/333 buckets, separators 15000, 22500, 30000. (FORMATS.md
    // §5.4 says 7 children; Python itself gives 4.)
    assert!(children.iter().all(|c| !c.1), "two levels");
    let sizes: Vec<usize> = children
        .iter()
        .map(|ch| BTree::node(&c, ch.0).map(|n| n.len()).expect("child"))
        .collect();
    assert_eq!(sizes, vec![500, 250, 250, 333]);
    assert_eq!(keys, &vec![int(15_000), int(22_500), int(30_000)]);
    tm.commit().expect("commit");
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("conn2");
    assert_eq!(t.len(&c2).expect("len"), 40_000);
    assert_eq!(t.get(&c2, &int(39_999)).expect("get"), Some(int(39_999)));
    assert_eq!(t.min_key(&c2).expect("min"), Some(int(0)));
    assert_eq!(t.max_key(&c2).expect("max"), Some(int(39_999)));
    assert_eq!(
        t.range(&c2, Some(&int(100)), Some(&int(105)))
            .expect("range")
            .len(),
        5
    );
}

#[test]
fn python_built_trees_read_as_described() {
    let path = testdata().join("formats/tiny.fs");
    let js: serde_json::Value =
        serde_json::from_slice(&std::fs::read(testdata().join("formats/tiny.json")).expect("json"))
            .expect("parse");
    let storage = crate::FileStorage::open_read_only(&path).expect("open");
    let db = DB::new(std::sync::Arc::new(storage));
    let c = db.open_historical(Tid::MAX).expect("conn");
    let lo = BTree::open(&c, Oid(2)).expect("lobtree");
    assert_eq!(lo.family, &LO);
    let items = lo.items(&c).expect("items");
    let want = js["logical"]["lobtree"]["items"].as_array().expect("items");
    assert_eq!(items.len(), want.len());
    for ((k, v), w) in items.iter().zip(want) {
        assert_eq!(k.as_int(), w[0].as_i64());
        assert_eq!(v.as_text(), w[1]["str"].as_str());
    }
    let oo = BTree::open(&c, Oid(1)).expect("oobtree");
    assert_eq!(oo.family, &OO);
    assert_eq!(
        oo.get(&c, &Value::Str("alpha".into())).expect("get"),
        Some(int(2))
    );
    assert_eq!(
        oo.get(&c, &Value::Str("beta".into())).expect("get"),
        Some(Value::Bytes(vec![0, 1, 0xff]))
    );
    let g = oo
        .get(&c, &Value::Str("gamma".into()))
        .expect("get")
        .expect("ref");
    assert_eq!(g.ref_oid(), Some(Oid(5)));
    // zblk.fs: IOBTree oid 4 with two buckets (30 + 34) under py2 and py3
    for f in ["zblk/py3_pickle3/zblk.fs", "zblk/py2_pickle3/zblk.fs"] {
        let storage = crate::FileStorage::open_read_only(testdata().join(f)).expect("open");
        let db = DB::new(std::sync::Arc::new(storage));
        let c = db.open_historical(Tid::MAX).expect("conn");
        let io = BTree::open(&c, Oid(4)).expect("iobtree");
        assert_eq!(io.family, &IO);
        let (items, sizes) = check(&c, &io);
        assert_eq!(sizes, vec![30, 34], "{f}");
        assert_eq!(items.len(), 64);
        assert!(
            items
                .iter()
                .all(|(_, v)| v.ref_class().as_deref() == Some("wendelin.bigfile.file_zodb.ZData"))
        );
        let blktab = BTree::open(&c, Oid(0x47)).expect("blktab");
        assert_eq!(
            blktab
                .items(&c)
                .expect("items")
                .iter()
                .map(|(k, _)| k.as_int())
                .collect::<Vec<_>>(),
            vec![Some(1), Some(3)]
        );
    }
}

#[test]
fn bucket_conflict_resolution_follows_python_rules() {
    let enc = |items: &[(i64, i64)], next: Option<u64>| {
        let its: Vec<(Value, Value)> = items.iter().map(|(k, v)| (int(*k), int(*v))).collect();
        let n = next.map(|o| ref_value(Oid(o), "BTrees.LOBTree", "LOBucket", Dialect::Py3));
        pickle::encode_record(
            "BTrees.LOBTree",
            "LOBucket",
            &bucket_state(&its, &n),
            Dialect::Py3,
        )
        .expect("enc")
    };
    let items = |rec: &[u8]| {
        let (_, s) = pickle::decode_record(rec).expect("dec");
        parse_bucket_state(Oid(1), &s)
            .expect("parse")
            .0
            .iter()
            .map(|(k, v)| (k.as_int().expect("k"), v.as_int().expect("v")))
            .collect::<Vec<_>>()
    };
    let old = enc(&[(1, 1), (5, 5), (9, 9)], Some(7));
    // disjoint inserts + an update on one side merge
    let com = enc(&[(1, 1), (3, 3), (5, 5), (9, 9)], Some(7));
    let new = enc(&[(1, 1), (5, 50), (7, 7), (9, 9)], Some(7));
    let m = resolve_conflict(Oid(1), &old, &com, &new).expect("merge");
    assert_eq!(items(&m), vec![(1, 1), (3, 3), (5, 50), (7, 7), (9, 9)]);
    // delete on one side of an unchanged key merges
    let new = enc(&[(1, 1), (9, 9)], Some(7));
    let m = resolve_conflict(Oid(1), &old, &com, &new).expect("merge");
    assert_eq!(items(&m), vec![(1, 1), (3, 3), (9, 9)]);
    let reason = |c: &[u8], n: &[u8]| resolve_conflict(Oid(1), &old, c, n).expect_err("conflict");
    // same key changed on both sides
    assert!(
        reason(
            &enc(&[(1, 1), (5, 6), (9, 9)], Some(7)),
            &enc(&[(1, 1), (5, 7), (9, 9)], Some(7))
        )
        .contains("reason 1")
    );
    // same key inserted on both sides, even with equal values
    assert!(
        reason(
            &enc(&[(1, 1), (3, 3), (5, 5), (9, 9)], Some(7)),
            &enc(&[(1, 1), (3, 3), (5, 5), (9, 9)], Some(7))
        )
        .contains("reason 4")
    );
    // a split (next changed)
    assert!(
        reason(
            &enc(&[(1, 1), (5, 5)], Some(8)),
            &enc(&[(1, 1), (5, 5), (9, 9), (10, 10)], Some(7))
        )
        .contains("reason 0")
    );
    // deleting the first key
    assert!(
        reason(
            &enc(&[(5, 5), (9, 9)], Some(7)),
            &enc(&[(1, 1), (5, 5), (9, 9), (11, 1)], Some(7))
        )
        .contains("reason 13")
    );
    // delete vs change
    assert!(
        reason(
            &enc(&[(1, 1), (9, 9)], Some(7)),
            &enc(&[(1, 1), (5, 6), (9, 9)], Some(7))
        )
        .contains("reason 3")
    );
    // non-BTree classes never resolve
    let pm = pickle::encode_record(
        "persistent.mapping",
        "PersistentMapping",
        &Value::None,
        Dialect::Py3,
    )
    .expect("enc");
    assert!(resolve_conflict(Oid(1), &pm, &pm, &pm).is_err());
}

#[test]
fn cached_lookups_find_and_visit_what_plain_lookups_do() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let t = BTree::create(&c, &LO).expect("tree");
    // Three levels (root, interior nodes, buckets), every other key.
    for k in 0..40_000 {
        t.insert(&c, int(2 * k), int(k + 1000)).expect("insert");
    }
    tm.commit().expect("commit");
    let storage = db.storage().as_ref();
    let at = storage.last_tid();
    let reader = SnapshotReader::new(crate::snapshot::Snapshot::new(storage, at));
    let cache = NodeCache::new(at);
    for k in (0..80_000)
        .step_by(97)
        .chain([0, 1, 79_998, 79_999, 80_000, -1])
    {
        let (mut plain, mut cached) = (Vec::new(), Vec::new());
        let want = reader
            .get(t.oid, &int(k), &mut |o| plain.push(o))
            .expect("get");
        let got = reader
            .get_cached(t.oid, &int(k), &mut |o| cached.push(o), &cache)
            .expect("cached get");
        assert_eq!(got, want, "key {k}");
        assert_eq!(cached, plain, "nodes visited for key {k}");
        assert_eq!(plain.len(), 3, "root, interior node, bucket");
        assert!(cache.len() <= 2 * MAX_NODES_OF_CACHE);
    }
    assert!(!cache.is_empty());
    // A cache of another snapshot is not used (the nodes read are this
    // snapshot's).
    let other = NodeCache::new(Tid(at.0 - 1));
    let got = reader
        .get_cached(t.oid, &int(2 * 123), &mut |_| {}, &other)
        .expect("get");
    assert_eq!(got, Some(int(1123)));
    assert!(other.is_empty());
}

const MAX_NODES_OF_CACHE: usize = crate::btree::node_cache::MAX_NODES;

#[test]
fn a_full_node_cache_starts_over_and_still_answers() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let t = BTree::create(&c, &LO).expect("tree");
    // More buckets than the cache holds: 60 000 keys, 30-60 per bucket.
    for k in 0..60_000 {
        t.insert(&c, int(k), int(k)).expect("insert");
    }
    tm.commit().expect("commit");
    let storage = db.storage().as_ref();
    let at = storage.last_tid();
    let reader = SnapshotReader::new(crate::snapshot::Snapshot::new(storage, at));
    let cache = NodeCache::new(at);
    let mut most = 0;
    for k in (0..60_000).step_by(29) {
        let got = reader
            .get_cached(t.oid, &int(k), &mut |_| {}, &cache)
            .expect("get");
        assert_eq!(got, Some(int(k)));
        most = most.max(cache.len());
    }
    // Both maps are bounded by MAX_NODES each.
    assert!(most <= 2 * MAX_NODES_OF_CACHE, "{most}");
    assert!(
        most > MAX_NODES_OF_CACHE / 2,
        "the buckets were kept: {most}"
    );
}

mod model;
