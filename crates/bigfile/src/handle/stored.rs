//! A handle's view of what is stored for a block (see [`crate::stored`]):
//! only blocks the handle's transaction has not touched are lent in place.

use std::sync::atomic::Ordering;

use super::ZBigFileH;
use crate::Error;
use crate::stored::{BlockTable, StoredBlock};

impl ZBigFileH {
    /// What is stored for block `blk` at the handle's snapshot, lent in
    /// place if possible: for read-only scans of blocks that are not
    /// resident (the caller checks `is_resident` on the virtmem handle it
    /// holds, since a resident block may hold this transaction's changes).
    /// Blocks this transaction spilled, cut off or created (a new file) are
    /// [`StoredBlock::Unavailable`]: load them through the mapping.
    pub fn stored_block(&self, blk: u64) -> Result<StoredBlock, Error> {
        if !self.lends_stored(blk) {
            return Ok(StoredBlock::Unavailable);
        }
        self.shared.backend.snapshot()?.stored_block(blk)
    }

    /// The file's block table at the handle's snapshot, read in one walk:
    /// for [`Self::stored_block_in`] over many blocks.
    pub fn block_table(&self) -> Result<BlockTable, Error> {
        let b = &self.shared.backend;
        if b.new_file.load(Ordering::Acquire) {
            // Created in this transaction: nothing is stored yet (the
            // snapshot has no such file) and no block is lent.
            let at = storage::Tid(b.at.load(Ordering::Acquire));
            return Ok(BlockTable::new(at, Vec::new()));
        }
        b.snapshot()?.block_table()
    }

    /// [`Self::stored_block`], the block's ZBlk found in `table` (from
    /// [`Self::block_table`]; one of an older snapshot than the handle's
    /// is not used).
    pub fn stored_block_in(&self, table: &BlockTable, blk: u64) -> Result<StoredBlock, Error> {
        if !self.lends_stored(blk) {
            return Ok(StoredBlock::Unavailable);
        }
        self.shared.backend.snapshot()?.stored_block_in(table, blk)
    }

    /// Whether block `blk` as stored is what the handle reads (not one
    /// this transaction spilled, cut off or created).
    fn lends_stored(&self, blk: u64) -> bool {
        let b = &self.shared.backend;
        !(b.new_file.load(Ordering::Acquire)
            || b.is_cut(blk)
            || b.spill.lock().blocks.contains(&blk))
    }
}
