//! ZBigFile interop with the real wendelin.core 0.13 (not the stand-ins), in
//! both directions, for ZBlk0, ZBlk1 and `auto`, through appends, a shrink
//! (discard) and a grow past holes, at every committed tid (time travel).
//!
//! Expected bytes always come from a model of what was written (a buffer the
//! writes are applied to), never from reading the file back with the reader
//! under test. Block formats are checked too: a format's blocks must be of
//! that class; `auto` must choose what wendelin.core's documented heuristic
//! (FORMATS.md §6.5) chooses for each write, spelled out per transaction.
//! wendelin.core 0.13 maps files with 2 MiB pages only, hence the block size.

use bigfile::reader::SnapshotFile;
use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat, ZBlkKind, create_file};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use storage::{DB, TransactionManager, Value};

const BS: usize = 2 << 20;

fn opts(format: ZBlkFormat) -> HandleOptions {
    HandleOptions {
        format,
        virtmem: virtmem::Options {
            reserve: 1 << 30,
            ..Default::default()
        },
        spill_threshold: None,
    }
}

/// The file at root["f"].
fn root_f(c: &storage::Connection) -> storage::Oid {
    c.root()
        .expect("root")
        .get("f")
        .and_then(Value::ref_oid)
        .expect("f")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One step of the Rust writer: writes (offset, bytes) or a discard.
enum Step {
    Write(usize, Vec<u8>),
    DiscardFrom(usize),
}

/// A transaction's steps and the `auto` kinds expected after it.
type Txn = (Vec<Step>, Option<Vec<(usize, &'static str)>>);

/// The transactions written here and, for `auto`, the kinds wendelin.core's
/// heuristic gives each block after that transaction (None: not checked).
fn rust_history() -> Vec<Txn> {
    use Step::*;
    vec![
        // block 0 filled (append of a new block, filled: ZBlk0); block 1 a
        // small append of a new block (ZBlk1)
        (
            vec![Write(0, pattern(1, BS)), Write(BS, pattern(2, 100))],
            Some(vec![(0, "ZBlk0"), (1, "ZBlk1")]),
        ),
        // block 1 grows a little (small append to the last block: ZBlk1)
        (
            vec![Write(BS + 100, pattern(3, 2000))],
            Some(vec![(0, "ZBlk0"), (1, "ZBlk1")]),
        ),
        // block 1 appended again and block 2 started: the new last block is
        // ZBlk1 and block 1, changed in the same transaction, migrates to ZBlk0
        (
            vec![
                Write(BS + 2100, pattern(4, 1000)),
                Write(2 * BS, pattern(5, 10)),
            ],
            Some(vec![(0, "ZBlk0"), (1, "ZBlk0"), (2, "ZBlk1")]),
        ),
        // a small change inside block 0 (not an append): ZBlk1
        (
            vec![Write(5000, pattern(6, 10))],
            Some(vec![(0, "ZBlk1"), (1, "ZBlk0"), (2, "ZBlk1")]),
        ),
        // a big overwrite of block 2 (not an append, not small): ZBlk0; hole 3, block 4
        (
            vec![
                Write(2 * BS, pattern(7, BS * 3 / 4)),
                Write(4 * BS + 7, pattern(8, 50)),
            ],
            None,
        ),
        // shrink: blocks 3.. discarded
        (vec![DiscardFrom(3)], None),
        // grow past holes 3, 4: block 5
        (vec![Write(5 * BS + 1000, pattern(9, 3000))], None),
    ]
}

const PY_READ_AT: &str = r#"
import sys, json, hashlib
from ZODB import DB
from ZODB.FileStorage import FileStorage
from wendelin.bigfile.file_zodb import ZBigFile
hist = json.load(open(sys.argv[2]))
db = DB(FileStorage(sys.argv[1], read_only=True))
bs = 2 * 1024 * 1024
out = []
for h in hist:
    conn = db.open(at=bytes.fromhex(h['tid']))
    f = conn.root()['f']
    assert type(f) is ZBigFile and f.blksize == bs
    keys = list(f.blktab.keys())
    nblk = keys[-1] + 1 if keys else 0
    assert nblk == len(h['blocks']), (h['tid'], nblk, len(h['blocks']))
    fh = f.fileh_open()
    vma = fh.mmap(0, max(nblk, 1))
    m = memoryview(vma)
    for blk, want in enumerate(h['blocks']):
        got = hashlib.sha256(bytes(m[blk*bs:(blk+1)*bs])).hexdigest()
        assert got == want, ('tid', h['tid'], 'block', blk)
    out.append({str(k): type(v).__name__ for k, v in f.blktab.items()})
    del m, vma, fh
    conn.close()
print(json.dumps(out))
"#;

/// Write [`rust_history`] in `format`; real wendelin.core reads every tid.
fn rust_written_reads_in_wendelin_core(format: ZBlkFormat, kind: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = create_file(&c, BS as u64).expect("file");
    let r = c.ref_to(f).expect("ref");
    c.root_mut().expect("root").insert("f", r);
    tm.commit().expect("commit");
    let fh = ZBigFileH::open(&c, &tm, f, opts(format)).expect("handle");
    let mut model: Vec<u8> = Vec::new();
    let mut hist = Vec::new();
    let mut want_kinds = Vec::new();
    for (steps, auto_kinds) in rust_history() {
        for s in steps {
            match s {
                Step::Write(off, data) => {
                    fh.write(off as u64, &data).expect("write");
                    let end = (off + data.len()).div_ceil(BS) * BS;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off..off + data.len()].copy_from_slice(&data);
                }
                Step::DiscardFrom(blk) => {
                    fh.discard_from(blk as u64).expect("discard");
                    model.truncate(blk * BS);
                }
            }
        }
        tm.commit().expect("commit");
        let blocks: Vec<String> = model.chunks(BS).map(sha).collect();
        hist.push(
            json!({"tid": hex::encode(db.storage().last_tid().to_bytes()), "blocks": blocks}),
        );
        want_kinds.push(auto_kinds);
    }
    drop(fh);
    let hf = dir.path().join("hist.json");
    std::fs::write(&hf, Json::from(hist).to_string()).expect("write");
    let Some(out) = testsupport::wendelin_core::run(
        dir.path(),
        PY_READ_AT,
        &[path.to_str().expect("utf8"), hf.to_str().expect("utf8")],
        "ZBlk0",
    ) else {
        return;
    };
    let kinds: Vec<BTreeMap<String, String>> = serde_json::from_str(out.trim()).expect("json");
    for (i, (got, want)) in kinds.iter().zip(&want_kinds).enumerate() {
        match (format, want) {
            (ZBlkFormat::Auto, Some(want)) => {
                let want: BTreeMap<String, String> = want
                    .iter()
                    .map(|(b, k)| (b.to_string(), k.to_string()))
                    .collect();
                assert_eq!(got, &want, "auto: block kinds after transaction {i}");
            }
            (ZBlkFormat::Auto, None) => {}
            _ => assert!(
                got.values().all(|k| k == kind),
                "{kind}: transaction {i} has {got:?}"
            ),
        }
    }
}

#[test]
fn zblk0_files_written_here_read_in_wendelin_core_at_every_tid() {
    rust_written_reads_in_wendelin_core(ZBlkFormat::ZBlk0, "ZBlk0");
}

#[test]
fn zblk1_files_written_here_read_in_wendelin_core_at_every_tid() {
    rust_written_reads_in_wendelin_core(ZBlkFormat::ZBlk1, "ZBlk1");
}

#[test]
fn auto_files_written_here_read_in_wendelin_core_with_its_formats() {
    rust_written_reads_in_wendelin_core(ZBlkFormat::Auto, "");
}

const PY_WRITE: &str = r#"
import sys, json, hashlib, transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage
from wendelin.bigfile.file_zodb import ZBigFile
bs = 2 * 1024 * 1024
db = DB(FileStorage(sys.argv[1]))
conn = db.open()
f = conn.root()['f'] = ZBigFile(bs)
transaction.commit()
fh = f.fileh_open()
vma = fh.mmap(0, 8)
m = memoryview(vma)
model = bytearray(8 * bs)
hist = []
def pat(seed, n):
    return bytes(((i * 31 + seed) % 256) | 1 for i in range(n))
def w(off, data):
    m[off:off+len(data)] = data
    model[off:off+len(data)] = data
def commit():
    transaction.commit()
    keys = list(f.blktab.keys())
    nblk = keys[-1] + 1 if keys else 0
    hist.append({'tid': db.lastTransaction().hex(),
                 'blocks': [hashlib.sha256(bytes(model[b*bs:(b+1)*bs])).hexdigest() for b in range(nblk)],
                 'kinds': sorted(set(type(z).__name__ for z in f.blktab.values()))})
w(0, pat(1, 5000)); w(bs + 100, pat(2, 70000)); w(3 * bs + 40000, pat(3, 20000))
commit()
w(4 * bs, pat(4, 300)); w(bs + 50, b'x' * 10); w(5000, pat(5, bs - 5000))
commit()
w(3 * bs + 45000, bytes(10000)); w(4 * bs + 300, pat(6, 9000))
commit()
w(6 * bs + 1, pat(7, 4097))
commit()
print(json.dumps(hist))
"#;

/// Real wendelin.core writes in `fmt`; every tid reads here byte for byte.
fn wendelin_core_written_reads_here(fmt: &str, kind: ZBlkKind) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("wc.fs");
    let Some(out) =
        testsupport::wendelin_core::run(dir.path(), PY_WRITE, &[path.to_str().expect("utf8")], fmt)
    else {
        return;
    };
    let hist: Vec<Json> = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(hist.len(), 4);
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    for h in &hist {
        assert_eq!(h["kinds"], json!([fmt]), "wendelin.core wrote {fmt}");
        let tid = storage::Tid::from_hex(h["tid"].as_str().expect("tid")).expect("tid hex");
        let c = db.open_historical(tid).expect("historical");
        let f = root_f(&c);
        let fh = ZBigFileH::open_read_only(&c, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
        let blocks = h["blocks"].as_array().expect("blocks");
        assert_eq!(fh.size().expect("size"), (blocks.len() * BS) as u64);
        for (b, want) in blocks.iter().enumerate() {
            let got = fh.read((b * BS) as u64, BS).expect("read");
            assert_eq!(
                Some(sha(&got).as_str()),
                want.as_str(),
                "tid {tid} block {b}"
            );
        }
        let sf = SnapshotFile::open(db.storage().as_ref(), tid, f).expect("snapshot");
        for (_, o) in sf.blocks().expect("blocks") {
            assert_eq!(sf.zblk_kind(o).expect("kind"), kind);
        }
    }
    // and the head takes a change made here, which wendelin.core then reads
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = root_f(&c);
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk1)).expect("fh");
    fh.write(BS as u64 + 60, b"rust was here").expect("w");
    tm.commit().expect("commit");
    drop(fh);
    let check = r#"
import sys
from ZODB import DB
from ZODB.FileStorage import FileStorage
f = DB(FileStorage(sys.argv[1], read_only=True)).open().root()['f']
m = memoryview(f.fileh_open().mmap(0, 2))
bs = 2 * 1024 * 1024
assert bytes(m[bs + 50:bs + 60]) == b'x' * 10
assert bytes(m[bs + 60:bs + 73]) == b'rust was here'
print(type(f.blktab[1]).__name__)
"#;
    let out =
        testsupport::wendelin_core::run(dir.path(), check, &[path.to_str().expect("utf8")], fmt)
            .expect("ran before");
    assert_eq!(out.trim(), "ZBlk1");
}

#[test]
fn zblk0_files_written_by_wendelin_core_read_here_at_every_tid() {
    wendelin_core_written_reads_here("ZBlk0", ZBlkKind::ZBlk0);
}

#[test]
fn zblk1_files_written_by_wendelin_core_read_here_at_every_tid() {
    wendelin_core_written_reads_here("ZBlk1", ZBlkKind::ZBlk1);
}

const PY_WRITE_BLOCK: &str = r#"
import sys, transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage
db = DB(FileStorage(sys.argv[1]))
f = db.open().root()['f']
m = memoryview(f.fileh_open().mmap(0, 4))
blk = int(sys.argv[2])
m[blk * 2097152 + 7:blk * 2097152 + 7 + len(sys.argv[3])] = sys.argv[3].encode()
transaction.commit()
db.close()
print("OK")
"#;

/// A Rust writer and a real wendelin.core writer on one database: while a
/// Rust transaction holds block 1 dirty, wendelin.core commits block 2:
/// both commits stand. On the same block, exactly the later committer gets
/// a conflict. The blocks exist beforehand: a Rust transaction that creates
/// objects while another process commits new objects conflicts on the new
/// oids ("object created concurrently": each process allocates from the
/// file's last oid), so bucket resolution is not what this shows.
#[test]
fn rust_and_wendelin_core_writers_share_one_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("Data.fs");
    let p = path.to_str().expect("utf8");
    let db = DB::open(p).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let f = create_file(&c, BS as u64).expect("file");
    let r = c.ref_to(f).expect("ref");
    c.root_mut().expect("root").insert("f", r);
    tm.commit().expect("commit");
    let fh = ZBigFileH::open(&c, &tm, f, opts(ZBlkFormat::ZBlk0)).expect("fh");
    for b in 0..4 {
        fh.write((b * BS) as u64, b"base").expect("w");
    }
    tm.commit().expect("commit");
    // different blocks at once
    fh.write(BS as u64 + 7, b"rust").expect("w");
    let py = |blk: &str, text: &str| {
        testsupport::wendelin_core::run(dir.path(), PY_WRITE_BLOCK, &[p, blk, text], "ZBlk0")
    };
    if py("2", "python").is_none() {
        return;
    }
    tm.commit().expect("different blocks: no conflict");
    assert_eq!(fh.read(BS as u64 + 7, 4).expect("r"), b"rust");
    assert_eq!(fh.read(2 * BS as u64 + 7, 6).expect("r"), b"python");
    // the same block at once: the later commit conflicts, the earlier stands
    fh.write(3 * BS as u64 + 7, b"rust again").expect("w");
    py("3", "python again").expect("ran before");
    let e = tm.commit().expect_err("same block: a conflict");
    assert!(e.is_conflict(), "{e}");
    tm.abort();
    assert_eq!(fh.read(3 * BS as u64 + 7, 12).expect("r"), b"python again");
    assert_eq!(fh.read(BS as u64 + 7, 4).expect("r"), b"rust");
}
