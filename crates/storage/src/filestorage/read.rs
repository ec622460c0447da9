//! The read path: record lookup, MVCC and backpointers.
//!
//! # Model
//!
//! Reads are `pread`s at offsets from the index, so any number of threads
//! read at once, and never take the commit lock. Every record header read is
//! checked against the oid and the indexed end of data, so a corrupt or
//! concurrently replaced file yields [`Error::Corrupt`], not a wrong answer.
//!
//! MVCC (`load_before`) starts at the latest record of the object and walks
//! its `prev` chain back to the first revision older than `before`. A record
//! without data (`plen == 0`, written by undo and by pack) holds a
//! backpointer to the record that has its data; a zero backpointer means the
//! object does not exist at that revision. `load_before_range` resolves the
//! same way but copies only a slice of the data, straight into the caller's
//! buffer, so large payloads are never materialized twice.

use super::format::{DATA_HDR_LEN, DataHeader, TXN_HDR_LEN, TxnHeader};
use super::index::check_data_header;
use super::{Shared, corrupt};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::mapped::MappedRecord;
use crate::storage::{DataRecord, LoadedRecord, RangeLoad, TxnInfo, TxnMeta};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A transaction as stored: header, metadata, record headers (no data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTxn {
    /// The transaction header.
    pub header: TxnHeader,
    /// User, description, extension.
    pub meta: TxnMeta,
    /// Its data records in file order.
    pub records: Vec<RawRecord>,
}

/// A data record header as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The record header.
    pub header: DataHeader,
    /// For a record without data (`plen == 0`): its backpointer (0 = the
    /// object does not exist as of this revision).
    pub backpointer: Option<u64>,
}

pub(super) fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<()> {
    file.read_exact_at(buf, pos)
        .map_err(|e| Error::io(path, "read", e))
}

impl Shared {
    /// The open file (replaced when a pack is detected).
    pub(super) fn current_file(&self) -> Arc<File> {
        self.file.read().clone()
    }

    /// The positions of the latest records of `oids` known to the index,
    /// looked up under one lock acquisition, as `(position, index into
    /// oids)` sorted by position, and the indexed end of data: for readers
    /// of many records at once (`load_many`, `read_split`).
    pub(super) fn latest_by_position(&self, oids: &[Oid]) -> (Vec<(u64, usize)>, u64) {
        let (mut at, end) = {
            let idx = self.index.read();
            let at: Vec<(u64, usize)> = oids
                .iter()
                .enumerate()
                .filter_map(|(i, o)| idx.oids.get(o).map(|&p| (p, i)))
                .collect();
            (at, idx.end)
        };
        at.sort_unstable();
        (at, end)
    }

    /// Read and check the data record header at `pos`, which must belong to `oid`.
    pub(super) fn read_data_header(
        &self,
        file: &File,
        pos: u64,
        oid: Oid,
        end: u64,
    ) -> Result<DataHeader> {
        if pos < 4 || pos.saturating_add(DATA_HDR_LEN) > end {
            return Err(corrupt(
                &self.path,
                pos,
                format!("oid {oid}: record offset out of range"),
            ));
        }
        let mut b = [0u8; 42];
        read_exact_at(file, &self.path, &mut b, pos)?;
        self.check_record_header(DataHeader::parse(pos, &b), oid, end)
    }

    /// Check a data record header read at `h.pos`: it must belong to `oid`
    /// and lie within the indexed data ending at `end`.
    pub(super) fn check_record_header(
        &self,
        h: DataHeader,
        oid: Oid,
        end: u64,
    ) -> Result<DataHeader> {
        let pos = h.pos;
        if h.oid != oid {
            return Err(corrupt(
                &self.path,
                pos,
                format!("expected a record of oid {oid}, found oid {}", h.oid),
            ));
        }
        if h.pos.saturating_add(h.record_len()) > end || h.prev >= pos {
            return Err(corrupt(
                &self.path,
                pos,
                format!("oid {oid}: bad record lengths"),
            ));
        }
        Ok(h)
    }

    /// The data of the record `h`, following backpointers. `None` = the
    /// object does not exist at that revision (`plen == 0`, `back == 0`).
    pub(super) fn record_data(
        &self,
        file: &File,
        h: &DataHeader,
        end: u64,
    ) -> Result<Option<Vec<u8>>> {
        let Some(d) = self.data_holder(file, h, end)? else {
            return Ok(None);
        };
        let mut data = vec![0u8; d.plen as usize];
        read_exact_at(file, &self.path, &mut data, d.pos + DATA_HDR_LEN)?;
        Ok(Some(data))
    }

    /// The record that holds the data of revision `h`: `h` itself, or the
    /// end of its backpointer chain. `None` = the object does not exist at
    /// that revision (`plen == 0`, `back == 0`).
    pub(super) fn data_holder(
        &self,
        file: &File,
        h: &DataHeader,
        end: u64,
    ) -> Result<Option<DataHeader>> {
        let mut h = h.clone();
        while h.plen == 0 {
            let mut b = [0u8; 8];
            read_exact_at(file, &self.path, &mut b, h.pos + DATA_HDR_LEN)?;
            let back = u64::from_be_bytes(b);
            if back == 0 {
                return Ok(None);
            }
            if back >= h.pos {
                return Err(corrupt(
                    &self.path,
                    h.pos,
                    format!("oid {}: backpointer {back} does not point backwards", h.oid),
                ));
            }
            h = self.read_data_header(file, back, h.oid, end)?;
        }
        Ok(Some(h))
    }

    /// Offset of `oid`'s latest record and the end of indexed data.
    pub(super) fn locate(&self, oid: Oid) -> Option<(u64, u64)> {
        let idx = self.index.read();
        idx.oids.get(&oid).map(|&p| (p, idx.end))
    }

    /// The revision of `oid` current just before `before` (walking the
    /// `prev` chain) and the tid of the revision after it, if any.
    pub(super) fn revision_before(
        &self,
        file: &File,
        oid: Oid,
        before: Tid,
    ) -> Result<Option<(DataHeader, Option<Tid>, u64)>> {
        let Some((mut pos, end)) = self.locate(oid) else {
            return Ok(None);
        };
        let mut next = None;
        loop {
            let h = self.read_data_header(file, pos, oid, end)?;
            if h.tid < before {
                return Ok(Some((h, next, end)));
            }
            next = Some(h.tid);
            if h.prev == 0 {
                return Ok(None);
            }
            pos = h.prev;
        }
    }

    /// Every committed transaction's header, metadata and record headers,
    /// without record data (for dump tools), oldest first.
    pub(super) fn raw_transactions(&self) -> impl Iterator<Item = Result<RawTxn>> + '_ {
        let (txns, end) = {
            let idx = self.index.read();
            (idx.txns.clone(), idx.end)
        };
        let file = self.current_file();
        txns.into_iter()
            .map(move |(_, pos)| self.read_txn_headers(&file, pos, end))
    }

    /// Read one transaction's header, metadata and record headers (with the
    /// backpointer of data-less records).
    pub(super) fn read_txn_headers(&self, file: &File, pos: u64, end: u64) -> Result<RawTxn> {
        let mut hb = [0u8; 23];
        read_exact_at(file, &self.path, &mut hb, pos)?;
        let h = TxnHeader::parse(pos, &hb);
        if h.next_pos() > end || h.tlen < h.header_len() {
            return Err(corrupt(&self.path, pos, "transaction header out of range"));
        }
        let mut meta = vec![0u8; (h.header_len() - TXN_HDR_LEN) as usize];
        read_exact_at(file, &self.path, &mut meta, pos + TXN_HDR_LEN)?;
        let (u, rest) = meta.split_at(usize::from(h.ulen));
        let (d, e) = rest.split_at(usize::from(h.dlen));
        let meta = TxnMeta {
            user: u.to_vec(),
            description: d.to_vec(),
            extension: e.to_vec(),
        };
        let mut records = Vec::new();
        let tend = pos + h.tlen;
        let mut p = pos + h.header_len();
        while p < tend {
            if p + DATA_HDR_LEN > tend {
                return Err(corrupt(
                    &self.path,
                    p,
                    "data record header crosses the transaction end",
                ));
            }
            let mut b = [0u8; 42];
            read_exact_at(file, &self.path, &mut b, p)?;
            let d = DataHeader::parse(p, &b);
            check_data_header(&self.path, &d, pos, tend)?;
            let backpointer = if d.plen == 0 {
                let mut bb = [0u8; 8];
                read_exact_at(file, &self.path, &mut bb, p + DATA_HDR_LEN)?;
                Some(u64::from_be_bytes(bb))
            } else {
                None
            };
            p += d.record_len();
            records.push(RawRecord {
                header: d,
                backpointer,
            });
        }
        Ok(RawTxn {
            header: h,
            meta,
            records,
        })
    }

    /// Record data of a record header from [`super::FileStorage::raw_transactions`],
    /// following backpointers.
    pub(super) fn raw_record_data(&self, h: &DataHeader) -> Result<Option<Vec<u8>>> {
        let end = self.index.read().end;
        self.record_data(&self.current_file(), h, end)
    }

    /// The tid of the record currently indexed for `oid`, if any.
    pub(super) fn committed_serial(&self, file: &File, oid: Oid) -> Result<Option<(Tid, u64)>> {
        let Some((pos, end)) = self.locate(oid) else {
            return Ok(None);
        };
        let h = self.read_data_header(file, pos, oid, end)?;
        Ok(Some((h.tid, pos)))
    }

    /// `Storage::load_before`: walk the `prev` chain to the revision before
    /// `before`, then resolve its data.
    pub(super) fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRecord>> {
        let file = self.current_file();
        let Some((h, next, end)) = self.revision_before(&file, oid, before)? else {
            return Ok(None);
        };
        Ok(self.record_data(&file, &h, end)?.map(|data| LoadedRecord {
            data,
            serial: h.tid,
            next_serial: next,
        }))
    }

    /// `Storage::load_before_range`: like `load_before`, copying only
    /// `[offset, offset + buf.len())` of the data holder's bytes.
    pub(super) fn load_before_range(
        &self,
        oid: Oid,
        before: Tid,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<RangeLoad>> {
        let file = self.current_file();
        let Some((h, _, end)) = self.revision_before(&file, oid, before)? else {
            return Ok(None);
        };
        let Some(d) = self.data_holder(&file, &h, end)? else {
            return Ok(None);
        };
        let start = offset.min(d.plen);
        let n = (buf.len() as u64).min(d.plen - start) as usize;
        read_exact_at(
            &file,
            &self.path,
            &mut buf[..n],
            d.pos + DATA_HDR_LEN + start,
        )?;
        Ok(Some(RangeLoad {
            serial: h.tid,
            total_len: d.plen,
            copied: n,
        }))
    }

    /// `Storage::map_before`: the data of the revision before `before`,
    /// lent from the file's mapping.
    pub(super) fn map_before(&self, oid: Oid, before: Tid) -> Result<Option<MappedRecord>> {
        let file = self.current_file();
        let Some((h, _, end)) = self.revision_before(&file, oid, before)? else {
            return Ok(None);
        };
        let Some(d) = self.data_holder(&file, &h, end)? else {
            return Ok(None);
        };
        Ok(self
            .mapping
            .record(&file, d.pos + DATA_HDR_LEN, d.plen, h.tid))
    }

    /// `Storage::load_serial`: the revision written exactly at `serial`.
    pub(super) fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let not_found = Error::NotFound {
            oid,
            tid: Some(serial),
        };
        let Some((mut pos, end)) = self.locate(oid) else {
            return Err(not_found);
        };
        let file = self.current_file();
        loop {
            let h = self.read_data_header(&file, pos, oid, end)?;
            if h.tid == serial {
                return self.record_data(&file, &h, end)?.ok_or(not_found);
            }
            if h.tid < serial || h.prev == 0 {
                return Err(not_found);
            }
            pos = h.prev;
        }
    }

    /// `Storage::changed_oids`: the oids of the indexed transactions in
    /// `(after, upto]`, from their record headers.
    pub(super) fn changed_oids(&self, after: Tid, upto: Tid) -> Result<Vec<Oid>> {
        let (txns, end) = {
            let idx = self.index.read();
            let from = idx.txns.partition_point(|&(t, _)| t <= after);
            let to = idx.txns.partition_point(|&(t, _)| t <= upto);
            (idx.txns[from..to.max(from)].to_vec(), idx.end)
        };
        let file = self.current_file();
        let mut out = BTreeSet::new();
        for (_, pos) in txns {
            let t = self.read_txn_headers(&file, pos, end)?;
            out.extend(t.records.iter().map(|r| r.header.oid));
        }
        Ok(out.into_iter().collect())
    }

    /// `Storage::iter_txns`: transactions in `[start, stop)` with their
    /// record data.
    pub(super) fn iter_txns(
        &self,
        start: Tid,
        stop: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + '_>> {
        let (txns, end) = {
            let idx = self.index.read();
            let from = idx.txns.partition_point(|&(t, _)| t < start);
            let to = idx.txns.partition_point(|&(t, _)| t < stop);
            (idx.txns[from..to.max(from)].to_vec(), idx.end)
        };
        let file = self.current_file();
        Ok(Box::new(txns.into_iter().map(move |(_, pos)| {
            let t = self.read_txn_headers(&file, pos, end)?;
            let records = t
                .records
                .iter()
                .map(|r| {
                    Ok(DataRecord {
                        oid: r.header.oid,
                        data: self.record_data(&file, &r.header, end)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TxnInfo {
                tid: t.header.tid,
                status: t.header.status,
                meta: t.meta,
                records,
            })
        })))
    }
}
