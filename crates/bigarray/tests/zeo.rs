//! Arrays over a ZEO server (a real `runzeo`, killed on drop): created,
//! written, committed and read; two clients with isolation and exact
//! invalidation of the blocks the other changed; a conflict; Python ZODB
//! `ClientStorage` clients on the same server reading our arrays and writing
//! arrays we read.

use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use std::path::Path;
use std::sync::Arc;
use storage::{DB, TransactionManager, Value};
use testsupport::zeo::ZeoServer;

fn opts() -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

fn db(url: &str) -> DB {
    DB::open(url).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// f64 per 2 MiB block.
const PER_BLOCK: usize = 2 * 1024 * 1024 / 8;

#[test]
fn two_clients_share_an_array_with_isolation_and_exact_invalidation() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = ZeoServer::start(dir.path());
    let db1 = db(&srv.url());
    let (tm1, tm2) = (TransactionManager::new(), TransactionManager::new());
    let c1 = db1.open_connection(&tm1).expect("c1");
    let a1 = ZBigArray::<f64>::create(&c1, &tm1, &[4 * PER_BLOCK], Order::C, opts()).expect("a");
    a1.with_view_mut(|mut v| v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f64))
        .expect("w");
    let r = c1.ref_to(a1.oid()).expect("ref");
    c1.root_mut().expect("root").insert("a", r);
    tm1.commit().expect("commit");

    let db2 = db(&srv.url());
    let c2 = db2.open_connection(&tm2).expect("c2");
    let oid = c2
        .root()
        .expect("root")
        .get("a")
        .and_then(Value::ref_oid)
        .expect("a");
    let a2 = ZBigArray::<f64>::open(&c2, &tm2, oid, opts()).expect("open");
    let n = 4 * PER_BLOCK;
    let total = (n * (n - 1) / 2) as f64;
    assert_eq!(a2.with_view(|v| v.sum()).expect("sum"), total);
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    c2.subscribe(move |inv| s.lock().push(inv.oids.len()));

    // Client 1 changes one element in block 2.
    let at = 2 * PER_BLOCK + 5;
    a1.with_view_mut(|mut v| v[[at]] = -1.0).expect("w");
    tm1.commit().expect("commit 2");
    // Isolation: client 2 still reads its snapshot.
    assert_eq!(a2.with_view(|v| v[[at]]).expect("r"), at as f64);
    tm2.abort();
    assert_eq!(a2.with_view(|v| v[[at]]).expect("r"), -1.0);
    assert_eq!(
        a2.with_view(|v| v.sum()).expect("sum"),
        total - at as f64 - 1.0
    );
    // Exactly one object changed: the block's ZBlk.
    assert_eq!(seen.lock().clone(), vec![1]);

    // Both write the same block: the second commit conflicts.
    a1.with_view_mut(|mut v| v[[1]] = 10.0).expect("w");
    a2.with_view_mut(|mut v| v[[2]] = 20.0).expect("w");
    tm1.commit().expect("first");
    let e = tm2.commit().expect_err("same block from two clients");
    assert!(e.to_string().contains("conflict"), "{e}");
    assert_eq!(a2.with_view(|v| (v[[1]], v[[2]])).expect("r"), (10.0, 2.0));
}

fn python(dir: &Path, script: &str, args: &[&str]) -> String {
    use testsupport::standins::{ARRAY_ZODB, FILE_ZODB};
    testsupport::python::run_python_with(dir, script, args, &[FILE_ZODB, ARRAY_ZODB])
}

const PY_PRELUDE: &str = r#"
import sys
import numpy as np
import transaction
from ZODB import DB
from ZEO.ClientStorage import ClientStorage
addr = sys.argv[1]
if not addr.startswith('/'):
    host, port = addr.rsplit(':', 1)
    addr = (host, int(port))
db = DB(ClientStorage(addr, wait_timeout=30))
root = db.open().root()
"#;

const PY_READ_AND_WRITE: &str = r#"
from wendelin.bigarray.array_zodb import to_numpy, ZBigArray
from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0
a = to_numpy(root['ours'])
assert a.dtype == np.dtype('<i4') and a.shape == (1000, 300), (a.dtype, a.shape)
i, j = np.indices((1000, 300))
assert (a == i * 7 - j).all()
bs = 2 * 1024 * 1024
arr = np.arange(300000, dtype='<f8').reshape(600, 500) * 0.25
f = ZBigFile(bs)
raw = arr.tobytes()
for blk in range(0, (len(raw) + bs - 1) // bs):
    z = ZBlk0(); z.blkdata = raw[blk*bs:(blk+1)*bs].rstrip(b'\0'); f.blktab[blk] = z
x = ZBigArray()
x.state = ({'_dtype': arr.dtype, '_shape': arr.shape, '_order': 'C', '_stridev': arr.strides}, {'zfile': f})
root['theirs'] = x
transaction.commit()
db.close()
print("OK")
"#;

#[test]
fn python_clientstorage_and_we_see_each_others_arrays() {
    for unix in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let srv = ZeoServer::start_on(dir.path(), unix);
        let db = db(&srv.url());
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("conn");
        let a = ZBigArray::<i32>::create(&c, &tm, &[1000, 300], Order::C, opts()).expect("a");
        a.with_view_mut(|mut v| {
            v.indexed_iter_mut()
                .for_each(|(ix, x)| *x = ix[0] as i32 * 7 - ix[1] as i32)
        })
        .expect("w");
        let r = c.ref_to(a.oid()).expect("ref");
        c.root_mut().expect("root").insert("ours", r);
        tm.commit().expect("commit");
        let addr = srv.url().trim_start_matches("zeo://").to_owned();
        let script = format!("{PY_PRELUDE}{PY_READ_AND_WRITE}");
        let out = python(dir.path(), &script, &[&addr]);
        assert!(out.contains("OK"), "{out}");
        // Python's commit reaches us at our next boundary.
        tm.abort();
        let oid = c
            .root()
            .expect("root")
            .get("theirs")
            .and_then(Value::ref_oid)
            .expect("python's array");
        let x = ZBigArray::<f64>::open(&c, &tm, oid, opts()).expect("x");
        assert_eq!(x.shape(), vec![600, 500]);
        assert!(
            x.with_view(|v| v
                .indexed_iter()
                .all(|(ix, e)| *e == (ix[0] * 500 + ix[1]) as f64 * 0.25))
                .expect("v")
        );
    }
}
