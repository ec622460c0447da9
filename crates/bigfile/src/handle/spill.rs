//! Spilling: transactions bigger than RAM.
//!
//! Dirty blocks cannot be dropped from memory (they hold the only copy of
//! the transaction's changes), so a transaction writing more than the RAM
//! budget would grow without bound. Past the handle's spill threshold the
//! dirty blocks are written (virtmem STORE) to an unnamed, sparse temporary
//! file and marked clean, so the budget can evict them; loads of those blocks
//! read the spill file first, the commit stores them from it one block at a
//! time, and abort forgets the file. Measured: a transaction of 4x the
//! budget commits with dirty memory bounded by the threshold (bigfile tests).

use super::Shared;
use crate::Error;
use std::collections::BTreeSet;
use virtmem::{FileH, Writeout};

/// Dirty blocks moved out of RAM during a transaction: block `blk` lives
/// at offset `blk * blksize` of an unnamed sparse temporary file.
#[derive(Default)]
pub(super) struct Spill {
    pub(super) file: Option<std::fs::File>,
    pub(super) blocks: BTreeSet<u64>,
    /// True while a spill pass stores blocks (store_block goes to the file).
    pub(super) active: bool,
}

impl Shared {
    pub(super) fn spill_locked(&self, fh: &mut FileH) -> Result<(), Error> {
        if fh.dirty_blocks().is_empty() {
            return Ok(());
        }
        self.backend.spill.lock().active = true;
        let r = fh.writeout(Writeout::STORE);
        self.backend.spill.lock().active = false;
        r?;
        fh.writeout(Writeout::MARKSTORED)?;
        tracing::debug!(
            blocks = self.backend.spill.lock().blocks.len(),
            "ZBigFileH: spilled dirty blocks"
        );
        Ok(())
    }

    /// Forget the spill file; its blocks are dropped from memory (they held
    /// this transaction's changes).
    pub(super) fn drop_spill(&self, fh: &mut FileH) -> Result<(), Error> {
        let blocks: Vec<u64> = {
            let mut sp = self.backend.spill.lock();
            sp.file = None;
            std::mem::take(&mut sp.blocks).into_iter().collect()
        };
        for blk in blocks {
            fh.invalidate(blk)?;
        }
        Ok(())
    }
}
