//! The index: which record is the latest revision of each object, built by
//! one header-only scan of the file.
//!
//! # Model
//!
//! A FileStorage is append-only, so everything a reader needs besides record
//! data fits in a small in-memory index: `oid -> offset of its latest data
//! record`, the committed transactions `(tid, offset)` in file order, and the
//! append position. Opening a file scans it once; a sync scans only what
//! other processes appended since (or rebuilds everything when the file was
//! replaced by a pack or truncated below our end).
//!
//! The scan reads only headers and jumps over record data by its length
//! (through a small [`Window`] that serves dense headers from one `pread`),
//! so opening a file of large records costs a few small reads per record.
//! It checks every header it passes (tloc, prev and backpointers point
//! backwards, records fill their transaction, the redundant length matches)
//! and reports what follows the last complete transaction as a [`Tail`]: a
//! torn tail is not an error, it just ends the data (see `recovery`).

use super::format::{
    DATA_HDR_LEN, DataHeader, STATUS_CHECKPOINT, STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE,
    TxnHeader,
};
use super::{Shared, corrupt};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

/// What the scan found after the last complete transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after the last transaction.
    Clean,
    /// Fewer than 23 bytes of a header (a crash while writing it).
    PartialHeader,
    /// A transaction in progress or torn: status `'c'` or shorter than its length.
    Incomplete,
}

/// What the scan learned about the file.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    /// oid -> offset of its latest data record.
    pub(super) oids: HashMap<Oid, u64>,
    /// Committed, indexed transactions in file order.
    pub(super) txns: Vec<(Tid, u64)>,
    /// Append position: end of the last complete transaction.
    pub(super) end: u64,
    /// The tid of the last complete transaction.
    pub(super) last_tid: Tid,
    /// Largest tid seen anywhere, including a dropped torn tail.
    pub(super) max_tid_seen: Tid,
    /// Largest oid in the index.
    pub(super) max_oid: Option<Oid>,
    /// The tid of the last packed transaction (status `'p'`), `Tid::ZERO`
    /// if none: the oldest complete snapshot.
    pub(super) pack_horizon: Tid,
    /// Offset and kind of what follows the last complete transaction, if
    /// it is not a clean end.
    pub(super) tail: Option<(u64, Tail)>,
}

impl Index {
    /// The index of a file that holds only its magic.
    pub(super) fn empty() -> Index {
        Index {
            end: 4,
            ..Index::default()
        }
    }

    /// Statistics for [`ScanInfo`].
    pub(super) fn info(&self) -> ScanInfo {
        ScanInfo {
            end: self.end,
            transactions: self.txns.len(),
            objects: self.oids.len(),
            tail: self.tail.map_or(Tail::Clean, |t| t.1),
        }
    }
}

/// Scan statistics of the last open/sync, for tools and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanInfo {
    /// Append position (end of the last complete transaction).
    pub end: u64,
    /// Number of indexed transactions.
    pub transactions: usize,
    /// Number of objects in the index.
    pub objects: usize,
    /// What follows the last complete transaction.
    pub tail: Tail,
}

/// Window reader used by scans: serves small header reads from a buffer so
/// that dense small records cost one `pread` per window, sparse large ones
/// one small `pread` per record.
pub(super) struct Window<'f> {
    file: &'f File,
    path: &'f Path,
    size: u64,
    buf: Vec<u8>,
    start: u64,
    /// How long the last `get` spent reading the file (`None`: it was
    /// served from the window).
    pub(super) last_read: Option<std::time::Duration>,
}

const WINDOW: usize = 16 * 1024;

impl<'f> Window<'f> {
    pub(super) fn new(file: &'f File, path: &'f Path, size: u64) -> Self {
        Window {
            file,
            path,
            size,
            buf: Vec::with_capacity(WINDOW),
            start: 0,
            last_read: None,
        }
    }

    /// `n <= WINDOW` bytes at `pos`; fewer only at end of file.
    fn get(&mut self, pos: u64, n: usize) -> Result<&[u8]> {
        let in_window = pos >= self.start && pos + n as u64 <= self.start + self.buf.len() as u64;
        if !in_window {
            let want = WINDOW.min(self.size.saturating_sub(pos) as usize);
            self.buf.resize(want, 0);
            // The file may shrink while we scan (another process aborting
            // its commit truncates it): a short read ends the window.
            let t = std::time::Instant::now();
            let mut got = 0;
            while got < want {
                match self.file.read_at(&mut self.buf[got..], pos + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(self.path, "read", e)),
                }
            }
            self.last_read = Some(t.elapsed());
            self.buf.truncate(got);
            self.start = pos;
        } else {
            self.last_read = None;
        }
        let off = (pos - self.start) as usize;
        let end = (off + n).min(self.buf.len());
        Ok(&self.buf[off..end])
    }

    pub(super) fn get_arr<const N: usize>(&mut self, pos: u64) -> Result<Option<[u8; N]>> {
        let s = self.get(pos, N)?;
        if s.len() < N {
            return Ok(None);
        }
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(Some(a))
    }
}

/// Scan transactions from `pos` to the end of the file, adding them to `idx`.
/// Returns the tail state. The headers of large transactions ahead of the
/// scan are read from other threads meanwhile (`index_prefetch`), which
/// only warms the page cache.
pub(super) fn scan(file: &File, path: &Path, pos: u64, idx: &mut Index) -> Result<Tail> {
    super::index_prefetch::with_prefetch(file, path, pos, super::index_prefetch::PLAN, || {
        scan_alone(file, path, pos, idx)
    })
}

/// [`scan`] on this thread alone.
pub(super) fn scan_alone(file: &File, path: &Path, mut pos: u64, idx: &mut Index) -> Result<Tail> {
    let size = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    let mut w = Window::new(file, path, size);
    let mut tindex: Vec<(Oid, u64)> = Vec::new();
    let tail = 'txns: loop {
        if pos >= size {
            break Tail::Clean;
        }
        let Some(hb) = w.get_arr::<23>(pos)? else {
            break Tail::PartialHeader;
        };
        let h = TxnHeader::parse(pos, &hb);
        if h.tid <= idx.last_tid && idx.last_tid != Tid::ZERO {
            tracing::warn!(path = %path.display(), pos, tid = %h.tid, last = %idx.last_tid, "time-stamp reduction");
        }
        if h.status == STATUS_CHECKPOINT || h.tlen > size - pos || size - pos - h.tlen < 8 {
            if let Some(next) = super::damage::committed_after(file, path, pos, size)? {
                return Err(corrupt(
                    path,
                    pos,
                    format!(
                        "damaged transaction header (status {:?}, length {}): not a torn tail, a committed transaction follows at byte {next}",
                        char::from(h.status),
                        h.tlen
                    ),
                ));
            }
            idx.max_tid_seen = idx.max_tid_seen.max(h.tid);
            break Tail::Incomplete;
        }
        if h.tlen < h.header_len() {
            return Err(corrupt(
                path,
                pos,
                format!(
                    "invalid transaction header: length {} shorter than its header ({})",
                    h.tlen,
                    h.header_len()
                ),
            ));
        }
        let end = pos + h.tlen;
        if h.status != STATUS_UNDONE {
            if h.status != STATUS_COMMITTED && h.status != STATUS_PACKED {
                tracing::warn!(path = %path.display(), pos, status = h.status, "invalid transaction status");
            }
            tindex.clear();
            let mut p = pos + h.header_len();
            while p < end {
                let db = w.get_arr::<42>(p)?;
                let Some(db) = db.filter(|_| p + DATA_HDR_LEN <= end) else {
                    if db.is_none() && shrunk(file, path, end)? {
                        break 'txns Tail::Incomplete;
                    }
                    return Err(corrupt(
                        path,
                        p,
                        "data record header crosses the transaction end",
                    ));
                };
                let d = DataHeader::parse(p, &db);
                check_data_header(path, &d, pos, end)?;
                if d.plen == 0 {
                    let back =
                        u64::from_be_bytes(w.get_arr::<8>(p + DATA_HDR_LEN)?.unwrap_or_default());
                    if back >= p {
                        return Err(corrupt(
                            path,
                            p,
                            format!("backpointer {back} does not point backwards"),
                        ));
                    }
                }
                tindex.push((d.oid, p));
                p += d.record_len();
            }
            if p != end {
                return Err(corrupt(
                    path,
                    pos,
                    "data records do not fill the transaction",
                ));
            }
        }
        let trailer = w.get_arr::<8>(end)?.map(u64::from_be_bytes);
        if trailer.is_none() && shrunk(file, path, end)? {
            break 'txns Tail::Incomplete;
        }
        if trailer != Some(h.tlen) {
            return Err(corrupt(
                path,
                end,
                format!(
                    "redundant transaction length {trailer:?} does not match {} (transaction at {pos})",
                    h.tlen
                ),
            ));
        }
        if h.status != STATUS_UNDONE {
            for &(oid, p) in &tindex {
                idx.oids.insert(oid, p);
                idx.max_oid = Some(idx.max_oid.map_or(oid, |m| m.max(oid)));
            }
            idx.txns.push((h.tid, pos));
            if h.status == STATUS_PACKED {
                idx.pack_horizon = h.tid;
            }
        }
        idx.last_tid = h.tid;
        idx.max_tid_seen = idx.max_tid_seen.max(h.tid);
        pos = h.next_pos();
        idx.end = pos;
    };
    idx.tail = if tail == Tail::Clean {
        None
    } else {
        Some((pos, tail))
    };
    Ok(tail)
}

/// True if the file is now shorter than `need` (it was truncated while we
/// scanned it: the transaction there is being aborted, not corrupt).
fn shrunk(file: &File, path: &Path, need: u64) -> Result<bool> {
    let now = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    Ok(now < need.saturating_add(8))
}

pub(super) fn check_data_header(path: &Path, d: &DataHeader, tpos: u64, tend: u64) -> Result<()> {
    if d.tloc != tpos {
        return Err(corrupt(
            path,
            d.pos,
            format!("record tloc {} is not its transaction {tpos}", d.tloc),
        ));
    }
    if d.vlen != 0 {
        return Err(corrupt(
            path,
            d.pos,
            "record has a version (unsupported since ZODB 3.9)",
        ));
    }
    if d.prev >= d.pos {
        return Err(corrupt(
            path,
            d.pos,
            format!(
                "previous-record pointer {} does not point backwards",
                d.prev
            ),
        ));
    }
    if d.plen > tend.saturating_sub(d.pos + DATA_HDR_LEN) || d.pos + d.record_len() > tend {
        return Err(corrupt(
            path,
            d.pos,
            format!("data length {} crosses the transaction end {tend}", d.plen),
        ));
    }
    Ok(())
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Shared {
    /// Scan what other processes appended since the last sync (the caller
    /// holds no index lock). Detects a file replaced by a pack (new inode) or
    /// truncated below our end, and then rebuilds the index from scratch.
    pub(super) fn sync(&self) -> Result<Tid> {
        let meta = std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, "stat", e))?;
        let cur = self.current_file();
        let cur_meta = cur
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?;
        let mut idx = self.index.write();
        if file_id(&meta) != file_id(&cur_meta) || cur_meta.len() < idx.end {
            tracing::info!(path = %self.path.display(), "file replaced or truncated (pack?): rebuilding the index");
            let f = if self.read_only {
                File::open(&self.path)
            } else {
                OpenOptions::new().read(true).write(true).open(&self.path)
            }
            .map_err(|e| Error::io(&self.path, "open", e))?;
            let mut fresh = Index {
                max_tid_seen: idx.max_tid_seen,
                ..Index::empty()
            };
            scan(&f, &self.path, 4, &mut fresh)?;
            *idx = fresh;
            *self.file.write() = Arc::new(f);
            return Ok(idx.last_tid);
        }
        if cur_meta.len() > idx.end {
            let from = idx.end;
            scan(&cur, &self.path, from, &mut idx)?;
        } else {
            idx.tail = None;
        }
        Ok(idx.last_tid)
    }
}
