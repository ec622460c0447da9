//! Records lent in place from FileStorage's mapping equal what the loads
//! return, at every snapshot, across growth of the file and a pack.

use storage::{DB, FileStorage, Oid, Storage, Tid, TransactionManager, Value};

#[test]
fn mapped_records_equal_loaded_ones_at_every_snapshot() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let mut tids: Vec<Tid> = Vec::new();
    for i in 0..20i64 {
        // A growing value, so the file grows past earlier mappings.
        c.root_mut()
            .expect("root")
            .insert("x", Value::Bytes(vec![i as u8; 1000 * (i as usize + 1)]));
        tm.commit().expect("commit");
        tids.push(tm.last_committed().expect("tid"));
    }
    let fs = FileStorage::open_read_only(&path).expect("fs");
    let root = Oid(0);
    for &t in &tids {
        let before = t.successor();
        let loaded = fs.load_before(root, before).expect("load").expect("exists");
        let mapped = fs.map_before(root, before).expect("map").expect("lent");
        assert_eq!(mapped.data(), &loaded.data[..], "at {t:?}");
        assert_eq!(mapped.serial, loaded.serial);
        let sub = mapped.narrow(3..10).expect("narrow");
        assert_eq!(sub.data(), &loaded.data[3..10]);
        assert!(mapped.narrow(0..loaded.data.len() + 1).is_none());
    }
    // Before the first commit, and for an oid never stored: nothing.
    assert!(
        fs.map_before(Oid(0x7fff_ffff), Tid::MAX)
            .expect("map")
            .is_none()
    );
    // A record lent before the file grows stays valid and unchanged.
    let lent = fs.map_before(root, Tid::MAX).expect("map").expect("lent");
    let copy = lent.data().to_vec();
    for i in 0..5u8 {
        c.root_mut()
            .expect("root")
            .insert("y", Value::Bytes(vec![i; 100_000]));
        tm.commit().expect("commit");
    }
    assert_eq!(lent.data(), &copy[..]);
}
