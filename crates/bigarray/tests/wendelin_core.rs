//! ZBigArray interop with the real wendelin.core 0.13 (not the stand-ins),
//! both ways, in ZBlk0, ZBlk1 and `auto`: C and F order, append along the
//! major axis, shrink and grow, big-endian arrays holding data, and every
//! committed tid read back (time travel).
//!
//! Expected values are the formulas the writer used, evaluated by numpy on
//! the Python side and by plain arithmetic here: never what our own reader
//! returned. wendelin.core 0.13's `resize` keeps data past a shrink (its
//! TODO), so shrinking and growing are checked on different arrays there.

use bigarray::{Order, ZBigArray, open_untyped, read_converted};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use serde_json::json;
use storage::{Connection, DB, Oid, Tid, TransactionManager, Value};

fn opts(format: ZBlkFormat) -> HandleOptions {
    HandleOptions {
        format,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

fn root_oid(c: &Connection, name: &str) -> Oid {
    c.root()
        .expect("root")
        .get(name)
        .and_then(Value::ref_oid)
        .expect(name)
}

const PY_CHECK_AT: &str = r#"
import sys, json
import numpy as np
from ZODB import DB
from ZODB.FileStorage import FileStorage
from wendelin.bigarray.array_zodb import ZBigArray
tids = json.load(open(sys.argv[2]))
db = DB(FileStorage(sys.argv[1], read_only=True))
def check(name, arr, dtype, want, order='C'):
    assert type(arr) is ZBigArray, type(arr)
    assert arr.dtype == np.dtype(dtype), (name, arr.dtype)
    assert arr.shape == want.shape, (name, arr.shape, want.shape)
    assert arr._order == order, (name, arr._order)
    got = arr[:]
    assert (got == want).all(), (name, np.argwhere(got != want)[:5])
kinds = set()
for k, tid in enumerate(tids):
    r = db.open(at=bytes.fromhex(tid)).root()
    i, j = np.indices((35 if k >= 1 else 30, 40))
    a = (i * 100 + j).astype('f8')
    if k >= 1:
        a[30:] = 0                      # grown: zeros
    check('a', r['a'], '<f8', a)
    nb = 7 if k >= 1 else 5
    i, j = np.indices((50, nb))
    check('b', r['b'], '<i4', (i - j * 1000).astype('i4'), 'F')
    n = {0: 2000, 1: 1000, 2: 1500}[k]
    c = (np.arange(n) % 256).astype('u1')
    if k >= 1:
        c[1000:] = 0                    # shrunk to 1000, then grown: zeros past the cut
    check('c', r['c'], 'u1', c)
    if k >= 2:
        i, j = np.indices((600, 1000))
        check('d', r['d'], '<f8', (i * 1000 + j).astype('f8') / 4)
    for name in r.keys():
        kinds |= set(type(z).__name__ for z in r[name].zfile.blktab.values())
print(json.dumps(sorted(kinds)))
"#;

/// Write three transactions of arrays in `format`; real wendelin.core
/// checks every array at every tid against numpy. Returns the ZBlk classes
/// it found.
fn rust_written_arrays_load_in_wendelin_core(format: ZBlkFormat) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let keep = |name: &str, oid| {
        let r = c.ref_to(oid).expect("ref");
        c.root_mut().expect("root").insert(name, r);
    };
    let o = opts(format);
    let mut tids = Vec::new();
    let a = ZBigArray::<f64>::create(&c, &tm, &[30, 40], Order::C, o.clone()).expect("a");
    a.with_view_mut(|mut v| {
        v.indexed_iter_mut()
            .for_each(|(ix, x)| *x = (ix[0] * 100 + ix[1]) as f64)
    })
    .expect("w");
    keep("a", a.oid());
    let b = ZBigArray::<i32>::create(&c, &tm, &[50, 5], Order::F, o.clone()).expect("b");
    b.with_view_mut(|mut v| {
        v.indexed_iter_mut()
            .for_each(|(ix, x)| *x = ix[0] as i32 - ix[1] as i32 * 1000)
    })
    .expect("w");
    keep("b", b.oid());
    let cc = ZBigArray::<u8>::create(&c, &tm, &[2000], Order::C, o.clone()).expect("c");
    cc.with_view_mut(|mut v| v.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8))
        .expect("w");
    keep("c", cc.oid());
    tm.commit().expect("txn 1");
    tids.push(db.storage().last_tid());
    // txn 2: append two columns to the F-order array, grow a, shrink c
    let cols = ArrayD::from_shape_fn(IxDyn(&[50, 2]), |ix| {
        ix[0] as i32 - (ix[1] as i32 + 5) * 1000
    });
    b.append(cols.view()).expect("append");
    a.resize(&[35, 40]).expect("grow");
    cc.resize(&[1000]).expect("shrink");
    tm.commit().expect("txn 2");
    tids.push(db.storage().last_tid());
    // txn 3: grow c past the cut; a 4.8 MB array over three blocks
    cc.resize(&[1500]).expect("grow");
    let d = ZBigArray::<f64>::create(&c, &tm, &[600, 1000], Order::C, o).expect("d");
    d.with_view_mut(|mut v| {
        v.indexed_iter_mut()
            .for_each(|(ix, x)| *x = (ix[0] * 1000 + ix[1]) as f64 / 4.0)
    })
    .expect("w");
    keep("d", d.oid());
    tm.commit().expect("txn 3");
    tids.push(db.storage().last_tid());
    drop((a, b, cc, d));
    let tf = dir.path().join("tids.json");
    let tids: Vec<String> = tids.iter().map(|t| hex::encode(t.to_bytes())).collect();
    std::fs::write(&tf, json!(tids).to_string()).expect("write");
    let out = testsupport::wendelin_core::run(
        dir.path(),
        PY_CHECK_AT,
        &[path.to_str().expect("utf8"), tf.to_str().expect("utf8")],
        "ZBlk0",
    )?;
    Some(serde_json::from_str(out.trim()).expect("json"))
}

#[test]
fn zblk0_arrays_written_here_load_in_wendelin_core_at_every_tid() {
    if let Some(k) = rust_written_arrays_load_in_wendelin_core(ZBlkFormat::ZBlk0) {
        assert_eq!(k, ["ZBlk0"]);
    }
}

#[test]
fn zblk1_arrays_written_here_load_in_wendelin_core_at_every_tid() {
    if let Some(k) = rust_written_arrays_load_in_wendelin_core(ZBlkFormat::ZBlk1) {
        assert_eq!(k, ["ZBlk1"]);
    }
}

#[test]
fn auto_arrays_written_here_load_in_wendelin_core_at_every_tid() {
    if let Some(k) = rust_written_arrays_load_in_wendelin_core(ZBlkFormat::Auto) {
        // whole new blocks filled in one go are appends that are not small
        assert!(k.contains(&"ZBlk0".to_string()), "{k:?}");
    }
}

const PY_WRITE: &str = r#"
import sys, json, transaction
import numpy as np
from ZODB import DB
from ZODB.FileStorage import FileStorage
from wendelin.bigarray.array_zodb import ZBigArray
db = DB(FileStorage(sys.argv[1]))
root = db.open().root()
tids = []
def commit():
    transaction.commit()
    tids.append(db.lastTransaction().hex())
root['x'] = x = ZBigArray((600, 500), '<f8'); commit()
x[:] = np.arange(300000, dtype='<f8').reshape(600, 500) * 0.5
root['y'] = y = ZBigArray((77, 3), '<i8', order='F'); commit()
y[:] = (np.arange(77 * 3, dtype='<i8') - 100).reshape(77, 3)
root['be'] = be = ZBigArray((1000,), '>u4'); commit()
be[:] = np.arange(1000, dtype='>u4') * 65537
root['bf'] = bf = ZBigArray((40, 30), '>f8', order='F'); commit()
i, j = np.indices((40, 30)); bf[:] = i * 0.25 - j
commit()                                                   # tid 4: all data in
y.append((np.arange(77 * 2, dtype='<i8') + 7000).reshape(77, 2))
x.resize((400, 500))                                       # shrink
be.append(np.arange(500, dtype='>u4') + 4000000000)
commit()                                                   # tid 5
root['g'] = g = ZBigArray((10, 3), '<i8'); commit()
g[:] = 5
commit()
g.resize((3000000, 3))                                     # grow over several blocks
g[2999999] = [1, 2, 3]
commit()                                                   # tid 8
print(json.dumps(tids))
"#;

/// Real wendelin.core writes arrays in `fmt`; each is checked here at the
/// tids where they are complete and after the changes.
fn wendelin_core_written_arrays_open_here(fmt: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("wc.fs");
    let Some(out) =
        testsupport::wendelin_core::run(dir.path(), PY_WRITE, &[path.to_str().expect("utf8")], fmt)
    else {
        return;
    };
    let tids: Vec<String> = serde_json::from_str(out.trim()).expect("json");
    let tid = |k: usize| Tid::from_hex(&tids[k]).expect("tid");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let o = opts(ZBlkFormat::ZBlk0);
    for (k, x_rows, y_cols, be_len) in [(4usize, 600usize, 3usize, 1000usize), (5, 400, 5, 1500)] {
        let c = db.open_historical(tid(k)).expect("historical");
        let x = ZBigArray::<f64>::open_read_only(&c, root_oid(&c, "x"), o.clone()).expect("x");
        assert_eq!(x.shape(), [x_rows, 500], "tid {k}");
        let bad = x
            .with_view(|v| {
                v.indexed_iter()
                    .filter(|(ix, e)| **e != (ix[0] * 500 + ix[1]) as f64 * 0.5)
                    .count()
            })
            .expect("view");
        assert_eq!(bad, 0, "x at tid {k}");
        let y = ZBigArray::<i64>::open_read_only(&c, root_oid(&c, "y"), o.clone()).expect("y");
        assert_eq!((y.shape(), y.order()), (vec![77, y_cols], Order::F));
        let bad = y
            .with_view(|v| {
                v.indexed_iter()
                    .filter(|(ix, e)| {
                        let want = if ix[1] < 3 {
                            (ix[0] * 3 + ix[1]) as i64 - 100
                        } else {
                            (ix[0] * 2 + ix[1] - 3) as i64 + 7000
                        };
                        **e != want
                    })
                    .count()
            })
            .expect("view");
        assert_eq!(bad, 0, "y at tid {k}");
        // big-endian arrays with data: the dtype is kept, the values convert
        let be = root_oid(&c, "be");
        assert_eq!(open_untyped(&c, be).expect("be").dtype.str(), ">u4");
        let want: Vec<f64> = (0..be_len as u64)
            .map(|i| if i < 1000 { i * 65537 } else { i - 1000 + 4_000_000_000 } as f64)
            .collect();
        assert_eq!(read_converted(&c, be).expect("be"), want, "be at tid {k}");
        let bf = root_oid(&c, "bf");
        let st = open_untyped(&c, bf).expect("bf");
        assert_eq!((st.dtype.str(), st.order), (">f8".to_string(), Order::F));
        // memory order of an F array: the first index varies fastest
        let want: Vec<f64> = (0..30)
            .flat_map(|j| (0..40).map(move |i| i as f64 * 0.25 - j as f64))
            .collect();
        assert_eq!(read_converted(&c, bf).expect("bf"), want, "bf at tid {k}");
        // the native-order open refuses a big-endian array instead of misreading it
        assert!(ZBigArray::<f64>::open_read_only(&c, bf, o.clone()).is_err());
    }
    // before the data: x exists, zero
    let c = db.open_historical(tid(0)).expect("historical");
    let x = ZBigArray::<f64>::open_read_only(&c, root_oid(&c, "x"), o.clone()).expect("x");
    assert!(x.with_view(|v| v.iter().all(|e| *e == 0.0)).expect("view"));
    // grown over several blocks: zeros between the old end and the last row
    let c = db.open_historical(tid(8)).expect("historical");
    let g = ZBigArray::<i64>::open_read_only(&c, root_oid(&c, "g"), o).expect("g");
    assert_eq!(g.shape(), [3_000_000, 3]);
    let (head, middle, last) = g
        .with_view(|v| {
            let flat: Vec<i64> = v.iter().copied().collect();
            (
                flat[..30].iter().all(|e| *e == 5),
                flat[30..flat.len() - 3].iter().all(|e| *e == 0),
                flat[flat.len() - 3..].to_vec(),
            )
        })
        .expect("view");
    assert!(head && middle);
    assert_eq!(last, [1, 2, 3]);
}

#[test]
fn zblk0_arrays_written_by_wendelin_core_open_here_at_every_tid() {
    wendelin_core_written_arrays_open_here("ZBlk0");
}

#[test]
fn zblk1_arrays_written_by_wendelin_core_open_here_at_every_tid() {
    wendelin_core_written_arrays_open_here("ZBlk1");
}
