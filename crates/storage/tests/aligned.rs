//! Large byte payloads stored through `Connection::store_bytes_now` land
//! at page-aligned offsets of Data.fs (so readers can map them in place),
//! small ones are not padded, and every read returns the exact payload.

use parking_lot::Mutex;
use storage::pickle::{self, Dialect};
use storage::{
    ALIGNED_PAYLOAD_MIN, CommitPhase, Connection, DB, DataManager, FileStorage, Oid, PAYLOAD_ALIGN,
    SortKey, Storage, Tid, TransactionManager, TxnMeta, Value,
};

const MODULE: &str = "wendelin.bigfile.file_zodb";

/// Stores byte objects through a connection in the commit phase, as a
/// ZBigFile handle does.
struct Blocks {
    conn: Connection,
    todo: Mutex<Vec<(Oid, Tid, Vec<u8>)>>,
}

impl DataManager for Blocks {
    fn sort_key(&self) -> SortKey {
        SortKey {
            phase: CommitPhase::BeforeConnection,
            id: "blocks".into(),
        }
    }
    fn abort(&self, _: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }
    fn tpc_begin(&self, _: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }
    fn commit(&self, _: &TxnMeta) -> storage::Result<()> {
        for (oid, serial, data) in self.todo.lock().drain(..) {
            let name = if data.len() >= ALIGNED_PAYLOAD_MIN {
                "ZBlk0"
            } else {
                "ZData"
            };
            self.conn
                .store_bytes_now(oid, serial, MODULE, name, &data)?;
        }
        Ok(())
    }
    fn tpc_vote(&self, _: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }
    fn tpc_finish(&self, _: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }
    fn tpc_abort(&self, _: &TxnMeta) {}
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8 + 1).collect()
}

/// Class of the byte object stored for `data`.
fn class_for(data: &[u8]) -> &'static str {
    if data.len() >= ALIGNED_PAYLOAD_MIN {
        "ZBlk0"
    } else {
        "ZData"
    }
}

/// Revisions written: (oid, tid, payload).
type Written = Vec<(Oid, Tid, Vec<u8>)>;

/// Write byte objects of varied sizes (large and small, new ones and new
/// revisions) in 24 transactions after root changes of varied sizes, into
/// `dir/Data.fs`.
fn write_history(dir: &std::path::Path) -> (std::path::PathBuf, Written) {
    let path = dir.join("Data.fs");
    let db = DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let blocks = std::sync::Arc::new(Blocks {
        conn: c.clone(),
        todo: Mutex::new(Vec::new()),
    });
    let sizes = [
        ALIGNED_PAYLOAD_MIN,
        ALIGNED_PAYLOAD_MIN - 1,
        100,
        4096,
        2 << 20,
        ALIGNED_PAYLOAD_MIN + 1,
        (1 << 20) + 4093,
        3000,
    ];
    // (oid, tid, payload) of every revision written.
    let mut written: Vec<(Oid, Tid, Vec<u8>)> = Vec::new();
    let mut serials: Vec<(Oid, Tid)> = Vec::new();
    for t in 0..24usize {
        // A root change of varied size shifts every later record.
        c.root_mut()
            .expect("root")
            .insert("x", Value::Bytes(vec![1; 1 + t * 613]));
        let mut todo = Vec::new();
        for k in 0..1 + t % 3 {
            let len = sizes[(t * 3 + k) % sizes.len()];
            let data = payload(len, t * 10 + k);
            // Every third transaction rewrites an earlier object (a
            // revision with a `prev`), the rest make new ones.
            let (oid, serial) = match serials.get(t / 3).copied() {
                Some(s) if k == 0 && t % 3 == 2 => s,
                _ => (db.storage().new_oid().expect("oid"), Tid::ZERO),
            };
            todo.push((oid, serial, data));
        }
        *blocks.todo.lock() = todo.clone();
        c.join_transaction().expect("join");
        tm.join(blocks.clone());
        tm.commit().expect("commit");
        let tid = tm.last_committed().expect("tid");
        for (oid, _, data) in todo {
            match serials.iter_mut().find(|s| s.0 == oid) {
                Some(s) => s.1 = tid,
                None => serials.push((oid, tid)),
            }
            written.push((oid, tid, data));
        }
    }
    drop(c);
    drop(db);
    (path, written)
}

#[test]
fn large_payloads_are_page_aligned_small_ones_unpadded() {
    let dir = tempfile::tempdir().expect("tmp");
    let (path, written) = write_history(dir.path());
    let fs = FileStorage::open_read_only(&path).expect("fs");
    let (mut aligned, mut plain) = (0, 0);
    for (oid, tid, data) in &written {
        let before = tid.successor();
        let loaded = fs.load_before(*oid, before).expect("load").expect("exists");
        assert_eq!(loaded.serial, *tid);
        let (_, state) = pickle::decode_record(&loaded.data).expect("decode");
        assert_eq!(state, Value::Bytes(data.clone()), "{oid:?} decoded");
        let (layout, fast) = pickle::bytes_state(&loaded.data).expect("plain");
        assert_eq!(fast, &data[..], "{oid:?} fast path");
        let head = &loaded.data[..pickle::BYTES_STATE_HEAD.min(loaded.data.len())];
        assert_eq!(pickle::bytes_state_layout(head), Some(layout.clone()));
        let mapped = fs.map_before(*oid, before).expect("map").expect("lent");
        assert_eq!(mapped.data(), &loaded.data[..]);
        let (file, rec_at) = mapped.file_range().expect("a file");
        let payload_at = rec_at + layout.offset as u64;
        let mut first = [0u8; 16];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut first, payload_at).expect("pread");
        assert_eq!(first, data[..16], "file_range points at the record");
        let unpadded = {
            let (h, t) = pickle::encode_bytes_record_parts(
                MODULE,
                if data.len() >= ALIGNED_PAYLOAD_MIN {
                    "ZBlk0"
                } else {
                    "ZData"
                },
                data.len(),
                Dialect::Py3,
            )
            .expect("parts");
            [h.as_slice(), data, t].concat()
        };
        if data.len() >= ALIGNED_PAYLOAD_MIN {
            assert_eq!(payload_at % PAYLOAD_ALIGN, 0, "{oid:?} at {payload_at}");
            assert!(loaded.data.len() - unpadded.len() <= pickle::MAX_PADDING);
            aligned += 1;
        } else {
            assert_eq!(
                loaded.data, unpadded,
                "{oid:?}: small records are not padded"
            );
            plain += 1;
        }
    }
    assert!(
        aligned >= 15 && plain >= 10,
        "{aligned} aligned, {plain} plain"
    );
}

const PY_LOAD: &str = r#"
import sys, json, hashlib
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.scripts import fstest
from ZODB.serialize import referencesf
from wendelin.bigfile.file_zodb import ZBlk0, ZData
path, want = sys.argv[1], json.load(open(sys.argv[2]))
fstest.check(path)
db = DB(FileStorage(path, read_only=True))
for w in want:
    oid, tid = bytes.fromhex(w['oid']), bytes.fromhex(w['tid'])
    data = db.storage.loadSerial(oid, tid)
    assert referencesf(data) == [], w
    conn = db.open(at=tid)
    o = conn.get(oid)
    o._p_activate()
    got = o.blkdata if w['class'] == 'ZBlk0' else o.data
    assert type(o).__name__ == w['class'], (w, type(o))
    assert len(got) == w['len'] and hashlib.sha256(got).hexdigest() == w['sha'], w
    conn.close()
print(len(want))
"#;

/// Python ZODB (with the stand-in classes) loads every revision, padded or
/// not, as exactly the payload written; its checker accepts the file and
/// its reference finder sees no references in a padded record.
#[test]
fn python_zodb_loads_padded_records_exactly() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().expect("tmp");
    let (path, written) = write_history(dir.path());
    let want: Vec<serde_json::Value> = written
        .iter()
        .map(|(oid, tid, data)| {
            serde_json::json!({
                "oid": hex::encode(oid.to_bytes()),
                "tid": hex::encode(tid.to_bytes()),
                "class": class_for(data),
                "len": data.len(),
                "sha": hex::encode(Sha256::digest(data)),
            })
        })
        .collect();
    let wf = dir.path().join("want.json");
    std::fs::write(&wf, serde_json::Value::from(want).to_string()).expect("write");
    let out = testsupport::python::run_python_with(
        dir.path(),
        PY_LOAD,
        &[path.to_str().expect("utf8"), wf.to_str().expect("utf8")],
        &[testsupport::standins::FILE_ZODB],
    );
    assert_eq!(out.trim(), written.len().to_string());
}
