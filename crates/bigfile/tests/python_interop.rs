//! ZBigFiles written here are read by Python ZODB with pure-Python stand-ins
//! of wendelin's classes (same module and class names, same states), block by
//! block; files written by Python with those stand-ins are read here.

use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat, create_file};
use sha2::{Digest, Sha256};
use std::path::Path;
use storage::{DB, TransactionManager, Value};

const BS: u64 = 64 * 1024;

fn run_python(dir: &Path, script: &str, args: &[&str]) -> String {
    testsupport::python::run_python_with(dir, script, args, &[testsupport::standins::FILE_ZODB])
}

const PY_READ: &str = r#"
import sys, json, hashlib
from ZODB.FileStorage import FileStorage
from ZODB import DB
from ZODB.scripts import fstest
from wendelin.bigfile.file_zodb import read_block, ZBlk0, ZBlk1
path, want = sys.argv[1], json.load(open(sys.argv[2]))
fstest.check(path)
db = DB(FileStorage(path, read_only=True))
f = db.open().root()['f']
assert f.blksize == want['blksize']
kinds = {}
for blk, sha in enumerate(want['blocks']):
    d = read_block(f, blk)
    assert hashlib.sha256(d).hexdigest() == sha, blk
    z = f.blktab.get(blk)
    kinds[blk] = None if z is None else type(z).__name__
print(json.dumps(kinds))
"#;

#[test]
fn rust_written_file_reads_in_python() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = create_file(&c, BS).expect("file");
    let r = c.ref_to(f).expect("ref");
    c.root_mut().expect("root").insert("f", r);
    tm.commit().expect("commit");
    let h = |format| {
        ZBigFileH::open(
            &c,
            &tm,
            f,
            HandleOptions {
                format,
                virtmem: virtmem::Options {
                    reserve: 1 << 30,
                    ..Default::default()
                },
                spill_threshold: None,
            },
        )
        .expect("handle")
    };
    let (h0, h1, ha) = (
        h(ZBlkFormat::ZBlk0),
        h(ZBlkFormat::ZBlk1),
        h(ZBlkFormat::Auto),
    );
    let data: Vec<u8> = (0..BS as usize).map(|i| (i % 251) as u8).collect();
    // the model: every write is applied to it too; Python checks these bytes
    let mut model = vec![0u8; 7 * BS as usize];
    let mut put = |h: &ZBigFileH, off: u64, bytes: &[u8]| {
        h.write(off, bytes).expect("w");
        model[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
    };
    // txn 1: ZBlk0 blocks 0, 1; ZBlk1 block 3 (sparse chunks); holes 2, 4
    put(&h0, 0, &data);
    put(&h0, BS + 10, b"block one");
    put(&h1, 3 * BS + 5000, b"chunk two");
    put(&h1, 3 * BS + 40_000, &data[..9000]);
    tm.commit().expect("commit 1");
    // txn 2: auto writes blocks 5, 6; change one ZBlk1 chunk
    put(&ha, 5 * BS, b"appended");
    put(&ha, 6 * BS + 1, &data[..100]);
    put(&h1, 3 * BS + 5000, b"CHUNK");
    tm.commit().expect("commit 2");
    // txn 3: block 1 rewritten as ZBlk1 (format change)
    put(&h1, BS + 20, b"again");
    tm.commit().expect("commit 3");
    let size = h0.size().expect("size");
    assert_eq!(size, 7 * BS);
    let blocks: Vec<String> = model
        .chunks(BS as usize)
        .map(|b| hex::encode(Sha256::digest(b)))
        .collect();
    let want = serde_json::json!({"blksize": BS, "blocks": blocks});
    let wf = dir.path().join("want.json");
    std::fs::write(&wf, want.to_string()).expect("write");
    drop((h0, h1, ha));
    let out = run_python(
        dir.path(),
        PY_READ,
        &[path.to_str().expect("utf8"), wf.to_str().expect("utf8")],
    );
    let kinds: serde_json::Value = serde_json::from_str(out.trim()).expect("kinds json");
    assert_eq!(kinds["0"], "ZBlk0");
    assert_eq!(kinds["1"], "ZBlk1", "format changed to ZBlk1");
    assert_eq!(kinds["2"], serde_json::Value::Null);
    assert_eq!(kinds["3"], "ZBlk1");
    assert_eq!(kinds["4"], serde_json::Value::Null);
    // auto (FORMATS.md §6.5): block 5 is no append (the last block was 3)
    // and small: ZBlk1; block 6 appends a new block after 5, small: ZBlk1.
    // Block 5 does not migrate: it is new in this transaction (in Python a
    // ZBlk without a jar never reads as `_p_changed`)
    assert_eq!(kinds["5"], "ZBlk1", "auto: small change");
    assert_eq!(kinds["6"], "ZBlk1", "auto: small append of a new block");
}

const PY_WRITE: &str = r#"
import sys, json, hashlib
from ZODB.FileStorage import FileStorage
from ZODB import DB
import transaction
from BTrees.IOBTree import IOBTree
from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0, ZBlk1, ZData, read_block
bs = 65536
db = DB(FileStorage(sys.argv[1]))
root = db.open().root()
f = ZBigFile(bs)
root['f'] = f
def put0(blk, data):
    z = ZBlk0(); z.blkdata = data.rstrip(b'\0'); f.blktab[blk] = z
def put1(blk, data):
    z = ZBlk1(); z.chunktab = IOBTree()
    for off in range(0, bs, 4096):
        c = data[off:off+4096].rstrip(b'\0')
        if c:
            zd = ZData(); zd.data = c; z.chunktab[off] = zd
    f.blktab[blk] = z
pat = bytes(i % 253 for i in range(bs))
put0(0, pat)
put1(2, pat[:30000] + b'\0' * (bs - 30000))
transaction.commit()
put0(5, b'five' + b'\0' * (bs - 4))
put1(2, pat[:30000] + b'Z' * 10 + b'\0' * (bs - 30010))
transaction.commit()
print(json.dumps([hashlib.sha256(read_block(f, b)).hexdigest() for b in range(6)]))
db.close()
"#;

#[test]
fn python_written_file_reads_here() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("py.fs");
    let out = run_python(dir.path(), PY_WRITE, &[path.to_str().expect("utf8")]);
    let shas: Vec<String> = serde_json::from_str(out.trim()).expect("json");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = c
        .root()
        .expect("root")
        .get("f")
        .and_then(Value::ref_oid)
        .expect("f");
    let fh = ZBigFileH::open(
        &c,
        &tm,
        f,
        HandleOptions {
            format: ZBlkFormat::ZBlk0,
            virtmem: virtmem::Options {
                reserve: 1 << 30,
                ..Default::default()
            },
            spill_threshold: None,
        },
    )
    .expect("fh");
    assert_eq!(fh.size().expect("size"), 6 * BS);
    for (b, sha) in shas.iter().enumerate() {
        let got = fh.read(b as u64 * BS, BS as usize).expect("read");
        assert_eq!(&hex::encode(Sha256::digest(&got)), sha, "block {b}");
    }
    // and a change made here on the Python-written file commits
    fh.write(2 * BS, b"rust").expect("w");
    tm.commit().expect("commit");
}
