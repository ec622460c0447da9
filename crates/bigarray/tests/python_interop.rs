//! Arrays written here load in Python (numpy + ZODB, pure-Python stand-ins
//! named as wendelin's classes) with the same data; arrays written by
//! Python with those stand-ins open here.

use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;
use storage::{DB, TransactionManager, Value};

fn opts() -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

fn run_python(dir: &Path, script: &str, args: &[&str]) -> String {
    use testsupport::standins::{ARRAY_ZODB, FILE_ZODB};
    testsupport::python::run_python_with(dir, script, args, &[FILE_ZODB, ARRAY_ZODB])
}

const PY_CHECK: &str = r#"
import sys
import numpy as np
from ZODB.FileStorage import FileStorage
from ZODB import DB
from ZODB.scripts import fstest
from wendelin.bigarray.array_zodb import to_numpy
fstest.check(sys.argv[1])
root = DB(FileStorage(sys.argv[1], read_only=True)).open().root()
a = to_numpy(root['a'])
i, j = np.indices((30, 40))
assert a.dtype == np.dtype('<f8') and a.shape == (30, 40)
assert (a == i * 100 + j).all()
b = to_numpy(root['b'])
assert b.dtype == np.dtype('<i4') and b.shape == (50, 7) and b.flags['F_CONTIGUOUS']
i, j = np.indices((50, 7))
assert (b == i - j * 1000).all(), b
c = to_numpy(root['c'])
assert c.dtype == np.dtype('u1') and c.shape == (1000,)
assert (c == np.arange(1000) % 256).all()
d = to_numpy(root['d'])
assert d.dtype == np.dtype('<f4') and d.shape == (3, 4, 5)
assert (d == np.arange(60, dtype='f4').reshape(3, 4, 5) / 2).all()
print("OK")
"#;

#[test]
fn arrays_written_here_load_in_python() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let keep = |name: &str, oid| {
        let r = c.ref_to(oid).expect("ref");
        c.root_mut().expect("root").insert(name, r);
    };
    let a = ZBigArray::<f64>::create(&c, &tm, &[30, 40], Order::C, opts()).expect("a");
    a.with_view_mut(|mut v| {
        v.indexed_iter_mut()
            .for_each(|(ix, x)| *x = (ix[0] * 100 + ix[1]) as f64)
    })
    .expect("w");
    keep("a", a.oid());
    let b = ZBigArray::<i32>::create(&c, &tm, &[50, 5], Order::F, opts()).expect("b");
    b.with_view_mut(|mut v| {
        v.indexed_iter_mut()
            .for_each(|(ix, x)| *x = ix[0] as i32 - ix[1] as i32 * 1000)
    })
    .expect("w");
    keep("b", b.oid());
    let cc = ZBigArray::<u8>::create(&c, &tm, &[2000], Order::C, opts()).expect("c");
    cc.with_view_mut(|mut v| {
        v.indexed_iter_mut()
            .for_each(|(ix, x)| *x = (ix[0] % 256) as u8)
    })
    .expect("w");
    keep("c", cc.oid());
    tm.commit().expect("txn 1");
    // txn 2: append two columns to the F-order array; shrink c
    let cols = ArrayD::from_shape_fn(IxDyn(&[50, 2]), |ix| {
        ix[0] as i32 - (ix[1] as i32 + 5) * 1000
    });
    b.append(cols.view()).expect("append");
    cc.resize(&[1000]).expect("shrink");
    tm.commit().expect("txn 2");
    // txn 3: a 3-d f32 array
    let d = ZBigArray::<f32>::create(&c, &tm, &[3, 4, 5], Order::C, opts()).expect("d");
    d.with_view_mut(|mut v| {
        v.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = i as f32 / 2.0)
    })
    .expect("w");
    keep("d", d.oid());
    tm.commit().expect("txn 3");
    drop((a, b, cc, d));
    let out = run_python(dir.path(), PY_CHECK, &[path.to_str().expect("utf8")]);
    assert!(out.contains("OK"), "{out}");
}

const PY_WRITE: &str = r#"
import sys
import numpy as np
from ZODB.FileStorage import FileStorage
from ZODB import DB
import transaction
from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0
from wendelin.bigarray.array_zodb import ZBigArray
root = DB(FileStorage(sys.argv[1])).open().root()
def store(name, arr, order):
    bs = 2 * 1024 * 1024
    f = ZBigFile(bs)
    raw = arr.tobytes(order=order)
    for blk in range(0, (len(raw) + bs - 1) // bs):
        z = ZBlk0(); z.blkdata = raw[blk*bs:(blk+1)*bs].rstrip(b'\0'); f.blktab[blk] = z
    a = ZBigArray()
    strides = arr.strides if order == 'C' else np.asfortranarray(arr).strides
    a.state = ({'_dtype': arr.dtype, '_shape': arr.shape, '_order': order, '_stridev': strides}, {'zfile': f})
    root[name] = a
store('x', np.arange(300000, dtype='<f8').reshape(600, 500) * 0.5, 'C')
store('y', (np.arange(77 * 3, dtype='<i8') - 100).reshape(77, 3), 'F')
transaction.commit()
print("OK")
"#;

#[test]
fn arrays_written_by_python_open_here() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("py.fs");
    let out = run_python(dir.path(), PY_WRITE, &[path.to_str().expect("utf8")]);
    assert!(out.contains("OK"));
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let get = |n: &str| {
        c.root()
            .expect("root")
            .get(n)
            .and_then(Value::ref_oid)
            .expect("ref")
    };
    let x = ZBigArray::<f64>::open(&c, &tm, get("x"), opts()).expect("x");
    assert_eq!(x.shape(), &[600, 500]);
    assert!(
        x.with_view(|v| v
            .indexed_iter()
            .all(|(ix, e)| *e == (ix[0] * 500 + ix[1]) as f64 * 0.5))
            .expect("v")
    );
    let y = ZBigArray::<i64>::open(&c, &tm, get("y"), opts()).expect("y");
    assert_eq!((y.shape(), y.order()), (vec![77usize, 3], Order::F));
    assert!(
        y.with_view(|v| v
            .indexed_iter()
            .all(|(ix, e)| *e == (ix[0] * 3 + ix[1]) as i64 - 100))
            .expect("v")
    );
    assert_eq!(x.stats().expect("stats").max, 299_999.0 * 0.5);
}
