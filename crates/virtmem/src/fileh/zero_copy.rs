//! Zero-copy loads: a block that is whole huge pages is loaded into fresh
//! huge pages and moved into place (`UFFDIO_MOVE`, Linux >= 6.8), then
//! write-protected, instead of being copied; and evicted blocks' pages are
//! recycled into a few buffers that the next loads read into.
//!
//! Fresh pages (a load with no recycled buffer to read into) are moved in
//! once the budget is nearly full ([`crate::Budget::nearly_full`]: blocks
//! are being dropped, and their pages will be recycled), and before that
//! while fresh huge pages are cheap on this machine; where the host must
//! back them on first touch, loads copy instead (`install_cost.rs`, with
//! the measurements). A second pass over resident blocks ran at the same
//! speed on copied small pages as on moved huge ones (9.0-9.6 against
//! 8.9-11.1 GB/s).
//!
//! Moved pages arrive writable; they are write-protected right after the
//! move, before anyone is woken. A write by a thread that did not fault (its
//! page became present in between) would not be seen, so moves happen only
//! while no mutable view can exist: [`FileH::view_mut`] / `bytes_mut` switch
//! loads to copying (after waiting for moves in progress), and the next
//! shared view ([`FileH::view`] / `bytes`, whose `&self` proves no mutable
//! slice is alive) switches them back. Evicted blocks that are whole huge
//! pages are moved into a few per-handle buffers instead of being freed, and
//! the next loads read into those and move them back (no freeing, allocating
//! or zeroing of pages). Without `UFFDIO_MOVE`, with blocks that are not
//! multiples of 2 MiB, when transparent huge pages are disabled, or after
//! repeated misses (no huge page to be had, failed moves), every load copies.
//!
//! [`FileH::view_mut`]: super::FileH::view_mut
//! [`FileH::view`]: super::FileH::view

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::Result;
use crate::mapping::{Pagemap, Staging};
use crate::uffd;

use super::Shared;
use super::install_cost::InstallCost;
use super::options::inc;

/// Huge page size (x86-64): blocks that are multiples of it can be moved in
/// as whole huge pages.
pub(super) const HUGE: usize = 2 << 20;
/// Zero-copy installs are given up for the handle (loads copy) after this
/// many staging buffers in a row without huge pages, or this many failed
/// moves.
const MAX_MOVE_MISSES: u64 = 16;
/// Buffers per handle that keep evicted blocks' pages for the next loads
/// (accounted in the budget while they hold pages): this many, plus [`RECYCLED_PER_THREAD`]
/// per hardware thread, at most [`RECYCLED_MAX`] and a quarter of the
/// budget. A scan thread has a
/// chunk of a few blocks loaded at a time and drops it behind itself, so
/// each needs a few buffers for its loads to find recycled pages.
const RECYCLED_BASE: usize = 4;
/// See [`RECYCLED_BASE`].
const RECYCLED_PER_THREAD: usize = 6;
/// See [`RECYCLED_BASE`] (128 MiB of 2 MiB blocks).
const RECYCLED_MAX: usize = 64;

/// The zero-copy state of a handle.
#[derive(Default)]
pub(super) struct ZeroCopy {
    /// Zero-copy installs (`UFFDIO_MOVE`) are possible: the pagemap used to
    /// check that a staging buffer got huge pages. `None`: always copy.
    pub(super) pagemap: Option<Pagemap>,
    /// Loads move pages ([`crate::Options::zero_copy`]); without it only
    /// dirty-at-once installs move (zeros into a first-written hole, pages
    /// for a whole-block overwrite), which need no write protection.
    loads: bool,
    /// A mutable view may exist (set by `view_mut`, cleared by `view`: with
    /// `&self` no `&mut` borrow, hence no mutable slice, is alive). Moved
    /// pages are writable until write-protected right after the move; a
    /// write in between would not be seen, so loads copy while this is set.
    writers: AtomicBool,
    /// Held (shared) by a load from the check of `writers` to the end of the
    /// write-protection of moved pages; `view_mut` takes it exclusively to
    /// set `writers`, so no move is between the two when it returns.
    gate: RwLock<()>,
    /// Buffers holding the pages of evicted blocks, moved out instead of
    /// freed: a load reads into one of them and moves the pages back in,
    /// so they are neither freed, allocated nor zeroed again.
    recycled: Mutex<Recycled>,
    /// Staging buffers found without huge pages, in a row.
    thp_misses: AtomicU64,
    /// `UFFDIO_MOVE` failures other than a present destination page.
    move_errors: AtomicU64,
    /// What fresh pages cost here (see `install_cost.rs`).
    pub(super) costs: InstallCost,
}

/// Buffers for recycling evicted blocks' pages (zero-copy mode only). They
/// are registered (write-protect mode only, so they fault like plain
/// memory) with the handle's userfaultfd, as `UFFDIO_MOVE` requires of its
/// destination.
#[derive(Default)]
struct Recycled {
    /// Buffers with every page present (an evicted block's), to load into.
    full: Vec<Staging>,
    /// Buffers whose pages were moved away, to move an evicted block into.
    empty: Vec<Staging>,
    /// Buffers created so far (at most `capacity`).
    created: usize,
    /// How many buffers the handle may keep.
    capacity: usize,
}

impl ZeroCopy {
    /// Zero-copy state with `pagemap` (`None`: loads always copy).
    pub(super) fn new(pagemap: Option<Pagemap>, loads: bool) -> ZeroCopy {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let capacity = (RECYCLED_BASE + RECYCLED_PER_THREAD * threads).min(RECYCLED_MAX);
        ZeroCopy {
            pagemap,
            loads,
            recycled: Mutex::new(Recycled {
                capacity,
                ..Recycled::default()
            }),
            ..ZeroCopy::default()
        }
    }

    /// Loads move pages (possible, and not given up after repeated misses).
    pub(super) fn on(&self) -> bool {
        self.loads && self.moves_ok()
    }

    /// Pages can be moved in (possible, and not given up after repeated
    /// misses), whether or not loads do.
    pub(super) fn moves_ok(&self) -> bool {
        self.pagemap.is_some()
            && self.thp_misses.load(Ordering::Relaxed) < MAX_MOVE_MISSES
            && self.move_errors.load(Ordering::Relaxed) < MAX_MOVE_MISSES
    }

    /// A shared view is being made: with `&FileH` no mutable view is alive,
    /// so loads may move pages again.
    pub(super) fn no_writers(&self) {
        if self.writers.load(Ordering::Relaxed) {
            self.writers.store(false, Ordering::Relaxed);
        }
    }

    /// The gate, held shared, if no mutable view may exist: for installs
    /// that must not overlap one (a mapped block, see `super::mapped`).
    pub(super) fn no_writers_gate(&self) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        let g = self.gate.read();
        (!self.writers.load(Ordering::Relaxed)).then_some(g)
    }

    /// A mutable view is being made: wait for moves being write-protected
    /// (read-ahead may run), then make later loads copy.
    pub(super) fn writer_coming(&self) {
        if self.pagemap.is_some() && !self.writers.load(Ordering::Relaxed) {
            let _gate = self.gate.write();
            self.writers.store(true, Ordering::Relaxed);
        }
    }
}

impl Shared {
    /// Loads move pages (not given up after repeated misses).
    pub(super) fn zero_copy_on(&self) -> bool {
        self.zc.on()
    }

    /// Pages can be moved into blocks that become dirty at once, even when
    /// loads copy.
    pub(super) fn moves_on(&self) -> bool {
        self.zc.moves_ok()
    }

    /// A buffer holding an evicted block's pages to load into, if zero-copy
    /// is on and one is kept.
    pub(super) fn take_recycled(&self) -> Option<Staging> {
        if !self.zero_copy_on() {
            return None;
        }
        let b = self.zc.recycled.lock().full.pop()?;
        // Kept pages are accounted while kept; the load accounts its block.
        self.budget.sub(b.as_slice().len() as u64);
        Some(b)
    }

    /// Give back a buffer after a load into it (or a move of an evicted
    /// block's pages into it): to the full ones if it still has every page.
    pub(super) fn return_recycled(&self, b: Staging) {
        let mut pool = self.zc.recycled.lock();
        if b.moved_out {
            pool.empty.push(b);
        } else {
            self.budget.add(b.as_slice().len() as u64);
            pool.full.push(b);
        }
    }

    /// Bytes of pages kept in full recycling buffers (accounted in the
    /// budget; given back when the handle closes).
    pub(super) fn recycled_bytes(&self) -> u64 {
        let pool = self.zc.recycled.lock();
        pool.full.iter().map(|b| b.as_slice().len() as u64).sum()
    }

    /// Whether a load into the staging buffer `buf` may be moved into place:
    /// the buffer must consist of fresh huge pages (its previous pages were
    /// moved away); populating them first also makes every page present
    /// whatever the loader writes.
    pub(super) fn movable(&self, buf: &mut Staging) -> bool {
        let len = buf.as_slice().len();
        match &self.zc.pagemap {
            Some(pm) if self.zero_copy_on() => {
                let huge = self
                    .populate_staging(buf)
                    .and_then(|()| pm.all_huge(buf.addr(), len));
                if matches!(huge, Ok(true)) {
                    self.zc.thp_misses.store(0, Ordering::Relaxed);
                } else {
                    // No huge page (fragmented memory, or the last move had
                    // to split it): copy, try a new buffer next time, give
                    // up after many misses in a row.
                    inc(&self.zc.thp_misses);
                    buf.small_pages = true;
                    vtrace!("T staging without huge pages: {huge:?}");
                }
                matches!(huge, Ok(true))
            }
            _ => false,
        }
    }

    /// After a zero-copy load the staging buffer has no pages left: give it
    /// fresh (zeroed) ones now, while the woken accesses run, rather than on
    /// the next load, which may be a demand fault someone waits for. (A
    /// no-op walk when the buffer still has its pages.)
    pub(super) fn refill_staging(&self, staging: &mut Option<Staging>) {
        if self.zero_copy_on()
            && let Some(b) = staging.as_mut()
            && !b.small_pages
        {
            let _ = self.populate_staging(b);
        }
    }

    /// Populate staging buffer `buf`; when its pages had been moved out
    /// (fresh ones are allocated and zeroed), note what that cost.
    fn populate_staging(&self, buf: &mut Staging) -> std::io::Result<()> {
        if !buf.moved_out {
            return buf.populate();
        }
        let t = std::time::Instant::now();
        let r = buf.populate();
        if r.is_ok() {
            self.zc.costs.note_fresh(t.elapsed(), buf.as_slice().len());
        }
        r
    }

    /// Install the loaded block in `buf` at `addr` by moving its (huge)
    /// pages, write-protected, without waking. Returns
    /// false (nothing done) when a mutable view may exist: then the caller
    /// copies. A partial move is completed by copying the rest.
    pub(super) fn move_into_place(&self, addr: usize, buf: &mut Staging) -> Result<bool> {
        let len = buf.as_slice().len();
        let _gate = self.zc.gate.read();
        if self.zc.writers.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // A fault on the block allocated a page table for it (even though
        // no page is mapped); the kernel then moves the huge page 4 KiB at
        // a time, splitting it. The block has no page while it loads, and
        // dropping its (empty) range frees that table (Linux >= 6.14 with
        // CONFIG_PT_RECLAIM; otherwise this costs a few microseconds).
        // SAFETY: the block's range, Loading under this thread: no page, no
        // access has seen content.
        unsafe { self.map.dontneed(addr - self.map.addr(), len) }
            .map_err(Self::os("madvise(MADV_DONTNEED)"))?;
        // SAFETY: `buf` is borrowed exclusively and was loaded for this
        // block only; the destination is the Loading block (registered, no
        // page, waiters asleep until the state changes).
        let (moved, why) = unsafe { self.uffd.move_pages(addr, buf.addr(), len) };
        buf.moved_out |= moved > 0;
        if let Some(e) = why {
            // E.g. EEXIST (a page is already there) or EBUSY: copy the rest,
            // which skips existing pages like any other load.
            vtrace!("T UFFDIO_MOVE stopped after {moved} of {len} bytes: {e}");
            if e.raw_os_error() != Some(libc::EEXIST) {
                // Not a race with a present page: after a few of these the
                // handle stops trying.
                inc(&self.zc.move_errors);
            }
            self.copy_all(addr + moved, &buf.as_slice()[moved..], true)
                .map_err(Self::os("UFFDIO_COPY"))?;
        }
        if moved > 0 {
            self.uffd
                .writeprotect(addr, moved, true, false)
                .map_err(Self::os("UFFDIO_WRITEPROTECT"))?;
        }
        Ok(true)
    }

    /// Install a read-ahead block held back whole in `buf` (see
    /// `state::Marker::Block`) at `addr`, write-protected if `wp`, and wake
    /// the accesses waiting on it: moved in, or copied while a mutable view
    /// may exist.
    pub(super) fn install_held_block(
        &self,
        addr: usize,
        buf: &mut Staging,
        wp: bool,
    ) -> std::io::Result<()> {
        let to_io = |e: crate::Error| std::io::Error::other(e.to_string());
        if self.move_into_place(addr, buf).map_err(to_io)? {
            inc(&self.counters.moved_loads);
        } else {
            self.copy_all(addr, buf.as_slice(), wp)?;
        }
        self.uffd.wake(addr, buf.as_slice().len())
    }

    /// Give the (empty, Loading) block at `addr` writable zero pages by
    /// moving in fresh huge pages (the kernel zeroes each in one go) rather
    /// than copying 2 MiB of zeros into 512 separately allocated pages (a
    /// first write to a hole; measured: the copy was 19% of writing a new
    /// 2 GiB array from Python). The block becomes dirty, so a write racing
    /// with the move needs no protection. False: not possible here, copy.
    pub(super) fn move_in_zeros(&self, addr: usize, len: usize) -> std::io::Result<bool> {
        let Some(pm) = self.zc.pagemap.as_ref().filter(|_| self.zc.moves_ok()) else {
            return Ok(false);
        };
        let mut buf = Staging::new(len)?;
        buf.populate()?;
        if !pm.all_huge(buf.addr(), len)? {
            return Ok(false);
        }
        // SAFETY: `buf` is ours and holds fresh zero pages; the destination
        // is a Loading block with no page (its accesses wait), about to
        // become dirty.
        let (moved, why) = unsafe { self.uffd.move_pages(addr, buf.addr(), len) };
        if let Some(e) = why {
            vtrace!("T moving zeros in stopped after {moved} of {len} bytes: {e}");
            self.copy_all(addr + moved, &buf.as_slice()[moved..], false)?;
        }
        Ok(true)
    }

    /// A buffer of `len` bytes that pages can be moved into: registered
    /// with the handle's userfaultfd (`UFFDIO_MOVE` requires it of its
    /// destination) for write-protection only, so it faults like plain
    /// memory. `None` if it cannot be made.
    pub(super) fn move_target(&self, len: usize) -> Option<Staging> {
        let b = Staging::new(len).ok()?;
        // SAFETY: a fresh buffer owned by the caller: registered for
        // write-protection only, never filled, only moved into while
        // borrowed exclusively and emptied.
        unsafe { self.uffd.register(b.addr(), len, uffd::REGISTER_MODE_WP) }.ok()?;
        Some(b)
    }

    /// Empty `b` (a [`Self::move_target`] buffer) and move the block at
    /// `addr` into it whole (its page table freed by the emptying, a huge
    /// page moves as one). True if every byte moved; otherwise the pages
    /// are split between the two.
    ///
    /// # Safety
    ///
    /// The block at `addr` has no access that may see its pages go: its
    /// state keeps accesses waiting (or `&mut FileH` excludes them), and a
    /// later access finds the same bytes where they are loaded from.
    pub(super) unsafe fn move_block_out(&self, b: &mut Staging, addr: usize, len: usize) -> bool {
        b.clear().is_ok() && {
            // SAFETY: `b` is borrowed exclusively and was just emptied; the
            // source may lose its pages (caller contract).
            let (moved, why) = unsafe { self.uffd.move_pages(b.addr(), addr, len) };
            if let Some(e) = &why {
                vtrace!(
                    "T moving a block out: UFFDIO_MOVE stopped after {moved} of {len} bytes: {e}"
                );
            }
            moved == len
        }
    }

    /// Evict the block at `addr` by moving its pages into a recycling
    /// buffer (see [`Recycled`]). False if not done (zero-copy off, no free
    /// buffer, or the block is not made of whole huge pages, e.g. a marker
    /// page was installed): then the caller drops the block's pages, which
    /// also removes any page moved before the move stopped.
    pub(super) fn recycle(&self, addr: usize, len: usize) -> bool {
        let Some(pm) = self.zc.pagemap.as_ref().filter(|_| self.zero_copy_on()) else {
            return false;
        };
        if !matches!(pm.all_huge(addr, len), Ok(true)) {
            return false;
        }
        // Kept pages are accounted in the budget (see `return_recycled`):
        // keep them only if they fit, and in at most a quarter of it.
        if self.budget.used().saturating_add(len as u64) > self.budget.limit() {
            return false;
        }
        let quarter =
            usize::try_from(self.budget.limit() / self.bs as u64 / 4).unwrap_or(usize::MAX);
        let mut b = {
            let mut pool = self.zc.recycled.lock();
            let capacity = pool.capacity.min(quarter);
            if pool.full.len() >= capacity {
                return false;
            }
            match pool.empty.pop() {
                Some(b) => b,
                None if pool.created < capacity => {
                    let Some(b) = self.move_target(len) else {
                        return false;
                    };
                    pool.created += 1;
                    b
                }
                None => return false,
            }
        };
        // SAFETY: the source is a clean block being evicted (Evicting:
        // accesses wait, then reload the same bytes).
        let ok = unsafe { self.move_block_out(&mut b, addr, len) };
        b.moved_out = !ok;
        if ok {
            inc(&self.counters.recycled);
        }
        self.return_recycled(b);
        ok
    }
}
