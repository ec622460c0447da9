//! Arrays do not leak their file handles (alone in its test binary: it
//! counts the process' virtmem threads).

use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use storage::{DB, TransactionManager};

fn virtmem_threads() -> usize {
    testsupport::threads_named("virtmem")
}

#[test]
fn dropped_arrays_release_their_threads() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = DB::open(dir.path().join("Data.fs").to_str().expect("utf8")).expect("db");
    let opts = || HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    };
    {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("c");
        let a = ZBigArray::<f64>::create(&c, &tm, &[0], Order::C, opts()).expect("create");
        tm.commit().expect("commit");
        for k in 0..3 {
            let part = ArrayD::from_elem(IxDyn(&[1000]), k as f64);
            a.append(part.view()).expect("append");
            tm.commit().expect("commit");
        }
        let _ = a.stats().expect("stats");
        assert!(virtmem_threads() > 0);
    }
    let t0 = std::time::Instant::now();
    while virtmem_threads() > 0 && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(virtmem_threads(), 0, "handler threads leaked");
}
