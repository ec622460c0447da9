//! Scan a file through a handle and print the throughput and the handle's
//! counters: `cargo run --release --example scan -- FILE [readahead 0|1] [threads]`
//! (env `RA_WINDOW`: read-ahead window in blocks; `ZERO_COPY`: `1` (default),
//! `0` (copy path) or `both` (alternate); `REPEAT`: scans per mode, each with
//! a fresh handle, after one throwaway warm-up scan; medians are printed;
//! `BUDGET_MIB`: the handle's budget, default the file size + 64 MiB;
//! `MAP_FILE=1`: map whole blocks straight from the file).

use std::sync::Arc;
use std::time::Instant;

use virtmem::{BigFile, FileBigFile, FileH, Options};

/// CPU time (user + system) of the whole process so far, in seconds.
fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15 (utime, stime), in clock ticks (100/s).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // After the ")": field 3 (state) is index 0, so utime (14) is 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn scan_once(
    path: &str,
    size: u64,
    readahead: bool,
    nthr: usize,
    zero_copy: bool,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let bs = 2 << 20;
    let map = std::env::var("MAP_FILE").is_ok_and(|v| v == "1");
    let file = Arc::new(FileBigFile::open(path.as_ref(), bs)?.with_mapping(map));
    let opts = Options {
        reserve: size,
        budget: Some(
            std::env::var("BUDGET_MIB")
                .ok()
                .and_then(|b| b.parse::<u64>().ok())
                .map_or(size + (64 << 20), |b| b << 20),
        ),
        readahead,
        readahead_window: std::env::var("RA_WINDOW")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(Options::default().readahead_window),
        zero_copy,
        ..Options::default()
    };
    let fh = FileH::open(file as Arc<dyn BigFile>, opts)?;
    let v = fh.view::<u64>(0, (size / 8) as usize)?;
    let c0 = cpu_seconds();
    let t = Instant::now();
    let part = v.len().div_ceil(nthr);
    let sum = std::thread::scope(|s| {
        let hs: Vec<_> = v
            .chunks(part)
            .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    });
    let dt = t.elapsed().as_secs_f64();
    let cpu_per_gib = (cpu_seconds() - c0) * 1000.0 / (size as f64 / (1u64 << 30) as f64);
    let gbs = size as f64 / dt / 1e9;
    println!(
        "zero_copy {zero_copy} sum {sum:#x}: {gbs:.3} GB/s, {cpu_per_gib:.0} ms CPU per GiB, {:?}",
        fh.stats()
    );
    Ok((gbs, cpu_per_gib))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: scan FILE [readahead 0|1] [scanner threads]")?;
    let readahead = args.get(2).is_none_or(|a| a != "0");
    let nthr: usize = args.get(3).map_or(Ok(1), |a| a.parse())?;
    let size = std::fs::metadata(path)?.len();
    let modes: Vec<bool> = match std::env::var("ZERO_COPY").as_deref() {
        Ok("0") => vec![false],
        Ok("both") => vec![true, false],
        _ => vec![true],
    };
    let repeat: usize = std::env::var("REPEAT").map_or(Ok(1), |r| r.parse())?;
    if repeat > 1 {
        scan_once(path, size, readahead, nthr, modes[0])?;
    }
    let mut figs = vec![Vec::new(); modes.len()];
    let mut cpus = vec![Vec::new(); modes.len()];
    for _ in 0..repeat {
        for (i, &m) in modes.iter().enumerate() {
            let (g, c) = scan_once(path, size, readahead, nthr, m)?;
            figs[i].push(g);
            cpus[i].push(c);
        }
    }
    if repeat > 1 {
        for (i, m) in modes.iter().enumerate() {
            println!(
                "zero_copy {m}: median {:.3} GB/s, median CPU {:.0} ms per GiB, of {:?}",
                median(figs[i].clone()),
                median(cpus[i].clone()),
                figs[i]
                    .iter()
                    .map(|x| (x * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}
