//! Whole-block overwrites that reuse the pages of blocks the writer is done
//! with ([`FileH::bytes_overwrite`]).
//!
//! A streaming writer (`wendelin import`: an .npy read straight into the
//! array's memory, one bounded transaction after another) writes every
//! byte of blocks that were holes. The first write to a hole is given fresh
//! huge pages (moved in, see `zero_copy.rs`), which the kernel zeroes only
//! for the writer to overwrite them at once: a profile of importing 2 GiB
//! spent 24% of its samples in `clear_page_erms` (the import ran at 0.75x
//! `cp` + `fsync` of the same .npy). Meanwhile the blocks the previous
//! transaction committed are clean, never touched again, and were dropped
//! to keep the resident set small.
//!
//! Here the caller names both: the range it is about to overwrite, and the
//! clean blocks it is done with. Each block wholly inside the range that
//! is not resident gets the pages of one of those blocks, moved in place
//! (`UFFDIO_MOVE` within the reservation: no copy, no zeroing, no
//! allocation) and becomes dirty; the donor is dropped as an eviction
//! would (it reloads from the file if touched again). The moved pages hold
//! the donor's bytes until the caller overwrites them: this handle's own
//! data, never another process's, and any byte pattern is a valid `u8`, so
//! the view is safe; it is the caller's promise to overwrite every byte
//! that makes the content right. Blocks partly in the range, resident, or
//! left without a donor are as with [`FileH::bytes_mut`].
//!
//! [`FileH::bytes_mut`]: super::FileH::bytes_mut

use std::ops::Range;

use crate::error::Result;

use super::options::inc;
use super::state::Block;
use super::view::ViewMut;
use super::{FileH, Shared};

impl FileH {
    /// An exclusive view of bytes `range` for a caller that overwrites every
    /// byte of it before reading any: the blocks wholly inside it that are
    /// not resident take the pages of clean blocks of `done_with` (blocks
    /// the caller will not need again soon, e.g. the ones its last
    /// transaction stored), which are dropped, instead of fresh zeroed
    /// pages. Their bytes are unspecified until overwritten. Blocks of
    /// `done_with` that are not clean or not needed are left alone.
    pub fn bytes_overwrite(
        &mut self,
        range: Range<u64>,
        done_with: &[u64],
    ) -> Result<ViewMut<'_, u8>> {
        let n = range.end.saturating_sub(range.start) as usize;
        // Bounds first: a bad range does nothing.
        self.check::<u8>(range.start, n)?;
        self.sh.reuse_for_overwrite(&range, done_with);
        self.view_mut::<u8>(range.start, n)
    }
}

impl Shared {
    /// Move the pages of clean blocks of `donors` into the absent blocks
    /// wholly inside `range` (see the module docs). `&mut FileH`: no view
    /// is alive. Best effort: a block that cannot be given pages is left
    /// absent (its first write gets fresh ones).
    fn reuse_for_overwrite(&self, range: &Range<u64>, donors: &[u64]) {
        if !self.moves_on() || donors.is_empty() {
            return;
        }
        let bs = self.bs as u64;
        let first = range.start.div_ceil(bs);
        let end = (range.end / bs).min(self.nblocks);
        if first >= end {
            return;
        }
        let mut donors = donors.iter().copied().filter(|d| !(first..end).contains(d));
        let mut st = self.quiesce();
        for blk in first..end {
            if st.blocks.contains_key(&blk) {
                continue;
            }
            // The next donor that is a clean data block without a held-back
            // marker (whose pages are all present).
            let Some(donor) = donors.by_ref().find(|d| {
                matches!(
                    st.blocks.get(d),
                    Some(Block::Clean {
                        hole: false,
                        marker: None,
                        ..
                    })
                )
            }) else {
                break;
            };
            let Some(Block::Clean { tick, .. }) = st.blocks.remove(&donor) else {
                break;
            };
            st.lru.remove(&tick);
            st.stream_loaded.remove(&donor);
            self.budget.sub(self.bs as u64);
            let (doff, len) = self.block_range(donor);
            let (off, _) = self.block_range(blk);
            let (src, dst) = (self.map.addr() + doff, self.map.addr() + off);
            // SAFETY: `dst` is an absent block (no page; with `&mut FileH`
            // no access runs), so dropping its range only frees an empty
            // page table, letting huge pages move in whole.
            let _ = unsafe { self.map.dontneed(off, len) };
            // SAFETY: `src` is a clean block taken out of the table (it
            // reloads from the file if touched again), `dst` a registered
            // block with no page that becomes dirty with content the caller
            // overwrites; `&mut FileH`: no access observes either change.
            let (moved, why) = unsafe { self.uffd.move_pages(dst, src, len) };
            let ok = match why {
                None => true,
                Some(e) => {
                    vtrace!("T overwrite: UFFDIO_MOVE stopped after {moved} of {len} bytes: {e}");
                    // The rest is still in the donor: copy it (writable).
                    // SAFETY: the donor's range, its pages still present;
                    // `&mut FileH`: no mutable slice of it is alive.
                    let rest = unsafe { self.map.slice::<u8>(doff + moved, len - moved) };
                    self.copy_all(dst + moved, rest, false).is_ok()
                }
            };
            // SAFETY: the donor left the table: its next access faults and
            // reloads the file's bytes.
            let _ = unsafe { self.map.dontneed(doff, len) };
            if !ok {
                // Partly given: drop what arrived, the block stays absent.
                // SAFETY: an absent block no access has seen.
                let _ = unsafe { self.map.dontneed(off, len) };
                continue;
            }
            st.insert_dirty(blk);
            inc(&self.counters.recycled);
        }
        st.paused = false;
    }
}
