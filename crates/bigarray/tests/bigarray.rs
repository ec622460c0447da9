//! ZBigArray: views, orders, dtypes, resize/append, reductions, the Python
//! test databases, and terabyte-sized sparse arrays.

use bigarray::{Order, ZBigArray, open_untyped, read_converted};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn, s};
use storage::{DB, FileStorage, Oid, TransactionManager, Value};

fn opts() -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

fn new_db() -> (tempfile::TempDir, DB) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = DB::open(dir.path().join("Data.fs").to_str().expect("utf8")).expect("db");
    (dir, db)
}

use testsupport::testdata;

fn keep(c: &storage::Connection, name: &str, oid: Oid) {
    let r = c.ref_to(oid).expect("ref");
    c.root_mut().expect("root").insert(name, r);
}

#[test]
fn write_commit_reopen_both_orders() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    for (name, order) in [("c", Order::C), ("f", Order::F)] {
        let a = ZBigArray::<f64>::create(&c, &tm, &[300, 700], order, opts()).expect("create");
        a.with_view_mut(|mut v| {
            for ((i, j), x) in v
                .view_mut()
                .into_dimensionality::<ndarray::Ix2>()
                .expect("2d")
                .indexed_iter_mut()
            {
                *x = (i * 1000 + j) as f64;
            }
        })
        .expect("write");
        keep(&c, name, a.oid());
    }
    tm.commit().expect("commit");
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    for (name, order) in [("c", Order::C), ("f", Order::F)] {
        let oid = c2
            .root()
            .expect("root")
            .get(name)
            .and_then(Value::ref_oid)
            .expect("ref");
        let a = ZBigArray::<f64>::open(&c2, &tm2, oid, opts()).expect("open");
        assert_eq!(a.shape(), &[300, 700]);
        assert_eq!(a.order(), order);
        let ok = a
            .with_view(|v| {
                let sub = v.slice(s![100..103, 5..8]);
                sub.indexed_iter()
                    .all(|((i, j), x)| *x == ((i + 100) * 1000 + j + 5) as f64)
            })
            .expect("view");
        assert!(ok, "{name}");
        // memory layout: C rows contiguous, F columns contiguous
        let st = a.state().to_value();
        let stridev = st
            .as_seq()
            .and_then(|p| p[0].dict_get("_stridev"))
            .expect("stridev")
            .clone();
        let want = if order == Order::C {
            vec![Value::Int(5600), Value::Int(8)]
        } else {
            vec![Value::Int(8), Value::Int(2400)]
        };
        assert_eq!(stridev, Value::Tuple(want));
        // a mismatched element type is refused
        let e = ZBigArray::<f32>::open(&c2, &tm2, oid, opts())
            .err()
            .expect("dtype mismatch");
        assert!(e.to_string().contains("<f8"), "{e}");
    }
}

#[test]
fn resize_and_append() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let a = ZBigArray::<i32>::create(&c, &tm, &[4, 3], Order::C, opts()).expect("create");
    a.with_view_mut(|mut v| v.fill(7)).expect("fill");
    keep(&c, "a", a.oid());
    tm.commit().expect("commit");
    // append two rows
    let rows = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1, 2, 3, 4, 5, 6]).expect("rows");
    a.append(rows.view()).expect("append");
    assert_eq!(a.shape(), &[6, 3]);
    tm.commit().expect("commit");
    // shrink then grow: the dropped part reads zeros
    a.resize(&[1, 3]).expect("shrink");
    a.resize(&[6, 3]).expect("grow");
    let got = a
        .with_view(|v| v.iter().copied().collect::<Vec<i32>>())
        .expect("view");
    assert_eq!(got, [vec![7, 7, 7], vec![0; 15]].concat());
    tm.abort();
    // the committed state is back after abort
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    let oid = c2
        .root()
        .expect("root")
        .get("a")
        .and_then(Value::ref_oid)
        .expect("ref");
    let b = ZBigArray::<i32>::open(&c2, &tm2, oid, opts()).expect("open");
    assert_eq!(b.shape(), &[6, 3]);
    let got = b
        .with_view(|v| v.iter().copied().collect::<Vec<i32>>())
        .expect("view");
    assert_eq!(got, [vec![7; 12], vec![1, 2, 3, 4, 5, 6]].concat());
    // F order appends along the last axis
    let f = ZBigArray::<u8>::create(&c2, &tm2, &[2, 2], Order::F, opts()).expect("create f");
    let cols = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![9u8, 8]).expect("cols");
    f.append(cols.view()).expect("append f");
    assert_eq!(f.shape(), &[2, 3]);
    assert_eq!(f.with_view(|v| (v[[0, 2]], v[[1, 2]])).expect("v"), (9, 8));
    // a wrong shape is refused
    let bad = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![0u8; 4]).expect("bad");
    assert!(f.append(bad.view()).is_err());
}

#[test]
fn stats_and_map_reduce_match_a_direct_computation() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let n = 3_000_000usize; // 24 MB over 12 blocks
    let a = ZBigArray::<f64>::create(&c, &tm, &[n], Order::C, opts()).expect("create");
    a.with_view_mut(|mut v| {
        v.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = ((i % 1000) as f64) - 250.0)
    })
    .expect("w");
    tm.commit().expect("commit");
    let st = a.stats().expect("stats");
    let direct: f64 = (0..n).map(|i| ((i % 1000) as f64) - 250.0).sum();
    assert_eq!(st.count, n as u64);
    assert!(
        (st.sum - direct).abs() < 1e-6 * direct.abs().max(1.0),
        "{} vs {direct}",
        st.sum
    );
    assert_eq!((st.min, st.max), (-250.0, 749.0));
    assert!((st.mean - direct / n as f64).abs() < 1e-9);
    let positives = a
        .map_reduce(
            1 << 16,
            |_, c| c.iter().filter(|x| **x > 0.0).count(),
            || 0,
            |x, y| x + y,
        )
        .expect("mr");
    assert_eq!(positives, (0..n).filter(|i| (i % 1000) > 250).count());
}

#[test]
fn python_written_test_arrays_open_here() {
    for (f, py2) in [
        ("formats/zbigarray_py3_pickle3", false),
        ("formats/zbigarray_py2_pickle2", true),
    ] {
        let js: serde_json::Value = serde_json::from_slice(
            &std::fs::read(testdata().join(format!("{f}.json"))).expect("json"),
        )
        .expect("parse");
        let fs = FileStorage::open_read_only(testdata().join(format!("{f}.fs"))).expect("open");
        let db = DB::new(std::sync::Arc::new(fs));
        let c = db.open_historical(storage::Tid::MAX).expect("conn");
        let mut n = 0;
        for t in js["transactions"].as_array().expect("txns") {
            for r in t["records"].as_array().expect("recs") {
                if r["class"] != "wendelin.bigarray.array_zodb.ZBigArray" {
                    continue;
                }
                let oid = r["oid"].as_str().and_then(Oid::from_hex).expect("oid");
                let st = open_untyped(&c, oid).expect("state");
                let d = &r["state_generic"]["tuple"][0]["dict"];
                let get = |k: &str| {
                    d.as_array()
                        .expect("items")
                        .iter()
                        .find(|p| p[0]["str"] == k || p[0]["py2str"] == k)
                        .map(|p| p[1].clone())
                        .expect(k)
                };
                let shape: Vec<usize> = get("_shape")["tuple"]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|x| x.as_u64().expect("dim") as usize)
                    .collect();
                assert_eq!(st.shape, shape, "{f} {oid}");
                let order = get("_order");
                let order = order["str"]
                    .as_str()
                    .or(order["py2str"].as_str())
                    .expect("order");
                assert_eq!(st.order == Order::F, order == "F");
                let build = &get("_dtype")["build_state"]["tuple"][1];
                let bo = build["str"]
                    .as_str()
                    .or(build["py2str"].as_str())
                    .expect("byteorder");
                let args = &get("_dtype")["args"]["tuple"][0];
                let ts = args["str"]
                    .as_str()
                    .or(args["py2str"].as_str())
                    .expect("typestr");
                assert_eq!(
                    st.dtype.str(),
                    bigarray::DType::parse(&format!("{bo}{ts}"))
                        .expect("dtype")
                        .str()
                );
                // every array's data reads (converted when big-endian)
                let vals = read_converted(&c, oid).expect("read");
                assert_eq!(vals.len(), st.len());
                n += 1;
            }
        }
        assert_eq!(n, 4, "{f} (py2: {py2})");
    }
}

#[test]
fn terabyte_arrays_cost_only_what_is_written() {
    let (d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let tib = 1u64 << 40;
    let n64 = (tib / 8) as usize;
    let n8 = (4 * tib) as usize;
    let a = ZBigArray::<f64>::create(&c, &tm, &[n64], Order::C, opts()).expect("1 TiB f64");
    let b = ZBigArray::<u8>::create(&c, &tm, &[n8], Order::C, opts()).expect("4 TiB u8");
    let picks64: Vec<usize> = (0..8)
        .map(|k| k * (n64 / 8) + 12345)
        .chain([n64 - 1])
        .collect();
    let picks8: Vec<usize> = (0..8).map(|k| k * (n8 / 8) + 777).chain([n8 - 1]).collect();
    a.with_view_mut(|mut v| picks64.iter().for_each(|&i| v[[i]] = i as f64))
        .expect("w");
    b.with_view_mut(|mut v| picks8.iter().for_each(|&i| v[[i]] = (i % 251) as u8 + 1))
        .expect("w");
    keep(&c, "a", a.oid());
    keep(&c, "b", b.oid());
    tm.commit().expect("commit");
    drop((a, b));
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    let oa = c2
        .root()
        .expect("root")
        .get("a")
        .and_then(Value::ref_oid)
        .expect("a");
    let ob = c2
        .root()
        .expect("root")
        .get("b")
        .and_then(Value::ref_oid)
        .expect("b");
    let a = ZBigArray::<f64>::open(&c2, &tm2, oa, opts()).expect("open a");
    let b = ZBigArray::<u8>::open(&c2, &tm2, ob, opts()).expect("open b");
    assert_eq!(a.shape(), &[n64]);
    a.with_view(|v| picks64.iter().for_each(|&i| assert_eq!(v[[i]], i as f64)))
        .expect("r");
    b.with_view(|v| {
        picks8
            .iter()
            .for_each(|&i| assert_eq!(v[[i]], (i % 251) as u8 + 1))
    })
    .expect("r");
    // untouched places read zero
    a.with_view(|v| assert_eq!(v[[n64 / 3]], 0.0)).expect("r");
    // disk: only the written blocks (trimmed), far below even one GiB
    let disk = std::fs::metadata(d.path().join("Data.fs"))
        .expect("stat")
        .len();
    assert!(disk < 64 << 20, "database is {disk} bytes");
    // memory: only the touched blocks are resident
    assert!(a.file().fileh_read().expect("fileh").resident_blocks() <= picks64.len() + 1);
}

#[test]
fn bool_arrays_are_numpy_b1() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let a = ZBigArray::<bigarray::B1>::create(&c, &tm, &[10], Order::C, opts()).expect("b1");
    assert_eq!(a.state().dtype.str(), "|b1");
    a.with_view_mut(|mut v| {
        v[[3]] = true.into();
        v[[7]] = true.into();
    })
    .expect("w");
    keep(&c, "b", a.oid());
    tm.commit().expect("commit");
    let st = a.stats().expect("stats");
    assert_eq!((st.count, st.sum), (10, 2.0));
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    let b = ZBigArray::<bigarray::B1>::open(&c2, &tm2, a.oid(), opts()).expect("open");
    assert_eq!(
        b.with_view(|v| v.iter().map(|x| x.get()).filter(|x| *x).count())
            .expect("v"),
        2
    );
    assert!(
        ZBigArray::<u8>::open(&c2, &tm2, a.oid(), opts()).is_err(),
        "b1 is not u1"
    );
}

#[test]
fn complex_arrays() {
    use num_complex::Complex;
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let a = ZBigArray::<Complex<f64>>::create(&c, &tm, &[4, 5], Order::F, opts()).expect("c16");
    assert_eq!(a.state().dtype.str(), "<c16");
    a.with_view_mut(|mut v| v[[2, 3]] = Complex::new(1.5, -2.0))
        .expect("w");
    keep(&c, "z", a.oid());
    tm.commit().expect("commit");
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    let b = ZBigArray::<Complex<f64>>::open(&c2, &tm2, a.oid(), opts()).expect("open");
    assert_eq!(
        b.with_view(|v| v[[2, 3]]).expect("v"),
        Complex::new(1.5, -2.0)
    );
    let f = ZBigArray::<Complex<f32>>::create(&c2, &tm2, &[3], Order::C, opts()).expect("c8");
    assert_eq!(f.state().dtype.str(), "<c8");
}

#[test]
fn a_scan_drops_what_it_loaded_and_keeps_the_working_set() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    // 2-D rows of 300 f8 (2400 bytes): chunks of rows straddle blocks.
    let (rows, cols) = (10_000usize, 300usize); // 24 MB over 12 blocks
    let a = ZBigArray::<f64>::create(&c, &tm, &[rows, cols], Order::C, opts()).expect("create");
    a.with_view_mut(|mut v| {
        v.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i % 977) as f64)
    })
    .expect("w");
    keep(&c, "A", a.oid());
    tm.commit().expect("commit");
    let oid = a.oid();
    drop(a);
    // A fresh handle: nothing resident; block 5 becomes the working set.
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).expect("c2");
    // A budget of 8 blocks (under virtmem's SCAN_MARGIN): a scan drops what it
    // leaves behind.
    let o = HandleOptions {
        virtmem: virtmem::Options {
            budget: Some(16 << 20),
            ..virtmem::Options::default()
        },
        ..opts()
    };
    let a = ZBigArray::<f64>::open(&c2, &tm2, oid, o).expect("open");
    let bs = a.file().blksize();
    let in_block5 = 5 * bs / 8 + 1;
    a.check_readable(in_block5..in_block5 + 1)
        .expect("touch block 5");
    let resident = || a.file().fileh_read().expect("h").resident_blocks();
    assert_eq!(resident(), 1);
    let n = rows * cols;
    let direct: f64 = (0..n).map(|i| (i % 977) as f64).sum();
    // Chunks of 1000 rows (2.4 MB): every chunk boundary is inside a block.
    let sum = a
        .map_reduce(1000, |_, v| v.sum(), || 0.0, |x, y| x + y)
        .expect("scan");
    assert_eq!(sum, direct);
    // The working set, and whatever the scan kept (nothing, with a budget
    // this small).
    let kept = resident();
    assert!((1..=8).contains(&kept), "resident after the scan: {kept}");
    let st = a.file().fileh_read().expect("h").stats();
    assert_eq!(
        st.loads, 12,
        "each block loaded once: a block shared by two chunks is dropped only after both"
    );
    assert_eq!(st.dropped_behind as usize, 12 - kept);
    assert_eq!(
        st.evictions, 0,
        "drop-behind kept the scan within the budget"
    );
    // Block 5, the working set, is still there.
    let before = st.loads;
    a.check_readable(in_block5..in_block5 + 1)
        .expect("touch block 5");
    assert_eq!(a.file().fileh_read().expect("h").stats().loads, before);
}

#[test]
fn stats_read_stored_blocks_in_place_and_this_transactions_changes_from_memory() {
    let (_d, db) = new_db();
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("c");
    let per_block = (2 << 20) / 8;
    let n = 6 * per_block + 1000; // 7 blocks, the last one partial
    for format in [ZBlkFormat::ZBlk0, ZBlkFormat::ZBlk1] {
        let o = HandleOptions { format, ..opts() };
        let a = ZBigArray::<f64>::create(&c, &tm, &[n], Order::C, o.clone()).expect("create");
        // Blocks 0, 1, 4 and 6 hold data; 2, 3 and 5 are holes.
        a.with_view_mut(|mut v| {
            for b in [0usize, 1, 4, 6] {
                let hi = ((b + 1) * per_block).min(n);
                for i in b * per_block..hi {
                    v[[i]] = (i % 1013) as f64 - 500.0;
                }
            }
        })
        .expect("w");
        keep(&c, "A", a.oid());
        tm.commit().expect("commit");
        let oid = a.oid();
        drop(a);
        let tm2 = TransactionManager::new();
        let c2 = db.open_connection(&tm2).expect("c2");
        let a = ZBigArray::<f64>::open(&c2, &tm2, oid, o).expect("open");
        let value = |i: usize| {
            if [0usize, 1, 4, 6].contains(&(i / per_block)) {
                (i % 1013) as f64 - 500.0
            } else {
                0.0
            }
        };
        let direct: f64 = (0..n).map(value).sum();
        let st = a.stats().expect("stats");
        assert_eq!(st.count, n as u64);
        assert!((st.sum - direct).abs() <= 1e-9 * direct.abs(), "{format:?}");
        assert_eq!((st.min, st.max), (-500.0, 512.0));
        if format == ZBlkFormat::ZBlk0 {
            assert_eq!(
                a.file().fileh_read().expect("h").resident_blocks(),
                0,
                "a scan of stored blocks leaves nothing resident"
            );
        }
        // An uncommitted change in block 4 and one in hole 3: the scan sees
        // this transaction's memory, not the stored blocks.
        a.with_view_mut(|mut v| {
            v[[4 * per_block + 7]] = 1e6;
            v[[3 * per_block]] = -1e6;
        })
        .expect("w2");
        let st = a.stats().expect("stats after change");
        let changed = direct - value(4 * per_block + 7) + 1e6 - 1e6;
        assert!(
            (st.sum - changed).abs() <= 1e-9 * changed.abs(),
            "{format:?}"
        );
        assert_eq!((st.min, st.max), (-1e6, 1e6));
        tm2.abort();
        let st = a.stats().expect("stats after abort");
        assert!((st.sum - direct).abs() <= 1e-9 * direct.abs());
        assert_eq!((st.min, st.max), (-500.0, 512.0));
    }
}
