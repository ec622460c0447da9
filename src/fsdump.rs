//! `wendelin fsdump`: every transaction and data record of a FileStorage,
//! like ZODB's `fsdump`, as text or as one JSON document.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use storage::filestorage::{FileStorage, RawRecord};
use storage::{Error, Oid, Value, pickle};

/// One data record of the dump.
#[derive(Debug, Serialize)]
pub struct DumpRecord {
    /// File offset of the record header.
    pub pos: u64,
    /// Object id (16 hex digits).
    pub oid: String,
    /// Revision tid (16 hex digits).
    pub tid: String,
    /// Offset of the previous revision's record (0 = none).
    pub prev: u64,
    /// Offset of the enclosing transaction.
    pub tloc: u64,
    /// Length of the record data (0 = backpointer record).
    pub data_len: u64,
    /// For `data_len == 0`: the backpointer (0 = object deleted / creation undone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backpointer: Option<u64>,
    /// Class `module.name` of the data (after following a backpointer);
    /// `null` when the object does not exist at this revision.
    pub class: Option<String>,
    /// SHA-256 of the record data (after following a backpointer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    /// When the object state is a byte string (ZBlk0, ZData): its length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_len: Option<usize>,
    /// When the object state is a byte string (ZBlk0, ZData): its SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One transaction of the dump.
#[derive(Debug, Serialize)]
pub struct DumpTxn {
    /// File offset of the transaction header.
    pub pos: u64,
    /// Transaction id (16 hex digits).
    pub tid: String,
    /// The tid as UTC time, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub tid_time_utc: String,
    /// Record length excluding the trailer.
    pub tlen: u64,
    /// Status character (`" "`, `"p"`, ...).
    pub status: String,
    /// User (lossy UTF-8).
    pub user: String,
    /// Description (lossy UTF-8).
    pub description: String,
    /// Extension bytes, hex.
    pub extension_hex: String,
    /// Data records in file order.
    pub records: Vec<DumpRecord>,
}

/// The whole dump.
#[derive(Debug, Serialize)]
pub struct Dump {
    /// The file path.
    pub file: String,
    /// `FS30` or `FS21`.
    pub magic: String,
    /// File size in bytes.
    pub file_size: u64,
    /// Last committed tid.
    pub last_tid: String,
    /// Largest oid in the index, if any.
    pub max_oid: Option<String>,
    /// Transactions, oldest first.
    pub transactions: Vec<DumpTxn>,
}

/// Error of the dump: an error of the storage with the file it happened in.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DumpError(String);

fn with_file(path: &Path, e: Error) -> DumpError {
    match e {
        // These already name the file.
        Error::Io { .. } | Error::Corrupt { .. } => DumpError(e.to_string()),
        other => DumpError(format!("{}: {other}", path.display())),
    }
}

fn record(fs: &FileStorage, path: &Path, r: &RawRecord) -> Result<DumpRecord, DumpError> {
    let h = &r.header;
    let data = fs.raw_record_data(h).map_err(|e| with_file(path, e))?;
    let mut out = DumpRecord {
        pos: h.pos,
        oid: h.oid.to_string(),
        tid: h.tid.to_string(),
        prev: h.prev,
        tloc: h.tloc,
        data_len: h.plen,
        backpointer: r.backpointer,
        class: None,
        data_sha256: None,
        bytes_len: None,
        sha256: None,
    };
    if let Some(data) = data {
        // Offsets of pickle errors are reported as file offsets when the
        // data is this record's own (not behind a backpointer).
        let base = if h.plen > 0 { h.pos + 42 } else { 0 };
        let bad = |e: Error| {
            let at = match &e {
                Error::Pickle { offset, .. } if base > 0 => {
                    format!("at byte {}", base + *offset as u64)
                }
                _ => format!("record at byte {}", h.pos),
            };
            DumpError(format!("{}: {at}: oid {}: {e}", path.display(), h.oid))
        };
        let (meta, state) = pickle::decode_record(&data).map_err(bad)?;
        let (m, n) = pickle::class_of_meta(&meta).ok_or_else(|| {
            DumpError(format!(
                "{}: record at byte {}: oid {}: class metadata has no known form",
                path.display(),
                h.pos,
                h.oid
            ))
        })?;
        out.class = Some(format!("{m}.{n}"));
        out.data_sha256 = Some(hex::encode(Sha256::digest(&data)));
        if let Value::Bytes(b) | Value::Py2Str(b) = &state {
            out.bytes_len = Some(b.len());
            out.sha256 = Some(hex::encode(Sha256::digest(b)));
        }
    }
    Ok(out)
}

/// Build the dump of the FileStorage at `path` (opened read-only).
pub fn dump(path: &Path) -> Result<Dump, DumpError> {
    let fs = FileStorage::open_read_only(path).map_err(|e| with_file(path, e))?;
    let file_size = std::fs::metadata(path)
        .map_err(|e| DumpError(format!("{}: stat: {e}", path.display())))?
        .len();
    let mut transactions = Vec::new();
    let mut max_oid: Option<Oid> = None;
    for t in fs.raw_transactions() {
        let t = t.map_err(|e| with_file(path, e))?;
        let records = t
            .records
            .iter()
            .map(|r| {
                max_oid = Some(max_oid.map_or(r.header.oid, |m| m.max(r.header.oid)));
                record(&fs, path, r)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let h = &t.header;
        transactions.push(DumpTxn {
            pos: h.pos,
            tid: h.tid.to_string(),
            tid_time_utc: format!("{}Z", h.tid.time_string().replacen(' ', "T", 1)),
            tlen: h.tlen,
            status: char::from(h.status).to_string(),
            user: String::from_utf8_lossy(&t.meta.user).into_owned(),
            description: String::from_utf8_lossy(&t.meta.description).into_owned(),
            extension_hex: hex::encode(&t.meta.extension),
            records,
        });
    }
    let info = fs.scan_info();
    if info.tail != storage::filestorage::Tail::Clean {
        tracing::warn!(file = %path.display(), at = info.end, "incomplete transaction at the end of the file ignored");
    }
    Ok(Dump {
        file: path.display().to_string(),
        magic: String::from_utf8_lossy(&fs.magic()).into_owned(),
        file_size,
        last_tid: storage::Storage::last_tid(&fs).to_string(),
        max_oid: max_oid.map(|o| o.to_string()),
        transactions,
    })
}

/// Print `d` as text, one line per transaction and per record.
pub fn print_text(d: &Dump, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} ({} bytes), last tid {}",
        d.file, d.magic, d.file_size, d.last_tid
    )?;
    for (i, t) in d.transactions.iter().enumerate() {
        writeln!(
            out,
            "Trans #{i:05} tid={} time={} offset={} size={}",
            t.tid, t.tid_time_utc, t.pos, t.tlen
        )?;
        writeln!(
            out,
            "    status={:?} user={:?} description={:?}{}",
            t.status,
            t.user,
            t.description,
            if t.extension_hex.is_empty() {
                String::new()
            } else {
                format!(" extension={}", t.extension_hex)
            }
        )?;
        for (j, r) in t.records.iter().enumerate() {
            write!(
                out,
                "  data #{j:05} oid={} size={} class={}",
                r.oid,
                r.data_len,
                r.class.as_deref().unwrap_or("-")
            )?;
            match r.backpointer {
                Some(0) => writeln!(out, " (object does not exist: no data, backpointer 0)")?,
                Some(b) => writeln!(out, " bp={b}")?,
                None => writeln!(out)?,
            }
        }
    }
    Ok(())
}
