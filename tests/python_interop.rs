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
