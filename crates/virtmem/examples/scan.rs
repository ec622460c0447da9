//! Scan a file through a handle and print the throughput and the handle's
//! counters: `cargo run --release --example scan -- FILE [readahead 0|1] [threads]`
//! (env `RA_WINDOW`: read-ahead window in blocks).

use std::sync::Arc;
use std::time::Instant;

use virtmem::{BigFile, FileBigFile, FileH, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: scan FILE [readahead 0|1] [scanner threads]")?;
    let readahead = args.get(2).is_none_or(|a| a != "0");
    let nthr: usize = args.get(3).map_or(Ok(1), |a| a.parse())?;
    let size = std::fs::metadata(path)?.len();
    let bs = 2 << 20;
    let file = Arc::new(FileBigFile::open(path.as_ref(), bs)?);
    let opts = Options {
        reserve: size,
        budget: Some(size + (64 << 20)),
        readahead,
        readahead_window: std::env::var("RA_WINDOW")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(Options::default().readahead_window),
        ..Options::default()
    };
    let fh = FileH::open(file as Arc<dyn BigFile>, opts)?;
    let v = fh.view::<u64>(0, (size / 8) as usize)?;
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
    println!(
        "sum {sum:#x}: {:.3} GB/s, {:?}",
        size as f64 / dt / 1e9,
        fh.stats()
    );
    Ok(())
}
