//! `wendelin demo`: generate a signal array bigger than the RAM budget in
//! bounded transactions, then reopen it and compute its mean and sum out of
//! core, printing throughput, peak RSS and the database size (like
//! wendelin.core's demo_zbigarray).

use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use std::time::Instant;
use storage::{DB, TransactionManager, Value};

type R<T> = Result<T, String>;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

/// The demo signal: a slow sine plus a deterministic sawtooth "noise".
pub fn signal(i: u64) -> f64 {
    (i as f64 * 1e-6).sin() + ((i.wrapping_mul(7919)) % 1000) as f64 * 1e-4
}

fn opts() -> HandleOptions {
    HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

/// Peak resident set size of this process in bytes (`VmHWM`).
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Generate `bytes` of f64 signal as root["signal"] of the FileStorage in
/// `dir`, committing every `txn_bytes`.
pub fn generate(dir: &str, bytes: u64, txn_bytes: u64) -> R<()> {
    std::fs::create_dir_all(dir).map_err(|x| format!("{dir}: {x}"))?;
    let path = format!("{dir}/data.fs");
    let db = DB::open(&path).map_err(e)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).map_err(e)?;
    let n = bytes / 8;
    let a = ZBigArray::<f64>::create(&c, &tm, &[0], Order::C, opts()).map_err(e)?;
    let r = c.ref_to(a.oid()).map_err(e)?;
    c.root_mut().map_err(e)?.insert("signal", r);
    tm.note("demo: create signal");
    tm.commit().map_err(e)?;
    let step = (txn_bytes / 8).max(1 << 16);
    let piece = (16u64 << 20) / 8; // generated 16 MiB at a time
    let pb = crate::arraycmd::progress(bytes, "gen");
    let t = Instant::now();
    let mut done = 0u64;
    let mut txns = 0u64;
    while done < n {
        let end = (done + step).min(n);
        while done < end {
            let k = piece.min(end - done);
            let part =
                ArrayD::from_shape_fn(IxDyn(&[k as usize]), |ix| signal(done + ix[0] as u64));
            a.append(part.view()).map_err(e)?;
            done += k;
            pb.set_position(done * 8);
        }
        tm.note(&format!("demo: signal up to {done}"));
        tm.commit().map_err(e)?;
        txns += 1;
    }
    pb.finish_and_clear();
    let el = t.elapsed().as_secs_f64();
    crate::outln!(
        "gen: {} of f64 in {:.1} s ({:.2} GB/s, {} transactions), peak RSS {}, database {}",
        gib(n * 8),
        el,
        (n * 8) as f64 / el / 1e9,
        txns,
        gib(peak_rss()),
        gib(std::fs::metadata(&path).map_err(e)?.len())
    );
    Ok(())
}

/// Reopen root["signal"] and compute its mean and sum out of core.
pub fn read(dir: &str) -> R<()> {
    let path = format!("{dir}/data.fs");
    let db = DB::open_read_only(&path).map_err(e)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).map_err(e)?;
    let oid = c
        .root()
        .map_err(e)?
        .get("signal")
        .and_then(Value::ref_oid)
        .ok_or_else(|| format!("{path}: no signal array (run `wendelin demo gen {dir}` first)"))?;
    let a = ZBigArray::<f64>::open(&c, &tm, oid, opts()).map_err(e)?;
    let bytes = a.state().nbytes();
    let pb = crate::arraycmd::progress(bytes, "read");
    let done = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    let (sum, count) = a
        .map_reduce(
            a.rows_per_chunk(8 << 20),
            |_, chunk| {
                let p = done.fetch_add(
                    (chunk.len() * std::mem::size_of::<f64>()) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                pb.set_position(p);
                (chunk.iter().sum::<f64>(), chunk.len() as u64)
            },
            || (0.0, 0),
            |x, y| (x.0 + y.0, x.1 + y.1),
        )
        .map_err(e)?;
    pb.finish_and_clear();
    let el = t.elapsed().as_secs_f64();
    crate::outln!(
        "read: {count} values, sum {sum:.6}, mean {:.9} in {:.1} s ({:.2} GB/s), peak RSS {} (budget {}), database {}",
        sum / count.max(1) as f64,
        el,
        bytes as f64 / el / 1e9,
        gib(peak_rss()),
        gib(virtmem::process_budget().limit()),
        gib(std::fs::metadata(&path).map_err(e)?.len())
    );
    Ok(())
}
