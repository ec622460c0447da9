//! Benchmarks of the bigarray crate: out-of-core sum of a large f64 array
//! vs the same sum over a plain mmap of a raw file; append throughput vs
//! write()+fsync of the same bytes.

use crate::common::{Config, Report, timed};
use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::io::Write;
use storage::{DB, TransactionManager, Value};

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

/// Run this group.
pub fn run(cfg: &Config, report: &mut Report) -> Result<(), String> {
    let total: u64 = (cfg.size_mib * 2) << 20; // 2 GiB by default
    let n = (total / 8) as usize;
    let chunk_rows = (64usize << 20) / 8; // append 64 MiB per transaction
    let dir = tempfile::Builder::new()
        .prefix("wendelin-bench-bigarray")
        .tempdir_in(&cfg.dir)
        .map_err(e)?;
    eprintln!("bigarray: {} MiB f64 array", total >> 20);
    let opts = || HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    };
    let value = |i: usize| (i % 1000) as f64 * 0.5;

    // Append in 64 MiB transactions.
    let path = dir.path().join("data.fs");
    let db = DB::open(path.to_str().ok_or("path")?).map_err(e)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).map_err(e)?;
    let a = ZBigArray::<f64>::create(&c, &tm, &[0], Order::C, opts()).map_err(e)?;
    let r = c.ref_to(a.oid()).map_err(e)?;
    c.root_mut().map_err(e)?.insert("A", r);
    tm.commit().map_err(e)?;
    let (res, append_s) = timed(|| -> Result<(), String> {
        let mut done = 0usize;
        while done < n {
            let k = chunk_rows.min(n - done);
            let part = ArrayD::from_shape_fn(IxDyn(&[k]), |ix| value(done + ix[0]));
            a.append(part.view()).map_err(e)?;
            tm.commit().map_err(e)?;
            done += k;
        }
        Ok(())
    });
    res?;
    // The writer's handle stays joined to `tm`: drop both to free its pages.
    drop(a);
    drop(c);
    drop(tm);
    // Baseline: write()+fsync of the same bytes in the same chunk sizes.
    let raw = dir.path().join("raw.f64");
    let (res, raw_s) = timed(|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&raw)?;
        let mut done = 0usize;
        let mut buf: Vec<u8> = Vec::with_capacity(chunk_rows * 8);
        while done < n {
            let k = chunk_rows.min(n - done);
            buf.clear();
            for i in done..done + k {
                buf.extend_from_slice(&value(i).to_le_bytes());
            }
            f.write_all(&buf)?;
            f.sync_data()?;
            done += k;
        }
        Ok(())
    });
    res.map_err(e)?;
    report.throughput(
        &format!("bigarray: append {} MiB f64 (64 MiB/txn)", total >> 20),
        total,
        append_s,
        "write()+fdatasync same bytes",
        raw_s,
    );

    // Scans, each beside a sum over a plain mmap of the same bytes (a raw
    // file) with the same number of threads. Nothing is resident before a
    // scan: the writer's handle is gone, and scans drop what they load.
    let f = std::fs::File::open(&raw).map_err(e)?;
    // SAFETY: the file is private to this benchmark and not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(e)?;
    let nt = cfg.threads;
    let pool = |k: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .map_err(e)
    };
    let oid = {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        let r = c.root().map_err(e)?;
        r.get("A").and_then(Value::ref_oid).ok_or("no A")?
    };
    let fresh = || -> Result<(TransactionManager, storage::Connection), String> {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        Ok((tm, c))
    };
    for k in 1..=nt {
        let p = pool(k)?;
        let (tm2, c2) = fresh()?;
        let a = ZBigArray::<f64>::open(&c2, &tm2, oid, opts()).map_err(e)?;
        let (st, ours) = timed(|| p.install(|| a.stats()));
        let st = st.map_err(e)?;
        let (sum, base) = timed(|| p.install(|| mmap_sum(&map)));
        if (sum - st.sum).abs() > 1e-6 * sum.abs() {
            return Err(format!("sums differ: {} vs {sum}", st.sum));
        }
        report.throughput(
            &format!(
                "bigarray: stat of {} MiB f64 right after writing, {k} of {nt} threads",
                total >> 20
            ),
            total,
            ours,
            &format!("{k}-thread sum over mmap of raw file"),
            base,
        );
    }
    // The Rust API's sum over views (the fault path): k threads each sum a
    // contiguous part of the array through `with_view`, fresh handle. With
    // a 512 MiB budget (a quarter of the array: out of core, scans drop
    // behind them) for k = 1..=N; then with the default budget (half of
    // RAM: the array stays resident), a first and a second pass.
    let small = || HandleOptions {
        virtmem: virtmem::Options {
            budget: Some(512 << 20),
            ..virtmem::Options::default()
        },
        ..opts()
    };
    for (k, o, label) in (1..=nt)
        .map(|k| (k, small(), "budget 512 MiB"))
        .chain([(nt, opts(), "default budget, 1st pass"), (nt, opts(), "")])
    {
        let (tm2, c2) = fresh()?;
        let a = ZBigArray::<f64>::open(&c2, &tm2, oid, o).map_err(e)?;
        let n = a.len();
        let part_sum = |i: usize| {
            let (lo, hi) = (n * i / k, n * (i + 1) / k);
            a.with_view(|v| v.slice(ndarray::s![lo..hi]).sum())
                .map_err(e)
        };
        let run = || {
            std::thread::scope(|sc| {
                let hs: Vec<_> = (0..k).map(|i| sc.spawn(move || part_sum(i))).collect();
                hs.into_iter()
                    .map(|h| h.join().map_err(|_| "a reader thread failed".to_string())?)
                    .sum::<Result<f64, String>>()
            })
        };
        let (mut got, mut ours) = timed(run);
        let mut label = label.to_string();
        if label.is_empty() {
            // The second pass over what the first left resident.
            label = "default budget, 2nd pass (resident)".into();
            (got, ours) = timed(run);
        }
        let got = got?;
        let p = pool(k)?;
        let (sum, base) = timed(|| p.install(|| mmap_sum(&map)));
        if (sum - got).abs() > 1e-6 * sum.abs() {
            return Err(format!("view sum {got} differs from {sum}"));
        }
        report.throughput(
            &format!(
                "bigarray: sum over views of {} MiB f64, {label}, {k} of {nt} threads",
                total >> 20
            ),
            total,
            ours,
            &format!("{k}-thread sum over mmap of raw file"),
            base,
        );
    }
    // `wendelin stat` in a fresh process (its whole run) beside an
    // all-threads mmap sum in this one.
    let db_path = dir.path().join("data.fs");
    let ours = timed_stat(&db_path)?;
    let p = pool(nt)?;
    let (_, base) = timed(|| p.install(|| mmap_sum(&map)));
    report.throughput(
        &format!(
            "bigarray: wendelin stat of {} MiB f64, fresh process",
            total >> 20
        ),
        total,
        ours,
        &format!("{nt}-thread sum over mmap of raw file"),
        base,
    );
    if cfg.cold {
        // Cold page cache: `wendelin stat` (fresh process) and an
        // all-threads mmap sum of the raw file, each after dropping caches
        // (pages still mapped here could not be dropped: unmap first).
        drop(map);
        Config::drop_caches()?;
        let ours = timed_stat(&db_path)?;
        Config::drop_caches()?;
        let f = std::fs::File::open(&raw).map_err(e)?;
        // SAFETY: the file is private to this benchmark and not modified while mapped.
        let cold_map = unsafe { memmap2::Mmap::map(&f) }.map_err(e)?;
        let (_, base) = timed(|| p.install(|| mmap_sum(&cold_map)));
        report.throughput(
            &format!(
                "bigarray: wendelin stat of {} MiB f64, cold page cache",
                total >> 20
            ),
            total,
            ours,
            &format!("{nt}-thread sum over mmap of raw file, cold page cache"),
            base,
        );
    }
    import_row(dir.path(), &raw, total, report)?;
    Ok(())
}

/// Seconds a fresh `wendelin stat DB A` process takes (its whole run).
fn timed_stat(db: &std::path::Path) -> Result<f64, String> {
    let (r, secs) = timed(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wendelin"))
            .arg("stat")
            .arg(db)
            .arg("A")
            .output()
    });
    let out = r.map_err(e)?;
    if !out.status.success() {
        return Err(format!(
            "wendelin stat: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(secs)
}

/// The sum of the f64 values in `bytes`, in parallel on the current rayon pool.
fn mmap_sum(bytes: &[u8]) -> f64 {
    bytes
        .par_chunks(8 << 20)
        .map(|c| {
            c.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .sum::<f64>()
        })
        .sum::<f64>()
}

/// One `wendelin import` of `npy` into `db` in a child process: its time
/// and its peak RSS in KiB (VmHWM, polled until it exits: monotonic;
/// getrusage(RUSAGE_CHILDREN) would report this process's RSS, which the
/// child had when it was spawned, before its exec).
fn import_once(db: &std::path::Path, npy: &std::path::Path) -> Result<(f64, f64), String> {
    let (r, t) = timed(|| -> std::io::Result<(std::process::ExitStatus, f64)> {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wendelin"))
            .arg("import")
            .arg(db)
            .arg("A")
            .arg(npy)
            .spawn()?;
        let status = format!("/proc/{}/status", child.id());
        let mut hwm_kib = 0.0f64;
        loop {
            if let Ok(text) = std::fs::read_to_string(&status)
                && let Some(kb) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            {
                hwm_kib = hwm_kib.max(kb);
            }
            if let Some(st) = child.try_wait()? {
                return Ok((st, hwm_kib));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let (st, hwm) = r.map_err(e)?;
    if !st.success() {
        return Err(format!("wendelin import: {st}"));
    }
    Ok((t, hwm))
}

/// `wendelin import` of an .npy of the raw file's values (a child process:
/// its time and peak RSS) beside `cp` + fsync of the same .npy, best of 3
/// runs each.
fn import_row(
    dir: &std::path::Path,
    raw: &std::path::Path,
    total: u64,
    report: &mut Report,
) -> Result<(), String> {
    let npy = dir.join("a.npy");
    {
        let mut dict = format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
            total / 8
        );
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        dict.push_str(&" ".repeat(pad));
        dict.push('\n');
        let mut f = std::fs::File::create(&npy).map_err(e)?;
        f.write_all(b"\x93NUMPY\x01\x00").map_err(e)?;
        f.write_all(&(dict.len() as u16).to_le_bytes()).map_err(e)?;
        f.write_all(dict.as_bytes()).map_err(e)?;
        std::io::copy(&mut std::fs::File::open(raw).map_err(e)?, &mut f).map_err(e)?;
        f.sync_all().map_err(e)?;
    }
    let db = dir.join("import.fs");
    let copy = dir.join("copy.npy");
    // Best of 3 of each, interleaved: the disk's write speed varies from run
    // to run by more than the difference measured.
    let (mut ours, mut base, mut rss_kib) = (f64::INFINITY, f64::INFINITY, 0.0f64);
    for _ in 0..3 {
        for p in [&db, &copy] {
            let _ = std::fs::remove_file(p);
        }
        let (t, hwm) = import_once(&db, &npy)?;
        ours = ours.min(t);
        rss_kib = rss_kib.max(hwm);
        let (r, t) = timed(|| -> std::io::Result<()> {
            let st = std::process::Command::new("cp")
                .arg(&npy)
                .arg(&copy)
                .status()?;
            if !st.success() {
                return Err(std::io::Error::other(format!("cp: {st}")));
            }
            std::fs::File::open(&copy)?.sync_all()
        });
        r.map_err(e)?;
        base = base.min(t);
    }
    report.throughput(
        &format!("bigarray: wendelin import of a {} MiB .npy", total >> 20),
        total,
        ours,
        "cp + fsync of the same .npy",
        base,
    );
    report.push(
        "bigarray: peak RSS of that import (MiB)",
        rss_kib / 1024.0,
        "640 MiB target",
        640.0,
        "MiB",
        false,
    );
    for p in [npy, copy, db] {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
