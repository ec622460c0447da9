//! Keeping a handle within its RAM budget: when the clean loaded blocks
//! accounted against the [`Budget`](crate::Budget) exceed it, the least
//! recently faulted ones are dropped (Clean -> Evicting -> absent) and fault
//! in again on next touch. Dirty blocks and holes are never accounted, hence
//! never evicted. In zero-copy mode an evicted block's pages may be kept in
//! a recycling buffer instead of being freed (see [`super::zero_copy`]).
//!
//! A scan that is done with blocks it loaded drops them at once
//! ([`FileH::drop_behind`](super::FileH::drop_behind); through
//! [`FileH::scan_done`](super::FileH::scan_done) and long read-ahead
//! streams only once the budget is nearly full): one pass over an
//! array far bigger than the budget then neither pushes the working set out
//! nor makes the kernel allocate and zero a fresh page for every block (the
//! dropped blocks' pages are recycled into the next loads). Measured on the
//! 2-core VM: a cold stat of 2 GiB spent 59% of its time in the kernel's
//! `clear_page_erms` before drop-behind.

use super::Shared;
use super::options::inc;
use super::state::{Block, Marker, State};

impl Shared {
    /// Drop least recently faulted clean blocks while the budget is exceeded.
    pub(super) fn evict_over_budget(&self) {
        while self.budget.over() {
            let victim = {
                let mut st = self.st.lock();
                let Some((tick, blk)) = st.lru.pop_first() else {
                    return;
                };
                if let Some(Block::Mapped { .. }) = st.blocks.get(&blk) {
                    self.drop_mapped_pages(&mut st, blk, tick);
                    inc(&self.counters.evictions);
                    continue;
                }
                vtrace!(
                    "T evict blk {blk} state {}",
                    st.blocks.get(&blk).map_or("absent", Block::name)
                );
                self.begin_evict(&mut st, blk);
                blk
            };
            inc(&self.counters.evictions);
            if !self.finish_evict(victim) {
                return;
            }
        }
    }

    /// Drop the clean data blocks of `blocks` at once, keeping their pages
    /// for the next loads (see [`super::zero_copy`]): drop-behind of a scan
    /// that is done with them. Other states are left alone.
    pub(super) fn evict_now(&self, blocks: &[u64]) {
        for &blk in blocks {
            {
                let mut st = self.st.lock();
                if let Some(Block::Mapped { tick: Some(t) }) = st.blocks.get(&blk) {
                    let t = *t;
                    self.drop_mapped_pages(&mut st, blk, t);
                    inc(&self.counters.dropped_behind);
                    continue;
                }
                let Some(Block::Clean {
                    tick, hole: false, ..
                }) = st.blocks.get(&blk)
                else {
                    continue;
                };
                let tick = *tick;
                st.lru.remove(&tick);
                self.begin_evict(&mut st, blk);
            }
            inc(&self.counters.dropped_behind);
            self.finish_evict(blk);
        }
    }

    /// Clean (out of the LRU) -> Evicting, un-accounted, under the lock.
    fn begin_evict(&self, st: &mut State, blk: u64) {
        let old = st.blocks.insert(blk, Block::Evicting { demanded: false });
        if let Some(Block::Clean {
            marker: Some(Marker::Block(b)),
            ..
        }) = old
        {
            // Held back whole, never installed: its pages go straight back
            // to the recycling buffers.
            self.return_recycled(b);
        }
        st.busy += 1;
        self.budget.sub(self.bs as u64);
    }

    /// Drop the pages of `victim` (Evicting, owned by the caller): moved
    /// into a recycling buffer if possible, else `MADV_DONTNEED`. False if
    /// the pages could not be dropped (the block stays clean).
    fn finish_evict(&self, victim: u64) -> bool {
        let (off, len) = self.block_range(victim);
        let r = if self.recycle(self.map.addr() + off, len) {
            Ok(())
        } else {
            // SAFETY: a clean block being evicted: accesses wait, then
            // reload the same bytes.
            unsafe { self.map.dontneed(off, len) }
        };
        let mut st = self.st.lock();
        let demanded = matches!(
            st.blocks.get(&victim),
            Some(Block::Evicting { demanded: true })
        );
        st.busy -= 1;
        self.idle.notify_all();
        if let Err(e) = r {
            // Pages still there: keep the block as clean (protected).
            eprintln!("virtmem: evicting block {victim} of {}: {e}", self.name);
            st.insert_clean(victim);
            self.budget.add(self.bs as u64);
            drop(st);
            let _ = self.uffd.wake(self.map.addr() + off, len);
            return false;
        }
        st.blocks.remove(&victim);
        drop(st);
        if demanded {
            let _ = self.uffd.wake(self.map.addr() + off, len);
        }
        true
    }
}
