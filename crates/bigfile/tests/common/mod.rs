//! Helpers shared by the bigfile integration tests.

#![allow(dead_code)] // each test binary uses a subset

use bigfile::{HandleOptions, ZBlkFormat, create_file};
use storage::{Connection, DB, Oid, TransactionManager, Value};

/// Block size of the test files.
pub const BS: u64 = 64 * 1024;

#[allow(unused_imports)] // each test binary uses a subset
pub use testsupport::testdata;

/// Handle options: `format`, no read-ahead (exact load counts), 4 GiB reserved.
pub fn opts(format: ZBlkFormat) -> HandleOptions {
    HandleOptions {
        format,
        virtmem: virtmem::Options {
            readahead: false,
            reserve: 1 << 32,
            ..virtmem::Options::default()
        },
        spill_threshold: None,
    }
}

/// A new FileStorage database in a temporary directory.
pub fn new_db() -> (tempfile::TempDir, DB) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = DB::open(dir.path().join("Data.fs").to_str().expect("utf8")).expect("db");
    (dir, db)
}

/// Commit one empty file (blksize BS) as root["f"]; returns its oid.
pub fn with_file(db: &DB) -> Oid {
    with_file_of(db, BS)
}

/// Commit one empty file of block size `blksize` as root["f"]; returns its oid.
pub fn with_file_of(db: &DB, blksize: u64) -> Oid {
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = create_file(&c, blksize).expect("file");
    let r = c.ref_to(f).expect("ref");
    c.root_mut().expect("root").insert("f", r);
    tm.commit().expect("commit");
    f
}

/// The oid of root["f"] in `c`.
pub fn root_file(c: &Connection) -> Oid {
    c.root()
        .expect("root")
        .get("f")
        .and_then(Value::ref_oid)
        .expect("root[\"f\"]")
}
