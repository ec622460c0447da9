//! Keeping a handle within its RAM budget: when the clean loaded blocks
//! accounted against the [`Budget`](crate::Budget) exceed it, the least
//! recently faulted ones are dropped (Clean -> Evicting -> absent) and fault
//! in again on next touch. Dirty blocks and holes are never accounted, hence
//! never evicted. In zero-copy mode an evicted block's pages may be kept in
//! a recycling buffer instead of being freed (see [`super::zero_copy`]).

use super::Shared;
use super::options::inc;
use super::state::Block;

impl Shared {
    /// Drop least recently faulted clean blocks while the budget is exceeded.
    pub(super) fn evict_over_budget(&self) {
        while self.budget.over() {
            let victim = {
                let mut st = self.st.lock();
                let Some((_, blk)) = st.lru.pop_first() else {
                    return;
                };
                vtrace!(
                    "T evict blk {blk} state {}",
                    st.blocks.get(&blk).map_or("absent", Block::name)
                );
                st.blocks.insert(blk, Block::Evicting { demanded: false });
                st.busy += 1;
                self.budget.sub(self.bs as u64);
                blk
            };
            let (off, len) = self.block_range(victim);
            let r = if self.recycle(self.map.addr() + off, len) {
                Ok(())
            } else {
                // SAFETY: a clean block being evicted: accesses wait, then
                // reload the same bytes.
                unsafe { self.map.dontneed(off, len) }
            };
            inc(&self.counters.evictions);
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
                return;
            }
            st.blocks.remove(&victim);
            drop(st);
            if demanded {
                let _ = self.uffd.wake(self.map.addr() + off, len);
            }
        }
    }
}
