//! Benchmarks of the bigfile crate: write+commit, cold read through a
//! handle, database growth and commit latency per small change, each beside
//! a raw baseline.

use crate::common::{Config, Report, timed};
use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat, create_file};
use std::io::Write;
use std::os::unix::fs::FileExt;
use storage::{DB, TransactionManager};

const BS: u64 = 2 << 20;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

fn opts(format: ZBlkFormat) -> HandleOptions {
    HandleOptions {
        format,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

/// Run this group.
pub fn run(cfg: &Config, report: &mut Report) -> Result<(), String> {
    let total = (cfg.size_mib / 2).max(16) << 20; // 512 MiB by default
    let nblk = total / BS;
    let dir = tempfile::Builder::new()
        .prefix("wendelin-bench-bigfile")
        .tempdir_in(&cfg.dir)
        .map_err(e)?;
    eprintln!("bigfile: {} MiB in {} blocks of 2 MiB", total >> 20, nblk);

    // Baseline: write()+fsync of the same bytes.
    let raw = dir.path().join("raw.bin");
    let (r, raw_s) = timed(|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&raw)?;
        let mut buf = vec![0u8; BS as usize];
        for b in 0..nblk {
            buf[..8].copy_from_slice(&b.to_le_bytes());
            buf[8..]
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i as u8) ^ (b as u8));
            f.write_all(&buf)?;
        }
        f.sync_all()
    });
    r.map_err(e)?;
    let _ = std::fs::remove_file(&raw);

    // Write the same bytes in each format; the databases stay open for the
    // cold reads below.
    let mut written = Vec::new();
    for (label, format) in [("ZBlk0", ZBlkFormat::ZBlk0), ("ZBlk1", ZBlkFormat::ZBlk1)] {
        let path = dir.path().join(format!("{label}.fs"));
        let db = DB::open(path.to_str().ok_or("path")?).map_err(e)?;
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        let f = create_file(&c, BS).map_err(e)?;
        tm.commit().map_err(e)?;
        let fh = ZBigFileH::open(&c, &tm, f, opts(format)).map_err(e)?;
        let (r, ours) = timed(|| -> Result<(), String> {
            {
                let mut h = fh.fileh().map_err(e)?;
                let mut v = h.bytes_mut(0..total).map_err(e)?;
                for (b, blk) in v.chunks_mut(BS as usize).enumerate() {
                    blk[..8].copy_from_slice(&(b as u64).to_le_bytes());
                    blk[8..]
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = (i as u8) ^ (b as u8));
                }
            }
            tm.commit().map_err(e)
        });
        r?;
        report.throughput(
            &format!("bigfile: write {} MiB + commit ({label})", total >> 20),
            total,
            ours,
            "write()+fsync same bytes",
            raw_s,
        );
        drop(fh);
        drop(c);
        written.push((path, db, f));
    }

    // Cold reads through a new handle (page cache warm, nothing loaded):
    // ZBlk0 mapped, ZBlk0 loaded (copied, as ZBlk1 must be) and ZBlk1,
    // interleaved over rounds, best of each. Loads into fresh memory cost
    // what the machine charges for it at that moment (on the 2-core VM,
    // 0.1-2 ms per MiB, by how long ago memory was freed: free page
    // reporting), so reads one after another in a fixed order compared
    // that as much as the formats.
    const ROUNDS: usize = 3;
    let cold_read = |db: &DB, f, format, map_files: bool| -> Result<f64, String> {
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        let mut o = opts(format);
        o.virtmem.map_files = map_files;
        let fh = ZBigFileH::open(&c, &tm, f, o).map_err(e)?;
        let (r, s) = timed(|| -> Result<u64, String> {
            let h = fh.fileh_read().map_err(e)?;
            let v = h.view::<u64>(0, (total / 8) as usize).map_err(e)?;
            Ok(v.iter().step_by(512).fold(0u64, |a, x| a.wrapping_add(*x)))
        });
        let sum = r?;
        // Block b starts with b: the sum of every 512th word covers them.
        if sum == 0 && nblk > 1 {
            return Err("cold read summed nothing".into());
        }
        Ok(s)
    };
    let pread_of = |path: &std::path::Path| -> Result<f64, String> {
        let file = std::fs::File::open(path).map_err(e)?;
        let flen = file.metadata().map_err(e)?.len();
        let (r, s) = timed(|| -> std::io::Result<u64> {
            let mut buf = vec![0u8; BS as usize];
            let (mut at, mut s) = (0u64, 0u64);
            while at < flen {
                let n = (BS).min(flen - at) as usize;
                file.read_exact_at(&mut buf[..n], at)?;
                s = s.wrapping_add(u64::from(buf[0]));
                at += n as u64;
            }
            Ok(s)
        });
        r.map_err(e)?;
        // Per the array's bytes (a ZBlk1 file holds more than them).
        Ok(s * total as f64 / flen as f64)
    };
    let [(p0, db0, f0), (p1, db1, f1)] =
        <[_; 2]>::try_from(written).map_err(|_| "two databases were written")?;
    let mut best = [f64::INFINITY; 5];
    for _ in 0..ROUNDS {
        best[0] = best[0].min(cold_read(&db0, f0, ZBlkFormat::ZBlk0, true)?);
        best[1] = best[1].min(cold_read(&db0, f0, ZBlkFormat::ZBlk0, false)?);
        best[2] = best[2].min(cold_read(&db1, f1, ZBlkFormat::ZBlk1, true)?);
        best[3] = best[3].min(pread_of(&p0)?);
        best[4] = best[4].min(pread_of(&p1)?);
    }
    let [mapped, loaded, zblk1, pread0, pread1] = best;
    let mib = total >> 20;
    for (what, ours, base) in [
        ("ZBlk0", mapped, pread0),
        ("ZBlk0, loaded, not mapped", loaded, pread0),
        ("ZBlk1", zblk1, pread1),
    ] {
        report.throughput(
            &format!("bigfile: cold read {mib} MiB via handle ({what}), best of {ROUNDS}"),
            total,
            ours,
            "pread of Data.fs",
            base,
        );
    }
    for (what, base) in [("mapped", mapped), ("loaded, not mapped", loaded)] {
        report.throughput(
            &format!(
                "bigfile: cold read {mib} MiB via handle, ZBlk1 vs ZBlk0 ({what}), best of {ROUNDS}"
            ),
            total,
            zblk1,
            &format!("ZBlk0 cold read ({what}), same rounds"),
            base,
        );
    }

    // Database growth per transaction that changes 8 bytes.
    for (label, format) in [
        ("ZBlk0", ZBlkFormat::ZBlk0),
        ("ZBlk1", ZBlkFormat::ZBlk1),
        ("auto", ZBlkFormat::Auto),
    ] {
        let path = dir.path().join(format!("growth-{label}.fs"));
        let db = DB::open(path.to_str().ok_or("path")?).map_err(e)?;
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        let f = create_file(&c, BS).map_err(e)?;
        tm.commit().map_err(e)?;
        let fh = ZBigFileH::open(&c, &tm, f, opts(format)).map_err(e)?;
        let full: Vec<u8> = (0..BS as usize).map(|i| (i % 251) as u8 | 1).collect();
        for b in 0..4 {
            fh.write(b * BS, &full).map_err(e)?;
        }
        tm.commit().map_err(e)?;
        let before = std::fs::metadata(&path).map_err(e)?.len();
        let n = 50u64;
        let mut times = Vec::with_capacity(n as usize);
        for i in 0..n {
            fh.write((i % 4) * BS + 4096 * (i + 1), &i.to_le_bytes())
                .map_err(e)?;
            let (r, t) = timed(|| tm.commit());
            r.map_err(e)?;
            times.push(t);
        }
        let growth = (std::fs::metadata(&path).map_err(e)?.len() - before) / n;
        // Baseline: append the same number of bytes and fdatasync, as often.
        let raw = dir.path().join(format!("growth-{label}.raw"));
        let mut rf = std::fs::File::create(&raw).map_err(e)?;
        let chunk = vec![7u8; growth as usize];
        let mut base = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (r, t) = timed(|| rf.write_all(&chunk).and_then(|()| rf.sync_data()));
            r.map_err(e)?;
            base.push(t);
        }
        report.time_ms(
            &format!("bigfile: commit of an 8-byte change, median of {n} ({label})"),
            median(&mut times),
            &format!("write({growth} B)+fdatasync, median"),
            median(&mut base),
        );
        report.push(
            &format!("bigfile: DB growth per 8-byte change ({label})"),
            growth as f64,
            "one 2 MiB block",
            BS as f64,
            "B/txn",
            false,
        );
    }
    Ok(())
}

/// The median of `xs` (sorted in place).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}
