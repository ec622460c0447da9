//! Spilling: transactions bigger than RAM.
//!
//! Dirty blocks cannot be dropped from memory (they hold the only copy of
//! the transaction's changes), so a transaction writing more than the RAM
//! budget would grow without bound. Past the handle's spill threshold the
//! dirty blocks are written (virtmem STORE) to an unnamed, sparse temporary
//! file and marked clean, so the budget can evict them; loads of those blocks
//! read the spill file first, the commit stores them from it one block at a
//! time, and abort forgets the file. The spilled blocks are then dropped
//! from memory at once rather than left to the budget: they would otherwise
//! sit in RAM as clean blocks on top of the next threshold's worth of dirty
//! ones (a write-only transaction peaked at budget + threshold). Measured
//! with the kernel's peak RSS (bigfile tests/memory.rs): writing and
//! committing a transaction of 4x the budget stays within the threshold
//! plus a few blocks.

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
        let dirty = fh.dirty_blocks();
        if dirty.is_empty() {
            return Ok(());
        }
        self.backend.spill.lock().active = true;
        let r = fh.writeout(Writeout::STORE);
        self.backend.spill.lock().active = false;
        r?;
        fh.writeout(Writeout::MARKSTORED)?;
        // In the spill file now: reloaded from there if touched again.
        for blk in dirty {
            fh.invalidate(blk)?;
        }
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
