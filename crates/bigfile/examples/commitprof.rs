//! Where the time of a small commit goes: the bench's "commit of an 8-byte
//! change" loop (4 blocks in the format `$WENDELIN_CORE_ZBLK_FMT` names,
//! ZBlk1 by default here; one 8-byte write and a commit per round),
//! `$COMMITPROF_ROUNDS` rounds (500 by default), printing the median. Run it
//! under `perf record` for the detail.
use bigfile::{HandleOptions, ZBigFileH, ZBlkFormat, create_file};
use std::time::Instant;
use storage::{DB, TransactionManager};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in(std::env::var("COMMITPROF_DIR").unwrap_or("/var/tmp".into()))?;
    let db = DB::open(dir.path().join("d.fs").to_str().ok_or("path")?)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm)?;
    let bs: u64 = 2 << 20;
    let f = create_file(&c, bs)?;
    tm.commit()?;
    let format = match std::env::var("WENDELIN_CORE_ZBLK_FMT") {
        Ok(_) => ZBlkFormat::from_env()?,
        Err(_) => ZBlkFormat::ZBlk1,
    };
    let n: u64 = std::env::var("COMMITPROF_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
        .max(1);
    let fh = ZBigFileH::open(
        &c,
        &tm,
        f,
        HandleOptions {
            format,
            virtmem: virtmem::Options::default(),
            spill_threshold: None,
        },
    )?;
    let full: Vec<u8> = (0..bs as usize).map(|i| (i % 251) as u8 | 1).collect();
    for b in 0..4 {
        fh.write(b * bs, &full)?;
    }
    tm.commit()?;
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n {
        fh.write((i % 4) * bs + 4096 * (i % 500 + 1), &i.to_le_bytes())?;
        let t = Instant::now();
        tm.commit()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "commit of an 8-byte change ({format:?}): median {:.3} ms, p10 {:.3}, p90 {:.3}",
        times[times.len() / 2],
        times[times.len() / 10],
        times[times.len() * 9 / 10]
    );
    Ok(())
}
