//! Pack against Python ZODB's own pack: copies of the same databases are
//! packed by both at every transaction's tid (and before the first, and
//! now); the files must hold the same transactions with the same (oid,
//! serial) records and the same data. ZODB's fstest must pass on ours and
//! Python must load every object of it. Plus the CLI (`pack`, `log`, `rm`)
//! and a crash test: SIGKILL at random points of a pack while this process
//! commits.

mod common;

use common::{run_python, testdata};
use std::path::{Path, PathBuf};
use std::process::Command;
use storage::{FileStorage, Oid, Storage, Tid, TxnMeta, Value, pickle};

fn wendelin(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_wendelin"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run wendelin");
    assert!(
        o.status.success(),
        "wendelin {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Everything a file says, record by record: (tid, status, user,
/// description, extension, [(oid, serial, data)]).
type Dump = Vec<(
    Tid,
    u8,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<(Oid, Tid, Option<Vec<u8>>)>,
)>;

fn dump(path: &Path) -> Dump {
    let fs = FileStorage::open_read_only(path).expect("open");
    fs.raw_transactions()
        .map(|t| {
            let t = t.expect("txn");
            let recs = t
                .records
                .iter()
                .map(|r| {
                    (
                        r.header.oid,
                        r.header.tid,
                        fs.raw_record_data(&r.header).expect("data"),
                    )
                })
                .collect();
            (
                t.header.tid,
                t.header.status,
                t.meta.user,
                t.meta.description,
                t.meta.extension,
                recs,
            )
        })
        .collect()
}

const PY_PACK: &str = r#"
import sys
import ZODB.FileStorage.FileStorage
M = sys.modules['ZODB.FileStorage.FileStorage']
from ZODB.serialize import referencesf
path, stop = sys.argv[1], bytes.fromhex(sys.argv[2])
class TS:
    # FileStorage.pack turns a float time into a TimeStamp; give it our tid.
    def __init__(self, *a): pass
    def raw(self): return stop
fs = M.FileStorage(path)
M.TimeStamp = TS
fs.pack(0, referencesf)
fs.close()
"#;

const PY_CHECK: &str = r#"
import sys
from ZODB.scripts import fstest
from ZODB.FileStorage import FileStorage
for path in sys.argv[1:]:
    fstest.check(path)
    fs = FileStorage(path, read_only=True)
    n = 0
    for oid in list(fs._index.keys()):
        try:
            fs.load(oid)
            n += 1
        except Exception as e:  # a deleted object: POSKeyError
            if type(e).__name__ != 'POSKeyError':
                raise
    # and every historical revision through the iterator
    for t in fs.iterator():
        for r in t:
            pass
    fs.close()
print("ok")
"#;

/// Pack copies of `src` with Rust and with Python at every interesting
/// time; compare. Returns the number of pack times compared.
fn compare_with_zodb(src: &Path, dir: &Path) -> usize {
    let tids: Vec<Tid> = dump(src).iter().map(|t| t.0).collect();
    let mut times: Vec<Tid> = vec![Tid(tids[0].0 - 1)];
    for w in tids.windows(2) {
        times.push(w[0]);
        times.push(Tid(w[1].0 - 1)); // between two transactions
    }
    times.extend(tids.last().copied());
    times.push(Tid::now_after(Tid::ZERO));
    times.dedup();
    let mut ours_all = Vec::new();
    for (i, &at) in times.iter().enumerate() {
        let ours = dir.join(format!("ours{i}.fs"));
        let theirs = dir.join(format!("theirs{i}.fs"));
        std::fs::copy(src, &ours).expect("copy");
        std::fs::copy(src, &theirs).expect("copy");
        let st = FileStorage::open(&ours)
            .expect("open")
            .pack(at, |_, _| {})
            .expect("pack");
        run_python(
            dir,
            PY_PACK,
            &[theirs.to_str().expect("utf8"), &at.to_string()],
        );
        let (a, b) = (dump(&ours), dump(&theirs));
        assert_eq!(
            a,
            b,
            "{}: pack at {at}: our records differ from ZODB's",
            src.display()
        );
        let same_bytes =
            std::fs::read(&ours).expect("read") == std::fs::read(&theirs).expect("read");
        assert!(
            same_bytes,
            "{}: pack at {at}: same records, different bytes",
            src.display()
        );
        assert_eq!(st.size_after, std::fs::metadata(&ours).expect("stat").len());
        ours_all.push(ours);
    }
    let args: Vec<&str> = ours_all.iter().map(|p| p.to_str().expect("utf8")).collect();
    assert_eq!(run_python(dir, PY_CHECK, &args).trim(), "ok");
    times.len()
}

#[test]
fn pack_matches_zodb_on_testdata() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = 0;
    for f in [
        "formats/history.fs",
        "formats/history_packed.fs",
        "formats/tiny.fs",
        "formats/refs.fs",
        "formats/zbigarray_py3_pickle3.fs",
        "zblk/py3_pickle3/zblk.fs",
    ] {
        let sub = dir.path().join(f.replace('/', "_"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        n += compare_with_zodb(&testdata().join(f), &sub);
    }
    assert!(n > 30, "{n} pack times");
}

/// A database with BTrees (Python), ZBlk0 and ZBlk1 arrays, a replaced
/// array, a removed one, edits and an undo-free history of deletions.
fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("built.fs");
    let d = dir.to_str().expect("utf8");
    run_python(
        dir,
        &format!(
            r#"
import numpy as np, transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage
from BTrees.OOBTree import OOBTree
from BTrees.IOBTree import IOBTree
from persistent.mapping import PersistentMapping
db = DB(FileStorage(r'{d}/built.fs'))
c = db.open(); root = c.root()
t = OOBTree()
for i in range(2000): t['k%05d' % i] = PersistentMapping({{'i': i}})
root['tree'] = t; transaction.commit()
for i in range(0, 2000, 3): del t['k%05d' % i]
transaction.commit()
root['ints'] = IOBTree({{i: str(i) for i in range(500)}}); transaction.commit()
del root['ints']; transaction.commit()
db.close()
np.save(r'{d}/a.npy', np.arange(600000, dtype='<f8'))
np.save(r'{d}/b.npy', np.arange(300000, dtype='<i4') * 3)
np.save(r'{d}/c.npy', np.ones(500000, dtype='<f8'))
"#
        ),
        &[],
    );
    let p = db.to_str().expect("utf8");
    let npy = |n: &str| dir.join(n).to_str().expect("utf8").to_owned();
    wendelin(
        &["import", p, "a", &npy("a.npy")],
        &[("WENDELIN_CORE_ZBLK_FMT", "ZBlk0")],
    );
    wendelin(
        &["import", p, "b", &npy("b.npy")],
        &[("WENDELIN_CORE_ZBLK_FMT", "ZBlk1")],
    );
    wendelin(&["import", p, "c", &npy("c.npy")], &[]);
    wendelin(&["import", p, "c", &npy("a.npy"), "--replace"], &[]);
    wendelin(
        &["import", p, "b", &npy("b.npy"), "--replace"],
        &[("WENDELIN_CORE_ZBLK_FMT", "ZBlk1")],
    );
    wendelin(&["rm", p, "a"], &[]);
    db
}

#[test]
fn pack_matches_zodb_on_btrees_and_arrays() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = build_db(dir.path());
    let sub = dir.path().join("cmp");
    std::fs::create_dir_all(&sub).expect("mkdir");
    compare_with_zodb(&db, &sub);
}

#[test]
fn cli_pack_log_rm() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = build_db(dir.path());
    let p = db.to_str().expect("utf8");
    let log: serde_json::Value =
        serde_json::from_str(&wendelin(&["log", p, "--json"], &[])).expect("json");
    let log = log.as_array().expect("array");
    assert_eq!(log[0]["description"], "wendelin rm a");
    assert_eq!(log[0]["root"][0]["name"], "a");
    assert_eq!(log[0]["root"][0]["change"], "removed");
    let limited: serde_json::Value =
        serde_json::from_str(&wendelin(&["log", p, "--json", "--limit", "2"], &[])).expect("json");
    assert_eq!(limited.as_array().expect("array").len(), 2);
    let text = wendelin(&["log", p], &[]);
    assert!(text.contains("removed a"), "{text}");

    let before = std::fs::metadata(&db).expect("stat").len();
    let middle = log[log.len() / 2]["tid"].as_str().expect("tid").to_owned();
    let out = wendelin(&["pack", p, "--before", &middle], &[]);
    assert!(out.contains("bytes"), "{out}");
    let out = wendelin(&["pack", p], &[]);
    assert!(
        out.contains(&format!("{before} ->")) || out.contains("packed"),
        "{out}"
    );
    let after = std::fs::metadata(&db).expect("stat").len();
    assert!(after < before / 2, "{before} -> {after}");
    assert!(dir.path().join("built.fs.old").exists());
    // What is left reads the same.
    let ls = wendelin(&["ls", p], &[]);
    assert!(
        ls.contains("b\t") && ls.contains("c\t") && !ls.contains("a\t"),
        "{ls}"
    );
    let sum = |s: &str| wendelin(&["stat", p, s, "--json"], &[]);
    assert!(sum("c").contains("\"count\":600000"), "{}", sum("c"));
    assert!(sum("b").contains("\"count\":300000"));
    assert_eq!(run_python(dir.path(), PY_CHECK, &[p]).trim(), "ok");
    // A second pack now has nothing to do.
    let out = wendelin(&["pack", p], &[]);
    assert!(out.contains("nothing to pack"), "{out}");
    // Errors are messages, not panics.
    for args in [
        vec!["rm", p, "nosuch"],
        vec!["pack", p, "--before", "yesterday"],
        vec!["pack", p, "--days", "1", "--before", "2025-01-01"],
        vec!["log", "/nonexistent/x.fs"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_wendelin"))
            .args(&args)
            .output()
            .expect("run");
        assert!(!o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).starts_with("wendelin: "),
            "{args:?}"
        );
    }
}

fn commit_value(fs: &FileStorage, oid: Oid, serial: Tid, n: i64) -> Tid {
    let rec = pickle::encode_record(
        "persistent.mapping",
        "PersistentMapping",
        &Value::Dict(vec![(
            Value::Str("data".into()),
            Value::Dict(vec![(Value::Str("n".into()), Value::Int(n))]),
        )]),
        fs.dialect(),
    )
    .expect("encode");
    let mut t = fs
        .tpc_begin(
            TxnMeta {
                description: format!("commit {n}").into_bytes(),
                ..TxnMeta::default()
            },
            None,
        )
        .expect("begin");
    t.store(oid, serial, rec).expect("store");
    t.vote().expect("vote");
    t.finish().expect("finish")
}

/// Put `oid` under `root[name]` in a new transaction (through the DB API,
/// a second open of the file).
fn link_from_root(path: &Path, name: &str, oid: Oid) {
    let db = storage::DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = storage::TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let r = c.ref_to(oid).expect("ref");
    c.root_mut().expect("root").insert(name, r);
    tm.commit().expect("link");
}

/// A pack drops an object nothing refers to even while a process keeps
/// committing it (ZODB's semantics: only the object's revisions after the
/// pack time would survive); that process's next store then fails: the
/// object is gone. An object linked from the root survives the same pack
/// and its committer goes on. (The crash test below once failed this way:
/// its committed object was garbage, and under load no commit of it fell
/// between a pack's pack time and its swap.)
#[test]
fn pack_keeps_a_committed_object_only_if_reachable() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = build_db(dir.path());
    let fs = FileStorage::open(&db).expect("open");
    let garbage = fs.new_oid().expect("oid");
    let kept = fs.new_oid().expect("oid");
    let g1 = commit_value(&fs, garbage, Tid::ZERO, 0);
    let k1 = commit_value(&fs, kept, Tid::ZERO, 0);
    link_from_root(&db, "counter", kept);
    let _ = wendelin(&["pack", db.to_str().expect("utf8")], &[]);
    let k2 = commit_value(&fs, kept, k1, 1);
    assert!(k2 > k1);
    assert_eq!(fs.load(kept).expect("kept").serial, k2);
    let mut t = fs.tpc_begin(TxnMeta::default(), None).expect("begin");
    let rec = pickle::encode_record(
        "persistent.mapping",
        "PersistentMapping",
        &Value::Dict(vec![]),
        fs.dialect(),
    )
    .expect("encode");
    match t.store(garbage, g1, rec) {
        Err(storage::Error::Conflict { committed, .. }) => assert_eq!(committed, Tid::ZERO),
        other => panic!("store of a packed-away object: {other:?}"),
    }
}

/// SIGKILL `wendelin pack` at random points while this process commits:
/// every committed transaction is still there, the file passes fstest.
/// The committed object is linked from the root: a pack's garbage
/// collection keeps it (see the test above).
#[test]
fn crash_during_pack_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = build_db(dir.path());
    let p = db.to_str().expect("utf8").to_owned();
    let fs = FileStorage::open(&db).expect("open");
    let oid = fs.new_oid().expect("oid");
    let first = commit_value(&fs, oid, Tid::ZERO, -1);
    link_from_root(&db, "counter", oid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut serial = first;
            let mut done = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                serial = commit_value(&fs, oid, serial, n);
                done.push((serial, n));
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            done
        })
    };
    let t0 = std::time::Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    let mut completed = 0;
    let mut pack_time = std::time::Duration::from_millis(300);
    while t0.elapsed() < std::time::Duration::from_secs(12) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wendelin"))
            .args(["pack", &p])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Kill points spread uniformly over a whole pack's run (as long as
        // the last complete one took), so some land in the swap.
        let started = std::time::Instant::now();
        let window = (pack_time.as_micros() as u64 * 5 / 4).max(1000);
        std::thread::sleep(std::time::Duration::from_micros(seed % window));
        match child.try_wait().expect("wait") {
            Some(_) => {
                completed += 1;
                pack_time = started.elapsed();
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                kills += 1;
            }
        }
        // Grow some history to pack again.
        let fs2 = FileStorage::open(&db).expect("reopen");
        assert!(fs2.last_tid() > Tid::ZERO);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = committer.join().expect("committer");
    assert!(kills > 0, "no pack was killed");
    assert!(completed > 0, "no pack completed");
    let fs = FileStorage::open_read_only(&db).expect("open");
    let last = done.last().expect("commits");
    let rec = fs.load(oid).expect("load");
    assert_eq!(
        rec.serial, last.0,
        "the last commit is the current revision"
    );
    let (_, state) = pickle::decode_record(&rec.data).expect("decode");
    let n = state
        .dict_get("data")
        .and_then(|d| d.dict_get("n"))
        .and_then(Value::as_int);
    assert_eq!(n, Some(last.1));
    // Every commit after the last completed pack's time is still there.
    let tids: std::collections::BTreeSet<Tid> = fs
        .raw_transactions()
        .map(|t| t.expect("txn").header.tid)
        .collect();
    let missing = done.iter().filter(|(t, _)| !tids.contains(t)).count();
    // Packs drop superseded revisions of `oid`, never the transaction of
    // its current one, and never anything after their pack time.
    assert!(tids.contains(&last.0));
    assert_eq!(run_python(dir.path(), PY_CHECK, &[&p]).trim(), "ok");
    eprintln!(
        "{kills} packs killed, {completed} completed, {} commits, {missing} superseded commits packed away",
        done.len()
    );
}
