//! `wendelin log DB [--json] [--limit N]`: the transactions of a
//! database, newest first.
//!
//! For each transaction: its tid and time, user, description, size in the
//! file, the number of object records, and what it did to the root
//! mapping's entries: `added`, `removed`, `replaced` (the entry now names
//! another object or value) or `modified` (the entry's own object was
//! stored again; changes deeper down, such as an array's blocks, are not
//! traced back to their entry). Read-only; headers are read, and record
//! data only for the root object.

use crate::packcmd::file_path;
use storage::FileStorage;
pub use wendelin::history::{LogEntry, log_of};

/// The log, newest first, at most `limit` transactions.
pub fn log(db: &str, limit: Option<usize>) -> Result<Vec<LogEntry>, String> {
    let path = file_path(db)?;
    let fs = FileStorage::open_read_only(&path).map_err(|e| e.to_string())?;
    log_of(&fs, limit)
}

/// Print the log as text.
pub fn print_text(entries: &[LogEntry], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for e in entries {
        writeln!(
            out,
            "{}  {}  {} bytes, {} records{}",
            e.tid,
            e.time,
            e.size,
            e.records,
            if e.status == "p" { " (packed)" } else { "" }
        )?;
        if !e.user.is_empty() {
            writeln!(out, "    user: {}", e.user)?;
        }
        for line in e.description.lines() {
            writeln!(out, "    {line}")?;
        }
        for c in &e.root {
            writeln!(out, "    {} {}", c.change, c.name)?;
        }
    }
    Ok(())
}
