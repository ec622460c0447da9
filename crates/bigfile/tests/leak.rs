//! Handles do not leak: a handle joined to its manager's transactions does
//! not keep itself alive. (Alone in its test binary: it counts the process'
//! virtmem threads.)

use bigfile::{ZBigFileH, ZBlkFormat};
use storage::TransactionManager;

mod common;

use common::{new_db, opts, with_file};

fn virtmem_threads() -> usize {
    testsupport::threads_named("virtmem")
}

/// A handle joined to its manager's transactions does not keep itself
/// alive: dropping the handle and the manager frees its mapping and threads.
#[test]
fn dropped_handles_release_their_threads() {
    let (_d, db) = new_db();
    let f = with_file(&db);
    let before = virtmem_threads();
    {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("c");
        let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
        fh.write(0, b"x").expect("w");
        tm.commit().expect("commit");
        fh.write(1, b"y").expect("w");
        tm.abort();
        assert!(virtmem_threads() > before);
    }
    // handler threads exit asynchronously after the mapping is dropped
    let t0 = std::time::Instant::now();
    while virtmem_threads() > before && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(virtmem_threads(), before, "handler threads leaked");
}
