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

    // ZBlk0's cold read of this run: the baseline of ZBlk1's.
    let mut zblk0_read_s = None;
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

        // Cold read through a new handle (page cache warm) vs pread of Data.fs.
        let tm2 = TransactionManager::new();
        let c2 = db.open_connection(&tm2).map_err(e)?;
        let fh2 = ZBigFileH::open(&c2, &tm2, f, opts(format)).map_err(e)?;
        let (r, read_s) = timed(|| -> Result<u64, String> {
            let h = fh2.fileh_read().map_err(e)?;
            let v = h.view::<u64>(0, (total / 8) as usize).map_err(e)?;
            Ok(v.iter().step_by(512).fold(0u64, |a, x| a.wrapping_add(*x)))
        });
        let sum = r?;
        let file = std::fs::File::open(&path).map_err(e)?;
        let flen = file.metadata().map_err(e)?.len();
        let (r, pread_s) = timed(|| -> std::io::Result<u64> {
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
        let _ = sum;
        report.throughput(
            &format!(
                "bigfile: cold read {} MiB via handle ({label})",
                total >> 20
            ),
            total,
            read_s,
            "pread of Data.fs",
            pread_s * total as f64 / flen as f64,
        );
        match (format, zblk0_read_s) {
            (ZBlkFormat::ZBlk0, _) => {
                // The same read with blocks loaded (copied) instead of
                // mapped from Data.fs: what a ZBlk1 block, 512 records,
                // can at best be compared with.
                drop(fh2);
                let mut o = opts(format);
                o.virtmem.map_files = false;
                let fh3 = ZBigFileH::open(&c2, &tm2, f, o).map_err(e)?;
                let (r, loaded_s) = timed(|| -> Result<u64, String> {
                    let h = fh3.fileh_read().map_err(e)?;
                    let v = h.view::<u64>(0, (total / 8) as usize).map_err(e)?;
                    Ok(v.iter().step_by(512).fold(0u64, |a, x| a.wrapping_add(*x)))
                });
                r?;
                report.throughput(
                    &format!(
                        "bigfile: cold read {} MiB via handle (ZBlk0, loaded, not mapped)",
                        total >> 20
                    ),
                    total,
                    loaded_s,
                    "pread of Data.fs",
                    pread_s * total as f64 / flen as f64,
                );
                zblk0_read_s = Some((read_s, loaded_s));
            }
            (ZBlkFormat::ZBlk1, Some((mapped, loaded))) => {
                for (what, base) in [("mapped", mapped), ("loaded, not mapped", loaded)] {
                    report.throughput(
                        &format!(
                            "bigfile: cold read {} MiB via handle, ZBlk1 vs ZBlk0 ({what})",
                            total >> 20
                        ),
                        total,
                        read_s,
                        &format!("ZBlk0 cold read ({what}), same run"),
                        base,
                    );
                }
            }
            _ => {}
        }
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
