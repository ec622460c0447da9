//! Writing the packed file (ZODB's `FileStoragePacker` copy phases).
//!
//! # Model
//!
//! The packed file is the old one with the unreachable revisions left out,
//! so every offset in it changes, and with them every `prev` pointer, `tloc`
//! and backpointer. Two phases, as in ZODB, so that Python and Rust packs of
//! the same file agree record for record:
//!
//! 1. Up to the pack time, a transaction is copied only if it holds a
//!    reachable revision, with status `'p'` and only those revisions. Each
//!    is written with its data inline (backpointers resolved: the records
//!    they pointed to may be gone) and `prev = 0`: history before the pack
//!    time is gone. A revision whose data resolves to nothing (an undone
//!    creation) is written as `plen = 0` with a zero backpointer.
//! 2. After the pack time, every transaction is copied whole. A data record
//!    is copied as is, with `prev` pointing to the object's latest record
//!    in the new file. A backpointer is re-aimed: at the record of the same
//!    object in the new copy of the transaction it pointed into, if that
//!    record is itself a backpointer or holds the same bytes; otherwise the
//!    data is written inline.
//!
//! Transaction lengths are computed before a transaction is written (a
//! first look at its records), so headers are never patched and large
//! payloads stream from the old file to the new one without being held in
//! memory together.

use super::super::format::{DATA_HDR_LEN, DataHeader, STATUS_PACKED, TxnHeader};
use super::super::read::{RawTxn, read_exact_at};
use super::super::{Shared, corrupt};
use super::gc::Reachable;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The packed file being written: appends through a small buffer, reads
/// back what it wrote (for backpointer checks).
pub(super) struct Out {
    file: File,
    path: PathBuf,
    /// Offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// oid -> latest record in the new file.
    pub(super) index: HashMap<Oid, u64>,
    /// tid -> transaction offset in the new file.
    txns: HashMap<Tid, u64>,
}

const BUF: usize = 1 << 20;

impl Out {
    /// A packed file starting with `magic`.
    pub(super) fn new(file: File, path: PathBuf, magic: [u8; 4]) -> Out {
        let mut buf = Vec::with_capacity(BUF);
        buf.extend_from_slice(&magic);
        Out {
            file,
            path,
            start: 0,
            buf,
            index: HashMap::new(),
            txns: HashMap::new(),
        }
    }

    /// Where the next byte goes.
    pub(super) fn pos(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.start)
            .map_err(|e| Error::io(&self.path, "write", e))?;
        self.start += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        if self.buf.len() + b.len() > BUF {
            self.flush()?;
        }
        if b.len() >= BUF {
            self.file
                .write_all_at(b, self.start)
                .map_err(|e| Error::io(&self.path, "write", e))?;
            self.start += b.len() as u64;
        } else {
            self.buf.extend_from_slice(b);
        }
        Ok(())
    }

    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.flush()?;
        read_exact_at(&self.file, &self.path, buf, pos)
    }

    /// Flush and `fsync` everything written.
    pub(super) fn finish(mut self) -> Result<(File, u64)> {
        self.flush()?;
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.path, "fsync", e))?;
        let end = self.start;
        Ok((self.file, end))
    }

    fn write_txn_header(&mut self, t: &RawTxn, status: u8, body: u64) -> Result<u64> {
        let pos = self.pos();
        let h = TxnHeader {
            pos,
            status,
            tlen: t.header.header_len() + body,
            ..t.header.clone()
        };
        self.write(&h.to_bytes())?;
        self.write(&t.meta.user)?;
        self.write(&t.meta.description)?;
        self.write(&t.meta.extension)?;
        self.txns.insert(h.tid, pos);
        Ok(h.tlen)
    }

    fn write_record(&mut self, h: DataHeader, body: Body<'_>) -> Result<()> {
        self.index.insert(h.oid, h.pos);
        self.write(&h.to_bytes())?;
        match body {
            Body::Back(b) => self.write(&b.to_be_bytes()),
            Body::Data(d) => self.write(d),
        }
    }

    /// The backpointer for `oid` into the new copy of transaction `tid`
    /// (ZODB's `PackCopier._data_find`): that record if it is itself a
    /// backpointer or holds exactly `data`, else 0.
    fn find_backpointer(&mut self, tid: Tid, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let Some(&tpos) = self.txns.get(&tid) else {
            return Ok(0);
        };
        let mut hb = [0u8; 23];
        self.read_at(&mut hb, tpos)?;
        let th = TxnHeader::parse(tpos, &hb);
        let tend = tpos + th.tlen;
        let mut p = tpos + th.header_len();
        while p < tend {
            let mut b = [0u8; 42];
            self.read_at(&mut b, p)?;
            let h = DataHeader::parse(p, &b);
            if h.oid == oid {
                if h.plen == 0 {
                    return Ok(p);
                }
                let Some(data) = data.filter(|d| d.len() as u64 == h.plen) else {
                    return Ok(0);
                };
                let mut have = vec![0u8; data.len()];
                self.read_at(&mut have, p + DATA_HDR_LEN)?;
                return Ok(if have == data { p } else { 0 });
            }
            p += h.record_len();
        }
        Ok(0)
    }
}

enum Body<'a> {
    Back(u64),
    Data(&'a [u8]),
}

impl Shared {
    /// Phase 1: the transactions before `reach.packpos`.
    pub(super) fn copy_to_packtime(
        &self,
        file: &File,
        end: u64,
        reach: &Reachable,
        out: &mut Out,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let mut pos = 4;
        while pos < reach.packpos {
            let t = self.read_txn_headers(file, pos, end)?;
            let keep: Vec<_> = t
                .records
                .iter()
                .filter(|r| reach.contains(r.header.oid, r.header.pos))
                .collect();
            if !keep.is_empty() {
                // First look: the length of each kept record's data.
                let mut body = 0u64;
                let mut holders = Vec::with_capacity(keep.len());
                for r in &keep {
                    let d = self.data_holder(file, &r.header, end)?;
                    body += DATA_HDR_LEN + d.as_ref().map_or(8, |d| d.plen);
                    holders.push(d);
                }
                let tpos = out.pos();
                out.write_txn_header(&t, STATUS_PACKED, body)?;
                for (r, d) in keep.iter().zip(holders) {
                    let data = match &d {
                        Some(d) => {
                            let mut v = vec![0u8; d.plen as usize];
                            read_exact_at(file, &self.path, &mut v, d.pos + DATA_HDR_LEN)?;
                            v
                        }
                        None => Vec::new(),
                    };
                    let h = DataHeader {
                        pos: out.pos(),
                        prev: 0,
                        tloc: tpos,
                        plen: data.len() as u64,
                        ..r.header.clone()
                    };
                    if data.is_empty() {
                        out.write_record(h, Body::Back(0))?;
                    } else {
                        out.write_record(h, Body::Data(&data))?;
                    }
                }
                let tlen = out.pos() - tpos;
                out.write(&tlen.to_be_bytes())?;
            }
            pos = t.header.next_pos();
            progress(pos);
        }
        Ok(())
    }

    /// Phase 2: every transaction in `[from, end)`, whole. Returns `end`.
    pub(super) fn copy_rest(
        &self,
        file: &File,
        from: u64,
        end: u64,
        out: &mut Out,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let mut pos = from;
        while pos < end {
            let t = self.read_txn_headers(file, pos, end)?;
            // First look: what each record becomes.
            let mut plan = Vec::with_capacity(t.records.len());
            let mut body = 0u64;
            for r in &t.records {
                let p = match r.backpointer {
                    None => Plan::Copy,
                    Some(0) => Plan::Back(0),
                    Some(back) => {
                        let data = self.record_data(file, &r.header, end)?;
                        let target = self.read_data_header(file, back, r.header.oid, end)?;
                        match out.find_backpointer(target.tid, r.header.oid, data.as_deref())? {
                            0 => match data {
                                Some(d) => Plan::Inline(d),
                                None => Plan::Back(0),
                            },
                            p => Plan::Back(p),
                        }
                    }
                };
                body += DATA_HDR_LEN
                    + match &p {
                        Plan::Copy => r.header.plen,
                        Plan::Back(_) => 8,
                        Plan::Inline(d) => d.len() as u64,
                    };
                plan.push(p);
            }
            let tpos = out.pos();
            let status = t.header.status;
            out.write_txn_header(&t, status, body)?;
            for (r, p) in t.records.iter().zip(plan) {
                let prev = out.index.get(&r.header.oid).copied().unwrap_or(0);
                let h = DataHeader {
                    pos: out.pos(),
                    prev,
                    tloc: tpos,
                    ..r.header.clone()
                };
                match p {
                    Plan::Copy => {
                        let mut v = vec![0u8; r.header.plen as usize];
                        read_exact_at(file, &self.path, &mut v, r.header.pos + DATA_HDR_LEN)?;
                        out.write_record(h, Body::Data(&v))?;
                    }
                    Plan::Back(b) => {
                        out.write_record(DataHeader { plen: 0, ..h }, Body::Back(b))?
                    }
                    Plan::Inline(d) => out.write_record(
                        DataHeader {
                            plen: d.len() as u64,
                            ..h
                        },
                        Body::Data(&d),
                    )?,
                }
            }
            let tlen = out.pos() - tpos;
            out.write(&tlen.to_be_bytes())?;
            pos = t.header.next_pos();
            progress(pos);
        }
        if pos != end {
            return Err(corrupt(
                &self.path,
                pos,
                "pack: transactions overrun the end",
            ));
        }
        Ok(end)
    }
}

/// What a record after the pack time becomes in the new file.
enum Plan {
    /// A data record, copied as is.
    Copy,
    /// A backpointer (0: the object does not exist at this revision).
    Back(u64),
    /// A backpointer that could not be re-aimed: its data, inline.
    Inline(Vec<u8>),
}
