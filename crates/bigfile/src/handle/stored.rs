//! A handle's view of what is stored for a block (see [`crate::stored`]):
//! only blocks the handle's transaction has not touched are lent in place.

use std::sync::atomic::Ordering;

use super::ZBigFileH;
use crate::Error;
use crate::stored::StoredBlock;

impl ZBigFileH {
    /// What is stored for block `blk` at the handle's snapshot, lent in
    /// place if possible: for read-only scans of blocks that are not
    /// resident (the caller checks `is_resident` on the virtmem handle it
    /// holds, since a resident block may hold this transaction's changes).
    /// Blocks this transaction spilled, cut off or created (a new file) are
    /// [`StoredBlock::Unavailable`]: load them through the mapping.
    pub fn stored_block(&self, blk: u64) -> Result<StoredBlock, Error> {
        let b = &self.shared.backend;
        if b.new_file.load(Ordering::Acquire)
            || b.is_cut(blk)
            || b.spill.lock().blocks.contains(&blk)
        {
            return Ok(StoredBlock::Unavailable);
        }
        b.snapshot()?.stored_block(blk)
    }
}
