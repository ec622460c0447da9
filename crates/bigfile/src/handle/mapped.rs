//! Offering committed blocks to virtmem for mapping in place
//! ([`virtmem::BigFile::map_block`]): a ZBlk0 block that this transaction
//! has not touched is, in FileStorage, one contiguous byte string in the
//! data file, stored at a page-aligned offset (`StorageTxn::store_aligned`),
//! so virtmem can map it read-only straight from the file: a view of it
//! costs no copy at all, like a plain `mmap` of the same bytes.
//!
//! The same rules as a load decide what the block is: a block this
//! transaction spilled, cut off or created (a new file) is not offered (the
//! load serves it from the spill file or as a hole), nor a ZBlk1, a ZBlk0
//! whose trailing zeros were not stored (wendelin.core trims them), one
//! written before payloads were aligned, or any block of a storage without
//! a local file (ZEO). The block's dependencies are recorded like a load's,
//! so invalidation stays exact; committed records are never rewritten in
//! place, so the mapped bytes never change under the view.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;

use storage::MappedRecord;
use virtmem::MappableBlock;

use super::backend::Backend;
use crate::Error;
use crate::stored::StoredBlock;

/// Page size: a mapped range must start at a multiple of it.
const PAGE: u64 = 4096;

/// A ZBlk0 payload offered for mapping (the record keeps its file open).
struct MappableRecord {
    rec: MappedRecord,
    offset: u64,
}

impl MappableBlock for MappableRecord {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.rec.file_range()?.0.as_fd())
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

impl Backend {
    /// Block `blk` at the handle's snapshot as a page-aligned range of the
    /// storage file, if it is one (see the module docs); `None`: load it.
    pub(super) fn mappable(&self, blk: u64) -> Result<Option<Box<dyn MappableBlock>>, Error> {
        if self.new_file.load(Ordering::Acquire)
            || self.is_cut(blk)
            || self.spill.lock().blocks.contains(&blk)
        {
            return Ok(None);
        }
        let sf = self.snapshot()?;
        let (StoredBlock::Mapped(rec), mut deps) = sf.stored_block_deps(blk)? else {
            return Ok(None);
        };
        if rec.data().len() != self.blksize {
            return Ok(None);
        }
        let Some(offset) = rec
            .file_range()
            .map(|(_, o)| o)
            .filter(|o| o.is_multiple_of(PAGE))
        else {
            return Ok(None);
        };
        deps.path.push(self.file);
        self.deps.lock().record(blk, deps);
        // virtmem maps the payload from the file itself: what reading the
        // header mapped here is not kept.
        rec.release_with_folios();
        Ok(Some(Box::new(MappableRecord { rec, offset })))
    }
}
