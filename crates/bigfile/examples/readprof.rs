//! Where the time of a cold read goes: raw record loads, snapshot block
//! reads, and reads through a handle, over the same committed data, stored
//! in the format `$WENDELIN_CORE_ZBLK_FMT` names (ZBlk0 by default; ZBlk1
//! for a block's 512 chunk records). Run it under `perf record` for the
//! detail. `READPROF_BLOCKS` (128) blocks; the handles' options from
//! `ZC` (zero-copy loads, 1), `MAPF` (map files, 1) and `BUDGET_MIB`;
//! `RB_ROUNDS` (1) passes of the snapshot reads, for a profile of them.
use bigfile::reader::SnapshotFile;
use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat, create_file};
use std::time::Instant;
use storage::{DB, TransactionManager};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let db = DB::open(dir.path().join("d.fs").to_str().ok_or("path")?)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm)?;
    let f = create_file(&c, 2 << 20)?;
    tm.commit()?;
    let n: u64 = std::env::var("READPROF_BLOCKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let format = ZBlkFormat::from_env()?;
    let opts = || HandleOptions {
        format,
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    };
    let fh = ZBigFileH::open(&c, &tm, f, opts())?;
    {
        let mut h = fh.fileh()?;
        let mut v = h.bytes_mut(0..n << 21)?;
        v.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i % 251) as u8 | 1);
    }
    tm.commit()?;
    drop(fh);
    let at = c.at();
    let sf = SnapshotFile::open(db.storage().as_ref(), at, f)?;
    let blocks = sf.blocks()?;
    let t = Instant::now();
    for (_, o) in &blocks {
        let r = db.storage().load_before(*o, at.successor())?.ok_or("x")?;
        std::hint::black_box(r.data.len());
    }
    let raw = t.elapsed().as_secs_f64();
    let mut buf = vec![0u8; 2 << 20];
    // `RB_ROUNDS` (1) passes of read_block, timed per pass: more of them
    // make a profile of the read path alone.
    let rounds: u32 = std::env::var("RB_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        for b in 0..n {
            sf.read_block(b, &mut buf)?;
        }
    }
    let rb = t.elapsed().as_secs_f64() / f64::from(rounds);
    // the same from two threads, each with its own buffer (like handler threads)
    let t = Instant::now();
    std::thread::scope(|sc| {
        for k in 0..2u64 {
            let sf = &sf;
            sc.spawn(move || {
                let mut buf = vec![0u8; 2 << 20];
                for b in (k..n).step_by(2) {
                    let _ = sf.read_block(b, &mut buf);
                }
            });
        }
    });
    println!(
        "read_block in 2 threads: {:.2} GB/s",
        (n << 21) as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    let tm2 = TransactionManager::new();
    let c2 = db.open_connection(&tm2)?;
    for ra in [false, true] {
        let fh2 = ZBigFileH::open(
            &c2,
            &tm2,
            f,
            HandleOptions {
                format,
                virtmem: virtmem::Options {
                    readahead: ra,
                    zero_copy: std::env::var("ZC").map(|v| v == "1").unwrap_or(true),
                    map_files: std::env::var("MAPF").map(|v| v == "1").unwrap_or(true),
                    budget: std::env::var("BUDGET_MIB")
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|m| m << 20),
                    ..Default::default()
                },
                spill_threshold: None,
            },
        )?;
        let t = Instant::now();
        {
            let h = fh2.fileh_read()?;
            let v = h.view::<u64>(0, (n << 21) as usize / 8)?;
            // One word per page (the bench's cold read), or every word
            // (`FULL=1`: a scan that reads the data).
            let step = if std::env::var("FULL").is_ok_and(|v| v == "1") {
                1
            } else {
                512
            };
            std::hint::black_box(v.iter().step_by(step).fold(0u64, |a, x| a.wrapping_add(*x)));
        }
        let hd = t.elapsed().as_secs_f64();
        // The same again, blocks resident (within the budget).
        let t = Instant::now();
        {
            let h = fh2.fileh_read()?;
            let v = h.view::<u64>(0, (n << 21) as usize / 8)?;
            std::hint::black_box(v.iter().fold(0u64, |a, x| a.wrapping_add(*x)));
        }
        let again = t.elapsed().as_secs_f64();
        let st = fh2.fileh_read()?.stats();
        println!(
            "handle (readahead {ra}): {:.2} GB/s, again (summing every word) {:.2} GB/s \
             [moved {} of {} loads, {} recycled, fresh pages {} us/MiB]",
            (n << 21) as f64 / hd / 1e9,
            (n << 21) as f64 / again / 1e9,
            st.moved_loads,
            st.loads + st.readahead_loads,
            st.recycled,
            st.fresh_pages_ns_per_mib / 1000
        );
    }
    let gb = (n << 21) as f64 / 1e9;
    println!(
        "load_before: {:.2} GB/s, read_block: {:.2} GB/s",
        gb / raw,
        gb / rb
    );
    Ok(())
}
