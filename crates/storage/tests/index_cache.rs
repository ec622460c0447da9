//! The index saved next to the data file (`<name>.rsindex`): an open uses
//! it and scans only what was appended since, and refuses it whenever it
//! does not describe the file (damaged, stale by a pack, another file); in
//! every case the storage reads exactly what a full scan gives.

use storage::{DB, FileStorage, Oid, Storage, Tid, TransactionManager, Value};

/// Commit `n` transactions to the database at `path`, each changing the
/// root and adding a growing value.
fn commit_some(path: &std::path::Path, n: usize, tag: u8) {
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    for i in 0..n {
        c.root_mut().expect("root").insert(
            &format!("k{tag}-{i}"),
            Value::Bytes(vec![tag; 100 * (i + 1)]),
        );
        tm.commit().expect("commit");
    }
}

fn cache_of(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".rsindex");
    p.into()
}

/// What a storage reads: its end, transaction and object counts, and the
/// latest record (oid, data, serial) of every oid up to a bound.
type Contents = (u64, usize, usize, Vec<(u64, Vec<u8>, Tid)>);

/// [`Contents`] of `fs`, oids up to `max_oid`.
fn contents(fs: &FileStorage, max_oid: u64) -> Contents {
    let i = fs.scan_info();
    let recs = (0..=max_oid)
        .filter_map(|o| {
            fs.load_before(Oid(o), Tid::MAX)
                .expect("load")
                .map(|r| (o, r.data, r.serial))
        })
        .collect();
    (i.end, i.transactions, i.objects, recs)
}

/// The same file opened with its saved index removed (a full scan).
fn full_scan(path: &std::path::Path) -> Contents {
    let saved = std::fs::read(cache_of(path)).ok();
    let _ = std::fs::remove_file(cache_of(path));
    let fs = FileStorage::open_read_only(path).expect("open");
    assert_eq!(fs.scan_info().opened_from, 4);
    let c = contents(&fs, 64);
    if let Some(s) = saved {
        std::fs::write(cache_of(path), s).expect("restore");
    }
    c
}

#[test]
fn a_saved_index_is_used_and_what_was_appended_since_is_scanned() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    commit_some(&path, 5, 1);
    // The writer saved its index when it closed: a read-only open uses it.
    assert!(cache_of(&path).exists());
    let end1 = {
        let fs = FileStorage::open_read_only(&path).expect("open");
        let info = fs.scan_info();
        assert_eq!(info.opened_from, info.end, "nothing scanned");
        assert_eq!(contents(&fs, 64), full_scan(&path));
        info.end
    };
    // Another writer appends, and its saved index is then lost (as if it
    // had been killed): the old index is used, the rest is scanned.
    let old = std::fs::read(cache_of(&path)).expect("saved");
    commit_some(&path, 3, 2);
    std::fs::write(cache_of(&path), &old).expect("stale index back");
    let fs = FileStorage::open_read_only(&path).expect("open");
    assert_eq!(fs.scan_info().opened_from, end1, "resumed at the saved end");
    assert!(fs.scan_info().end > end1);
    assert_eq!(contents(&fs, 64), full_scan(&path));
}

#[test]
fn a_damaged_or_stale_index_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    commit_some(&path, 6, 3);
    let good = std::fs::read(cache_of(&path)).expect("saved");
    let want = full_scan(&path);
    // A flipped byte anywhere: refused (checksum), everything scanned.
    for at in [0, 20, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(cache_of(&path), &bad).expect("damage");
        let fs = FileStorage::open_read_only(&path).expect("open");
        assert_eq!(fs.scan_info().opened_from, 4, "byte {at}");
        assert_eq!(contents(&fs, 64), want);
    }
    // A pack writes a new file: the index saved before it is refused.
    std::fs::write(cache_of(&path), &good).expect("restore");
    let before_pack = good;
    {
        let fs = FileStorage::open(&path).expect("open");
        let last = fs.last_tid();
        FileStorage::pack(&fs, last, |_, _| {}).expect("pack");
    }
    let packed = full_scan(&path);
    std::fs::write(cache_of(&path), &before_pack).expect("stale index");
    let fs = FileStorage::open_read_only(&path).expect("open");
    assert_eq!(fs.scan_info().opened_from, 4, "another file");
    assert_eq!(contents(&fs, 64), packed);
    drop(fs);
    // The packed file's own index, saved by a writer closing it, is used;
    // the same bytes copied to another file (another inode) are not.
    drop(FileStorage::open(&path).expect("open"));
    let fs = FileStorage::open_read_only(&path).expect("open");
    assert_eq!(fs.scan_info().opened_from, fs.scan_info().end);
    let copy = dir.path().join("Copy.fs");
    std::fs::copy(&path, &copy).expect("copy");
    std::fs::copy(cache_of(&path), cache_of(&copy)).expect("copy index");
    let fs = FileStorage::open_read_only(&copy).expect("open");
    assert_eq!(fs.scan_info().opened_from, 4);
}
