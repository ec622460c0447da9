//! The history of a database: its transactions, newest first, with what
//! each did to the root's entries (`wendelin log`, [`crate::Db::log`]).
//!
//! For each transaction: its tid and time, user, description, size in the
//! file, the number of object records, and what it did to the root
//! mapping's entries: `added`, `removed`, `replaced` (the entry now names
//! another object or value) or `modified` (the entry's own object was
//! stored again; changes deeper down, such as an array's blocks, are not
//! traced back to their entry). Read-only; headers are read, and record
//! data only for the root object.

use serde::Serialize;
use std::collections::BTreeSet;
use storage::db::PersistentClass;
use storage::{FileStorage, Oid, PersistentMapping, Storage, Value, pickle};

/// One transaction of the log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Transaction id (16 hex digits).
    pub tid: String,
    /// Commit time, UTC.
    pub time: String,
    /// User field.
    pub user: String,
    /// Description.
    pub description: String,
    /// Bytes the transaction takes in the file.
    pub size: u64,
    /// Number of object records.
    pub records: usize,
    /// Status: `" "` committed, `"p"` kept by a pack.
    pub status: String,
    /// Root entries changed.
    pub root: Vec<RootChange>,
}

/// A change to one root entry.
#[derive(Debug, Clone, Serialize)]
pub struct RootChange {
    /// The entry name.
    pub name: String,
    /// `added`, `removed`, `replaced` or `modified`.
    pub change: &'static str,
}

fn root_of(data: Option<Vec<u8>>) -> Result<Vec<(String, Value)>, String> {
    let Some(data) = data else {
        return Ok(Vec::new());
    };
    let (meta, state) = pickle::decode_record(&data).map_err(|e| e.to_string())?;
    let (module, name) = pickle::class_of_meta(&meta).unwrap_or_default();
    let m = PersistentMapping::from_state(Oid::ROOT, &module, &name, state)
        .map_err(|e| e.to_string())?;
    Ok(m.data
        .into_iter()
        .filter_map(|(k, v)| k.as_text().map(|k| (k.to_owned(), v)))
        .collect())
}

/// The log of a FileStorage, newest first, at most `limit` transactions.
pub fn log_of(fs: &FileStorage, limit: Option<usize>) -> Result<Vec<LogEntry>, String> {
    let txns: Vec<_> = fs
        .raw_transactions()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let n = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for t in txns.iter().rev().take(n) {
        let tid = t.header.tid;
        let oids: BTreeSet<Oid> = t.records.iter().map(|r| r.header.oid).collect();
        let mut root = Vec::new();
        let after = match t.records.iter().find(|r| r.header.oid == Oid::ROOT) {
            Some(r) => Some(root_of(
                fs.raw_record_data(&r.header).map_err(|e| e.to_string())?,
            )?),
            None => None,
        };
        let now = match after {
            Some(now) => {
                let before = root_of(
                    fs.load_before(Oid::ROOT, tid)
                        .map_err(|e| e.to_string())?
                        .map(|r| r.data),
                )?;
                for (k, v) in &now {
                    match before.iter().find(|(bk, _)| bk == k) {
                        None => root.push((k.clone(), "added")),
                        Some((_, bv)) if bv != v => root.push((k.clone(), "replaced")),
                        _ => {}
                    }
                }
                for (k, _) in &before {
                    if !now.iter().any(|(nk, _)| nk == k) {
                        root.push((k.clone(), "removed"));
                    }
                }
                now
            }
            None => root_of(
                fs.load_before(Oid::ROOT, tid.successor())
                    .map_err(|e| e.to_string())?
                    .map(|r| r.data),
            )?,
        };
        for (k, v) in &now {
            if v.ref_oid().is_some_and(|o| oids.contains(&o)) && !root.iter().any(|(rk, _)| rk == k)
            {
                root.push((k.clone(), "modified"));
            }
        }
        out.push(LogEntry {
            tid: tid.to_string(),
            time: tid.time_string(),
            user: String::from_utf8_lossy(&t.meta.user).into_owned(),
            description: String::from_utf8_lossy(&t.meta.description).into_owned(),
            size: t.header.tlen + 8,
            records: t.records.len(),
            status: (t.header.status as char).to_string(),
            root: root
                .into_iter()
                .map(|(name, change)| RootChange { name, change })
                .collect(),
        });
    }
    Ok(out)
}
