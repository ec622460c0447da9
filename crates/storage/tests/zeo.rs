//! The ZEO client against a real ZEO server (`runzeo` from the interop venv,
//! started on 127.0.0.1 with a free port or on a unix socket, killed on drop):
//! protocol, loads, commits, conflicts, invalidations between clients and
//! processes, Python ClientStorage interop, server restarts and a server
//! killed in the middle of a commit, and every failure bounded in time.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::pickle::{self, Dialect};
use storage::{
    BTree, DB, Error, Oid, Storage, Tid, TransactionManager, TxnMeta, Value, ZeoStorage,
    open_storage,
};
use testsupport::zeo::ZeoServer;

fn record(n: i64) -> Vec<u8> {
    pickle::encode_record(
        "persistent.mapping",
        "PersistentMapping",
        &Value::Dict(vec![(
            Value::Str("data".into()),
            Value::Dict(vec![(Value::Str("n".into()), Value::Int(n))]),
        )]),
        Dialect::Py3,
    )
    .expect("record")
}

fn open(url: &str) -> Arc<dyn Storage> {
    open_storage(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn commit(s: &dyn Storage, stores: &[(Oid, Tid, Vec<u8>)]) -> storage::Result<Tid> {
    let mut t = s.tpc_begin(TxnMeta::default(), None)?;
    for (oid, serial, data) in stores {
        t.store(*oid, *serial, data.clone())?;
    }
    t.vote()?;
    t.finish()
}

#[test]
fn load_store_and_new_oids_over_tcp_and_unix() {
    for unix in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let srv = ZeoServer::start_on(dir.path(), unix);
        let s = open(&srv.url());
        assert!(s.name().starts_with("zeo://"), "{}", s.name());
        let a = s.new_oid().expect("oid");
        let b = s.new_oid().expect("oid");
        assert_ne!(a, b);
        assert!(s.load_before(a, Tid::MAX).expect("absent").is_none());
        let t1 = commit(&*s, &[(a, Tid::ZERO, record(1))]).expect("commit");
        assert_eq!(s.sync().expect("sync"), t1);
        assert_eq!(s.last_tid(), t1);
        let r = s.load(a).expect("load");
        assert_eq!(
            (r.data.clone(), r.serial, r.next_serial),
            (record(1), t1, None)
        );
        let t2 = commit(&*s, &[(a, t1, record(2))]).expect("commit 2");
        assert_eq!(s.load(a).expect("load").data, record(2));
        let old = s.load_before(a, t2).expect("mvcc").expect("old rev");
        assert_eq!(
            (old.data, old.serial, old.next_serial),
            (record(1), t1, Some(t2))
        );
        assert_eq!(s.load_serial(a, t1).expect("serial"), record(1));
        assert_eq!(s.changed_oids(t1, t2).expect("changed"), vec![a]);
        let txns: Vec<_> = s
            .iter_txns(Tid::ZERO, Tid::MAX)
            .expect("iter")
            .collect::<Result<_, _>>()
            .expect("txns");
        assert_eq!(txns.last().map(|t| t.tid), Some(t2));
        // Another client sees it all.
        let s2 = open(&srv.url());
        assert_eq!(s2.last_tid(), t2);
        assert_eq!(s2.load(a).expect("load").data, record(2));
    }
}

fn elapsed_under(start: Instant, secs: u64) {
    assert!(
        start.elapsed() < Duration::from_secs(secs),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn failures_are_clear_and_bounded() {
    // No server.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let t = Instant::now();
    let e = open_storage(&format!("zeo://127.0.0.1:{port}"))
        .err()
        .expect("absent");
    assert!(e.to_string().contains("connect"), "{e}");
    elapsed_under(t, 5);
    let e = open_storage("zeo:///nonexistent/zeo.sock")
        .err()
        .expect("absent");
    assert!(e.to_string().contains("connect"), "{e}");
    // A silent peer: the handshake is bounded by connect_timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let t = Instant::now();
    let e = open_storage(&format!("zeo://{addr}?connect_timeout=0.5"))
        .err()
        .expect("silent");
    assert!(e.to_string().contains("protocol offer"), "{e}");
    elapsed_under(t, 5);
    // A peer speaking another protocol version.
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = other.local_addr().expect("addr");
    let th = std::thread::spawn(move || {
        if let Ok((mut s, _)) = other.accept() {
            let _ = s.write_all(b"\0\0\0\x02Z4");
            let mut b = [0u8; 16];
            let _ = s.read(&mut b);
        }
    });
    let e = open_storage(&format!("zeo://{addr}"))
        .err()
        .expect("mismatch");
    assert!(e.to_string().contains("protocol mismatch"), "{e}");
    let _ = th.join();
    // A real server: wrong storage name, read-only server.
    let dir = tempfile::tempdir().expect("tmp");
    let srv = ZeoServer::start(dir.path());
    let e = open_storage(&format!("{}?storage=nope", srv.url()))
        .err()
        .expect("name");
    assert!(e.to_string().contains("no storage named \"nope\""), "{e}");
    drop(srv);
    let dir = tempfile::tempdir().expect("tmp");
    let srv = ZeoServer::start_with(dir.path(), &["read-only true"]);
    let e = open_storage(&srv.url()).err().expect("ro server");
    assert!(e.to_string().contains("read-only"), "{e}");
    let s = open(&format!("{}?read_only=true", srv.url()));
    assert!(s.is_read_only());
    assert!(matches!(
        s.tpc_begin(TxnMeta::default(), None).err(),
        Some(Error::ReadOnly { .. })
    ));
    // Options are checked.
    let e = open_storage(&format!("{}?bogus=1", srv.url()))
        .err()
        .expect("opt");
    assert!(e.to_string().contains("unknown option"), "{e}");
}

#[test]
fn conflicts_surface_and_btree_buckets_resolve() {
    for client_side in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let opts: &[&str] = if client_side {
            &["client-conflict-resolution true"]
        } else {
            &[]
        };
        let srv = ZeoServer::start_with(dir.path(), opts);
        // Storage level: the same object from two clients.
        let (s1, s2) = (open(&srv.url()), open(&srv.url()));
        let a = s1.new_oid().expect("oid");
        let t1 = commit(&*s1, &[(a, Tid::ZERO, record(1))]).expect("c");
        s2.sync().expect("sync");
        let t2 = commit(&*s1, &[(a, t1, record(2))]).expect("c");
        let e = commit(&*s2, &[(a, t1, record(3))]).expect_err("conflict");
        match e {
            Error::Conflict {
                oid,
                loaded,
                committed,
                ..
            } => assert_eq!((oid, loaded, committed), (a, t1, t2)),
            e => panic!("not a conflict: {e}"),
        }
        // The server is usable after the failed vote.
        commit(&*s2, &[(a, t2, record(4))]).expect("retry");
        // Object layer: two writers into one BTree bucket (different keys).
        let db = DB::new(open(&srv.url()));
        let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
        let c1 = db.open_connection(&tm1).expect("c1");
        let t = BTree::create(&c1, &storage::btree::LO).expect("tree");
        for k in 0..61 {
            t.insert(&c1, Value::Int(k * 10), Value::Int(k))
                .expect("insert");
        }
        let tref = c1.ref_to(t.oid).expect("ref");
        c1.root_mut().expect("root").insert("t", tref);
        tm1.commit().expect("commit");
        let db2 = DB::new(open(&srv.url()));
        let c2 = db2.open_connection(&tm2).expect("c2");
        t.insert(&c1, Value::Int(5), Value::Int(-5))
            .expect("insert");
        t.insert(&c2, Value::Int(15), Value::Int(-15))
            .expect("insert");
        tm1.commit().expect("c1 commits");
        tm2.commit()
            .expect("c2 commits: the bucket conflict resolves");
        tm1.abort();
        assert_eq!(
            t.get(&c1, &Value::Int(15)).expect("get"),
            Some(Value::Int(-15))
        );
        assert_eq!(
            t.get(&c1, &Value::Int(5)).expect("get"),
            Some(Value::Int(-5))
        );
        assert_eq!(t.len(&c1).expect("len"), 63);
        // The same key from both sides still conflicts.
        tm2.abort();
        t.insert(&c1, Value::Int(25), Value::Int(1))
            .expect("insert");
        t.insert(&c2, Value::Int(25), Value::Int(2))
            .expect("insert");
        tm1.commit().expect("c1");
        let e = tm2.commit().expect_err("same key");
        assert!(e.is_conflict(), "{e}");
    }
}

#[test]
fn invalidations_between_two_clients_are_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = ZeoServer::start(dir.path());
    let db1 = DB::new(open(&srv.url()));
    let db2 = DB::new(open(&srv.url()));
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db1.open_connection(&tm1).expect("c1");
    let a = c1.add(storage::PersistentMapping::default()).expect("a");
    let b = c1.add(storage::PersistentMapping::default()).expect("b");
    let (ra, rb) = (c1.ref_to(a).expect("ref"), c1.ref_to(b).expect("ref"));
    c1.root_mut().expect("root").insert("a", ra);
    c1.root_mut().expect("root").insert("b", rb);
    tm1.commit().expect("commit");
    let c2 = db2.open_connection(&tm2).expect("c2");
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    c2.subscribe(move |inv| s2.lock().push(inv.oids.clone()));
    assert!(
        c2.get::<storage::PersistentMapping>(a)
            .expect("a")
            .get("x")
            .is_none()
    );
    let _ = c2.get::<storage::PersistentMapping>(b).expect("b");
    let at = c2.at();
    c1.get_mut::<storage::PersistentMapping>(a)
        .expect("a")
        .insert("x", Value::Int(7));
    tm1.commit().expect("commit");
    // Isolation: c2 still reads its snapshot until its boundary.
    assert_eq!(c2.at(), at);
    assert!(
        c2.get::<storage::PersistentMapping>(a)
            .expect("a")
            .get("x")
            .is_none()
    );
    tm2.abort();
    assert_eq!(seen.lock().clone(), vec![vec![a]]);
    assert_eq!(
        c2.get::<storage::PersistentMapping>(a).expect("a").get("x"),
        Some(&Value::Int(7))
    );
}

#[test]
fn server_restart_between_transactions_is_survived() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut srv = ZeoServer::start(dir.path());
    let s1 = open(&format!("{}?connect_timeout=5", srv.url()));
    let s2 = open(&srv.url());
    let a = s1.new_oid().expect("oid");
    let t1 = commit(&*s1, &[(a, Tid::ZERO, record(1))]).expect("c");
    s2.sync().expect("sync");
    assert_eq!(s2.load(a).expect("cached").data, record(1));
    srv.restart();
    // s1 commits after the restart (reconnects); s2 catches up on reconnect.
    let t2 = commit(&*s1, &[(a, t1, record(2))]).expect("commit after restart");
    assert_eq!(s2.sync().expect("sync after restart"), t2);
    assert_eq!(s2.changed_oids(t1, t2).expect("changed"), vec![a]);
    assert_eq!(s2.load(a).expect("fresh").data, record(2));
}

#[test]
fn server_killed_in_the_middle_of_a_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut srv = ZeoServer::start(dir.path());
    let s = open(&srv.url());
    let a = s.new_oid().expect("oid");
    let t1 = commit(&*s, &[(a, Tid::ZERO, record(1))]).expect("c");
    let mut txn = s.tpc_begin(TxnMeta::default(), None).expect("begin");
    txn.store(a, t1, record(2)).expect("store");
    srv.kill();
    let t = Instant::now();
    let e = txn.vote().expect_err("server gone");
    elapsed_under(t, 10);
    assert!(e.to_string().contains("not committed"), "{e}");
    txn.abort();
    srv.restart();
    assert_eq!(s.sync().expect("reconnected"), t1);
    assert_eq!(s.load(a).expect("load").data, record(1));
    let direct = storage::FileStorage::open_read_only(srv.data_fs()).expect("fs");
    assert_eq!(direct.last_tid(), t1);
    let _ = ZeoStorage::open_url; // the type is public
}
