//! `wendelin pack DB [--before TID|TIME | --days N]`: drop history nobody
//! can reach (ZODB's pack), with a progress bar and the size before and
//! after.
//!
//! The pack time says which history goes: the database as it was at that
//! moment, and everything after, stays readable; older revisions that are
//! not part of it are dropped (storage's `FileStorage::pack`). The default
//! is now: only the current state survives. The previous file is kept as
//! `DB.old` (ZODB's convention); remove it to get the space back on disk.

use std::path::PathBuf;
use storage::timespec::{parse_tid_or_time, tid_days_ago};
use storage::{FileStorage, PackStats, Storage, Tid};

/// The file of a database given as a path or a `file://` URL.
pub fn file_path(db: &str) -> Result<PathBuf, String> {
    if let Some(p) = db.strip_prefix("file://") {
        return Ok(PathBuf::from(p));
    }
    if db.contains("://") {
        return Err(format!(
            "{db}: pack works on a FileStorage (a path or file:// URL)"
        ));
    }
    Ok(PathBuf::from(db))
}

/// The pack time from `--before` / `--days` (default: now).
pub fn pack_time(fs: &FileStorage, before: Option<&str>, days: Option<f64>) -> Result<Tid, String> {
    match (before, days) {
        (Some(_), Some(_)) => Err("give --before or --days, not both".into()),
        (Some(b), None) => parse_tid_or_time(b).map_err(|e| e.to_string()),
        (None, Some(d)) if d.is_finite() && d >= 0.0 => {
            tid_days_ago(d).ok_or_else(|| format!("--days {d}: out of range"))
        }
        (None, Some(d)) => Err(format!("--days {d}: must be a number >= 0")),
        // Now: the newest transaction is the state to keep (a clock behind
        // the last commit must not pack less than everything).
        (None, None) => Ok(fs.last_tid().max(tid_days_ago(0.0).unwrap_or(Tid::ZERO))),
    }
}

/// Run the pack and print what it did.
pub fn run(db: &str, before: Option<&str>, days: Option<f64>) -> Result<PackStats, String> {
    let path = file_path(db)?;
    if !path.exists() {
        return Err(format!("{}: no such database", path.display()));
    }
    let fs = FileStorage::open(&path).map_err(|e| e.to_string())?;
    let at = pack_time(&fs, before, days)?;
    let pb = wendelin::arraycmd::progress(0, "packing");
    let stats = fs
        .pack(at, |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })
        .map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    if stats.packed {
        wendelin::outln!(
            "packed {} as of {} ({}): {} -> {} bytes ({} reclaimed; previous file kept as {}.old)",
            path.display(),
            at,
            at.time_string(),
            stats.size_before,
            stats.size_after,
            stats.size_before.saturating_sub(stats.size_after),
            path.display()
        );
    } else {
        wendelin::outln!(
            "nothing to pack in {} as of {} ({}): {} bytes",
            path.display(),
            at,
            at.time_string(),
            stats.size_before
        );
    }
    if stats.carried_over > 0 {
        wendelin::outln!(
            "{} transactions committed during the pack were carried over",
            stats.carried_over
        );
    }
    if stats.dangling_refs > 0 {
        eprintln!(
            "wendelin: warning: {} references to objects that did not exist at the pack time",
            stats.dangling_refs
        );
    }
    Ok(stats)
}
