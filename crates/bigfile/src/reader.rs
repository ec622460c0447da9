//! Reading a ZBigFile at a snapshot straight from the storage (no connection,
//! no locks shared with user threads): what the fault handlers use.

use crate::Error;
use crate::chunks::{ChunkBytes, ClassPrefix, assemble_chunks};
use crate::objects::{
    ZBigFile, ZBlkRecord, decode_zblk, decode_zdata, fast_payload, is_payload_tail, payload_layout,
};
use crate::zblk::{ZBlkKind, assemble_zblk0};
use std::sync::Arc;
use storage::btree::{NodeCache, SnapshotReader};
use storage::mapped::release_together;
use storage::{GenericObject, MappedRecord, Oid, Snapshot, Storage, Tid, Value};

/// What the content of one block depended on when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDeps {
    /// blktab nodes visited to find the block (a change there may or may
    /// not change the block: re-check the lookup).
    pub path: Vec<Oid>,
    /// The ZBlk object and, for ZBlk1, its chunk table nodes and ZData
    /// objects (a change there is a change of the block).
    pub direct: Vec<Oid>,
    /// The ZBlk oid, its kind and revision, if the block is not a hole.
    pub zblk: Option<(Oid, ZBlkKind, Tid)>,
}

/// What a ZBlk is stored as (see [`SnapshotFile::stored_zblk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredZBlk {
    /// A ZBlk0 (or legacy ZBlk) at revision `serial`.
    ZBlk0 {
        /// The ZBlk's revision.
        serial: Tid,
    },
    /// A ZBlk1 whose chunk table is `chunktab`, at revision `serial`.
    ZBlk1 {
        /// The chunk table (an IOBTree of ZData).
        chunktab: Oid,
        /// The ZBlk's revision.
        serial: Tid,
    },
}

/// A ZBigFile at one snapshot.
pub struct SnapshotFile<'a> {
    pub(crate) snap: Snapshot<'a>,
    /// The file object's oid.
    pub oid: Oid,
    /// Its state.
    pub meta: ZBigFile,
    /// Decoded blktab nodes of this snapshot, shared with the other
    /// lookups of the same handle and snapshot (see [`NodeCache`]).
    nodes: Option<Arc<NodeCache>>,
}

impl<'a> SnapshotFile<'a> {
    /// The ZBigFile `oid` as of `at`.
    pub fn open(storage: &'a dyn Storage, at: Tid, oid: Oid) -> Result<Self, Error> {
        let snap = Snapshot::new(storage, at);
        let obj: GenericObject = snap.load(oid)?;
        if (obj.module.as_str(), obj.name.as_str()) != (crate::objects::MODULE, "ZBigFile") {
            return Err(Error::NotAFile {
                oid,
                class: format!("{}.{}", obj.module, obj.name),
            });
        }
        let meta = ZBigFile::parse(oid, &obj.state)?;
        if meta.blksize > (1 << 30) || !meta.blksize.is_multiple_of(4096) {
            return Err(Error::Block {
                file: oid,
                blk: 0,
                msg: format!(
                    "unsupported blksize {} (must be a multiple of 4096, at most 1 GiB)",
                    meta.blksize
                ),
            });
        }
        Ok(SnapshotFile {
            snap,
            oid,
            meta,
            nodes: None,
        })
    }

    /// The file at another snapshot whose state is known to be `meta`
    /// (skips loading the file object).
    pub fn with_meta(storage: &'a dyn Storage, at: Tid, oid: Oid, meta: ZBigFile) -> Self {
        SnapshotFile {
            snap: Snapshot::new(storage, at),
            oid,
            meta,
            nodes: None,
        }
    }

    /// Look blocks up through `nodes`, decoded blktab nodes kept for this
    /// snapshot (a cache of another snapshot is not used).
    pub fn with_node_cache(mut self, nodes: Arc<NodeCache>) -> Self {
        if nodes.at() == self.snap.at {
            self.nodes = Some(nodes);
        }
        self
    }

    /// The snapshot.
    pub fn at(&self) -> Tid {
        self.snap.at
    }

    fn reader(&self) -> SnapshotReader<'_> {
        SnapshotReader::new(self.snap)
    }

    /// The record of `oid` at the snapshot and its revision.
    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid), Error> {
        let r = self.snap.record(oid)?;
        Ok((r.data, r.serial))
    }

    /// The ZBlk reference of block `blk` (`None`: a hole), recording the
    /// blktab nodes visited in `path`.
    pub fn zblk_ref(&self, blk: u64, path: &mut Vec<Oid>) -> Result<Option<Oid>, Error> {
        let key =
            Value::Int(i64::try_from(blk).map_err(|_| self.err(blk, "block number too large"))?);
        let mut visit = |o| path.push(o);
        let v = match &self.nodes {
            Some(nodes) => self
                .reader()
                .get_cached(self.meta.blktab, &key, &mut visit, nodes)?,
            None => self.reader().get(self.meta.blktab, &key, &mut visit)?,
        };
        match v {
            None => Ok(None),
            Some(v) => v
                .ref_oid()
                .map(Some)
                .ok_or_else(|| self.err(blk, "blktab value is not a reference")),
        }
    }

    /// The whole block table (blktab) at this snapshot, read in one walk
    /// (see [`crate::stored::BlockTable`]).
    pub fn block_table(&self) -> Result<crate::stored::BlockTable, Error> {
        let items = self
            .reader()
            .int_ref_items(self.meta.blktab, &mut |_| {})
            .map_err(|e| match e {
                storage::Error::BadState { oid, msg } => Error::Block {
                    file: self.oid,
                    blk: 0,
                    msg: format!("blktab node {oid}: {msg}"),
                },
                e => e.into(),
            })?;
        let mut refs = Vec::with_capacity(items.len());
        for (k, zoid) in items {
            let blk = u64::try_from(k).map_err(|_| Error::Block {
                file: self.oid,
                blk: 0,
                msg: format!("blktab key {k} is negative"),
            })?;
            refs.push((blk, zoid));
        }
        Ok(crate::stored::BlockTable::new(self.at(), refs))
    }

    fn err(&self, blk: u64, msg: impl Into<String>) -> Error {
        Error::Block {
            file: self.oid,
            blk,
            msg: msg.into(),
        }
    }

    /// The chunks of a ZBlk1's table: (offset, ZData oid), in offset order,
    /// recording visited table nodes in `deps`.
    pub fn chunk_refs(
        &self,
        blk: u64,
        chunktab: Oid,
        deps: &mut Vec<Oid>,
    ) -> Result<Vec<(i64, Oid)>, Error> {
        // Buckets are read without building value trees (`int_ref_items`).
        self.reader()
            .int_ref_items(chunktab, &mut |o| deps.push(o))
            .map_err(|e| match e {
                storage::Error::BadState { oid, msg } => {
                    self.err(blk, format!("chunk table node {oid}: {msg}"))
                }
                e => e.into(),
            })
    }

    /// The stored chunks `refs` of a ZBlk1 (offset order) with their
    /// payloads: lent in place from the storage's mapping where it can
    /// (`Storage::map_many_before`: no copy, syscall or allocation per
    /// chunk), the rest loaded in one batch (`Storage::load_many_before`);
    /// odd records are decoded generically. A missing one is an error.
    pub fn chunk_payloads(
        &self,
        refs: &[(i64, Oid)],
    ) -> Result<Vec<(i64, Oid, ChunkBytes)>, Error> {
        let oids: Vec<Oid> = refs.iter().map(|&(_, o)| o).collect();
        let before = self.snap.at.successor();
        let mapped = self.snap.storage.map_many_before(&oids, before)?;
        let mut out: Vec<Option<ChunkBytes>> = Vec::with_capacity(refs.len());
        let mut missing = Vec::new();
        let mut class = ClassPrefix::default();
        for (i, m) in mapped.into_iter().enumerate() {
            let c = m.and_then(|m| {
                let (off, len) = class.payload(m.data())?;
                m.narrow(off..off + len).map(ChunkBytes::Mapped)
            });
            if c.is_none() {
                missing.push(i);
            }
            out.push(c);
        }
        if !missing.is_empty() {
            let moids: Vec<Oid> = missing.iter().map(|&i| oids[i]).collect();
            let recs = self.snap.storage.load_many_before(&moids, before)?;
            for (&i, r) in missing.iter().zip(recs) {
                let o = oids[i];
                let r = r.ok_or(Error::Storage(storage::Error::NotFound {
                    oid: o,
                    tid: Some(self.snap.at),
                }))?;
                let data = match fast_payload(&r.data, &["ZData"]) {
                    Some(p) => p.to_vec(),
                    None => decode_zdata(o, &r.data)?,
                };
                out[i] = Some(ChunkBytes::Loaded {
                    data,
                    serial: r.serial,
                });
            }
        }
        refs.iter()
            .zip(out)
            .map(|(&(off, o), c)| {
                c.map(|c| (off, o, c))
                    .ok_or_else(|| Error::Usage(format!("chunk {o} was not loaded")))
            })
            .collect()
    }

    /// The stored chunks of a ZBlk1: (offset, ZData oid, bytes).
    pub fn chunks(&self, blk: u64, chunktab: Oid) -> Result<Vec<(i64, Oid, ChunkBytes)>, Error> {
        let mut deps = Vec::new();
        let refs = self.chunk_refs(blk, chunktab, &mut deps)?;
        self.chunk_payloads(&refs)
    }

    /// Fill `buf` (one block) with block `blk`. Returns true for a hole
    /// (buffer untouched) and what the content depended on.
    pub fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<(bool, BlockDeps), Error> {
        if buf.len() as u64 != self.meta.blksize {
            return Err(self.err(blk, "buffer is not one block"));
        }
        let mut deps = BlockDeps::default();
        let Some(zoid) = self.zblk_ref(blk, &mut deps.path)? else {
            return Ok((true, deps));
        };
        self.read_zblk(blk, zoid, buf, &mut deps)?;
        Ok((false, deps))
    }

    /// Fill `buf` (one block) with the content of the ZBlk `zoid` of block
    /// `blk`, adding what it depended on to `deps` (`direct`, `zblk`).
    pub fn read_zblk(
        &self,
        blk: u64,
        zoid: Oid,
        buf: &mut [u8],
        deps: &mut BlockDeps,
    ) -> Result<(), Error> {
        if buf.len() as u64 != self.meta.blksize {
            return Err(self.err(blk, "buffer is not one block"));
        }
        deps.direct.push(zoid);
        if let Some(serial) = self.read_zblk0_direct(blk, zoid, buf)? {
            deps.zblk = Some((zoid, ZBlkKind::ZBlk0, serial));
            return Ok(());
        }
        let (data, serial) = self.load(zoid)?;
        if let Some(bytes) = fast_payload(&data, &["ZBlk0", "ZBlk"]) {
            assemble_zblk0(bytes, buf).map_err(|e| self.err(blk, e.to_string()))?;
            deps.zblk = Some((zoid, ZBlkKind::ZBlk0, serial));
            return Ok(());
        }
        match decode_zblk(zoid, &data)? {
            ZBlkRecord::ZBlk0(bytes) => {
                assemble_zblk0(&bytes, buf).map_err(|e| self.err(blk, e.to_string()))?;
                deps.zblk = Some((zoid, ZBlkKind::ZBlk0, serial));
            }
            ZBlkRecord::ZBlk1(chunktab) => {
                let refs = self.chunk_refs(blk, chunktab, &mut deps.direct)?;
                deps.direct.extend(refs.iter().map(|(_, o)| *o));
                self.assemble_zblk1(blk, &refs, buf)?;
                deps.zblk = Some((zoid, ZBlkKind::ZBlk1, serial));
            }
        }
        Ok(())
    }

    /// Read a ZBlk0 (or legacy ZBlk) payload straight from the storage into
    /// `buf` (no intermediate copy of the record): the record's head tells
    /// where the bytes are. `Ok(None)` if the record is not a plain ZBlk0
    /// (the caller then decodes it generically).
    fn read_zblk0_direct(&self, blk: u64, zoid: Oid, buf: &mut [u8]) -> Result<Option<Tid>, Error> {
        let before = self.snap.at.successor();
        let mut head = [0u8; storage::pickle::BYTES_STATE_HEAD];
        let Some(r) = self
            .snap
            .storage
            .load_before_range(zoid, before, 0, &mut head)?
        else {
            return Err(Error::Storage(storage::Error::NotFound {
                oid: zoid,
                tid: Some(self.snap.at),
            }));
        };
        let Some((off, len)) = payload_layout(&head[..r.copied], &["ZBlk0", "ZBlk"]) else {
            return Ok(None);
        };
        let off = off as u64;
        let Some(tail_len) = r.total_len.checked_sub(off + len) else {
            return Ok(None);
        };
        if !matches!(tail_len, 1 | 3 | 6) {
            return Ok(None);
        }
        let mut tail = [0u8; 6];
        let t = self
            .snap
            .storage
            .load_before_range(zoid, before, off + len, &mut tail[..tail_len as usize])?
            .map_or(0, |t| t.copied);
        let ok = t == tail_len as usize && is_payload_tail(&tail[..t]);
        if !ok {
            return Ok(None);
        }
        if len > buf.len() as u64 {
            return Err(self.err(
                blk,
                format!(
                    "stored block data of {len} bytes exceeds blksize {}",
                    buf.len()
                ),
            ));
        }
        let len = len as usize;
        let got = self
            .snap
            .storage
            .load_before_range(zoid, before, off, &mut buf[..len])?
            .map_or(0, |g| g.copied);
        if got != len {
            return Err(self.err(blk, "block record changed while reading it"));
        }
        buf[len..].fill(0);
        Ok(Some(r.serial))
    }

    /// Fill `buf` from the ZData chunks `refs` (offset order) in one pass:
    /// by a split read where the storage has them (`chunks_split`: the
    /// payloads laid in place by the kernel's one copy); otherwise each
    /// payload is copied straight out of the storage's file mapping
    /// into place ([`Self::chunk_payloads`]: located without decoding the
    /// record, no per-chunk buffer or syscall; records the storage cannot
    /// lend are loaded in one batch), zeros only in the gaps. The mapped
    /// pages are released right after (`storage::mapped::release_together`):
    /// a scan does not keep the file's pages in the process's RSS beyond
    /// the handle's RAM budget.
    fn assemble_zblk1(&self, blk: u64, refs: &[(i64, Oid)], buf: &mut [u8]) -> Result<(), Error> {
        if self.read_chunks_split(blk, refs, buf)? {
            return Ok(());
        }
        let chunks = self.chunk_payloads(refs)?;
        let r = assemble_chunks(&chunks, buf).map_err(|e| self.err(blk, e.to_string()));
        let mapped: Vec<&MappedRecord> = chunks
            .iter()
            .filter_map(|(_, _, c)| match c {
                ChunkBytes::Mapped(m) => Some(m),
                ChunkBytes::Loaded { .. } => None,
            })
            .collect();
        release_together(&mapped);
        r
    }

    /// Stream the file's bytes `range` (holes as zeros) to `f`, one block at
    /// a time, with one block of memory.
    pub fn read_range(
        &self,
        range: std::ops::Range<u64>,
        mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let bs = self.meta.blksize;
        let mut buf = vec![0u8; bs as usize];
        let mut pos = range.start;
        while pos < range.end {
            let blk = pos / bs;
            let (hole, _) = self.read_block(blk, &mut buf)?;
            if hole {
                buf.fill(0);
            }
            let a = (pos - blk * bs) as usize;
            let b = (range.end - blk * bs).min(bs) as usize;
            f(&buf[a..b]).map_err(Error::Output)?;
            pos = (blk + 1) * bs;
        }
        Ok(())
    }

    /// What block `blk`'s content depends on, without reading its data.
    pub fn block_deps(&self, blk: u64) -> Result<BlockDeps, Error> {
        let mut deps = BlockDeps::default();
        let Some(zoid) = self.zblk_ref(blk, &mut deps.path)? else {
            return Ok(deps);
        };
        deps.direct.push(zoid);
        match self.stored_zblk(zoid)? {
            StoredZBlk::ZBlk0 { serial } => deps.zblk = Some((zoid, ZBlkKind::ZBlk0, serial)),
            StoredZBlk::ZBlk1 { chunktab, serial } => {
                let refs = self.chunk_refs(blk, chunktab, &mut deps.direct)?;
                deps.direct.extend(refs.into_iter().map(|(_, o)| o));
                deps.zblk = Some((zoid, ZBlkKind::ZBlk1, serial));
            }
        }
        Ok(deps)
    }

    /// What the ZBlk `zoid` is stored as now. A ZBlk0 is told by its
    /// record's head (its large payload is not read); only a ZBlk1's small
    /// record is loaded, for its chunk table.
    pub fn stored_zblk(&self, zoid: Oid) -> Result<StoredZBlk, Error> {
        let mut head = [0u8; storage::pickle::BYTES_STATE_HEAD];
        let r = self
            .snap
            .storage
            .load_before_range(zoid, self.snap.at.successor(), 0, &mut head)?
            .ok_or(Error::Storage(storage::Error::NotFound {
                oid: zoid,
                tid: Some(self.snap.at),
            }))?;
        if payload_layout(&head[..r.copied], &["ZBlk0", "ZBlk"]).is_some() {
            return Ok(StoredZBlk::ZBlk0 { serial: r.serial });
        }
        Ok(match self.zblk(zoid)? {
            (ZBlkRecord::ZBlk0(_), serial) => StoredZBlk::ZBlk0 { serial },
            (ZBlkRecord::ZBlk1(chunktab), serial) => StoredZBlk::ZBlk1 { chunktab, serial },
        })
    }

    /// The highest block present, if any.
    pub fn last_block(&self) -> Result<Option<u64>, Error> {
        Ok(self
            .reader()
            .max_key(self.meta.blktab)?
            .and_then(|k| k.as_int())
            .and_then(|k| u64::try_from(k).ok()))
    }

    /// File size: `(last block + 1) * blksize`, as wcfs defines it.
    pub fn size(&self) -> Result<u64, Error> {
        Ok(self
            .last_block()?
            .map_or(0, |b| (b + 1) * self.meta.blksize))
    }

    /// Every present block with its ZBlk oid, in block order.
    pub fn blocks(&self) -> Result<Vec<(u64, Oid)>, Error> {
        let items = self.reader().items(self.meta.blktab, &mut |_| {})?;
        items
            .into_iter()
            .map(|(k, v)| {
                let b = k
                    .as_int()
                    .and_then(|b| u64::try_from(b).ok())
                    .ok_or_else(|| self.err(0, "bad block number in blktab"))?;
                let o = v
                    .ref_oid()
                    .ok_or_else(|| self.err(b, "blktab value is not a reference"))?;
                Ok((b, o))
            })
            .collect()
    }

    /// The kind of the ZBlk `oid`.
    pub fn zblk_kind(&self, oid: Oid) -> Result<ZBlkKind, Error> {
        let (data, _) = self.load(oid)?;
        Ok(match decode_zblk(oid, &data)? {
            ZBlkRecord::ZBlk0(_) => ZBlkKind::ZBlk0,
            ZBlkRecord::ZBlk1(_) => ZBlkKind::ZBlk1,
        })
    }

    /// The ZBlk record of `oid` and its revision.
    pub fn zblk(&self, oid: Oid) -> Result<(ZBlkRecord, Tid), Error> {
        let (data, serial) = self.load(oid)?;
        Ok((decode_zblk(oid, &data)?, serial))
    }
}
