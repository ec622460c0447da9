//! The handle operations besides views: [`FileH::prefetch`] (load blocks on
//! the caller's thread, errors as values), and the exclusive ones that
//! change what memory shows, [`FileH::writeout`], [`FileH::discard`] and
//! [`FileH::invalidate`].
//!
//! The exclusive operations take `&mut FileH`, so no view can observe
//! memory changing under it, and first *quiesce* the handle: stop
//! read-ahead, wait until no block is being loaded or evicted and no handler
//! thread holds a fault message it has read but not served.

use std::ops::Range;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::mapping::Staging;

use super::options::{Writeout, inc};
use super::state::{Block, State};
use super::{FileH, Shared};

impl FileH {
    /// Load blocks `blocks` (block numbers) that are not resident, on the
    /// calling thread, write-protected. Blocks that failed before are retried.
    /// Returns the first load error as a value (the failed block is also
    /// poisoned and recorded, as for a fault).
    pub fn prefetch(&self, blocks: Range<u64>) -> Result<()> {
        self.prefetch_into(blocks, &mut Vec::new())
    }

    /// [`prefetch`](Self::prefetch) for one pass of a scan: also returns the
    /// blocks this call loaded (not those that were resident already), which
    /// the scan hands to [`drop_behind`](Self::drop_behind) when done with
    /// them. On error nothing is returned; the blocks loaded stay clean and
    /// are evicted under the budget as usual.
    pub fn prefetch_for_scan(&self, blocks: Range<u64>) -> Result<Vec<u64>> {
        let mut loaded = Vec::new();
        self.prefetch_into(blocks, &mut loaded)?;
        Ok(loaded)
    }

    /// A scan is done with `blocks` (which it loaded itself, see
    /// [`prefetch_for_scan`](Self::prefetch_for_scan)): drop those that are
    /// still clean now, and keep their pages for the next loads. One pass
    /// over an array far bigger than the budget then leaves the resident
    /// working set alone and reuses a few blocks' worth of memory instead
    /// of making the kernel zero a fresh page for every block. Dirty,
    /// absent and busy blocks are left alone; a dropped block that is
    /// touched again simply loads again.
    pub fn drop_behind(&self, blocks: &[u64]) {
        self.sh.evict_now(blocks);
    }

    /// A scan is done with `blocks` it loaded: [`drop_behind`](Self::drop_behind)
    /// once less than an eighth of the budget (at least [`SCAN_MARGIN`](crate::SCAN_MARGIN)) is free ([`Budget::nearly_full`]), else
    /// keep them resident for a next pass. `dropping` is the scan's own
    /// flag: set the first time it drops, after which it always drops (a
    /// scan that checked the budget each time would keep blocks again as
    /// soon as its drops freed room, and its loads would then get fresh
    /// pages instead of the recycled ones). Read-ahead streams follow the
    /// same rule.
    ///
    /// [`Budget::nearly_full`]: crate::Budget::nearly_full
    pub fn scan_done(&self, blocks: &[u64], dropping: &std::sync::atomic::AtomicBool) {
        use std::sync::atomic::Ordering::Relaxed;
        if dropping.load(Relaxed) || self.sh.budget.nearly_full() {
            dropping.store(true, Relaxed);
            self.sh.evict_now(blocks);
        }
    }

    fn prefetch_into(&self, blocks: Range<u64>, loaded: &mut Vec<u64>) -> Result<()> {
        let sh = &*self.sh;
        let mut staging: Option<Staging> = None;
        let mut first_err = None;
        if blocks.end > sh.nblocks && blocks.start < blocks.end {
            return Err(Error::BlockOutOfRange {
                blk: blocks.start.max(sh.nblocks),
                nblocks: sh.nblocks,
            });
        }
        for blk in blocks {
            let retry = {
                let mut st = sh.st.lock();
                while let Some(Block::Loading { .. } | Block::Evicting { .. }) = st.blocks.get(&blk)
                {
                    sh.idle.wait(&mut st);
                }
                match st.blocks.get(&blk) {
                    None => {
                        st.begin_load(blk, false, false);
                        Some(false)
                    }
                    Some(Block::Poisoned) => {
                        st.begin_load(blk, false, false);
                        st.errors.remove(&blk);
                        Some(true)
                    }
                    _ => None,
                }
            };
            let Some(retry) = retry else { continue };
            if retry {
                let (off, len) = sh.block_range(blk);
                // SAFETY: a poisoned block (accesses get SIGBUS, nobody read
                // content), now Loading under this thread.
                if let Err(source) = unsafe { sh.map.dontneed(off, len) } {
                    sh.finish_failed_raw(blk);
                    return Err(Error::Os {
                        op: "madvise(MADV_DONTNEED)",
                        source,
                    });
                }
            }
            inc(&sh.counters.loads);
            match sh.load_and_map(blk, None, true, &mut staging, None) {
                Ok(()) => loaded.push(blk),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Write out dirty blocks: [`Writeout::STORE`] stores them in ascending
    /// order (stopping at the first error; all stay dirty then),
    /// [`Writeout::MARKSTORED`] makes them clean and write-protected.
    pub fn writeout(&mut self, how: Writeout) -> Result<()> {
        let sh = &*self.sh;
        let mut st = sh.quiesce();
        sh.collect_rw_writes(&mut st);
        let dirty: Vec<u64> = st.dirty.iter().copied().collect();
        vtrace!("T writeout {how:?} dirty {dirty:?}");
        let r = (|| {
            if how.has(Writeout::STORE) {
                for &blk in &dirty {
                    let (off, len) = sh.block_range(blk);
                    // SAFETY: a block's range (in bounds, bytes); `&mut self`:
                    // no mutable view is alive.
                    let data: &[u8] = unsafe { sh.map.slice(off, len) };
                    sh.file
                        .store_block(blk, data)
                        .map_err(|source| Error::Store {
                            blk,
                            file: sh.name.clone(),
                            source,
                        })?;
                }
            }
            if how.has(Writeout::MARKSTORED) {
                for &blk in &dirty {
                    if let Some(Block::MappedRw) = st.blocks.get(&blk) {
                        sh.markstored_rw(&mut st, blk)?;
                        continue;
                    }
                    let (off, len) = sh.block_range(blk);
                    if sh.donate_stored(sh.map.addr() + off, len) {
                        st.blocks.remove(&blk);
                        st.dirty.remove(&blk);
                        continue;
                    }
                    sh.uffd
                        .writeprotect(sh.map.addr() + off, len, true, false)
                        .map_err(|source| Error::Os {
                            op: "UFFDIO_WRITEPROTECT",
                            source,
                        })?;
                    st.insert_clean(blk);
                    st.dirty.remove(&blk);
                    sh.budget.add(sh.bs as u64);
                }
            }
            Ok(())
        })();
        st.paused = false;
        drop(st);
        sh.evict_over_budget();
        r
    }

    /// Drop every dirty block: the next touch reloads it from the file.
    pub fn discard(&mut self) -> Result<()> {
        let sh = &*self.sh;
        let mut st = sh.quiesce();
        sh.collect_rw_writes(&mut st);
        let dirty: Vec<u64> = st.dirty.iter().copied().collect();
        vtrace!("T discard dirty {dirty:?}");
        let mut r = Ok(());
        for blk in dirty {
            if let Some(Block::MappedRw) = st.blocks.get(&blk) {
                if let Err(e) = sh.discard_rw(&mut st, blk) {
                    r = Err(e);
                    break;
                }
                continue;
            }
            let (off, len) = sh.block_range(blk);
            // SAFETY: a block's range; `&mut self`: no view is alive.
            if let Err(source) = unsafe { sh.map.dontneed(off, len) } {
                r = Err(Error::Os {
                    op: "madvise(MADV_DONTNEED)",
                    source,
                });
                break;
            }
            st.dirty.remove(&blk);
            st.blocks.remove(&blk);
        }
        st.paused = false;
        r
    }

    /// Drop block `blk` whatever its state (clean, dirty, failed): the next
    /// touch reloads it from the file.
    pub fn invalidate(&mut self, blk: u64) -> Result<()> {
        let sh = &*self.sh;
        if blk >= sh.nblocks {
            return Err(Error::BlockOutOfRange {
                blk,
                nblocks: sh.nblocks,
            });
        }
        let mut st = sh.quiesce();
        vtrace!(
            "T invalidate blk {blk} state {}",
            st.blocks.get(&blk).map_or("absent", Block::name)
        );
        let r = (|| {
            // Drop the range even for an absent block: no page may survive
            // an invalidation, whatever the bookkeeping says.
            let (off, len) = sh.block_range(blk);
            if let Some(Block::Mapped { .. } | Block::MappedRw) = st.blocks.get(&blk) {
                // Registered anonymous memory again (see `mapped`).
                sh.unmap_block(blk)?;
            } else {
                // SAFETY: a block's range; `&mut self`: no view is alive.
                unsafe { sh.map.dontneed(off, len) }.map_err(|source| Error::Os {
                    op: "madvise(MADV_DONTNEED)",
                    source,
                })?;
            }
            let Some(b) = st.blocks.get(&blk) else {
                return Ok(());
            };
            match b {
                Block::Clean { tick, hole, .. } => {
                    let (tick, hole) = (*tick, *hole);
                    st.lru.remove(&tick);
                    if !hole {
                        sh.budget.sub(sh.bs as u64);
                    }
                }
                Block::Mapped { tick: Some(t) } => {
                    let t = *t;
                    st.lru.remove(&t);
                    sh.budget.sub(sh.bs as u64);
                }
                Block::Mapped { tick: None } => {
                    sh.mapped_dropped.fetch_sub(1, Ordering::Relaxed);
                }
                Block::MappedRw => sh.budget.sub(sh.bs as u64),
                _ => {}
            }
            st.blocks.remove(&blk);
            st.dirty.remove(&blk);
            st.errors.remove(&blk);
            Ok(())
        })();
        st.paused = false;
        r
    }
}

impl Shared {
    /// Stop read-ahead and wait until no block is being loaded or evicted.
    /// The caller must clear `paused` when done.
    ///
    /// Also waits until no handler thread holds a fault message it has read
    /// but not yet served: with `&mut FileH` no access is running, so any such
    /// message is stale, and serving it after (say) MARKSTORED could dirty a
    /// block that was not written since.
    pub(super) fn quiesce(&self) -> parking_lot::MutexGuard<'_, State> {
        self.ra.queue.lock().clear();
        {
            let mut st = self.st.lock();
            st.paused = true;
            st.streams.clear();
        }
        loop {
            while self.handlers.in_flight.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            let mut st = self.st.lock();
            while st.busy > 0 {
                self.idle.wait(&mut st);
            }
            if self.handlers.in_flight.load(Ordering::SeqCst) == 0 {
                return st;
            }
        }
    }
}
