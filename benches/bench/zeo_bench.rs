//! Benchmarks of the ZEO client over loopback against a real `runzeo`:
//! load throughput and commit rate beside the same FileStorage opened
//! directly, and loads beside a Python ZODB `ClientStorage` doing the same
//! loads. Skipped (with a message) when the interop venv has no ZEO.

use crate::common::{Config, Report, timed};
use std::sync::Arc;
use storage::pickle::{self, Dialect};
use storage::{FileStorage, Oid, Storage, Tid, TxnMeta, Value, open_storage};
use testsupport::zeo::ZeoServer;

const BLOCK: usize = 2 << 20;
const PER_TXN: usize = 8;
const SMALL: usize = 1024;

fn rec(k: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut payload = vec![0u8; len];
    payload[..8].copy_from_slice(&k.to_le_bytes());
    pickle::encode_record(
        "wendelin.bigfile.file_zodb",
        "ZBlk0",
        &Value::Bytes(payload),
        Dialect::Py3,
    )
    .map_err(|e| e.to_string())
}

/// Commit `n` records of `len` bytes, `per_txn` per transaction.
fn fill(s: &dyn Storage, n: usize, len: usize, per_txn: usize) -> Result<Vec<Oid>, String> {
    let e = |e: storage::Error| e.to_string();
    let mut oids = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(per_txn) {
        let mut t = s.tpc_begin(TxnMeta::default(), None).map_err(e)?;
        for k in chunk * per_txn..(n.min((chunk + 1) * per_txn)) {
            let oid = s.new_oid().map_err(e)?;
            t.store(oid, Tid::ZERO, rec(k as u64, len)?).map_err(e)?;
            oids.push(oid);
        }
        t.vote().map_err(e)?;
        t.finish().map_err(e)?;
    }
    Ok(oids)
}

fn load_all(s: &dyn Storage, oids: &[Oid]) -> Result<u64, String> {
    let mut bytes = 0u64;
    for &o in oids {
        bytes += s.load(o).map_err(|e| e.to_string())?.data.len() as u64;
    }
    Ok(bytes)
}

const PY_LOAD: &str = r#"
import sys, time
from ZEO.ClientStorage import ClientStorage
host, port = sys.argv[1].rsplit(':', 1)
oids = [bytes.fromhex(h) for h in open(sys.argv[2]).read().split()]
st = ClientStorage((host, int(port)), wait_timeout=30, read_only=True)
t = time.perf_counter()
n = 0
for o in oids:
    data, serial = st.load(o)
    n += len(data)
print(time.perf_counter() - t, n)
st.close()
"#;

fn python_loads(dir: &std::path::Path, url: &str, oids: &[Oid]) -> Result<f64, String> {
    let list = dir.join(format!("oids-{}.txt", oids.len()));
    let hex: Vec<String> = oids.iter().map(|o| o.to_string()).collect();
    std::fs::write(&list, hex.join("\n")).map_err(|e| e.to_string())?;
    let addr = url.trim_start_matches("zeo://");
    let out = testsupport::python::run_python(dir, PY_LOAD, &[addr, &list.to_string_lossy()]);
    out.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("python load script said {out:?}"))
}

/// Run this group.
pub fn run(cfg: &Config, report: &mut Report) -> Result<(), String> {
    let py = testsupport::python::python();
    if !py.with_file_name("runzeo").exists() {
        eprintln!(
            "zeo: skipped (no runzeo next to {}; install ZEO into the venv)",
            py.display()
        );
        return Ok(());
    }
    let big = ((cfg.size_mib / 4) as usize * (1 << 20) / BLOCK).max(8);
    let small = if cfg.quick { 2000 } else { 10000 };
    let ntxn = if cfg.quick { 200 } else { 1000 };
    let dir = tempfile::Builder::new()
        .prefix("wendelin-bench-zeo")
        .tempdir_in(&cfg.dir)
        .map_err(|e| e.to_string())?;
    let srv = ZeoServer::start(dir.path());
    let url = srv.url();
    eprintln!("zeo: {big} records of 2 MiB, {small} of 1 KiB, {ntxn} small commits over {url}");
    let open = |q: &str| -> Result<Arc<dyn Storage>, String> {
        open_storage(&format!("{url}{q}")).map_err(|e| e.to_string())
    };
    let zeo = open("")?;
    let direct_dir = dir.path().join("direct");
    std::fs::create_dir_all(&direct_dir).map_err(|e| e.to_string())?;
    let direct = FileStorage::open(direct_dir.join("Data.fs")).map_err(|e| e.to_string())?;

    // Commit rate: one small record per transaction.
    let (r, zeo_c) = timed(|| fill(&*zeo, ntxn, SMALL, 1));
    r?;
    let (r, fs_c) = timed(|| fill(&direct, ntxn, SMALL, 1));
    r?;
    report.push(
        "zeo: commits/s (1 KiB record per txn)",
        ntxn as f64 / zeo_c,
        "FileStorage opened directly",
        ntxn as f64 / fs_c,
        "txn/s",
        true,
    );

    // Loads, each record once, from a fresh client (cold cache).
    let big_oids = fill(&*zeo, big, BLOCK, PER_TXN)?;
    let small_oids = fill(&*zeo, small, SMALL, 100)?;
    drop(zeo);
    let served = FileStorage::open_read_only(srv.data_fs()).map_err(|e| e.to_string())?;
    for (what, oids, len) in [("2 MiB", &big_oids, BLOCK), ("1 KiB", &small_oids, SMALL)] {
        let fresh = open("?cache_size=0")?;
        let (bytes, zeo_s) = timed(|| load_all(&*fresh, oids));
        let bytes = bytes?;
        let (r, fs_s) = timed(|| load_all(&served, oids));
        r?;
        let py_s = python_loads(dir.path(), &url, oids)?;
        if len == BLOCK {
            report.throughput(
                &format!("zeo: load {what} records (loopback)"),
                bytes,
                zeo_s,
                "FileStorage opened directly",
                fs_s,
            );
            report.throughput(
                &format!("zeo: load {what} records, vs Python client"),
                bytes,
                zeo_s,
                "Python ZEO ClientStorage",
                py_s,
            );
        } else {
            let rate = |s: f64| oids.len() as f64 / s;
            report.push(
                &format!("zeo: loads/s of {what} records"),
                rate(zeo_s),
                "FileStorage opened directly",
                rate(fs_s),
                "load/s",
                true,
            );
            report.push(
                &format!("zeo: loads/s of {what} records, vs Python"),
                rate(zeo_s),
                "Python ZEO ClientStorage",
                rate(py_s),
                "load/s",
                true,
            );
        }
    }
    Ok(())
}
