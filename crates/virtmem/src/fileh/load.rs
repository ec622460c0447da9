//! Loading a block: [`BigFile::load_block`](crate::BigFile::load_block) into a private buffer, then
//! installing it in the mapping, and the state transitions that end a load
//! (Loading -> Clean, Dirty or Poisoned).
//!
//! A fault handler never reads into memory that can raise a userfault: the
//! loader writes to a per-thread staging buffer (or a recycled buffer, see
//! [`super::zero_copy`]), and the block is then copied in with
//! `UFFDIO_COPY` (write-protected) or moved in. A read-ahead load holds its
//! marker page back. Holes are mapped with the shared zero page and then
//! write-protected; as the kernel cannot do both at once, `PAGEMAP_SCAN`
//! checks that no thread wrote a page in between (if one did, the block is
//! dirty). Without `PAGEMAP_SCAN`, holes are mapped as zero-filled data.
//!
//! A load that fails never reads as zeros: the error is recorded, logged,
//! and the block's pages are poisoned (accesses get SIGBUS).

use std::sync::Arc;

use parking_lot::Mutex;

use crate::Loaded;
use crate::error::{Error, Result, SharedError};
use crate::mapping::{PAGE, Pagemap, Staging};
use crate::uffd::Fill;

use super::Shared;
use super::fault::Action;
use super::options::inc;
use super::read_order::Turn;
use super::state::{Block, Marker};

/// How holes are mapped.
pub(super) struct Holes {
    /// For the zero-page check of holes; `None`: holes are mapped as data.
    pub(super) pagemap: Option<Pagemap>,
    /// A never-written block-sized buffer: the source to fill holes with zeros.
    pub(super) zeros: Mutex<Option<Staging>>,
}

impl Shared {
    /// Undo a Loading state without mapping anything (used on early errors).
    pub(super) fn finish_failed_raw(&self, blk: u64) {
        let mut st = self.st.lock();
        st.blocks.remove(&blk);
        st.busy -= 1;
        self.idle.notify_all();
    }

    /// Load block `blk` (state Loading, owned by the caller) and map it.
    /// `ra`: a read-ahead load in direction `dir` (hold back a marker
    /// page). `checked`: the caller returns a failure as a value (prefetch),
    /// so it is not announced as a SIGBUS to come. `turn`: a read-ahead
    /// job's ticket: a block mapped from its file is read in turn
    /// ([`super::read_order`]).
    pub(super) fn load_and_map(
        &self,
        blk: u64,
        ra: Option<i8>,
        checked: bool,
        staging: &mut Option<Staging>,
        mut turn: Option<&mut Turn<'_>>,
    ) -> Result<()> {
        let (off, len) = self.block_range(blk);
        let addr = self.map.addr() + off;
        if self.map_files && (self.zero_copy_on() || self.rw_scan.is_some()) {
            if let Some(m) = self.skip_mapped_marker(blk, ra, checked) {
                if let Some(t) = turn {
                    self.read_marker_in_turn(blk, &*m, t);
                }
                return Ok(());
            }
            if self.load_mapped(blk, addr, len, turn.as_deref_mut())? {
                return self.finish_mapped(blk, addr, len);
            }
        }
        // Loads that copy are not ordered.
        if let Some(t) = turn {
            t.finish();
        }
        let r = self.load_into_place(blk, addr, len, ra, staging);
        let (hole, marker, written) = match r {
            Ok(x) => x,
            Err(e) => {
                let msg = e.to_string();
                if checked {
                    // Returned to the caller, who reports it with context.
                    tracing::debug!(blk, file = %self.name, "{msg}; block poisoned");
                } else {
                    eprintln!("virtmem: {msg}; the faulting access gets SIGBUS");
                    tracing::error!(blk, file = %self.name, "{msg}; the faulting access gets SIGBUS");
                }
                inc(&self.counters.load_failures);
                let mut st = self.st.lock();
                if let Error::Load { source, .. } = &e {
                    st.errors.insert(blk, source.clone());
                } else {
                    st.errors
                        .insert(blk, SharedError(Arc::new(std::io::Error::other(msg))));
                }
                st.blocks.insert(blk, Block::Poisoned);
                st.busy -= 1;
                self.idle.notify_all();
                drop(st);
                // State first, then the markers (which wake the waiters): a
                // fault in between sees Poisoned and poisons its own page.
                if let Err(pe) = self.uffd.poison(addr, len, PAGE) {
                    eprintln!(
                        "virtmem: UFFDIO_POISON on block {blk} of {} failed: {pe}",
                        self.name
                    );
                }
                return Err(e);
            }
        };
        let post = {
            let mut st = self.st.lock();
            let (demanded, pending_write) = match st.blocks.get(&blk) {
                Some(Block::Loading { demanded, write }) => (*demanded, *write),
                _ => (false, false),
            };
            vtrace!(
                "T loaded blk {blk} ra {ra:?} pending {pending_write} written {written} demanded {demanded} hole {hole} marker {} state {}",
                marker.is_some(),
                st.blocks.get(&blk).map_or("absent", Block::name)
            );
            st.busy -= 1;
            self.idle.notify_all();
            if pending_write || written {
                st.insert_dirty(blk);
                Action::MakeDirty(marker)
            } else {
                let tick = st.next_tick();
                let (marker, post) = match marker {
                    // Someone waits: install the marker now (under the lock,
                    // see handle_fault).
                    Some(mk) if demanded => match self.fill_marker(addr, mk, true) {
                        Ok(()) => (None, Action::None),
                        Err(e) => {
                            // The accesses fault again; the handler then finds
                            // the block resident without pages and poisons.
                            eprintln!("virtmem: installing a marker of block {blk}: {e}");
                            (None, Action::None)
                        }
                    },
                    m => (m, Action::None),
                };
                st.blocks.insert(blk, Block::Clean { tick, hole, marker });
                if !hole {
                    st.lru.insert(tick, blk);
                    self.budget.add(self.bs as u64);
                }
                post
            }
        };
        let r = match post {
            Action::MakeDirty(mk) => self.unprotect(addr, mk),
            // The state is updated: now let the waiting accesses run.
            _ => self.uffd.wake(addr, len),
        };
        if let Err(source) = r {
            eprintln!(
                "virtmem: finishing the load of block {blk} of {} failed: {source}",
                self.name
            );
            return Err(Error::Os {
                op: "UFFDIO_COPY/WRITEPROTECT",
                source,
            });
        }
        self.evict_over_budget();
        Ok(())
    }

    /// The I/O part of a load: returns (is hole, held-back marker, a hole
    /// was written while being mapped).
    pub(super) fn load_into_place(
        &self,
        blk: u64,
        addr: usize,
        len: usize,
        ra: Option<i8>,
        staging: &mut Option<Staging>,
    ) -> Result<(bool, Option<Marker>, bool)> {
        // An evicted block's pages, if some are kept: load into them.
        if let Some(mut b) = self.take_recycled() {
            let loaded = match self.read_block(blk, &mut b) {
                Ok(l) => l,
                Err(e) => {
                    self.return_recycled(b);
                    return Err(e);
                }
            };
            if loaded == Loaded::Data && self.holds_marker(blk, ra) {
                // A marker block is held back whole, in these pages: the
                // reader's first touch moves it in (see `state::Marker`).
                return Ok((false, Some(Marker::Block(b)), false));
            }
            let r = self.install(blk, addr, len, ra, loaded, &mut b, true);
            self.return_recycled(b);
            return r;
        }
        if staging.as_ref().is_some_and(|b| b.small_pages) {
            // It got small pages last time: a new mapping may get huge ones.
            *staging = None;
        }
        if staging.is_none() {
            *staging = Some(Staging::new(len).map_err(Self::os("allocating a staging buffer"))?);
        }
        let Some(buf) = staging.as_mut() else {
            return Err(Error::Os {
                op: "allocating a staging buffer",
                source: std::io::Error::other("no buffer"),
            });
        };
        vtrace!("T load blk {blk} into staging (no recycled buffer)");
        // Fresh pages are moved in once blocks leave for recycling (the
        // budget is nearly full, or a scan drops what it is done with),
        // else while they are cheap here (see `install_cost.rs`).
        let recycling = self.budget.nearly_full()
            || self
                .counters
                .dropped_behind
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
        let by_cost = recycling || self.zc.costs.prefer_move();
        if !by_cost && self.zero_copy_on() {
            inc(&self.counters.copied_for_cost);
        }
        // `movable` walks the buffer's pages: only when a move is wanted.
        let movable = by_cost && self.movable(buf);
        self.load_with(blk, addr, len, ra, buf, movable)
    }

    /// Load block `blk` into `buf` and install it at `addr` (moving the
    /// pages if `movable`, i.e. every page of `buf` is present).
    pub(super) fn load_with(
        &self,
        blk: u64,
        addr: usize,
        len: usize,
        ra: Option<i8>,
        buf: &mut Staging,
        movable: bool,
    ) -> Result<(bool, Option<Marker>, bool)> {
        let loaded = self.read_block(blk, buf)?;
        self.install(blk, addr, len, ra, loaded, buf, movable)
    }

    /// Read block `blk` from the file into `buf`.
    fn read_block(&self, blk: u64, buf: &mut Staging) -> Result<Loaded> {
        self.file
            .load_block(blk, buf.as_mut_slice())
            .map_err(|e| Error::Load {
                blk,
                file: self.name.clone(),
                source: SharedError(Arc::from(e)),
            })
    }

    /// Install block `blk`, read into `buf` as `loaded`, at `addr`.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &self,
        blk: u64,
        addr: usize,
        len: usize,
        ra: Option<i8>,
        loaded: Loaded,
        buf: &mut Staging,
        movable: bool,
    ) -> Result<(bool, Option<Marker>, bool)> {
        match loaded {
            Loaded::Hole => {
                let Some(pm) = &self.holes.pagemap else {
                    // No way to check the zero-page race below: map zeros
                    // (costs memory like data).
                    buf.as_mut_slice().fill(0);
                    self.copy_all(addr, buf.as_slice(), true)
                        .map_err(Self::os("UFFDIO_COPY"))?;
                    return Ok((false, None, false));
                };
                // Zero pages (no memory), then protect them so the first
                // write is seen. UFFDIO_ZEROPAGE cannot install protected
                // pages, so a write by another thread between the two calls
                // would replace a zero page silently: PAGEMAP_SCAN finds such
                // pages, and the block is then dirty.
                if let Fill::Exists(_) = self
                    .uffd
                    .zeropage(addr, len)
                    .map_err(Self::os("UFFDIO_ZEROPAGE"))?
                {
                    for p in (0..len).step_by(PAGE) {
                        let _ = self.uffd.zeropage(addr + p, PAGE);
                    }
                }
                self.uffd
                    .writeprotect(addr, len, true, false)
                    .map_err(Self::os("UFFDIO_WRITEPROTECT"))?;
                let written = pm.written(addr, len).map_err(Self::os("PAGEMAP_SCAN"))?;
                Ok((true, None, written))
            }
            Loaded::Data => {
                // A marker block is copied (or held back whole by the
                // caller): dropping its marker page from a moved-in huge
                // page would split it, and the block could then not be
                // recycled whole (its buffer would be refilled with fresh,
                // kernel-zeroed pages).
                if movable && !self.holds_marker(blk, ra) && self.move_into_place(addr, buf)? {
                    inc(&self.counters.moved_loads);
                    return Ok((false, None, false));
                }
                self.copy_into_place(blk, addr, ra, buf.as_slice())
            }
        }
    }

    /// A read-ahead load of `blk` in direction `ra` holds a marker back
    /// (one block in half a window).
    pub(super) fn holds_marker(&self, blk: u64, ra: Option<i8>) -> bool {
        let stride = (self.ra.window / 2).max(1);
        ra.is_some() && blk.is_multiple_of(stride)
    }

    /// Copy the block's bytes `data` in at `addr` (write-protected, without
    /// waking), holding a read-ahead marker page back if it carries one.
    /// Returns (not a hole, the held-back marker, not written).
    fn copy_into_place(
        &self,
        blk: u64,
        addr: usize,
        ra: Option<i8>,
        data: &[u8],
    ) -> Result<(bool, Option<Marker>, bool)> {
        let len = data.len();
        let Some(dir) = ra.filter(|_| self.holds_marker(blk, ra)) else {
            self.copy_all(addr, data, true)
                .map_err(Self::os("UFFDIO_COPY"))?;
            return Ok((false, None, false));
        };
        let page = if dir >= 0 { 0 } else { len / PAGE - 1 };
        let mo = page * PAGE;
        if page == 0 {
            self.copy_all(addr + PAGE, &data[PAGE..], true)
        } else {
            self.copy_all(addr, &data[..mo], true)
        }
        .map_err(Self::os("UFFDIO_COPY"))?;
        let marker = Marker::Page {
            page,
            data: data[mo..mo + PAGE].into(),
        };
        Ok((false, Some(marker), false))
    }

    /// Install the held-back marker `mk` of the block at `block_addr`
    /// (write-protected if `wp`) and wake the accesses waiting on it.
    pub(super) fn fill_marker(
        &self,
        block_addr: usize,
        mk: Marker,
        wp: bool,
    ) -> std::io::Result<()> {
        match mk {
            Marker::Page { page, data } => {
                let a = block_addr + page * PAGE;
                match self.uffd.copy(a, &data, wp, true)? {
                    Fill::Done => Ok(()),
                    Fill::Exists(_) => self.uffd.wake(a, PAGE),
                }
            }
            Marker::Block(mut b) => {
                let r = self.install_held_block(block_addr, &mut b, wp);
                self.return_recycled(b);
                r
            }
        }
    }

    /// Copy `src` to `dst` without waking, skipping pages that already exist.
    pub(super) fn copy_all(&self, dst: usize, src: &[u8], wp: bool) -> std::io::Result<()> {
        let mut off = 0;
        while off < src.len() {
            match self.uffd.copy(dst + off, &src[off..], wp, false)? {
                Fill::Done => return Ok(()),
                Fill::Exists(n) => off += n + PAGE,
            }
        }
        Ok(())
    }
}
