//! The two-phase-commit writer.
//!
//! # Model
//!
//! Records are written in place, at the end of the file, while the commit
//! lock is held: no temporary file, no copy of large records. After taking
//! the lock the storage first picks up transactions other processes
//! appended and cuts a torn tail. Then:
//!
//! 1. `tpc_begin` writes the transaction header at the end of the file with
//!    status `'c'` and a length that cannot be complete, so a crash from here
//!    on leaves a tail every reader (and Python) ignores.
//! 2. `store` checks the serial (conflict / resolution through the
//!    transaction's [`ConflictResolver`]) and writes each record directly
//!    after the header. `store_aligned` pads a large byte payload's pickle
//!    (no-op opcodes, `pickle::padding`) so that the payload starts at a
//!    page boundary of the file, where readers can map it in place.
//! 3. `vote` writes the real length, the trailer, and flushes.
//! 4. `finish` flips the status byte to `' '` and `fdatasync`s; only then is
//!    the transaction published in the index and `finish` returns. A large
//!    transaction's records were flushed along the way
//!    ([`super::early_flush`]), so this waits for the tail only.
//! 5. `abort` (or dropping the transaction) truncates the file back to where
//!    the transaction started.
//!
//! Other processes see new transactions at their next
//! [`crate::Storage::sync`] and learn which oids changed from
//! [`crate::Storage::changed_oids`].

use super::Shared;
use super::early_flush::EarlyFlush;
use super::format::{DATA_HDR_LEN, DataHeader, STATUS_CHECKPOINT, STATUS_COMMITTED, TxnHeader};
use super::lock::{FileLock, SlotGuard};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::pickle;
use crate::storage::{AlignedRecord, ConflictResolver, PAYLOAD_ALIGN, StorageTxn, TxnMeta};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

impl Shared {
    /// `Storage::tpc_begin`: take the commit lock, catch up with other
    /// processes, cut a torn tail, choose the tid and write the provisional
    /// header.
    pub(super) fn tpc_begin(
        self: &Arc<Self>,
        meta: TxnMeta,
        resolver: Option<Arc<dyn ConflictResolver>>,
    ) -> Result<Box<dyn StorageTxn>> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        for (what, f) in [
            ("user", &meta.user),
            ("description", &meta.description),
            ("extension", &meta.extension),
        ] {
            if f.len() > usize::from(u16::MAX) {
                return Err(Error::Protocol(format!(
                    "transaction {what} longer than 65535 bytes"
                )));
            }
        }
        self.lock.acquire_slot();
        let mut slot = SlotGuard(Some(&self.lock));
        let lock = self.lock.lock_file()?;
        self.sync()?;
        self.repair_tail()?;
        let (txn_pos, last) = {
            let idx = self.index.read();
            (idx.end, idx.max_tid_seen.max(idx.last_tid))
        };
        let tid = Tid::now_after(last);
        let header = TxnHeader {
            pos: txn_pos,
            tid,
            tlen: u64::MAX >> 1, // provisional: can never be complete
            status: STATUS_CHECKPOINT,
            ulen: meta.user.len() as u16,
            dlen: meta.description.len() as u16,
            elen: meta.extension.len() as u16,
        };
        let mut hdr = header.to_bytes().to_vec();
        hdr.extend_from_slice(&meta.user);
        hdr.extend_from_slice(&meta.description);
        hdr.extend_from_slice(&meta.extension);
        let file = self.current_file();
        if let Err(e) = file.write_all_at(&hdr, txn_pos) {
            let _ = file.set_len(txn_pos);
            return Err(Error::io(&self.path, "write", e));
        }
        slot.0 = None;
        self.oids.lock().held = true;
        Ok(Box::new(FsTxn {
            fs: Arc::clone(self),
            file,
            lock: Some(lock),
            header,
            write_pos: txn_pos + hdr.len() as u64,
            records: Vec::new(),
            resolver,
            resolved: Vec::new(),
            voted: false,
            done: false,
            early: EarlyFlush::default(),
        }))
    }
}

/// A FileStorage transaction in two-phase commit.
struct FsTxn {
    fs: Arc<Shared>,
    file: Arc<File>,
    /// The inter-process lock, released in `drop` (see `oids`).
    lock: Option<FileLock>,
    header: TxnHeader,
    write_pos: u64,
    /// (oid, record offset) in write order.
    records: Vec<(Oid, u64)>,
    resolver: Option<Arc<dyn ConflictResolver>>,
    resolved: Vec<Oid>,
    voted: bool,
    done: bool,
    /// Large transactions' records start for the disk while the rest is
    /// written (see [`super::early_flush`]).
    early: EarlyFlush,
}

impl FsTxn {
    fn write(&self, bytes: &[u8], pos: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, pos)
            .map_err(|e| Error::io(&self.fs.path, "write", e))
    }

    /// Before storing a revision of `oid` based on `serial` whose record
    /// is `parts`: check the serial against the committed one, resolving
    /// a conflict through the resolver. Returns the committed revision's
    /// offset (the new record's `prev`) and the resolved record that
    /// replaces `parts`, if there was a conflict.
    fn check_store(
        &mut self,
        oid: Oid,
        serial: Tid,
        parts: &[&[u8]],
    ) -> Result<(u64, Option<Vec<u8>>)> {
        if self.voted {
            return Err(Error::Protocol("store after vote".into()));
        }
        if parts.iter().all(|p| p.is_empty()) {
            return Err(Error::Protocol(format!("oid {oid}: empty record data")));
        }
        let committed = self.fs.committed_serial(&self.file, oid)?;
        let prev = committed.map_or(0, |c| c.1);
        if let Some((ctid, _)) = committed
            && ctid != serial
        {
            let conflict = |reason: Option<String>| Error::Conflict {
                oid,
                loaded: serial,
                committed: ctid,
                reason,
            };
            let Some(resolver) = self.resolver.clone() else {
                return Err(conflict(None));
            };
            if serial == Tid::ZERO {
                return Err(conflict(Some("object created concurrently".into())));
            }
            let old = self.fs.load_serial(oid, serial)?;
            let cur = self.fs.load_serial(oid, ctid)?;
            let resolved = resolver
                .resolve(oid, &old, &cur, &parts.concat())
                .map_err(|r| conflict(Some(r)))?;
            self.resolved.push(oid);
            return Ok((prev, Some(resolved)));
        } else if committed.is_none() && serial != Tid::ZERO {
            return Err(Error::Conflict {
                oid,
                loaded: serial,
                committed: Tid::ZERO,
                reason: Some("object does not exist in the database".into()),
            });
        }
        Ok((prev, None))
    }

    /// Write the record of `oid` whose data is `parts` at the end of the
    /// transaction: the header and each part go out as separate writes (no
    /// copy of large records).
    fn write_record(&mut self, oid: Oid, prev: u64, parts: &[&[u8]]) -> Result<()> {
        let h = DataHeader {
            pos: self.write_pos,
            oid,
            tid: self.header.tid,
            prev,
            tloc: self.header.pos,
            vlen: 0,
            plen: parts.iter().map(|p| p.len() as u64).sum(),
        };
        self.write(&h.to_bytes(), self.write_pos)?;
        let mut at = self.write_pos + DATA_HDR_LEN;
        for p in parts {
            self.write(p, at)?;
            at += p.len() as u64;
        }
        self.records.push((oid, self.write_pos));
        self.early.wrote(&self.file, at - self.write_pos);
        self.write_pos = at;
        Ok(())
    }

    fn rollback(&mut self) {
        if let Err(e) = self.file.set_len(self.header.pos) {
            tracing::error!(path = %self.fs.path.display(), error = %e, "could not truncate an aborted transaction; it stays as an ignored tail");
        }
    }
}

impl StorageTxn for FsTxn {
    fn tid(&self) -> Tid {
        self.header.tid
    }

    fn store(&mut self, oid: Oid, serial: Tid, data: Vec<u8>) -> Result<()> {
        self.store_parts(oid, serial, &[&data])
    }

    fn store_parts(&mut self, oid: Oid, serial: Tid, parts: &[&[u8]]) -> Result<()> {
        let (prev, resolved) = self.check_store(oid, serial, parts)?;
        match &resolved {
            Some(r) => self.write_record(oid, prev, &[r]),
            None => self.write_record(oid, prev, parts),
        }
    }

    fn store_aligned(&mut self, oid: Oid, serial: Tid, rec: AlignedRecord<'_>) -> Result<()> {
        let AlignedRecord {
            head,
            payload,
            tail,
        } = rec;
        let head0 = head(0)?;
        let (prev, resolved) = self.check_store(oid, serial, &[&head0, payload, tail])?;
        if let Some(r) = &resolved {
            // A merged record: rare, and not what scans map.
            return self.write_record(oid, prev, &[r]);
        }
        let unpadded = self.write_pos + DATA_HDR_LEN + head0.len() as u64;
        let pad = pickle::padding_to_align(unpadded, PAYLOAD_ALIGN);
        if pad == 0 {
            return self.write_record(oid, prev, &[&head0, payload, tail]);
        }
        let padded = head(pad)?;
        if padded.len() != head0.len() + pad {
            return Err(Error::Protocol(format!(
                "oid {oid}: a head padded by {pad} bytes is {} bytes, not {}",
                padded.len(),
                head0.len() + pad
            )));
        }
        self.write_record(oid, prev, &[&padded, payload, tail])
    }

    fn check_current(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        // The commit lock is held: nothing can commit before our finish.
        let committed = self
            .fs
            .committed_serial(&self.file, oid)?
            .map_or(Tid::ZERO, |c| c.0);
        if committed != serial {
            return Err(Error::Conflict {
                oid,
                loaded: serial,
                committed,
                reason: Some("read-current object changed".into()),
            });
        }
        Ok(())
    }

    fn vote(&mut self) -> Result<Vec<Oid>> {
        if self.voted {
            return Ok(self.resolved.clone());
        }
        self.header.tlen = self.write_pos - self.header.pos;
        let r = self
            .write(&self.header.to_bytes(), self.header.pos)
            .and_then(|()| self.write(&self.header.tlen.to_be_bytes(), self.write_pos));
        if let Err(e) = r {
            self.rollback();
            return Err(e);
        }
        self.voted = true;
        Ok(self.resolved.clone())
    }

    fn finish(mut self: Box<Self>) -> Result<Tid> {
        if !self.voted {
            self.vote()?;
        }
        let r = self
            .early
            .finish()
            .map_err(|e| Error::io(&self.fs.path, "fsync (early flush)", e))
            .and_then(|()| self.write(&[STATUS_COMMITTED], self.header.pos + 16))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| Error::io(&self.fs.path, "fsync", e))
            });
        if let Err(e) = r {
            // Not durable: take it back so the file ends at the last good txn.
            self.rollback();
            return Err(e);
        }
        {
            let mut idx = self.fs.index.write();
            for &(oid, pos) in &self.records {
                idx.oids.insert(oid, pos);
                idx.max_oid = Some(idx.max_oid.map_or(oid, |m| m.max(oid)));
            }
            idx.txns.push((self.header.tid, self.header.pos));
            idx.end = self.header.next_pos();
            idx.last_tid = self.header.tid;
            idx.max_tid_seen = idx.max_tid_seen.max(self.header.tid);
        }
        self.done = true;
        Ok(self.header.tid)
    }

    fn abort(mut self: Box<Self>) {
        self.rollback();
        self.done = true;
    }
}

impl Drop for FsTxn {
    fn drop(&mut self) {
        if !self.done {
            self.rollback();
        }
        {
            // Release the file lock together with the `held` flag, so that
            // no oid reservation of this process runs without the lock.
            let mut r = self.fs.oids.lock();
            r.held = false;
            self.lock = None;
        }
        self.fs.lock.release_slot();
    }
}
