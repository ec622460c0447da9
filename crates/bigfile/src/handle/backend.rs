//! The virtmem side of a handle: the `virtmem::BigFile` that loads blocks
//! of the file at the handle's snapshot straight from the storage (on
//! virtmem's handler threads, without the connection or its cache) and
//! stores dirty blocks through the commit's writer.
//!
//! Loads read, in order: the spill file (a block of this transaction moved
//! out of RAM), holes of a file created in this transaction or of blocks cut
//! off by [`super::ZBigFileH::discard_from`] in it, then the snapshot.
//! Store errors go back to virtmem as boxed [`Error`] values, so the commit
//! gets them back typed (a `ConflictError` stays a `ConflictError`).

use super::deps::Deps;
use super::spill::Spill;
use super::writer::Writer;
use crate::Error;
use crate::reader::SnapshotFile;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use storage::{Oid, Storage, Tid};
use virtmem::{BoxError, Loaded};

/// The virtmem side: loads blocks of the file at the snapshot `at` straight
/// from the storage; stores go through the connection during commit.
pub(super) struct Backend {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) file: Oid,
    pub(super) blksize: usize,
    pub(super) at: AtomicU64,
    pub(super) deps: Mutex<Deps>,
    pub(super) writer: Mutex<Option<Writer>>,
    /// One block of memory the commit's writer reads old blocks into, kept
    /// between commits (a fresh 2 MiB buffer per commit costs its page
    /// faults and zeroing every time).
    pub(super) scratch: Mutex<Vec<u8>>,
    /// The stored chunks the writer compared last, kept mapped between
    /// commits (see [`super::compared`]).
    pub(super) compared: Mutex<super::compared::Compared>,
    /// The file object's state and the snapshot it was read at.
    pub(super) meta: Mutex<Option<(Tid, crate::objects::ZBigFile)>>,
    /// Decoded blktab nodes of the handle's snapshot (replaced when the
    /// snapshot moves).
    pub(super) nodes: Mutex<Option<Arc<storage::btree::NodeCache>>>,
    /// Blocks of the current transaction spilled to a temporary file.
    pub(super) spill: Mutex<Spill>,
    /// The file object was created in this transaction and is not in the
    /// storage yet: every block is a hole.
    pub(super) new_file: AtomicBool,
    /// Blocks served as holes while the file was new (no deps recorded).
    pub(super) new_holes: Mutex<BTreeSet<u64>>,
    /// Blocks from this one on were cut off in the current transaction
    /// (`discard_from`), with the blocks served as holes since then.
    pub(super) cut: Mutex<Option<Cut>>,
}

/// A cut of the file in the current transaction: every block from `from` on
/// reads as a hole (the snapshot still has them) and holds no old data.
pub(super) struct Cut {
    /// First block cut off.
    pub(super) from: u64,
    /// Blocks served as holes because of the cut (they carry no
    /// dependencies: the transaction boundary drops them).
    pub(super) holes: BTreeSet<u64>,
}

impl Backend {
    /// Is `blk` cut off in the current transaction? Such a block has no
    /// stored ZBlk to update: the writer creates a new one.
    /// The file at the handle's snapshot (the file object's state cached
    /// per snapshot).
    pub(super) fn snapshot(&self) -> Result<SnapshotFile<'_>, crate::Error> {
        let at = Tid(self.at.load(Ordering::Acquire));
        let cached = self.meta.lock().clone().filter(|(t, _)| *t == at);
        let sf = match cached {
            Some((_, m)) => SnapshotFile::with_meta(self.storage.as_ref(), at, self.file, m),
            None => {
                let sf = SnapshotFile::open(self.storage.as_ref(), at, self.file)?;
                *self.meta.lock() = Some((at, sf.meta.clone()));
                sf
            }
        };
        let nodes = {
            let mut n = self.nodes.lock();
            match &*n {
                Some(c) if c.at() == at => c.clone(),
                _ => {
                    let c = Arc::new(storage::btree::NodeCache::new(at));
                    *n = Some(c.clone());
                    c
                }
            }
        };
        Ok(sf.with_node_cache(nodes))
    }

    pub(super) fn is_cut(&self, blk: u64) -> bool {
        self.cut.lock().as_ref().is_some_and(|c| blk >= c.from)
    }
}

impl virtmem::BigFile for Backend {
    fn block_size(&self) -> usize {
        self.blksize
    }

    fn load_block(&self, blk: u64, buf: &mut [u8]) -> Result<Loaded, BoxError> {
        {
            let sp = self.spill.lock();
            if sp.blocks.contains(&blk)
                && let Some(f) = &sp.file
            {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(buf, blk * self.blksize as u64)?;
                return Ok(Loaded::Data);
            }
        }
        if self.new_file.load(Ordering::Acquire) {
            self.new_holes.lock().insert(blk);
            return Ok(Loaded::Hole);
        }
        if let Some(cut) = self.cut.lock().as_mut().filter(|c| blk >= c.from) {
            cut.holes.insert(blk);
            return Ok(Loaded::Hole);
        }
        let sf = self.snapshot()?;
        let (hole, mut deps) = sf.read_block(blk, buf)?;
        deps.path.push(self.file);
        self.deps.lock().record(blk, deps);
        Ok(if hole { Loaded::Hole } else { Loaded::Data })
    }

    fn store_block(&self, blk: u64, data: &[u8]) -> Result<(), BoxError> {
        {
            let mut sp = self.spill.lock();
            if sp.active {
                use std::os::unix::fs::FileExt;
                if sp.file.is_none() {
                    sp.file = Some(tempfile::tempfile()?);
                }
                if let Some(f) = &sp.file {
                    f.write_all_at(data, blk * self.blksize as u64)?;
                }
                sp.blocks.insert(blk);
                return Ok(());
            }
        }
        let mut w = self.writer.lock();
        let w = w
            .as_mut()
            .ok_or_else(|| Error::Usage("blocks are stored only during commit".into()))?;
        // The error goes back to virtmem boxed; the commit downcasts it.
        Ok(w.store(self, blk, data, None)?)
    }

    fn map_block(&self, blk: u64) -> Result<Option<Box<dyn virtmem::MappableBlock>>, BoxError> {
        Ok(self.mappable(blk)?)
    }

    fn name(&self) -> String {
        format!("ZBigFile {} in {}", self.file, self.storage.name())
    }
}
