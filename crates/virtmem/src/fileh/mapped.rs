//! Blocks mapped straight from their file ([`BigFile::map_block`]): no
//! copy at all, the page cache's own pages, as a plain `mmap` reads them.
//!
//! Every other load puts a block's bytes into the handle's anonymous memory
//! with at least one copy out of the page cache, and a profile of one
//! reader summing 2 GiB through a view spent 38% of its time in that copy
//! against 22% summing (a copy costs about 1.7x a sum; two readers on two
//! cores cannot reach half of a plain mmap's speed that way). When the file
//! says where a block's bytes lie (a page-aligned, never rewritten range:
//! FileStorage's ZBlk0 payloads are written page-aligned for this), the
//! load maps that range read-only over the block (`MAP_FIXED |
//! MAP_PRIVATE`, its pages mapped in a fault-around window at a time:
//! [`crate::mapping::Reservation::map_file`] has the measurements) instead.
//!
//! A mapped block's range is a file mapping, which userfaultfd cannot
//! watch: its writes would not be seen, and its pages, once dropped, come
//! back from the page cache on the next touch without a fault the engine
//! hears about. Hence the rules:
//!
//! - Blocks are mapped only while no mutable view can exist (the same gate
//!   as zero-copy moves, [`super::zero_copy`]): a mutable view first puts
//!   the mapped blocks it covers back to registered anonymous memory (under
//!   `&mut FileH`, so no access races with the swap), and they reload on
//!   touch; mapped blocks outside its range cannot be written through it.
//!   Mapped blocks are `PROT_READ`: a write through a shared view (not
//!   possible in safe Rust) would fault, never go unseen.
//! - The budget counts a mapped block like a loaded one until its pages
//!   are dropped (eviction, drop-behind): `MADV_DONTNEED` then only unmaps
//!   the page-cache pages (safe with readers: a later touch reads the same
//!   bytes again from the page cache), so one pass over an array keeps the
//!   resident set within the budget. Putting the anonymous memory back
//!   needs no reader in the block (a touch between the `mmap` and the
//!   registration would read a fresh zero page), so it waits for the next
//!   moment without views ([`FileH::unmap_dropped`], which the bigfile
//!   layer calls when the last view of a handle ends). Until then a dropped
//!   block touched again is page cache mapped into the process, unseen by
//!   the budget (as for `numpy.memmap`; the kernel reclaims such pages
//!   under memory pressure). `mremap` of a registered placeholder over the
//!   block would be atomic, but keeps the registration only with
//!   `UFFD_FEATURE_EVENT_REMAP`, whose event blocks the remapping thread
//!   until a handler reads it while every `UFFDIO_*` call fails with
//!   `EAGAIN`: handlers retrying those would never read it.
//!
//! [`FileH::unmap_dropped`]: super::FileH::unmap_dropped
//! - Invalidation (another transaction changed the block) happens under
//!   `&mut FileH` too and puts the anonymous memory back.
//! - Each mapped block is a separate mapping (VMA): at most
//!   [`MAX_MAPPED`] per process; past that, blocks load the ordinary way.
//!
//! Read-ahead maps blocks ahead of a scan like it loads them, but leaves
//! its marker blocks (one in half a window) unmapped: the reader's touch
//! of one is a fault that maps it and moves the window on.
//!
//! [`BigFile::map_block`]: crate::BigFile::map_block

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Result;
use crate::mapping::FileRead;
use crate::{MappableBlock, uffd};

use super::Shared;
use super::options::inc;
use super::read_order::Turn;
use super::state::Block;

/// Blocks mapped from files at once, per process: a mapping each, and the
/// kernel allows about 65k per process (`vm.max_map_count`); this leaves
/// most of them to the rest of the process. 16384 blocks of 2 MiB: 32 GiB.
pub const MAX_MAPPED: usize = 16384;

/// Blocks mapped from files now, in all handles of the process.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

impl Shared {
    /// Map block `blk` (Loading, owned by the caller) at `addr` straight
    /// from its file, if the file offers it and no mutable view may exist
    /// (read-only mapping), or read-write within the pinned half of the
    /// budget ([`super::mapped_rw`]). `Ok(false)`: not mapped, load it the
    /// ordinary way.
    /// A read-ahead job (`turn`) that maps a block the page cache lacks
    /// reads its pages in turn ([`super::read_order`]); other loads advise
    /// `MADV_WILLNEED` and read in the background.
    pub(super) fn load_mapped(
        &self,
        blk: u64,
        addr: usize,
        len: usize,
        mut turn: Option<&mut Turn<'_>>,
    ) -> Result<bool> {
        let rw = self.rw_scan.is_some();
        if !self.map_files || !(rw || self.zero_copy_on()) {
            return Ok(false);
        }
        // Held to the end of a read-only mapping: a mutable view waits for
        // it. A read-write mapping needs no gate.
        let _gate = if rw {
            None
        } else {
            let Some(g) = self.zc.no_writers_gate() else {
                return Ok(false);
            };
            Some(g)
        };
        let Ok(Some(m)) = self.file.map_block(blk) else {
            return Ok(false);
        };
        let Some(fd) = m
            .fd()
            .filter(|_| m.offset().is_multiple_of(crate::mapping::PAGE as u64))
        else {
            return Ok(false);
        };
        if rw && !self.budget.try_pin(self.bs as u64) {
            return Ok(false);
        }
        let unpin = || {
            if rw {
                self.budget.unpin(self.bs as u64);
            }
        };
        if MAPPED.fetch_add(1, Ordering::Relaxed) >= MAX_MAPPED {
            MAPPED.fetch_sub(1, Ordering::Relaxed);
            unpin();
            return Ok(false);
        }
        let off = addr - self.map.addr();
        // SAFETY: the block's range in our reservation, Loading under this
        // thread: no page, its accesses wait for the handler; read-only: no
        // mutable view exists (checked under the gate, which a mutable view
        // takes exclusively); the file's bytes there never change (the
        // `map_block` contract).
        let r = unsafe { self.map.map_file(off, len, fd, m.offset(), rw) };
        if let Err(e) = r {
            MAPPED.fetch_sub(1, Ordering::Relaxed);
            unpin();
            vtrace!("T mapping blk {blk} failed: {e}; loading it");
            // The range is left as it is: the kernel keeps the old mapping
            // when a MAP_FIXED fails (Linux >= 6.12 restores it), and
            // putting anonymous memory back here would open a window in
            // which a reader of this Loading block (whose accesses wait on
            // the userfaultfd) reads fresh zeros instead. Should the range
            // be gone after all, the ordinary load fails and the block is
            // poisoned: an access gets SIGBUS, never wrong bytes.
            return Ok(false);
        }
        // Once cold, read-ahead stays in order: pages the kernel's own
        // read-ahead has in flight count as cached, and a job that took
        // them for a warm block would break the stream it feeds on.
        let cold = turn.is_some()
            && (self.ra.cold.load(Ordering::Relaxed) || !self.map.file_pages_cached(off, len));
        if cold {
            self.ra.cold.store(true, Ordering::Relaxed);
        }
        match turn.as_deref_mut() {
            Some(t) if cold && !t.wait() => {
                vtrace!("T blk {blk}: the earlier read-ahead jobs are late; reading anyway");
            }
            // A warm block: later jobs need not wait for it.
            Some(t) if !cold => t.finish(),
            _ => {}
        }
        let how = if cold {
            FileRead::InOrder
        } else {
            FileRead::Background
        };
        // SAFETY: the range just mapped from the file (same contract).
        unsafe { self.map.populate_file(off, len, how) };
        if let Some(t) = turn {
            t.finish();
        }
        if cold {
            inc(&self.counters.read_in_order);
        }
        self.mapped_here.fetch_add(1, Ordering::Relaxed);
        inc(&self.counters.mapped_loads);
        Ok(true)
    }

    /// A read-ahead marker block left unmapped ([`Self::skip_mapped_marker`])
    /// of a cold file: read its pages in this job's turn, so that the file
    /// is read without a hole ([`super::read_order`]); the reader's touch
    /// then maps cached pages. Nothing while read-ahead has met no cold
    /// block (a warm scan pays no mapping for it).
    pub(super) fn read_marker_in_turn(&self, blk: u64, m: &dyn MappableBlock, turn: &mut Turn<'_>) {
        if self.ra.cold.load(Ordering::Relaxed)
            && let Some(fd) = m.fd()
        {
            let (_, len) = self.block_range(blk);
            let wait = || {
                if !turn.wait() {
                    vtrace!("T marker blk {blk}: the earlier read-ahead jobs are late");
                }
            };
            // SAFETY: the file's bytes of a block it offers to map lie
            // within the file (the `map_block` contract).
            match unsafe { crate::mapping::read_file_pages(fd, m.offset(), len, wait) } {
                Ok(true) => inc(&self.counters.read_in_order),
                Ok(false) => {}
                Err(e) => vtrace!("T reading the pages of marker blk {blk}: {e}"),
            }
        }
        turn.finish();
    }

    /// Put registered anonymous memory back over the mapped block at
    /// `addr`.
    ///
    /// The caller guarantees that nothing touches the range meanwhile
    /// (`&mut FileH`: no view is alive).
    fn unmap_range(&self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: the block's range in our reservation; nobody touches it
        // until it is registered again (caller contract).
        unsafe { self.map.unmap_file(addr - self.map.addr(), len) }
            .map_err(Self::os("mmap(MAP_FIXED) of anonymous memory"))?;
        // SAFETY: our reservation's range, fresh anonymous memory, as at open.
        unsafe {
            self.uffd.register(
                addr,
                len,
                uffd::REGISTER_MODE_MISSING | uffd::REGISTER_MODE_WP,
            )
        }
        .map_err(Self::os("UFFDIO_REGISTER"))
    }

    /// Unmap mapped block `blk` (state Mapped, taken out of the table by the
    /// caller, who holds `&mut FileH`): registered anonymous memory again.
    pub(super) fn unmap_block(&self, blk: u64) -> Result<()> {
        let (off, len) = self.block_range(blk);
        self.unmap_range(self.map.addr() + off, len)?;
        MAPPED.fetch_sub(1, Ordering::Relaxed);
        self.mapped_here.fetch_sub(1, Ordering::Relaxed);
        if self.rw_scan.is_some() {
            self.budget.unpin(self.bs as u64);
        }
        Ok(())
    }

    /// A mutable view of `blocks` is coming (`&mut FileH`): put the mapped
    /// blocks among them back to registered anonymous memory; they reload
    /// on touch. Mapped blocks outside stay: the view cannot reach them,
    /// and no block is mapped while it may exist (the zero-copy gate), so
    /// a read-mostly handle that writes a little keeps its mapped blocks.
    pub(super) fn unmap_for_writes(&self, blocks: std::ops::RangeInclusive<u64>) -> Result<()> {
        // Read-write mapped blocks take writes as they are (`mapped_rw`).
        if self.mapped_here.load(Ordering::Relaxed) == 0 || self.rw_scan.is_some() {
            return Ok(());
        }
        // Nothing mapped (or being mapped) in the range: no need to stop
        // read-ahead and wait for loads (a write to a handle that maps other
        // blocks is the common case).
        {
            let st = self.st.lock();
            let busy = |s: &Block| matches!(s, Block::Mapped { .. } | Block::Loading { .. });
            let span = blocks
                .end()
                .saturating_sub(*blocks.start())
                .saturating_add(1);
            // Walk whichever is smaller: the range or the resident blocks.
            let any = if span <= st.blocks.len() as u64 {
                blocks.clone().any(|b| st.blocks.get(&b).is_some_and(busy))
            } else {
                st.blocks.iter().any(|(b, s)| blocks.contains(b) && busy(s))
            };
            if !any {
                return Ok(());
            }
        }
        let mut st = self.quiesce();
        let mapped: Vec<(u64, Option<u64>)> = st
            .blocks
            .iter()
            .filter_map(|(b, s)| match s {
                Block::Mapped { tick } if blocks.contains(b) => Some((*b, *tick)),
                _ => None,
            })
            .collect();
        let mut r = Ok(());
        for (blk, tick) in mapped {
            if let Err(e) = self.unmap_block(blk) {
                r = Err(e);
                break;
            }
            st.blocks.remove(&blk);
            match tick {
                Some(t) => {
                    st.lru.remove(&t);
                    self.budget.sub(self.bs as u64);
                }
                None => {
                    self.mapped_dropped.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        st.paused = false;
        r
    }

    /// Put the mapped blocks whose pages were dropped back to registered
    /// anonymous memory (the caller holds `&mut FileH`: no view is alive),
    /// so that touching them again goes through the engine and its budget
    /// instead of mapping page cache unseen. Loads of other blocks go on.
    pub(super) fn unmap_dropped(&self) -> Result<()> {
        if self.mapped_dropped.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let dropped: Vec<u64> = {
            let st = self.st.lock();
            st.blocks
                .iter()
                .filter(|(_, s)| matches!(s, Block::Mapped { tick: None }))
                .map(|(b, _)| *b)
                .collect()
        };
        for blk in dropped {
            // Read-ahead skips blocks in the table, so none loads it meanwhile.
            self.unmap_block(blk)?;
            self.st.lock().blocks.remove(&blk);
            self.mapped_dropped.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Drop the pages of mapped block `blk` (accounted, `tick`) for the
    /// budget or behind a scan: it stays mapped, a later touch reads the
    /// page cache again (see the module docs). Under the state lock.
    pub(super) fn drop_mapped_pages(&self, st: &mut super::state::State, blk: u64, tick: u64) {
        st.lru.remove(&tick);
        st.blocks.insert(blk, Block::Mapped { tick: None });
        self.budget.sub(self.bs as u64);
        self.mapped_dropped.fetch_add(1, Ordering::Relaxed);
        let (off, len) = self.block_range(blk);
        // SAFETY: a mapped block's range (a read-only file mapping): the
        // next access reads the same file bytes from the page cache.
        if let Err(e) = unsafe { self.map.dontneed(off, len) } {
            vtrace!("T dropping the pages of mapped blk {blk}: {e}");
        }
    }

    /// Mapped blocks of this handle (its share of [`MAX_MAPPED`]), to give
    /// back when it closes.
    pub(super) fn release_mapped_count(&self) {
        let n = self.mapped_here.swap(0, Ordering::Relaxed);
        MAPPED.fetch_sub(n, Ordering::Relaxed);
        if self.rw_scan.is_some() {
            self.budget.unpin(n as u64 * self.bs as u64);
        }
    }

    /// A read-ahead marker block while blocks are mapped: left unmapped
    /// (`Some`, the file's range of the block: the Loading state is undone)
    /// unless an access waits for it already, so the reader's touch faults
    /// and moves the window on.
    pub(super) fn skip_mapped_marker(
        &self,
        blk: u64,
        ra: Option<i8>,
        checked: bool,
    ) -> Option<Box<dyn MappableBlock>> {
        if checked || !self.holds_marker(blk, ra) {
            return None;
        }
        // A read-write mapping only within the pinned half of the budget:
        // past it the block loads the ordinary way, marker held back.
        if self.rw_scan.is_some() && !self.budget.can_pin(self.bs as u64) {
            return None;
        }
        // Only if the file would have it mapped: markers of blocks that
        // load the ordinary way are held back by the load (`state::Marker`).
        let Ok(Some(m)) = self.file.map_block(blk) else {
            return None;
        };
        let mut st = self.st.lock();
        if !matches!(
            st.blocks.get(&blk),
            Some(Block::Loading {
                demanded: false,
                write: false
            })
        ) {
            return None;
        }
        st.blocks.remove(&blk);
        st.stream_loaded.remove(&blk);
        st.busy -= 1;
        self.idle.notify_all();
        Some(m)
    }

    /// Loading -> Mapped or MappedRw (accounted) after [`Self::load_mapped`], then wake
    /// the accesses waiting for the block.
    pub(super) fn finish_mapped(&self, blk: u64, addr: usize, len: usize) -> Result<()> {
        {
            let mut st = self.st.lock();
            vtrace!(
                "T mapped blk {blk} state {}",
                st.blocks.get(&blk).map_or("absent", Block::name)
            );
            if self.rw_scan.is_some() {
                // Pinned: not in the LRU (see `mapped_rw`).
                st.blocks.insert(blk, Block::MappedRw);
            } else {
                let tick = st.next_tick();
                st.blocks.insert(blk, Block::Mapped { tick: Some(tick) });
                st.lru.insert(tick, blk);
            }
            self.budget.add(self.bs as u64);
            st.busy -= 1;
            self.idle.notify_all();
        }
        self.uffd.wake(addr, len).map_err(Self::os("UFFDIO_WAKE"))?;
        self.evict_over_budget();
        Ok(())
    }
}
