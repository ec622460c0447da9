//! The BTree against a `BTreeMap` model, on trees deep enough to matter.
//!
//! # Model
//!
//! Random inserts, removals and removals of whole key runs (which empty
//! buckets and interior nodes) go to a tree and to a `BTreeMap`; after every
//! step the structure invariants hold ([`check_shape`]: sorted keys,
//! separators, bucket and node sizes, the bucket chain, every bucket at one
//! depth) and the old values returned agree; after commits the tree is read
//! through fresh connections, and at the end from the file reopened.
//!
//! Python's node sizes (LO/IO 60/500, OO 30/250) need tens of thousands of
//! keys before the root grows a level, so the many-case exploration runs on
//! *scaled* families: the same modules and classes (records Python reads)
//! with buckets and interior nodes of a few entries, where a few hundred
//! operations grow trees four and five levels deep. The real sizes get one
//! long seeded run each (OO by default; LO and IO, slower, with
//! `--ignored`). Both kinds assert that their cases
//! reached the shapes they are for (root growth, interior splits, emptied
//! buckets), so a change of the generator cannot silently stop exploring.

use super::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// Scaled copies of the families: same records, tiny nodes.
static SMALL_LO: Family = Family {
    max_leaf: 4,
    max_internal: 4,
    ..copy(&LO)
};
static SMALL_IO: Family = Family {
    max_leaf: 5,
    max_internal: 3,
    ..copy(&IO)
};
static SMALL_OO: Family = Family {
    max_leaf: 3,
    max_internal: 5,
    ..copy(&OO)
};

const fn copy(f: &Family) -> Family {
    Family {
        module: f.module,
        tree: f.tree,
        bucket: f.bucket,
        key: f.key,
        max_leaf: f.max_leaf,
        max_internal: f.max_internal,
    }
}

/// Model key `k` as a key of family `f` (monotone, so the orders agree):
/// LO past 32 bits, IO negative and positive, OO str.
fn key_of(f: &Family, k: i64) -> Value {
    match f.key {
        KeyKind::I64 => Value::Int((k << 34) - (1 << 40)),
        KeyKind::I32 => Value::Int(k * 7 - 5000),
        KeyKind::Object => Value::Str(format!("key{k:07}")),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(i64, i32),
    Remove(i64),
    /// Remove the keys `k..k+n` (empties buckets, then interior nodes).
    RemoveRun(i64, i64),
    /// Commit and continue in a fresh connection.
    Commit,
}

fn op(keys: i64) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..keys, any::<i32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (0..keys).prop_map(Op::Remove),
        1 => (0..keys, 1i64..40).prop_map(|(k, n)| Op::RemoveRun(k, n)),
        1 => Just(Op::Commit),
    ]
}

/// What a run reached, summed over runs.
#[derive(Debug, Default)]
struct Reached {
    max_depth: usize,
    max_interior: usize,
    buckets_emptied: usize,
    interior_emptied: usize,
    emptied_tree: usize,
}

/// Apply `ops` to a tree of family `f` and a model, checking after every
/// step (`check_every` > 1 checks the structure less often, for big trees);
/// commit, reopen the file, compare.
fn run(f: &'static Family, ops: &[Op], check_every: usize, reached: &mut Reached) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let path = path.to_str().expect("utf8");
    let db = DB::open(path).expect("db");
    let mut tm = TransactionManager::new();
    let mut c = db.open_connection(&tm).expect("conn");
    let created = BTree::create(&c, f).expect("tree");
    let t = BTree {
        family: f,
        oid: created.oid,
    };
    let mut model = BTreeMap::<i64, i64>::new();
    let mut last = (0usize, 0usize); // (buckets, interior) after the last check
    let agree = |c: &Connection, model: &BTreeMap<i64, i64>| {
        let (items, sizes, shape) = check_shape(c, &t);
        let want: Vec<(Value, Value)> = model
            .iter()
            .map(|(k, v)| (key_of(f, *k), Value::Int(*v)))
            .collect();
        assert_eq!(items, want, "tree and model differ");
        (sizes.len(), shape)
    };
    for (i, o) in ops.iter().enumerate() {
        let removal = match o {
            Op::Insert(k, v) => {
                let old = t
                    .insert(&c, key_of(f, *k), Value::Int(i64::from(*v)))
                    .expect("insert");
                assert_eq!(
                    old.and_then(|o| o.as_int()),
                    model.insert(*k, i64::from(*v))
                );
                false
            }
            Op::Remove(k) => {
                let old = t.remove(&c, &key_of(f, *k)).expect("remove");
                assert_eq!(old.and_then(|o| o.as_int()), model.remove(k));
                true
            }
            Op::RemoveRun(k, n) => {
                for j in *k..k + n {
                    let old = t.remove(&c, &key_of(f, j)).expect("remove");
                    assert_eq!(old.and_then(|o| o.as_int()), model.remove(&j));
                }
                true
            }
            Op::Commit => {
                tm.commit().expect("commit");
                tm = TransactionManager::new();
                c = db.open_connection(&tm).expect("conn");
                false
            }
        };
        if i % check_every == check_every - 1 || i + 1 == ops.len() {
            let (buckets, shape) = agree(&c, &model);
            if removal && check_every == 1 {
                reached.buckets_emptied += usize::from(buckets < last.0);
                reached.interior_emptied += usize::from(shape.interior < last.1);
                reached.emptied_tree += usize::from(last.0 > 0 && model.is_empty());
            }
            reached.max_depth = reached.max_depth.max(shape.depth);
            reached.max_interior = reached.max_interior.max(shape.interior);
            last = (buckets, shape.interior);
        }
    }
    tm.commit().expect("final commit");
    drop(c);
    drop(db);
    // Reopened from the file: the same items, the same invariants.
    let db = DB::open(path).expect("reopen");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    agree(&c, &model);
    let probe = model.keys().next().copied().unwrap_or(0);
    assert_eq!(
        t.get(&c, &key_of(f, probe))
            .expect("get")
            .and_then(|v| v.as_int()),
        model.get(&probe).copied()
    );
    assert_eq!(
        t.min_key(&c).expect("min"),
        model.keys().next().map(|k| key_of(f, *k))
    );
    assert_eq!(
        t.max_key(&c).expect("max"),
        model.keys().next_back().map(|k| key_of(f, *k))
    );
}

/// Many random runs on the scaled families: deep trees, interior splits,
/// emptied buckets and interior nodes, commits and reopening.
#[test]
fn btree_matches_btreemap_on_deep_trees() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    for f in [&SMALL_LO, &SMALL_IO, &SMALL_OO] {
        let mut reached = Reached::default();
        let mut runner = TestRunner::new(Config::with_cases(cases));
        let ops = proptest::collection::vec(op(300), 1..400);
        let cell = std::cell::RefCell::new(&mut reached);
        runner
            .run(&ops, |ops| {
                run(f, &ops, 1, &mut cell.borrow_mut());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", f.tree));
        eprintln!("{}: {reached:?}", f.tree);
        // The cases must keep reaching what this test is for.
        assert!(reached.max_depth >= 4, "{}: {reached:?}", f.tree);
        assert!(reached.max_interior >= 3, "{}: {reached:?}", f.tree);
        assert!(reached.buckets_emptied > 0, "{}: {reached:?}", f.tree);
        assert!(reached.interior_emptied > 0, "{}: {reached:?}", f.tree);
    }
}

/// One seeded long run at a real family's sizes: ascending inserts until the
/// root has grown a level and interior nodes have split, then random
/// inserts, removals and removed runs.
fn real_sized(f: &'static Family, ascending: i64, seed: u64) {
    let mut ops: Vec<Op> = (0..ascending)
        .map(|k| Op::Insert(k * 2, k as i32))
        .collect();
    ops.push(Op::Commit);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &[seed as u8; 32],
        ),
    );
    let strategy = proptest::collection::vec(op(ascending * 2), 3000);
    let random = strategy.new_tree(&mut runner).expect("ops").current();
    ops.extend(random);
    let mut reached = Reached::default();
    run(f, &ops, 500, &mut reached);
    eprintln!("{}: {reached:?}", f.tree);
    assert!(reached.max_depth >= 3, "{}: {reached:?}", f.tree);
    assert!(reached.max_interior >= 3, "{}: {reached:?}", f.tree);
}

#[test]
fn oobtree_at_python_sizes_grows_and_shrinks_like_the_model() {
    // 30-item buckets split to 15: 500 root children at ~7500 keys
    real_sized(&OO, 9_000, 1);
}

#[test]
#[ignore = "slow (about 10 s in debug): cargo test -p wendelin-storage -- --ignored lobtree"]
fn lobtree_and_iobtree_at_python_sizes_grow_and_shrink_like_the_model() {
    big();
}

fn big() {
    // 60-item buckets split to 30: 1000 root children at ~30000 keys
    real_sized(&LO, 36_000, 2);
    real_sized(&IO, 36_000, 3);
}
