use super::*;
use crate::btree::{self, BTree};
use std::sync::atomic::{AtomicUsize, Ordering};

fn db() -> (tempfile::TempDir, DB) {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("file://{}", dir.path().join("Data.fs").display());
    let db = DB::open(&url).expect("open");
    (dir, db)
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

#[test]
fn root_is_a_mapping_and_commits_are_visible_to_new_transactions() {
    let (_d, db) = db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    assert!(c.root().expect("root").data.is_empty());
    c.root_mut().expect("root").insert("A", Value::Int(1));
    tm.note("set A");
    tm.commit().expect("commit");
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("conn2");
    assert_eq!(c2.root().expect("root").get("A"), Some(&Value::Int(1)));
    let last = db
        .storage()
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .last()
        .expect("txn")
        .expect("ok");
    assert_eq!(last.meta.description, b"set A");
}

#[test]
fn isolation_between_connections_and_exact_invalidations() {
    let (_d, db) = db();
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    let a = c1.add(PersistentMapping::default()).expect("add");
    let b = c1.add(PersistentMapping::default()).expect("add");
    let r1 = c1.ref_to(a).expect("ref");
    let r2 = c1.ref_to(b).expect("ref");
    {
        let mut root = c1.root_mut().expect("root");
        root.insert("a", r1);
        root.insert("b", r2);
    }
    tm1.commit().expect("commit");

    let c2 = db.open_connection(&tm2).expect("c2");
    let seen: Arc<Mutex<Vec<Invalidation>>> = Arc::default();
    let seen2 = seen.clone();
    c2.subscribe(move |inv| seen2.lock().push(inv.clone()));
    let own: Arc<Mutex<Vec<Invalidation>>> = Arc::default();
    let own2 = own.clone();
    c1.subscribe(move |inv| own2.lock().push(inv.clone()));
    assert!(c2.get::<PersistentMapping>(a).expect("a").data.is_empty());

    // c1 changes a; c2 keeps seeing its snapshot until its next boundary.
    c1.get_mut::<PersistentMapping>(a)
        .expect("a")
        .insert("x", Value::Int(7));
    tm1.commit().expect("commit");
    let at1 = c1.at();
    assert!(at1 > c2.at());
    assert!(
        c2.get::<PersistentMapping>(a).expect("a").data.is_empty(),
        "isolation"
    );
    // the committing connection gets no invalidation for its own change
    assert!(
        own.lock().iter().all(|i| i.oids.is_empty()),
        "{:?}",
        own.lock()
    );
    // boundary of c2's transaction: moves to the newest snapshot
    tm2.abort();
    assert_eq!(c2.at(), at1);
    let invs = seen.lock().clone();
    assert_eq!(invs.len(), 1);
    assert_eq!(invs[0].oids, vec![a]);
    assert_eq!(
        c2.get::<PersistentMapping>(a).expect("a").get("x"),
        Some(&Value::Int(7))
    );
    // b was untouched and stays cached
    let _ = c2.get::<PersistentMapping>(b).expect("b");
    c1.get_mut::<PersistentMapping>(b)
        .expect("b")
        .insert("y", Value::Int(1));
    c1.get_mut::<PersistentMapping>(a)
        .expect("a")
        .insert("y", Value::Int(1));
    tm1.commit().expect("commit");
    c2.sync().expect("sync");
    assert_eq!(seen.lock().last().expect("inv").oids, vec![a, b]);
}

#[test]
fn conflict_error_aborts_cleanly_and_the_retry_succeeds() {
    let (_d, db) = db();
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    let c2 = db.open_connection(&tm2).expect("c2");
    c1.root_mut().expect("root").insert("who", s("c1"));
    c2.root_mut().expect("root").insert("who", s("c2"));
    tm1.commit().expect("first wins");
    let e = tm2.commit().expect_err("conflict");
    assert!(e.is_conflict(), "{e}");
    // clean: nothing pending, snapshot moved, sees c1's value
    assert!(c2.changed().is_empty());
    assert_eq!(c2.root().expect("root").get("who"), Some(&s("c1")));
    c2.root_mut().expect("root").insert("who", s("c2 again"));
    tm2.commit().expect("retry");
    tm1.abort();
    assert_eq!(c1.root().expect("root").get("who"), Some(&s("c2 again")));
}

#[test]
fn read_current_conflicts_when_the_object_moved_on() {
    let (_d, db) = db();
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    let c2 = db.open_connection(&tm2).expect("c2");
    let a = c1.add(PersistentMapping::default()).expect("a");
    tm1.commit().expect("commit");
    tm2.abort();
    let serial = c2.load_record(a).expect("load").expect("exists").1;
    // c2 bases a root change on `a` without storing `a`
    c2.read_current(a, serial).expect("read_current");
    c2.root_mut()
        .expect("root")
        .insert("based_on_a", Value::Int(1));
    c1.get_mut::<PersistentMapping>(a)
        .expect("a")
        .insert("x", Value::Int(1));
    tm1.commit().expect("commit");
    assert!(tm2.commit().expect_err("a moved on").is_conflict());
    // unchanged: commits
    let serial = c2.load_record(a).expect("load").expect("exists").1;
    c2.read_current(a, serial).expect("read_current");
    c2.root_mut()
        .expect("root")
        .insert("based_on_a", Value::Int(2));
    tm2.commit().expect("commit");
}

#[test]
fn historical_connection_sees_the_past_and_is_read_only() {
    let (_d, db) = db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    c.root_mut().expect("root").insert("v", Value::Int(1));
    tm.commit().expect("commit");
    let t1 = c.at();
    c.root_mut().expect("root").insert("v", Value::Int(2));
    tm.commit().expect("commit");
    let h = db.open_historical(t1).expect("historical");
    assert!(h.is_historical());
    assert_eq!(h.root().expect("root").get("v"), Some(&Value::Int(1)));
    assert!(h.root_mut().is_err());
    assert_eq!(c.root().expect("root").get("v"), Some(&Value::Int(2)));
}

#[test]
fn abort_discards_changes_and_new_objects() {
    let (_d, db) = db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let n = c.add(PersistentMapping::default()).expect("add");
    c.root_mut().expect("root").insert("n", Value::Int(1));
    assert_eq!(c.changed().len(), 2);
    tm.abort();
    assert!(c.changed().is_empty());
    assert!(c.root().expect("root").get("n").is_none());
    assert!(
        c.get::<PersistentMapping>(n).is_err(),
        "the new object is gone"
    );
}

#[test]
fn cache_is_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut db = DB::open(dir.path().join("Data.fs").to_str().expect("utf8")).expect("db");
    db.set_cache_size(50);
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let oids: Vec<Oid> = (0..400)
        .map(|_| c.add(PersistentMapping::default()).expect("add"))
        .collect();
    tm.commit().expect("commit");
    for o in &oids {
        let _ = c.get::<PersistentMapping>(*o).expect("get");
    }
    assert!(c.cache_len() <= 50 + 50 / 8 + 1, "{}", c.cache_len());
    // dropped objects reload transparently
    assert!(
        c.get::<PersistentMapping>(oids[0])
            .expect("reload")
            .data
            .is_empty()
    );
}

#[test]
fn two_writers_insert_different_keys_into_one_bucket() {
    let (_d, db) = db();
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db.open_connection(&tm1).expect("c1");
    // a tree with two buckets (so the change is at bucket level)
    let t = BTree::create(&c1, &btree::LO).expect("tree");
    for k in 0..61 {
        t.insert(&c1, Value::Int(k * 10), Value::Int(k))
            .expect("insert");
    }
    let tref = c1.ref_to(t.oid).expect("ref");
    c1.root_mut().expect("root").insert("t", tref);
    tm1.commit().expect("commit");
    let c2 = db.open_connection(&tm2).expect("c2");
    // both insert into the first bucket (keys 0..290), different keys
    t.insert(&c1, Value::Int(5), s("from c1")).expect("insert");
    t.insert(&c2, Value::Int(15), s("from c2")).expect("insert");
    tm1.commit().expect("c1 commits");
    tm2.commit()
        .expect("c2 commits: the bucket conflict resolves");
    let tm3 = TransactionManager::new();
    let c3 = db.open_connection(&tm3).expect("c3");
    assert_eq!(t.get(&c3, &Value::Int(5)).expect("get"), Some(s("from c1")));
    assert_eq!(
        t.get(&c3, &Value::Int(15)).expect("get"),
        Some(s("from c2"))
    );
    assert_eq!(t.len(&c3).expect("len"), 63);
    // the same key from both sides still conflicts
    t.insert(&c1, Value::Int(25), s("a")).expect("insert");
    tm2.abort();
    t.insert(&c2, Value::Int(25), s("b")).expect("insert");
    tm1.commit().expect("c1");
    assert!(tm2.commit().expect_err("same key").is_conflict());
}

#[test]
fn synchronizer_counts_boundaries() {
    let (_d, db) = db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    c.subscribe(move |_| {
        n2.fetch_add(1, Ordering::SeqCst);
    });
    let (tm_o, c_o) = {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("other");
        (tm, c)
    };
    for i in 0..3 {
        c_o.root_mut().expect("root").insert("i", Value::Int(i));
        tm_o.commit().expect("commit");
        tm.abort(); // boundary: c moves and is told
    }
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

mod model {
    //! Several connections doing random reads, writes, commits, aborts and
    //! syncs, against a model of committed snapshots (a map per commit) and
    //! each connection's pending writes.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Write { conn: usize, key: u8, val: i64 },
        Read { conn: usize, key: u8 },
        Commit { conn: usize },
        Abort { conn: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..4u8, any::<i64>()).prop_map(|(conn, key, val)| Op::Write {
                conn,
                key,
                val
            }),
            (0..3usize, 0..4u8).prop_map(|(conn, key)| Op::Read { conn, key }),
            (0..3usize).prop_map(|conn| Op::Commit { conn }),
            (0..3usize).prop_map(|conn| Op::Abort { conn }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn connections_match_snapshot_model(ops in proptest::collection::vec(op(), 1..40)) {
            let (_d, db) = db();
            // objects 0..4: one PersistentMapping each, value under "v"
            let setup_tm = TransactionManager::new();
            let c0 = db.open_connection(&setup_tm).expect("setup");
            let objs: Vec<Oid> = (0..4).map(|_| c0.add(PersistentMapping::default()).expect("add")).collect();
            setup_tm.commit().expect("setup commit");
            let mut snaps: Vec<(Tid, BTreeMap<u8, i64>)> = vec![(c0.at(), BTreeMap::new())];
            let mut touched: Vec<(Tid, Vec<u8>)> = Vec::new();
            let tms: Vec<TransactionManager> = (0..3).map(|_| TransactionManager::new()).collect();
            let conns: Vec<Connection> = tms.iter().map(|tm| db.open_connection(tm).expect("conn")).collect();
            let mut pending: Vec<BTreeMap<u8, i64>> = vec![BTreeMap::new(); 3];
            let snapshot_of = |snaps: &Vec<(Tid, BTreeMap<u8, i64>)>, at: Tid| {
                snaps.iter().rev().find(|(t, _)| *t <= at).map(|(_, m)| m.clone()).unwrap_or_default()
            };
            for op in ops {
                match op {
                    Op::Write { conn, key, val } => {
                        conns[conn].get_mut::<PersistentMapping>(objs[key as usize]).expect("get_mut").insert("v", Value::Int(val));
                        pending[conn].insert(key, val);
                    }
                    Op::Read { conn, key } => {
                        let got = conns[conn].get::<PersistentMapping>(objs[key as usize]).expect("get").get("v").and_then(Value::as_int);
                        let want = pending[conn].get(&key).copied()
                            .or_else(|| snapshot_of(&snaps, conns[conn].at()).get(&key).copied());
                        prop_assert_eq!(got, want, "conn {} key {} at {}", conn, key, conns[conn].at());
                    }
                    Op::Commit { conn } => {
                        let at = conns[conn].at();
                        let latest = snaps.last().expect("s").1.clone();
                        // a conflict iff another commit after our snapshot wrote a key we wrote
                        let conflicts = pending[conn].keys().any(|k| touched.iter().any(|(t, ks)| *t > at && ks.contains(k)));
                        let r = tms[conn].commit();
                        if pending[conn].is_empty() {
                            prop_assert!(r.is_ok());
                        } else if conflicts {
                            prop_assert!(r.as_ref().err().is_some_and(Error::is_conflict), "{:?}", r);
                        } else {
                            prop_assert!(r.is_ok(), "{:?}", r);
                            let mut next = latest;
                            next.extend(pending[conn].iter().map(|(k, v)| (*k, *v)));
                            let tid = db.storage().last_tid();
                            snaps.push((tid, next));
                            touched.push((tid, pending[conn].keys().copied().collect()));
                        }
                        pending[conn].clear();
                        prop_assert_eq!(conns[conn].at(), db.storage().last_tid());
                    }
                    Op::Abort { conn } => {
                        tms[conn].abort();
                        pending[conn].clear();
                        prop_assert_eq!(conns[conn].at(), db.storage().last_tid());
                    }
                }
            }
        }
    }
}
