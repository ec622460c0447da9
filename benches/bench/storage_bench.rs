//! Benchmarks of the storage crate: FileStorage commit, open (index scan)
//! and load of 2 MiB records, each beside raw file I/O of the same bytes.

use crate::common::{Config, Report, timed};
use std::io::Write;
use std::os::unix::fs::FileExt;
use storage::pickle::{self, Dialect};
use storage::{FileStorage, Storage, Tid, TxnMeta, Value};

const BLOCK: usize = 2 << 20;
const PER_TXN: usize = 32;

/// Run this group.
pub fn run(cfg: &Config, report: &mut Report) -> Result<(), String> {
    // The figure is 4 GiB of 2 MiB records (4 x the default size).
    let total_mib = cfg.size_mib * 4;
    let nrec = (total_mib as usize * (1 << 20)) / BLOCK;
    let dir = tempfile::Builder::new()
        .prefix("wendelin-bench-storage")
        .tempdir_in(&cfg.dir)
        .map_err(|e| e.to_string())?;
    let path = dir.path().join("Data.fs");
    eprintln!(
        "storage: {nrec} records of 2 MiB ({total_mib} MiB) in {}",
        path.display()
    );

    // Commit: 2 MiB ZBlk0-like records, PER_TXN per transaction.
    let mut payload = vec![0u8; BLOCK];
    let fs = FileStorage::open(&path).map_err(|e| e.to_string())?;
    let mut oids = Vec::with_capacity(nrec);
    let (res, commit_s) = timed(|| -> Result<(), String> {
        let mut left = nrec;
        let mut k = 0u64;
        while left > 0 {
            let n = left.min(PER_TXN);
            let mut t = fs
                .tpc_begin(TxnMeta::default(), None)
                .map_err(|e| e.to_string())?;
            for _ in 0..n {
                payload[..8].copy_from_slice(&k.to_le_bytes());
                k += 1;
                let rec = pickle::encode_record(
                    "wendelin.bigfile.file_zodb",
                    "ZBlk0",
                    &Value::Bytes(payload.clone()),
                    Dialect::Py3,
                )
                .map_err(|e| e.to_string())?;
                let oid = fs.new_oid().map_err(|e| e.to_string())?;
                t.store(oid, Tid::ZERO, rec).map_err(|e| e.to_string())?;
                oids.push(oid);
            }
            t.vote().map_err(|e| e.to_string())?;
            t.finish().map_err(|e| e.to_string())?;
            left -= n;
        }
        Ok(())
    });
    res?;
    drop(fs);
    let file_len = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();

    // Baseline: write the same number of bytes in the same chunks + fsync per txn.
    let raw_path = dir.path().join("raw.bin");
    let (res, raw_write_s) = timed(|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&raw_path)?;
        let mut written = 0u64;
        let chunk = vec![1u8; BLOCK + 100];
        let mut in_txn = 0;
        while written < file_len {
            let n = (chunk.len() as u64).min(file_len - written) as usize;
            f.write_all(&chunk[..n])?;
            written += n as u64;
            in_txn += 1;
            if in_txn == PER_TXN {
                f.sync_data()?;
                in_txn = 0;
            }
        }
        f.sync_data()
    });
    res.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&raw_path);
    report.throughput(
        "storage: commit 2 MiB records (32/txn, fsync)",
        file_len,
        commit_s,
        "write()+fdatasync same bytes",
        raw_write_s,
    );

    // Baseline read: pread of the whole file in 2 MiB pieces (page cache warm).
    let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; BLOCK];
    let pread_all = |buf: &mut Vec<u8>| -> std::io::Result<u64> {
        let mut at = 0u64;
        let mut sum = 0u64;
        while at < file_len {
            let n = (BLOCK as u64).min(file_len - at) as usize;
            f.read_exact_at(&mut buf[..n], at)?;
            sum = sum.wrapping_add(u64::from(buf[0]));
            at += n as u64;
        }
        Ok(sum)
    };
    pread_all(&mut buf).map_err(|e| e.to_string())?; // warm
    let (r, pread_s) = timed(|| pread_all(&mut buf));
    r.map_err(|e| e.to_string())?;

    // Open: index scan of the whole file.
    let (fs, open_s) = timed(|| FileStorage::open_read_only(&path));
    let fs = fs.map_err(|e| e.to_string())?;
    if fs.scan_info().objects != nrec + 1 {
        return Err(format!(
            "indexed {} objects, want {}",
            fs.scan_info().objects,
            nrec + 1
        ));
    }
    report.time_ms(
        &format!(
            "storage: open {} MiB FileStorage (index scan)",
            file_len >> 20
        ),
        open_s,
        "pread of the whole file",
        pread_s,
    );

    // Load every record (latest revision), one thread.
    let (r, load_s) = timed(|| -> Result<u64, String> {
        let mut bytes = 0u64;
        for &o in &oids {
            let rec = fs.load(o).map_err(|e| e.to_string())?;
            bytes += rec.data.len() as u64;
        }
        Ok(bytes)
    });
    let loaded = r?;
    report.throughput(
        "storage: load all records (1 thread)",
        loaded,
        load_s,
        "pread 2 MiB pieces",
        pread_s,
    );

    // Load every record from two threads (MVCC load_before at the last tid).
    let at = fs.last_tid().successor();
    let (r, load2_s) = timed(|| {
        std::thread::scope(|s| {
            let hs: Vec<_> = oids
                .chunks(oids.len().div_ceil(2).max(1))
                .map(|part| {
                    let fs = &fs;
                    s.spawn(move || -> Result<u64, String> {
                        let mut b = 0u64;
                        for &o in part {
                            let rec = fs
                                .load_before(o, at)
                                .map_err(|e| e.to_string())?
                                .ok_or("missing")?;
                            b += rec.data.len() as u64;
                        }
                        Ok(b)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().map_err(|_| "thread panicked".to_string())?)
                .sum::<Result<u64, String>>()
        })
    });
    let loaded2 = r?;
    let (r, pread2_s) = timed(|| {
        std::thread::scope(|s| {
            let half = file_len / 2;
            let hs: Vec<_> = [(0, half), (half, file_len)]
                .into_iter()
                .map(|(a, b)| {
                    let f = &f;
                    s.spawn(move || -> std::io::Result<()> {
                        let mut buf = vec![0u8; BLOCK];
                        let mut at = a;
                        while at < b {
                            let n = (BLOCK as u64).min(b - at) as usize;
                            f.read_exact_at(&mut buf[..n], at)?;
                            at += n as u64;
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panic")))
            })
        })
    });
    r.map_err(|e| e.to_string())?;
    report.throughput(
        "storage: load all records (2 threads)",
        loaded2,
        load2_s,
        "pread 2 MiB pieces, 2 threads",
        pread2_s,
    );
    drop(fs);
    let _ = std::fs::remove_file(&path);
    object_commits(cfg, report, dir.path())
}

/// Commit rate through the object layer (DB / Connection / TransactionManager):
/// one small object per transaction, and one 2 MiB object per transaction,
/// each beside write()+fdatasync of the same record bytes per transaction.
fn object_commits(cfg: &Config, report: &mut Report, dir: &std::path::Path) -> Result<(), String> {
    use storage::{DB, GenericObject, TransactionManager};
    let e = |e: storage::Error| e.to_string();
    for (label, n, size) in [
        (
            "100-byte object",
            if cfg.quick { 300 } else { 2000 },
            100usize,
        ),
        ("2 MiB object", if cfg.quick { 16 } else { 64 }, BLOCK),
    ] {
        let path = dir.join(format!("commits-{size}.fs"));
        let db = DB::open(path.to_str().ok_or("path")?).map_err(e)?;
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        let oid = c
            .add(GenericObject {
                module: "bench".into(),
                name: "Blob".into(),
                state: Value::Bytes(vec![0; size]),
            })
            .map_err(e)?;
        tm.commit().map_err(e)?;
        let before = std::fs::metadata(&path).map_err(|x| x.to_string())?.len();
        let (r, ours) = timed(|| -> Result<(), String> {
            for i in 0..n {
                {
                    let mut o = c.get_mut::<GenericObject>(oid).map_err(e)?;
                    if let Value::Bytes(b) = &mut o.state {
                        b[i % size] = b[i % size].wrapping_add(1);
                    }
                }
                tm.commit().map_err(e)?;
            }
            Ok(())
        });
        r?;
        let bytes = std::fs::metadata(&path).map_err(|x| x.to_string())?.len() - before;
        let per_txn = (bytes / n as u64) as usize;
        let raw = dir.join("raw-commits.bin");
        let (r, base) = timed(|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&raw)?;
            let buf = vec![7u8; per_txn];
            for _ in 0..n {
                f.write_all(&buf)?;
                f.sync_data()?;
            }
            Ok(())
        });
        r.map_err(|x| x.to_string())?;
        let _ = std::fs::remove_file(&raw);
        report.push(
            &format!("storage: commit one {label} per txn"),
            n as f64 / ours,
            &format!("write({per_txn} B)+fdatasync per txn"),
            n as f64 / base,
            "txn/s",
            true,
        );
        drop(c);
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}
