//! Benchmark of pack: a demo-like database (one f64 signal array of 2 MiB
//! ZBlk0 blocks) after 100 small edits, each rewriting one block. Pack
//! throughput (input bytes per second) is measured beside a plain copy of
//! the same file in the same run; the sizes before and after show the
//! space reclaimed.

use crate::common::{Config, Report, drop_file_cache, timed};
use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use storage::{DB, FileStorage, Storage, TransactionManager};

const EDITS: u64 = 100;

/// Run this group.
pub fn run(cfg: &Config, report: &mut Report) -> Result<(), String> {
    let e = |e: storage::Error| e.to_string();
    let dir = tempfile::Builder::new()
        .prefix("wendelin-bench-pack")
        .tempdir_in(&cfg.dir)
        .map_err(|e| e.to_string())?;
    let path = dir.path().join("data.fs");
    let n = (cfg.size_mib << 20) / 8;
    {
        let db = DB::open(path.to_str().ok_or("path")?).map_err(e)?;
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).map_err(e)?;
        let opts = HandleOptions {
            format: ZBlkFormat::ZBlk0,
            ..HandleOptions::from_env().map_err(|e| e.to_string())?
        };
        let a =
            ZBigArray::<f64>::create(&c, &tm, &[0], Order::C, opts).map_err(|e| e.to_string())?;
        let r = c.ref_to(a.oid()).map_err(e)?;
        c.root_mut().map_err(e)?.insert("signal", r);
        tm.commit().map_err(e)?;
        let piece = (16u64 << 20) / 8;
        let mut done = 0;
        while done < n {
            let k = piece.min(n - done);
            let part =
                ArrayD::from_shape_fn(IxDyn(&[k as usize]), |ix| (done + ix[0] as u64) as f64);
            a.append(part.view()).map_err(|e| e.to_string())?;
            done += k;
            tm.commit().map_err(e)?;
        }
        // 100 small edits: 8 bytes each, spread over the array.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..EDITS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % n) * 8;
            a.file()
                .write(at, &1.5f64.to_le_bytes())
                .map_err(|e| e.to_string())?;
            tm.commit().map_err(e)?;
        }
    }
    let before = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    eprintln!(
        "pack: demo-like database of {} MiB of f64 + {EDITS} small edits: {} bytes",
        cfg.size_mib, before
    );

    // Baseline: a plain copy of the same file.
    let copy = dir.path().join("copy.fs");
    let _ = drop_file_cache(&path);
    let (r, copy_s) = timed(|| std::fs::copy(&path, &copy));
    r.map_err(|e| e.to_string())?;
    std::fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(|e| e.to_string())?;
    std::fs::remove_file(&copy).map_err(|e| e.to_string())?;

    let _ = drop_file_cache(&path);
    let fs = FileStorage::open(&path).map_err(e)?;
    let at = fs.last_tid();
    let (st, pack_s) = timed(|| fs.pack(at, |_, _| {}));
    let st = st.map_err(e)?;
    report.throughput(
        "pack: demo db, 100 edits (input)",
        before,
        pack_s,
        "cp of the same file",
        copy_s,
    );
    report.push(
        "pack: file size after (MiB)",
        st.size_after as f64 / (1 << 20) as f64,
        "size before (MiB)",
        before as f64 / (1 << 20) as f64,
        "MiB",
        false,
    );
    eprintln!(
        "pack: {} -> {} bytes ({} reclaimed, {:.1}%)",
        st.size_before,
        st.size_after,
        st.size_before - st.size_after,
        100.0 * (st.size_before - st.size_after) as f64 / st.size_before as f64
    );
    Ok(())
}
