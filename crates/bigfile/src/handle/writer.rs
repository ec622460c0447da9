//! The commit's STORE pass: one dirty block into ZBlk objects.
//!
//! Blocks go straight into the storage transaction (`Connection::store_now`)
//! during the commit phase, so 2 MiB blocks never pile up in the object
//! cache. An unchanged block (same bytes modulo trailing zeros) is not
//! written; a changed ZBlk0 is re-stored in place, a changed ZBlk1 rewrites
//! only its changed 4 KiB ZData chunks and always re-stores the ZBlk1 record
//! (so peers see its oid in the invalidations); a hole or a change of format
//! creates a new ZBlk object and re-stores the replaced one unchanged, so a
//! concurrent in-place change of it conflicts instead of being lost. The
//! `auto` format follows wendelin.core's heuristic, including migrating the
//! previous block to ZBlk0 when an append starts a new block.

use super::backend::Backend;
use crate::Error;
use crate::chunks::{ChunkBytes, assemble_chunks, check_chunks};
use crate::objects::{MODULE, ZBlk1};
use crate::reader::{BlockDeps, SnapshotFile, StoredZBlk};
use crate::zblk::{
    AssembleError, CHUNK_SIZE, ZBlkFormat, ZBlkKind, choose_auto, chunk_delta, trim_zeros,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use storage::btree::{self, BTree};
use storage::{Connection, Oid, Tid, Value};

/// State of one commit's STORE pass.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) format: ZBlkFormat,
    /// Blocks whose content was written.
    pub(super) blocks: Vec<u64>,
    /// The previous block stored in this pass: (blk, kind, data) for the
    /// `auto` rule that migrates it to ZBlk0 when an append starts a new block.
    pub(super) prev: Option<(u64, ZBlkKind, Vec<u8>)>,
    /// One block of scratch memory for the old bytes of the block being
    /// stored, reused across blocks and commits (see `Backend::scratch`).
    pub(super) old: Vec<u8>,
    /// The stored chunks compared last, kept mapped across commits.
    pub(super) compared: super::compared::Compared,
}

/// The ZBlk a block is stored as before this commit, as the writer needs it.
enum OldZBlk<'a> {
    /// A ZBlk0 and its (trimmed) bytes.
    ZBlk0(&'a [u8]),
    /// A ZBlk1 and its chunk table.
    ZBlk1(Oid),
}

impl Writer {
    /// A new object stored straight into the storage transaction.
    pub(super) fn new_object<T: storage::Persistent>(
        &mut self,
        b: &Backend,
        obj: &T,
    ) -> Result<Oid, Error> {
        let oid = b.storage.new_oid()?;
        self.conn.store_now(oid, Tid::ZERO, obj)?;
        Ok(oid)
    }

    /// A new object of class `name` (ZBlk0 or ZData) whose state is
    /// `payload`, streamed into the storage transaction without a copy.
    fn new_bytes_object(&mut self, b: &Backend, name: &str, payload: &[u8]) -> Result<Oid, Error> {
        let oid = b.storage.new_oid()?;
        self.conn
            .store_bytes_now(oid, Tid::ZERO, MODULE, name, payload)?;
        Ok(oid)
    }

    pub(super) fn store(
        &mut self,
        b: &Backend,
        blk: u64,
        data: &[u8],
        force: Option<ZBlkKind>,
    ) -> Result<(), Error> {
        let at = self.conn.at();
        // The file's state from the connection (a file created in this
        // transaction is only there); blocks from the snapshot.
        // A block of a file created in this transaction, or cut off in it,
        // has no stored ZBlk: it is written as a new one.
        let is_new = b.new_file.load(Ordering::Acquire) || b.is_cut(blk);
        let meta = self.conn.get::<crate::objects::ZBigFile>(b.file)?.clone();
        let sf = SnapshotFile::with_meta(b.storage.as_ref(), at, b.file, meta);
        let mut path = Vec::new();
        let old_ref = if is_new {
            None
        } else {
            sf.zblk_ref(blk, &mut path)?
        };
        // What the block is stored as now, told by its record's head; the
        // old bytes are read once, into the writer's reused buffer: a
        // ZBlk0's payload straight from the storage, a ZBlk1's chunks
        // (lent in place where the storage can) kept for the comparison.
        let mut old = std::mem::take(&mut self.old);
        old.resize(b.blksize, 0);
        let mut old_chunks = Vec::new();
        let stored = match old_ref {
            None => None,
            Some(zoid) => Some((zoid, sf.stored_zblk(zoid)?)),
        };
        let r = self.store_with(b, &sf, blk, data, force, stored, &mut old, &mut old_chunks);
        self.old = old;
        let lent = old_chunks
            .into_iter()
            .filter_map(|(_, _, c)| match c {
                ChunkBytes::Mapped(m) => Some(m),
                ChunkBytes::Loaded { .. } => None,
            })
            .collect();
        self.compared.keep(blk, lent);
        r
    }

    /// [`Self::store`] once the stored block is known: `old` (one block of
    /// scratch memory) receives its old bytes.
    #[allow(clippy::too_many_arguments)]
    fn store_with(
        &mut self,
        b: &Backend,
        sf: &SnapshotFile<'_>,
        blk: u64,
        data: &[u8],
        force: Option<ZBlkKind>,
        stored: Option<(Oid, StoredZBlk)>,
        old: &mut [u8],
        old_chunks: &mut Vec<(i64, Oid, ChunkBytes)>,
    ) -> Result<(), Error> {
        let block_err = |e: AssembleError| Error::Block {
            file: b.file,
            blk,
            msg: e.to_string(),
        };
        // A ZBlk1 that stays a ZBlk1 is compared chunk by chunk: its old
        // bytes are not assembled into `old` (2 MiB copied and compared for
        // an 8-byte change), only its table checked; a table of another
        // chunk layout is assembled (it is rewritten whole).
        let mut by_chunks = false;
        // A hole's old bytes are zeros: known without filling and scanning
        // 2 MiB of them (a first write of a big array is all holes).
        let hole = stored.is_none();
        match stored {
            None => {}
            Some((zoid, StoredZBlk::ZBlk0 { .. })) => {
                let mut deps = BlockDeps::default();
                sf.read_zblk(blk, zoid, old, &mut deps)?;
            }
            Some((_, StoredZBlk::ZBlk1 { chunktab, .. })) => {
                *old_chunks = sf.chunks(blk, chunktab)?;
                by_chunks = force.is_none() && self.format == ZBlkFormat::ZBlk1;
                if by_chunks {
                    check_chunks(old_chunks, old.len()).map_err(block_err)?;
                }
            }
        }
        let old_map: BTreeMap<usize, &[u8]> = old_chunks
            .iter()
            .filter_map(|(off, _, d)| usize::try_from(*off).ok().map(|o| (o, d.bytes())))
            .collect();
        let pre_delta = by_chunks
            .then(|| chunk_delta(&old_map, data))
            .filter(|d| !d.clear);
        if pre_delta.is_none() && matches!(stored, Some((_, StoredZBlk::ZBlk1 { .. }))) {
            assemble_chunks(old_chunks, old).map_err(block_err)?;
        }
        let old_ref = stored.map(|(z, _)| z);
        let new_t = trim_zeros(data);
        let unchanged = match &pre_delta {
            Some(d) => !d.changes_content(&old_map),
            None if hole => new_t.is_empty(),
            None => new_t == trim_zeros(old),
        };
        if force.is_none() && unchanged && (old_ref.is_some() || new_t.is_empty()) {
            return Ok(()); // unchanged: nothing is written
        }
        // The old bytes, trimmed (not assembled when compared by chunks:
        // then only a ZBlk1 kept as ZBlk1 follows, which does not use them).
        let old_t: &[u8] = if pre_delta.is_some() || hole {
            &[]
        } else {
            trim_zeros(old)
        };
        let kind = match (force, self.format) {
            (Some(k), _) => k,
            (None, ZBlkFormat::ZBlk0) => ZBlkKind::ZBlk0,
            (None, ZBlkFormat::ZBlk1) => ZBlkKind::ZBlk1,
            (None, ZBlkFormat::Auto) => {
                let last = if b.new_file.load(Ordering::Acquire) {
                    None
                } else {
                    let cut = b.cut.lock().as_ref().map(|c| c.from);
                    sf.last_block()?
                        .and_then(|l| match cut {
                            Some(0) => None,
                            Some(c) => Some(l.min(c - 1)),
                            None => Some(l),
                        })
                        .and_then(|l| i64::try_from(l).ok())
                };
                let blk_i = i64::try_from(blk)
                    .map_err(|_| Error::Usage("block number too large".into()))?;
                let choice = choose_auto(blk_i, last, old_t, new_t, b.blksize);
                if choice.migrate_previous
                    && let Some((pblk, pkind, pdata)) = self.prev.take()
                    && pblk + 1 == blk
                    && pkind != ZBlkKind::ZBlk0
                {
                    self.store(b, pblk, &pdata, Some(ZBlkKind::ZBlk0))?;
                }
                choice.kind
            }
        };
        // The old ZBlk as a record: ZBlk0 bytes are the old block's (trimmed)
        // bytes; a ZBlk1's is its chunk table.
        let old_rec = match stored {
            Some((o, StoredZBlk::ZBlk0 { serial })) => Some((o, (OldZBlk::ZBlk0(old_t), serial))),
            Some((o, StoredZBlk::ZBlk1 { chunktab, serial })) => {
                Some((o, (OldZBlk::ZBlk1(chunktab), serial)))
            }
            None => None,
        };
        let blktab = BTree {
            family: &btree::LO,
            oid: sf.meta.blktab,
        };
        let key = Value::Int(blk as i64);
        match (kind, old_rec) {
            (ZBlkKind::ZBlk0, Some((zoid, (OldZBlk::ZBlk0(_), serial)))) => {
                self.conn
                    .store_bytes_now(zoid, serial, MODULE, "ZBlk0", new_t)?;
            }
            (ZBlkKind::ZBlk1, Some((zoid, (OldZBlk::ZBlk1(chunktab), serial)))) => {
                let oids: HashMap<i64, (Oid, Tid)> = old_chunks
                    .iter()
                    .map(|(off, o, c)| (*off, (*o, c.serial())))
                    .collect();
                let delta = match pre_delta {
                    Some(d) => d,
                    None => chunk_delta(&old_map, data),
                };
                let tab = BTree {
                    family: &btree::IO,
                    oid: chunktab,
                };
                if delta.clear {
                    for off in oids.keys() {
                        tab.remove(&self.conn, &Value::Int(*off))?;
                    }
                }
                for off in &delta.delete {
                    tab.remove(&self.conn, &Value::Int(*off as i64))?;
                }
                for (off, bytes) in &delta.set {
                    let off_i = *off as i64;
                    match oids.get(&off_i).filter(|_| !delta.clear) {
                        Some(&(zd, serial)) => {
                            self.conn
                                .store_bytes_now(zd, serial, MODULE, "ZData", bytes)?;
                        }
                        None => {
                            let zd = self.new_bytes_object(b, "ZData", bytes)?;
                            let r = Value::persistent_ref(zd, MODULE, "ZData");
                            tab.insert(&self.conn, Value::Int(off_i), r)?;
                        }
                    }
                }
                // The ZBlk1 record is always re-stored so that peers see its
                // oid in the invalidations.
                self.conn.store_now(zoid, serial, &ZBlk1 { chunktab })?;
            }
            (kind, old_rec) => {
                // A hole, or a block changing format: a new ZBlk object.
                // The replaced ZBlk is re-stored unchanged, so that a
                // concurrent in-place change of it (by a writer that still
                // sees it in blktab) conflicts instead of being lost.
                match old_rec {
                    Some((old_oid, (OldZBlk::ZBlk0(bytes), serial))) => {
                        self.conn
                            .store_bytes_now(old_oid, serial, MODULE, "ZBlk0", bytes)?;
                    }
                    Some((old_oid, (OldZBlk::ZBlk1(chunktab), serial))) => {
                        self.conn.store_now(old_oid, serial, &ZBlk1 { chunktab })?;
                    }
                    None => {}
                }
                let (zoid, name) = match kind {
                    ZBlkKind::ZBlk0 => (self.new_bytes_object(b, "ZBlk0", new_t)?, "ZBlk0"),
                    ZBlkKind::ZBlk1 => {
                        let tab = BTree::create(&self.conn, &btree::IO)?;
                        for (off, bytes) in crate::zblk::split_chunks(data, CHUNK_SIZE) {
                            let zd = self.new_bytes_object(b, "ZData", bytes)?;
                            let r = Value::persistent_ref(zd, MODULE, "ZData");
                            tab.insert(&self.conn, Value::Int(off as i64), r)?;
                        }
                        (self.new_object(b, &ZBlk1 { chunktab: tab.oid })?, "ZBlk1")
                    }
                };
                blktab.insert(&self.conn, key, Value::persistent_ref(zoid, MODULE, name))?;
            }
        }
        self.blocks.push(blk);
        if force.is_none() && self.format == ZBlkFormat::Auto {
            // The previous block's bytes, in a reused buffer.
            let mut p = self.prev.take().map(|(_, _, v)| v).unwrap_or_default();
            p.clear();
            p.extend_from_slice(data);
            self.prev = Some((blk, kind, p));
        }
        Ok(())
    }
}
