//! Round trips with Python ZODB (pip `ZODB` in the test venv): Rust writes,
//! Python checks the file with ZODB's own `fstest` and loads every object;
//! Python writes (also on top of a Rust-written file), Rust reads.

mod common;

use std::sync::Arc;
use storage::pickle::{self, Dialect};
use storage::{FileStorage, Oid, Storage, Tid, TxnMeta, Value};

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

fn mapping(items: Vec<(Value, Value)>) -> Value {
    Value::Dict(vec![(s("data"), Value::Dict(items))])
}

fn commit(fs: &FileStorage, desc: &str, objs: Vec<(Oid, Tid, &str, &str, Value)>) -> Tid {
    let mut t = fs
        .tpc_begin(
            TxnMeta {
                user: b"rust".to_vec(),
                description: desc.as_bytes().to_vec(),
                extension: Vec::new(),
            },
            None,
        )
        .expect("begin");
    for (oid, serial, module, name, state) in objs {
        let rec = pickle::encode_record(module, name, &state, Dialect::Py3).expect("encode");
        t.store(oid, serial, rec).expect("store");
    }
    t.vote().expect("vote");
    t.finish().expect("finish")
}

const PY_CHECK_RUST_FILE: &str = r#"
import sys
from ZODB.scripts import fstest
from ZODB.FileStorage import FileStorage
from ZODB import DB
from persistent.mapping import PersistentMapping
from persistent.list import PersistentList
import transaction

path = sys.argv[1]
fstest.check(path)   # ZODB's own format checker: raises on any problem
db = DB(FileStorage(path, read_only=True))
conn = db.open()
root = conn.root()
assert root['bytes'] == b'\x00\xffraw', root['bytes']
assert root['int'] == 42 and root['neg'] == -7
assert root['big'] == 2**70 and root['negbig'] == -(2**65)
assert root['str'] == 'h\u00e9llo w\u00f6rld'
assert root['float'] == 1.5
assert root['tuple'] == (1, 'a', None, True, False)
assert root['list'] == [1, [2, 3], {'k': b'v'}]
assert root['version'] == 2, root['version']
child = root['child']
assert isinstance(child, PersistentMapping), type(child)
assert child['name'] == 'child'
nested = child['nested']
assert isinstance(nested, PersistentList), type(nested)
assert list(nested) == [1, 2, 3]
assert nested._p_oid == b'\x00' * 7 + b'\x02'
# history: the first revision of the root had version 1
hist = db.storage.history(b'\x00' * 8, size=10)
assert len(hist) == 3, hist
assert hist[0]['description'] == b'second' or hist[0]['description'] == 'second', hist[0]
db.close()

# append a Python transaction to the Rust-written file
db = DB(FileStorage(path))
conn = db.open()
root = conn.root()
root['from_python'] = 'yes'
root['child']['py'] = 3.25
transaction.get().note('python append')
transaction.commit()
db.close()
print("OK")
"#;

#[test]
fn rust_writes_python_checks_and_loads_then_appends() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path).expect("create");
    let root0 = fs.load(Oid::ROOT).expect("root").serial;
    let child = fs.new_oid().expect("oid");
    let nested = fs.new_oid().expect("oid");
    assert_eq!((child, nested), (Oid(1), Oid(2)));
    let root_state = |version: i64| {
        mapping(vec![
            (s("bytes"), Value::Bytes(b"\x00\xffraw".to_vec())),
            (s("int"), Value::Int(42)),
            (s("neg"), Value::Int(-7)),
            // 2**70 and -(2**65) as LONG1 payloads
            (s("big"), Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])),
            (
                s("negbig"),
                Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xfe]),
            ),
            (s("str"), s("héllo wörld")),
            (s("float"), Value::Float(1.5)),
            (
                s("tuple"),
                Value::Tuple(vec![
                    Value::Int(1),
                    s("a"),
                    Value::None,
                    Value::Bool(true),
                    Value::Bool(false),
                ]),
            ),
            (
                s("list"),
                Value::List(vec![
                    Value::Int(1),
                    Value::List(vec![Value::Int(2), Value::Int(3)]),
                    Value::Dict(vec![(s("k"), Value::Bytes(b"v".to_vec()))]),
                ]),
            ),
            (s("version"), Value::Int(version)),
            (
                s("child"),
                Value::persistent_ref(child, "persistent.mapping", "PersistentMapping"),
            ),
        ])
    };
    let t1 = commit(
        &fs,
        "first",
        vec![
            (
                Oid::ROOT,
                root0,
                "persistent.mapping",
                "PersistentMapping",
                root_state(1),
            ),
            (
                child,
                Tid::ZERO,
                "persistent.mapping",
                "PersistentMapping",
                mapping(vec![
                    (s("name"), s("child")),
                    (
                        s("nested"),
                        Value::persistent_ref(nested, "persistent.list", "PersistentList"),
                    ),
                ]),
            ),
            (
                nested,
                Tid::ZERO,
                "persistent.list",
                "PersistentList",
                Value::Dict(vec![(
                    s("data"),
                    Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
                )]),
            ),
        ],
    );
    commit(
        &fs,
        "second",
        vec![(
            Oid::ROOT,
            t1,
            "persistent.mapping",
            "PersistentMapping",
            root_state(2),
        )],
    );
    drop(fs);

    let out = common::run_python(
        dir.path(),
        PY_CHECK_RUST_FILE,
        &[path.to_str().expect("utf8 path")],
    );
    assert!(out.contains("OK"), "{out}");

    // Rust reads what Python appended.
    let fs = FileStorage::open_read_only(&path).expect("reopen");
    let root = fs.load(Oid::ROOT).expect("root");
    let (_, state) = pickle::decode_record(&root.data).expect("decode");
    let data = state.dict_get("data").expect("data");
    assert_eq!(data.dict_get("from_python"), Some(&s("yes")));
    assert_eq!(data.dict_get("version"), Some(&Value::Int(2)));
    let c = fs.load(child).expect("child");
    let (_, state) = pickle::decode_record(&c.data).expect("decode");
    assert_eq!(
        state.dict_get("data").and_then(|d| d.dict_get("py")),
        Some(&Value::Float(3.25))
    );
    let last = fs
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .last()
        .expect("txn")
        .expect("ok");
    assert_eq!(last.meta.description, b"python append");
}

const PY_WRITE: &str = r#"
import sys
from ZODB.FileStorage import FileStorage
from ZODB import DB
from persistent.mapping import PersistentMapping
from BTrees.LOBTree import LOBTree
import transaction

db = DB(FileStorage(sys.argv[1]))
conn = db.open()
root = conn.root()
root['text'] = 'caf\u00e9'
root['data'] = b'\x01\x02\x03' * 100
root['big'] = 12345678901234567890
root['nested'] = {'a': (1, 2.5, None), 'b': [True, False]}
m = PersistentMapping()
m['x'] = -1
root['child'] = m
t = LOBTree()
for i in range(100):
    t[i * 7] = i
root['tree'] = t
transaction.get().note('from python')
transaction.get().setUser('alice')
transaction.commit()
m['x'] = -2
transaction.commit()
print(conn.root()['child']._p_oid.hex(), db.lastTransaction().hex())
db.close()
"#;

#[test]
fn python_writes_rust_reads() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("py.fs");
    let out = common::run_python(dir.path(), PY_WRITE, &[path.to_str().expect("utf8")]);
    let mut words = out.split_whitespace();
    let child = words.next().and_then(Oid::from_hex).expect("child oid");
    let last = words.next().and_then(Tid::from_hex).expect("last tid");

    let fs = Arc::new(FileStorage::open_read_only(&path).expect("open"));
    assert_eq!(fs.last_tid(), last);
    let root = fs.load(Oid::ROOT).expect("root");
    assert_eq!(
        pickle::record_class(&root.data).expect("class"),
        "persistent.mapping.PersistentMapping"
    );
    let (_, state) = pickle::decode_record(&root.data).expect("decode");
    let d = state.dict_get("data").expect("data");
    assert_eq!(d.dict_get("text"), Some(&s("café")));
    assert_eq!(
        d.dict_get("data").and_then(Value::as_bytes),
        Some(b"\x01\x02\x03".repeat(100).as_slice())
    );
    // 12345678901234567890 = 0xab54a98ceb1f0ad2 (needs a 9th byte for the sign)
    assert_eq!(
        d.dict_get("big"),
        Some(&Value::BigInt(vec![
            0xd2, 0x0a, 0x1f, 0xeb, 0x8c, 0xa9, 0x54, 0xab, 0x00
        ]))
    );
    let nested = d.dict_get("nested").expect("nested");
    assert_eq!(
        nested.dict_get("a"),
        Some(&Value::Tuple(vec![
            Value::Int(1),
            Value::Float(2.5),
            Value::None
        ]))
    );
    assert_eq!(
        nested.dict_get("b"),
        Some(&Value::List(vec![Value::Bool(true), Value::Bool(false)]))
    );
    let cref = d.dict_get("child").expect("child ref");
    assert_eq!(cref.ref_oid(), Some(child));
    assert_eq!(
        cref.ref_class().as_deref(),
        Some("persistent.mapping.PersistentMapping")
    );
    let c = fs.load(child).expect("child");
    let (_, cs) = pickle::decode_record(&c.data).expect("decode");
    assert_eq!(
        cs.dict_get("data").and_then(|m| m.dict_get("x")),
        Some(&Value::Int(-2))
    );
    // the previous revision of the child as of the first commit
    let prev = fs
        .load_before(child, c.serial)
        .expect("lb")
        .expect("exists");
    let (_, ps) = pickle::decode_record(&prev.data).expect("decode");
    assert_eq!(
        ps.dict_get("data").and_then(|m| m.dict_get("x")),
        Some(&Value::Int(-1))
    );
    let tref = d.dict_get("tree").expect("tree");
    let tree = fs.load(tref.ref_oid().expect("oid")).expect("tree");
    assert_eq!(
        pickle::record_class(&tree.data).expect("class"),
        "BTrees.LOBTree.LOBTree"
    );
    let txns: Vec<_> = fs
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("txns");
    assert_eq!(txns.len(), 3);
    assert_eq!(txns[1].meta.user, b"/ alice"); // Zope-style "<path> <user>"
    assert_eq!(txns[1].meta.description, b"from python");
    // every record of the file decodes
    for t in &txns {
        for r in &t.records {
            let data = r.data.as_ref().expect("data");
            pickle::decode_record(data).expect("every record decodes");
        }
    }
}

const PY_HOLD_LOCK: &str = r#"
import sys, time
from ZODB.FileStorage import FileStorage
fs = FileStorage(sys.argv[1])          # a writable open takes Data.fs.lock
print("LOCKED", flush=True)
sys.stdin.readline()                   # hold it until told to go
fs.close()
print("CLOSED", flush=True)
"#;

/// Python ZODB holds the commit lock for as long as it has the file open for
/// writing: our commit waits and then fails with `Locked`; once Python closes,
/// it goes through. Both sides use BSD flock on `<name>.lock`.
#[test]
fn python_writer_lock_excludes_our_commits() {
    use std::io::{BufRead, BufReader, Write};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let opts = storage::filestorage::Options {
        lock_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let fs = FileStorage::open_with(&path, opts).expect("create");
    let script = dir.path().join("hold.py");
    std::fs::write(&script, PY_HOLD_LOCK).expect("script");
    let mut py = std::process::Command::new(common::python())
        .arg(&script)
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = BufReader::new(py.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "LOCKED");
    let e = fs
        .tpc_begin(TxnMeta::default(), None)
        .err()
        .expect("locked");
    assert!(matches!(e, storage::Error::Locked { .. }), "{e}");
    py.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "CLOSED");
    assert!(py.wait().expect("wait").success());
    let o = fs.new_oid().expect("oid");
    let mut t = fs
        .tpc_begin(TxnMeta::default(), None)
        .expect("begin after python closed");
    t.store(
        o,
        Tid::ZERO,
        pickle::encode_record("m", "C", &Value::None, Dialect::Py3).expect("enc"),
    )
    .expect("store");
    t.finish().expect("finish");
}

const PY_CHECK_TREES: &str = r#"
import sys
from ZODB.scripts import fstest
from ZODB.FileStorage import FileStorage
from ZODB import DB
from BTrees.check import check
from persistent.mapping import PersistentMapping

path = sys.argv[1]
fstest.check(path)
db = DB(FileStorage(path, read_only=True))
root = db.open().root()
lo = root['lo']
check(lo); lo._check()
assert len(lo) == 10000, len(lo)
for k in range(10000):
    key = k * 7 - 20000
    v = lo[key]
    if k % 100 == 0:
        assert isinstance(v, PersistentMapping) and v['k'] == key, (key, v)
    else:
        assert v == 'v%d' % key, (key, v)
oo = root['oo']
check(oo); oo._check()
assert len(oo) == 500
assert list(oo.keys()) == sorted('key%04d' % i for i in range(500))
assert all(oo['key%04d' % i] == i for i in range(500))
io = root['io']
check(io)
assert dict(io.items()) == {i * 3: b'x' * (i % 7) for i in range(0, 3000, 2)}
print("OK", lo.minKey(), lo.maxKey())
"#;

/// A BTree of 10 000 keys (with persistent values), an OOBTree and an
/// IOBTree written here are read by Python BTrees: every key and value, and
/// `BTrees.check` finds the structure valid; ZODB's fstest passes.
#[test]
fn rust_btrees_read_by_python() {
    use storage::btree::{BTree, IO, LO, OO};
    use storage::{DB, PersistentMapping, TransactionManager};
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let lo = BTree::create(&c, &LO).expect("lo");
    // insertion order scrambled so splits happen all over the tree
    let mut ks: Vec<i64> = (0..10_000).collect();
    ks.sort_by_key(|k| (k * 7919) % 10_007);
    for k in ks {
        let key = k * 7 - 20_000;
        let v = if k % 100 == 0 {
            let mut m = PersistentMapping::default();
            m.insert("k", Value::Int(key));
            let o = c.add(m).expect("add");
            c.ref_to(o).expect("ref")
        } else {
            s(&format!("v{key}"))
        };
        lo.insert(&c, Value::Int(key), v).expect("insert");
    }
    let oo = BTree::create(&c, &OO).expect("oo");
    for i in (0..500).rev() {
        oo.insert(&c, s(&format!("key{i:04}")), Value::Int(i))
            .expect("insert");
    }
    let io = BTree::create(&c, &IO).expect("io");
    for i in 0..3000 {
        io.insert(
            &c,
            Value::Int(i * 3),
            Value::Bytes(vec![b'x'; (i % 7) as usize]),
        )
        .expect("insert");
    }
    for i in (1..3000).step_by(2) {
        io.remove(&c, &Value::Int(i * 3)).expect("remove");
    }
    let refs: Vec<(String, Value)> = [("lo", lo.oid), ("oo", oo.oid), ("io", io.oid)]
        .iter()
        .map(|(n, o)| ((*n).to_owned(), c.ref_to(*o).expect("ref")))
        .collect();
    {
        let mut root = c.root_mut().expect("root");
        for (n, r) in refs {
            root.insert(&n, r);
        }
    }
    tm.commit().expect("commit");
    drop(c);
    let out = common::run_python(dir.path(), PY_CHECK_TREES, &[path.to_str().expect("utf8")]);
    assert!(out.contains("OK -20000 49993"), "{out}");
}

const PY_BUILD_TREES: &str = r#"
import sys, random
from ZODB.FileStorage import FileStorage
from ZODB import DB
from BTrees.LOBTree import LOBTree
from BTrees.IOBTree import IOBTree
from BTrees.OOBTree import OOBTree
import transaction
db = DB(FileStorage(sys.argv[1]))
root = db.open().root()
lo = LOBTree()
for k in range(100000):           # sequential: a 3-level tree
    lo[k * 2] = k
io = IOBTree()
rnd = random.Random(5)
for k in rnd.sample(range(-10**6, 10**6), 20000):
    io[k] = str(k)
oo = OOBTree()
for k in range(3000):
    oo['s%05d' % ((k * 7919) % 3000)] = b'%d' % k
root['lo'], root['io'], root['oo'] = lo, io, oo
transaction.commit()
# some deletions, committed separately
for k in range(0, 200000, 6):
    del lo[k]
transaction.commit()
print(len(lo), len(io), len(oo), sum(io.keys()))
db.close()
"#;

/// Trees built by Python BTrees (multi-level, random inserts, deletions) are
/// read here with every key and value.
#[test]
fn python_btrees_read_here() {
    use storage::btree::BTree;
    use storage::{DB, TransactionManager};
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("py.fs");
    let out = common::run_python(dir.path(), PY_BUILD_TREES, &[path.to_str().expect("utf8")]);
    let nums: Vec<i64> = out
        .split_whitespace()
        .map(|w| w.parse().expect("num"))
        .collect();
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let r = |n: &str| {
        c.root()
            .expect("root")
            .get(n)
            .and_then(Value::ref_oid)
            .expect("ref")
    };
    let (lo_oid, io_oid, oo_oid) = (r("lo"), r("io"), r("oo"));
    let lo = BTree::open(&c, lo_oid).expect("lo");
    let items = lo.items(&c).expect("items");
    assert_eq!(items.len() as i64, nums[0]);
    for (k, v) in &items {
        let k = k.as_int().expect("int key");
        assert!(k % 6 != 0, "deleted key {k} present");
        assert_eq!(v.as_int(), Some(k / 2));
    }
    assert_eq!(
        lo.get(&c, &Value::Int(8)).expect("get"),
        Some(Value::Int(4))
    );
    assert_eq!(lo.get(&c, &Value::Int(12)).expect("get"), None);
    let io = BTree::open(&c, io_oid).expect("io");
    let ii = io.items(&c).expect("items");
    assert_eq!(ii.len() as i64, nums[1]);
    assert_eq!(
        ii.iter().map(|(k, _)| k.as_int().expect("k")).sum::<i64>(),
        nums[3]
    );
    assert!(
        ii.iter()
            .all(|(k, v)| v.as_text() == Some(k.as_int().expect("k").to_string().as_str()))
    );
    let oo = BTree::open(&c, oo_oid).expect("oo");
    let oi = oo.items(&c).expect("items");
    assert_eq!(oi.len() as i64, nums[2]);
    assert!(oi.windows(2).all(|w| w[0].0.as_text() < w[1].0.as_text()));
    assert_eq!(
        oo.get(&c, &s("s00000"))
            .expect("get")
            .and_then(|v| v.as_bytes().map(<[u8]>::to_vec)),
        Some(b"0".to_vec())
    );
    // and we can change a Python-built tree; Python's structure check is in the other test
    lo.insert(&c, Value::Int(1), Value::Int(-1))
        .expect("insert");
    tm.commit().expect("commit");
}
