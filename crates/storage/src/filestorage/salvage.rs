//! Salvage: copy the intact transactions of a damaged file into a new one
//! (what ZODB's `fsrecover` does).
//!
//! # Model
//!
//! A damaged file cannot be opened (see `damage`), but most of it is usually
//! fine. Salvage walks the file forward. A transaction is *intact* when its
//! header has a committed status, its tid is later than the last copied
//! one, its length and the redundant trailer agree and lie inside the file,
//! and its data records pass the scan's checks (`tloc`, `prev` and
//! backpointers point backwards, records fill the transaction exactly).
//! Intact transactions are copied; everything else is skipped up to the next
//! position where an intact transaction starts (found by trying every byte
//! offset, filtered cheaply on the status byte and tid order first), and
//! each skipped range is reported.
//!
//! Copying keeps tids, metadata and record bytes; only file positions
//! change: each record's `tloc` is its new transaction, its `prev` the
//! object's previous copied record, and a backpointer is translated to the
//! copied record it points at. A backpointer into skipped data cannot be
//! kept, so its transaction is skipped too. Record data (pickles) is copied
//! as it is: damage inside a record's data is not visible at this level and
//! shows when the object is loaded.

use super::format::{
    DATA_HDR_LEN, DataHeader, MAGIC_FS21, MAGIC_FS30, STATUS_COMMITTED, STATUS_PACKED,
    STATUS_UNDONE, TXN_HDR_LEN, TxnHeader,
};
use super::index::check_data_header;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A byte range of the input that was not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// First byte skipped.
    pub start: u64,
    /// One past the last byte skipped.
    pub end: u64,
    /// Why the transaction at `start` is not intact.
    pub reason: String,
}

/// What [`salvage`] did.
#[derive(Debug, Clone, Default)]
pub struct Salvaged {
    /// Transactions copied.
    pub copied: u64,
    /// Data records copied.
    pub records: u64,
    /// Ranges of the input skipped, in file order.
    pub skipped: Vec<Skipped>,
}

/// Copy the intact transactions of `input` into the new file `output`
/// (which must not exist; it is removed again on error).
pub fn salvage(input: &Path, output: &Path) -> Result<Salvaged> {
    let inp = File::open(input).map_err(|e| Error::io(input, "open", e))?;
    let size = inp
        .metadata()
        .map_err(|e| Error::io(input, "stat", e))?
        .len();
    let mut magic = [0u8; 4];
    inp.read_exact_at(&mut magic, 0)
        .map_err(|e| Error::io(input, "read", e))?;
    if magic != *MAGIC_FS30 && magic != *MAGIC_FS21 {
        return Err(super::corrupt(input, 0, "not a FileStorage (bad magic)"));
    }
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)
        .map_err(|e| Error::io(output, "create", e))?;
    let mut s = Salvage {
        inp: &inp,
        input,
        size,
        out: &out,
        output,
        out_end: 4,
        last_tid: Tid::ZERO,
        last_rec: HashMap::new(),
        moved: HashMap::new(),
        report: Salvaged::default(),
    };
    let r = s.run(&magic);
    match r {
        Ok(()) => Ok(s.report),
        Err(e) => {
            let _ = std::fs::remove_file(output);
            Err(e)
        }
    }
}

struct Salvage<'a> {
    inp: &'a File,
    input: &'a Path,
    size: u64,
    out: &'a File,
    output: &'a Path,
    out_end: u64,
    last_tid: Tid,
    /// oid -> position of its latest copied record in the output.
    last_rec: HashMap<Oid, u64>,
    /// input record position -> output record position.
    moved: HashMap<u64, u64>,
    report: Salvaged,
}

impl Salvage<'_> {
    fn run(&mut self, magic: &[u8; 4]) -> Result<()> {
        self.write(magic, 0)?;
        let mut pos = 4;
        while pos < self.size {
            match self.check(pos)? {
                Ok(h) => {
                    self.copy(&h)?;
                    pos = h.next_pos();
                }
                Err(reason) => {
                    let next = self.resync(pos + 1)?;
                    self.report.skipped.push(Skipped {
                        start: pos,
                        end: next,
                        reason,
                    });
                    pos = next;
                }
            }
        }
        self.out
            .sync_all()
            .map_err(|e| Error::io(self.output, "fsync", e))
    }

    fn read(&self, buf: &mut [u8], at: u64) -> Result<()> {
        self.inp
            .read_exact_at(buf, at)
            .map_err(|e| Error::io(self.input, "read", e))
    }

    fn write(&self, buf: &[u8], at: u64) -> Result<()> {
        self.out
            .write_all_at(buf, at)
            .map_err(|e| Error::io(self.output, "write", e))
    }

    /// The transaction at `pos` if it is intact, else why not.
    fn check(&self, pos: u64) -> Result<std::result::Result<TxnHeader, String>> {
        if self.size - pos < TXN_HDR_LEN {
            return Ok(Err("partial transaction header at the end".into()));
        }
        let mut hb = [0u8; 23];
        self.read(&mut hb, pos)?;
        let h = TxnHeader::parse(pos, &hb);
        if ![STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&h.status) {
            return Ok(Err(format!("status {:?}", char::from(h.status))));
        }
        if h.tid <= self.last_tid {
            return Ok(Err(format!("tid {} not after {}", h.tid, self.last_tid)));
        }
        if h.tlen < h.header_len() || h.tlen > self.size - pos || self.size - pos - h.tlen < 8 {
            return Ok(Err(format!("length {} does not fit", h.tlen)));
        }
        let end = pos + h.tlen;
        let mut t = [0u8; 8];
        self.read(&mut t, end)?;
        if u64::from_be_bytes(t) != h.tlen {
            return Ok(Err(format!(
                "redundant length {} differs from {}",
                u64::from_be_bytes(t),
                h.tlen
            )));
        }
        let mut p = pos + h.header_len();
        while p < end {
            if end - p < DATA_HDR_LEN {
                return Ok(Err(format!("record header at {p} crosses the end")));
            }
            let mut db = [0u8; 42];
            self.read(&mut db, p)?;
            let d = DataHeader::parse(p, &db);
            if let Err(e) = check_data_header(self.input, &d, pos, end) {
                return Ok(Err(e.to_string()));
            }
            if d.plen == 0 {
                self.read(&mut t, p + DATA_HDR_LEN)?;
                let back = u64::from_be_bytes(t);
                if back != 0 && !self.moved.contains_key(&back) {
                    return Ok(Err(format!(
                        "record at {p}: backpointer {back} into data not copied"
                    )));
                }
            }
            p += d.record_len();
        }
        if p != end {
            return Ok(Err("data records do not fill the transaction".into()));
        }
        Ok(Ok(h))
    }

    /// The next position at or after `from` where an intact transaction
    /// starts, or the end of the file.
    fn resync(&self, from: u64) -> Result<u64> {
        const W: usize = 1 << 16;
        let mut buf = vec![0u8; W + 24];
        let mut at = from;
        while at + TXN_HDR_LEN <= self.size {
            let n = ((self.size - at) as usize).min(buf.len());
            self.read(&mut buf[..n], at)?;
            let last = n.saturating_sub(TXN_HDR_LEN as usize - 1).min(W);
            for i in 0..last {
                let st = buf[i + 16];
                if ![STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&st) {
                    continue;
                }
                let mut tb = [0u8; 8];
                tb.copy_from_slice(&buf[i..i + 8]);
                if Tid::from_bytes(tb) <= self.last_tid {
                    continue;
                }
                if self.check(at + i as u64)?.is_ok() {
                    return Ok(at + i as u64);
                }
            }
            at += last.max(1) as u64;
        }
        Ok(self.size)
    }

    /// Copy the intact transaction `h` to the end of the output.
    fn copy(&mut self, h: &TxnHeader) -> Result<()> {
        let np = self.out_end;
        let shift = |p: u64| p - h.pos + np;
        let mut hb = vec![0u8; h.header_len() as usize];
        self.read(&mut hb, h.pos)?;
        self.write(&hb, np)?;
        let end = h.pos + h.tlen;
        let mut p = h.pos + h.header_len();
        let mut buf = vec![0u8; 1 << 20];
        while p < end {
            let mut db = [0u8; 42];
            self.read(&mut db, p)?;
            let mut d = DataHeader::parse(p, &db);
            let old_len = d.record_len();
            let rec = shift(p);
            d.pos = rec;
            d.tloc = np;
            d.prev = self.last_rec.get(&d.oid).copied().unwrap_or(0);
            self.write(&d.to_bytes(), rec)?;
            if d.plen == 0 {
                let mut t = [0u8; 8];
                self.read(&mut t, p + DATA_HDR_LEN)?;
                let back = u64::from_be_bytes(t);
                let nb = if back == 0 { 0 } else { self.moved[&back] };
                self.write(&nb.to_be_bytes(), rec + DATA_HDR_LEN)?;
            } else {
                let mut off = 0;
                while off < d.plen {
                    let k = (buf.len() as u64).min(d.plen - off) as usize;
                    self.read(&mut buf[..k], p + DATA_HDR_LEN + off)?;
                    self.write(&buf[..k], rec + DATA_HDR_LEN + off)?;
                    off += k as u64;
                }
            }
            self.moved.insert(p, rec);
            if h.status != STATUS_UNDONE {
                self.last_rec.insert(d.oid, rec);
            }
            self.report.records += 1;
            p += old_len;
        }
        self.write(&h.tlen.to_be_bytes(), shift(end))?;
        self.out_end = shift(end) + 8;
        self.last_tid = h.tid;
        self.report.copied += 1;
        Ok(())
    }
}
