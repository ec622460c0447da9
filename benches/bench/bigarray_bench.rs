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

    // Out-of-core sum through a fresh connection vs a plain mmap of the raw file.
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2).map_err(e)?;
    let oid = c2
        .root()
        .map_err(e)?
        .get("A")
        .and_then(Value::ref_oid)
        .ok_or("no A")?;
    let a = ZBigArray::<f64>::open(&c2, &tm2, oid, opts()).map_err(e)?;
    let (st, ours) = timed(|| a.stats());
    let st = st.map_err(e)?;
    let f = std::fs::File::open(&raw).map_err(e)?;
    // SAFETY: the file is private to this benchmark and not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(e)?;
    let (sum, base) = timed(|| {
        map.par_chunks(8 << 20)
            .map(|c| {
                c.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .sum::<f64>()
            })
            .sum::<f64>()
    });
    if (sum - st.sum).abs() > 1e-6 * sum.abs() {
        return Err(format!("sums differ: {} vs {sum}", st.sum));
    }
    report.throughput(
        &format!("bigarray: stat (sum) of {} MiB f64, cold", total >> 20),
        total,
        ours,
        "parallel sum over mmap of raw file",
        base,
    );
    let (_, warm) = timed(|| a.stats());
    report.throughput(
        &format!("bigarray: stat (sum) of {} MiB f64, resident", total >> 20),
        total,
        warm,
        "parallel sum over mmap of raw file",
        base,
    );
    // Shared views: two threads each summing half of the (resident) array
    // through `with_view` at once, beside one thread summing all of it.
    let n = a.len();
    let half_sum = |lo: usize, hi: usize| {
        a.with_view(|v| v.slice(ndarray::s![lo..hi]).sum())
            .map_err(e)
    };
    let (one, t_one) = timed(|| half_sum(0, n));
    let (two, t_two) = timed(|| {
        std::thread::scope(|sc| {
            let h1 = sc.spawn(|| half_sum(0, n / 2));
            let h2 = sc.spawn(|| half_sum(n / 2, n));
            match (h1.join(), h2.join()) {
                (Ok(Ok(x)), Ok(Ok(y))) => Ok(x + y),
                _ => Err("a reader thread failed".to_string()),
            }
        })
    });
    let (one, two) = (one?, two?);
    if (one - two).abs() > 1e-6 * one.abs() {
        return Err(format!("two-thread sum {two} differs from {one}"));
    }
    report.throughput(
        &format!(
            "bigarray: 2 threads each sum half of {} MiB f64 via with_view",
            total >> 20
        ),
        total,
        t_two,
        "1 thread sums all of it via with_view",
        t_one,
    );
    Ok(())
}
