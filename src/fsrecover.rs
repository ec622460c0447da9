//! `wendelin fsrecover DB OUT`: salvage a damaged FileStorage.
//!
//! The work is the storage crate's `salvage` (copy every intact transaction,
//! skip and report the rest); this command refuses an existing output,
//! prints what was skipped, and checks that the result opens cleanly.

use std::path::Path;
use storage::filestorage::{FileStorage, salvage};

/// Run the command: a summary on stdout, one line per skipped range.
pub fn run(input: &Path, out: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(format!(
            "{}: exists (fsrecover writes a new file)",
            out.display()
        ));
    }
    let r = salvage(input, out).map_err(|e| e.to_string())?;
    for s in &r.skipped {
        wendelin::outln!(
            "skipped bytes {}..{} ({} bytes) of {}: {}",
            s.start,
            s.end,
            s.end - s.start,
            input.display(),
            s.reason
        );
    }
    wendelin::outln!(
        "copied {} transactions ({} records) to {}",
        r.copied,
        r.records,
        out.display()
    );
    FileStorage::open_read_only(out)
        .map(|_| ())
        .map_err(|e| format!("{}: the recovered file does not open: {e}", out.display()))
}
