//! Drop-behind bookkeeping of one parallel scan: which blocks the scan
//! loaded itself, and how many of its chunks still need each block.
//!
//! A reduction over an array that is not resident loads every block once;
//! keeping them afterwards makes the kernel allocate (and zero) a fresh page
//! for every block of the pass and pushes the resident working set out of
//! the RAM budget. So a scan hands the blocks it loaded back to virtmem
//! (`FileH::scan_done`) as soon as no chunk of it needs them: once the
//! budget is nearly full they are dropped and their pages feed the next
//! loads; before that they stay for a next pass. Chunks are counted in rows, not blocks, so a
//! block may straddle two chunks: it is dropped by whichever of them
//! finishes last (a per-block count of the chunks touching it), never while
//! the other still reads it. Blocks that were resident before the scan are
//! left resident: they are someone's working set.
//!
//! Measured on the 2-core VM (2 GiB f8, `wendelin stat`, fresh process,
//! page cache warm): 59% of the scan was the kernel zeroing fresh pages
//! before drop-behind.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The drop-behind state of one scan over the blocks `first..first+len`.
pub(crate) struct DropBehind {
    /// The scan drops behind it (see `virtmem::FileH::scan_done`).
    pub(crate) dropping: AtomicBool,
    first: u64,
    /// Chunks of the scan that have not finished with each block yet.
    users: Vec<AtomicU32>,
    /// The block was loaded by this scan (not resident before it).
    loaded: Vec<AtomicBool>,
}

impl DropBehind {
    /// Bookkeeping for a scan whose chunks cover the blocks `chunks` gives
    /// (each chunk's block range, in any order).
    pub(crate) fn new(chunks: impl Iterator<Item = Range<u64>> + Clone) -> DropBehind {
        let first = chunks.clone().map(|r| r.start).min().unwrap_or(0);
        let end = chunks.clone().map(|r| r.end).max().unwrap_or(0).max(first);
        let n = usize::try_from(end - first).unwrap_or(0);
        let mut users = vec![0u32; n];
        for r in chunks {
            for b in r {
                if let Some(u) = users.get_mut((b - first) as usize) {
                    *u = u.saturating_add(1);
                }
            }
        }
        DropBehind {
            dropping: AtomicBool::new(false),
            first,
            users: users.into_iter().map(AtomicU32::new).collect(),
            loaded: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn index(&self, b: u64) -> Option<usize> {
        b.checked_sub(self.first).map(|i| i as usize)
    }

    /// A chunk loaded `blocks` itself.
    pub(crate) fn loaded(&self, blocks: &[u64]) {
        for &b in blocks {
            if let Some(l) = self.index(b).and_then(|i| self.loaded.get(i)) {
                l.store(true, Ordering::Release);
            }
        }
    }

    /// A chunk is done with its blocks `range`: returns those that no chunk
    /// needs any more and that this scan loaded (to drop now).
    pub(crate) fn done(&self, range: Range<u64>) -> Vec<u64> {
        range
            .filter(|&b| {
                let Some(i) = self.index(b) else { return false };
                let (Some(u), Some(l)) = (self.users.get(i), self.loaded.get(i)) else {
                    return false;
                };
                u.fetch_sub(1, Ordering::AcqRel) == 1 && l.load(Ordering::Acquire)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_shared_by_two_chunks_drops_after_both() {
        // Chunks over blocks 0..3 and 2..5 share block 2.
        let chunks = [0..3u64, 2..5];
        let d = DropBehind::new(chunks.iter().cloned());
        d.loaded(&[0, 1, 2]);
        d.loaded(&[3, 4]);
        assert_eq!(d.done(0..3), vec![0, 1]);
        assert_eq!(d.done(2..5), vec![2, 3, 4]);
    }

    #[test]
    fn blocks_resident_before_the_scan_stay() {
        let chunks = [0..2u64, 2..4];
        let d = DropBehind::new(chunks.iter().cloned());
        d.loaded(&[1]); // block 0 was resident
        d.loaded(&[2, 3]);
        assert_eq!(d.done(0..2), vec![1]);
        assert_eq!(d.done(2..4), vec![2, 3]);
    }
}
