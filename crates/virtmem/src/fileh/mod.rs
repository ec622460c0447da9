//! The file handle: one registered mapping of a [`BigFile`], its block
//! states, its handler threads, and the handle operations.
//!
//! [`FileH`] owns the handler threads and an `Arc` of [`Shared`], the part
//! the threads see. `Shared` is grouped by concern, each group owned by the
//! module that uses it:
//!
//! - [`state`]: the block state machine under the state lock;
//! - [`fault`]: the handler threads and the service of a fault;
//! - [`load`]: loading a block and installing it (copy path, holes);
//! - [`mapped`]: blocks mapped straight from their file (no copy);
//! - [`mapped_rw`]: the same, read-write, for handles written through
//!   pointers the engine does not see;
//! - [`zero_copy`]: moving loaded pages into place, recycling evicted ones;
//! - [`readahead`]: sequential-stream detection and read-ahead jobs;
//! - [`read_order`]: the jobs that map a cold file read it in queue order;
//! - [`evict`]: keeping clean blocks within the budget, drop-behind;
//! - [`ops`]: prefetch, writeout, discard, invalidate;
//! - [`overwrite`]: whole-block overwrites reusing pages of blocks done with;
//! - [`view`] and [`options`]: what the API lends and takes.
//!
//! This file opens and closes handles and makes views.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::sys::eventfd::{EfdFlags, EventFd};
use parking_lot::{Condvar, Mutex};

use crate::BigFile;
use crate::budget::{Budget, process_budget};
use crate::error::{Error, Result, SharedError};
use crate::mapping::{PAGE, Pagemap, Pod, Reservation, thp_possible};
use crate::uffd::{self, Uffd};

static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Debug trace of state transitions to stderr (env `VIRTMEM_TRACE=1`).
macro_rules! vtrace {
    ($($t:tt)*) => {
        if *crate::fileh::TRACE.get_or_init(|| std::env::var_os("VIRTMEM_TRACE").is_some()) {
            eprintln!($($t)*);
        }
    };
}

mod donors;
mod evict;
mod fault;
mod install_cost;
mod load;
mod mapped;
mod mapped_rw;
mod ops;
mod options;
mod overwrite;
mod read_order;
mod readahead;
mod state;
mod view;
mod zero_copy;

pub use options::{Options, Stats, Writeout};
pub use view::{View, ViewMut};

use fault::Handlers;
use load::Holes;
use options::Counters;
use readahead::Readahead;
use state::{Block, State};
use zero_copy::{HUGE, ZeroCopy};

/// What a handle's handler threads share with it.
struct Shared {
    file: Arc<dyn BigFile>,
    name: String,
    /// Block size in bytes.
    bs: usize,
    /// Blocks in the reservation.
    nblocks: u64,
    map: Reservation,
    uffd: Uffd,
    /// The block states.
    st: Mutex<State>,
    /// Notified when a busy (Loading/Evicting) block settles.
    idle: Condvar,
    budget: Arc<Budget>,
    counters: Counters,
    handlers: Handlers,
    ra: Readahead,
    holes: Holes,
    zc: ZeroCopy,
    /// Stored blocks' pages kept for first-written holes (see [`donors`]).
    donors: Mutex<donors::Donors>,
    /// Map blocks from their file when it offers (see [`mapped`]).
    map_files: bool,
    /// Blocks of this handle mapped from their file now.
    mapped_here: AtomicUsize,
    /// Of those, blocks whose pages were dropped (see [`mapped`]).
    mapped_dropped: AtomicUsize,
    /// Mapped blocks are read-write, their writes found by this page-table
    /// scanner (see [`mapped_rw`]); `None`: read-only.
    rw_scan: Option<Pagemap>,
}

/// A handle on a [`BigFile`]: one mapping of the whole file, loaded lazily.
///
/// Shared views ([`FileH::bytes`], [`FileH::view`]) borrow `&self` and may be
/// used from many threads at once; mutable views and the operations that
/// change what memory shows (writeout, discard, invalidate) borrow `&mut self`.
pub struct FileH {
    sh: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FileH {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileH")
            .field("file", &self.sh.name)
            .field("block_size", &self.sh.bs)
            .field("nblocks", &self.sh.nblocks)
            .finish()
    }
}

impl FileH {
    /// Open a handle on `file`: reserve the mapping, create and register the
    /// userfaultfd, start the handler threads.
    pub fn open(file: Arc<dyn BigFile>, opts: Options) -> Result<FileH> {
        let bs = file.block_size();
        if bs == 0 || !bs.is_multiple_of(PAGE) {
            return Err(Error::BlockSize { block_size: bs });
        }
        let nblocks = opts.reserve.div_ceil(bs as u64).max(1);
        let len = usize::try_from(nblocks)
            .ok()
            .and_then(|n| n.checked_mul(bs))
            .ok_or(Error::OutOfRange {
                offset: 0,
                len: opts.reserve,
                size: usize::MAX as u64,
            })?;
        let need = uffd::FEATURE_PAGEFAULT_FLAG_WP | uffd::FEATURE_POISON;
        // Moves are also used without zero-copy loads (fresh zero pages
        // into a first-written hole, see `zero_copy::move_in_zeros`).
        let want = uffd::FEATURE_MOVE;
        let uffd = match Uffd::open(need, want) {
            Ok(Ok(u)) => u,
            Ok(Err(missing)) => return Err(Error::MissingFeatures { missing }),
            Err(uffd::OpenError::NotPermitted(source)) => {
                return Err(Error::NotPermitted { source });
            }
            Err(uffd::OpenError::Unavailable(source)) => return Err(Error::Unavailable { source }),
        };
        let map = Reservation::new(len).map_err(|source| Error::Os {
            op: "mmap of the handle's reservation",
            source,
        })?;
        // SAFETY: our own fresh reservation, registered for missing faults:
        // nothing reads it but through the views, whose accesses to missing
        // pages wait for the handler.
        unsafe {
            uffd.register(
                map.addr(),
                len,
                uffd::REGISTER_MODE_MISSING | uffd::REGISTER_MODE_WP,
            )
        }
        .map_err(|source| Error::Os {
            op: "UFFDIO_REGISTER",
            source,
        })?;
        let wakeup = EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_SEMAPHORE,
        )
        .map_err(|e| Error::Os {
            op: "eventfd",
            source: e.into(),
        })?;
        let stop = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::Os {
                op: "eventfd",
                source: e.into(),
            })?;
        let budget = match opts.budget {
            Some(b) => Budget::new(b),
            None => process_budget(),
        };
        let move_pm = if uffd.features() & uffd::FEATURE_MOVE != 0
            && bs.is_multiple_of(HUGE)
            && thp_possible()
        {
            Pagemap::open()
        } else {
            None
        };
        let ra_window = opts
            .readahead_window
            .min((budget.limit() / bs as u64 / 4).max(1));
        let sh = Arc::new(Shared {
            name: file.name(),
            file,
            bs,
            nblocks,
            map,
            uffd,
            st: Mutex::new(State::default()),
            idle: Condvar::new(),
            budget,
            counters: Counters::default(),
            handlers: Handlers {
                stop,
                shutdown: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                spurious: Mutex::new(None),
            },
            ra: Readahead {
                enabled: opts.readahead && opts.readahead_window > 0,
                window: ra_window,
                queue: Mutex::new(VecDeque::new()),
                wakeup,
                order: read_order::ReadOrder::new(),
                cold: std::sync::atomic::AtomicBool::new(false),
            },
            holes: Holes {
                pagemap: if opts.zero_page_holes {
                    Pagemap::open()
                } else {
                    None
                },
                zeros: Mutex::new(None),
            },
            zc: ZeroCopy::new(move_pm, opts.zero_copy),
            donors: Mutex::new(donors::Donors::default()),
            map_files: opts.map_files,
            mapped_here: AtomicUsize::new(0),
            mapped_dropped: AtomicUsize::new(0),
            rw_scan: if opts.map_files && opts.map_files_writable {
                Pagemap::open()
            } else {
                None
            },
        });
        vtrace!("T open");
        let mut fh = FileH {
            sh,
            threads: Vec::new(),
        };
        // With two or more threads, the last one only serves faults, so a
        // fault never waits behind read-ahead loads.
        let n = opts.threads.max(1);
        for i in 0..n {
            let ra_worker = n == 1 || i + 1 < n;
            let sh = fh.sh.clone();
            let t = std::thread::Builder::new()
                .name(format!("virtmem-{i}"))
                .spawn(move || sh.handler_loop(ra_worker))
                .map_err(|source| Error::Os {
                    op: "spawning a handler thread",
                    source,
                })?;
            fh.threads.push(t);
        }
        Ok(fh)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.sh.bs
    }

    /// Size of the reserved mapping in bytes (a whole number of blocks).
    pub fn size(&self) -> u64 {
        self.sh.map.len() as u64
    }

    /// The budget this handle accounts its clean blocks against.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.sh.budget
    }

    /// True if loads install blocks without a second copy (`UFFDIO_MOVE` of
    /// huge pages, see [`Options::zero_copy`]); false if every load copies.
    pub fn zero_copy(&self) -> bool {
        self.sh.zero_copy_on()
    }

    /// True if blocks the file offers are mapped read-write
    /// ([`Options::map_files_writable`] and the kernel has `PAGEMAP_SCAN`).
    pub fn maps_writable(&self) -> bool {
        self.sh.rw_scan.is_some()
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let mut s = self.sh.counters.snapshot();
        s.fresh_pages_ns_per_mib = self.sh.zc.costs.fresh_ns_per_mib();
        s
    }

    fn check<T: Pod>(&self, offset: u64, count: usize) -> Result<usize> {
        let bytes = (count as u64).checked_mul(size_of::<T>() as u64);
        let end = bytes.and_then(|b| offset.checked_add(b));
        match end {
            Some(e) if e <= self.size() => {}
            _ => {
                return Err(Error::OutOfRange {
                    offset,
                    len: bytes.unwrap_or(u64::MAX),
                    size: self.size(),
                });
            }
        }
        let off = offset as usize;
        if !(self.sh.map.addr() + off).is_multiple_of(align_of::<T>()) {
            return Err(Error::Misaligned {
                offset,
                align: align_of::<T>(),
                type_name: std::any::type_name::<T>(),
            });
        }
        Ok(off)
    }

    /// Shared view of bytes `range` of the file.
    pub fn bytes(&self, range: Range<u64>) -> Result<View<'_, u8>> {
        let n = range.end.saturating_sub(range.start) as usize;
        self.view::<u8>(range.start, n)
    }

    /// Exclusive view of bytes `range` of the file.
    pub fn bytes_mut(&mut self, range: Range<u64>) -> Result<ViewMut<'_, u8>> {
        let n = range.end.saturating_sub(range.start) as usize;
        self.view_mut::<u8>(range.start, n)
    }

    /// Shared view of `count` elements of type `T` starting at byte `offset`.
    pub fn view<T: Pod>(&self, offset: u64, count: usize) -> Result<View<'_, T>> {
        let off = self.check::<T>(offset, count)?;
        self.sh.zc.no_writers();
        Ok(View {
            // SAFETY: `check` tested bounds and alignment; `&self` means no
            // `&mut FileH`, hence no mutable view, is alive for the view's
            // lifetime.
            slice: unsafe { self.sh.map.slice(off, count) },
            offset,
        })
    }

    /// Exclusive view of `count` elements of type `T` starting at byte `offset`.
    pub fn view_mut<T: Pod>(&mut self, offset: u64, count: usize) -> Result<ViewMut<'_, T>> {
        let off = self.check::<T>(offset, count)?;
        self.sh.zc.writer_coming();
        let bytes = count.saturating_mul(size_of::<T>());
        if bytes > 0 {
            let bs = self.sh.bs as u64;
            let last = (offset + bytes as u64 - 1) / bs;
            self.sh.unmap_for_writes(offset / bs..=last)?;
        }
        Ok(ViewMut {
            // SAFETY: `check` tested bounds and alignment; `&mut self`
            // guarantees that no other view of the mapping exists.
            slice: unsafe { self.sh.map.slice_mut(off, count) },
            offset,
        })
    }

    /// Blocks mapped straight from their file whose pages were dropped
    /// (for the budget or behind a scan) and that still show the file's
    /// pages: see [`Self::unmap_dropped`].
    pub fn has_dropped_mapped(&self) -> bool {
        self.sh.mapped_dropped.load(Ordering::Relaxed) > 0
    }

    /// Put blocks mapped from their file whose pages were dropped back to
    /// the engine's memory, so that a next touch loads them through the
    /// budget (until then such a touch maps page cache unseen). Call it
    /// when no view is alive, e.g. when the last one ends.
    pub fn unmap_dropped(&mut self) -> Result<()> {
        self.sh.unmap_dropped()
    }

    /// Blocks mapped read-write ([`Options::map_files_writable`]), which
    /// pin budget until [`Self::unmap_pinned`] or a boundary drops them.
    pub fn has_pinned(&self) -> bool {
        self.sh.rw_scan.is_some() && self.sh.mapped_here.load(Ordering::Relaxed) > 0
    }

    /// At a transaction boundary (no access runs): unmap the blocks mapped
    /// read-write that were not written, giving their pins back to the
    /// budget; their next touch maps them again (see `fileh/mapped_rw.rs`).
    pub fn unmap_pinned(&mut self) -> Result<()> {
        self.sh.unmap_pinned()
    }

    /// Number of dirty blocks known without a scan: those the write
    /// protection caught, not blocks mapped read-write and written since
    /// the last [`Self::dirty_blocks`] (their copies stay within the pinned
    /// half of the budget, see `fileh/mapped_rw.rs`). Cheap, for a check
    /// after every write; does not wait for loads in flight.
    pub fn dirty_count(&self) -> usize {
        self.sh.st.lock().dirty.len()
    }

    /// Dirty blocks, ascending.
    ///
    /// Waits for loads in flight first: a write that landed on a hole's zero
    /// page while a handler thread was mapping it is only known once that
    /// load completes.
    pub fn dirty_blocks(&self) -> Vec<u64> {
        let mut st = self.sh.st.lock();
        while st.busy > 0 {
            self.sh.idle.wait(&mut st);
        }
        self.sh.collect_rw_writes(&mut st);
        st.dirty.iter().copied().collect()
    }

    /// Blocks whose load failed (and are poisoned), with their errors.
    pub fn load_errors(&self) -> Vec<(u64, SharedError)> {
        let st = self.sh.st.lock();
        st.errors.iter().map(|(b, e)| (*b, e.clone())).collect()
    }

    /// Whether block `blk` is in memory or on its way (loading, clean,
    /// dirty, a hole, poisoned): false only for blocks whose next touch
    /// would load them from the file.
    pub fn is_resident(&self, blk: u64) -> bool {
        self.sh.st.lock().blocks.contains_key(&blk)
    }

    /// Number of blocks resident now (clean, dirty, holes, or mapped from
    /// their file and not dropped since).
    pub fn resident_blocks(&self) -> usize {
        let st = self.sh.st.lock();
        st.blocks
            .values()
            .filter(|b| {
                matches!(
                    b,
                    Block::Clean { .. }
                        | Block::Dirty
                        | Block::Mapped { tick: Some(_) }
                        | Block::MappedRw
                )
            })
            .count()
    }

    /// Test hook: drop the pages of block `blk` *without* telling the engine,
    /// breaking its bookkeeping on purpose (used to test that an access
    /// faulting forever on a block the engine believes resident is failed with
    /// SIGBUS rather than spinning). Not for normal use.
    #[doc(hidden)]
    pub fn debug_drop_pages_behind_engine(&self, blk: u64) -> Result<()> {
        if blk >= self.sh.nblocks {
            return Err(Error::BlockOutOfRange {
                blk,
                nblocks: self.sh.nblocks,
            });
        }
        let (off, len) = self.sh.block_range(blk);
        // SAFETY: the block's range; the next access faults and is served a
        // SIGBUS (the engine believes the block resident), never other bytes.
        unsafe { self.sh.map.dontneed(off, len) }.map_err(Shared::os("madvise(MADV_DONTNEED)"))
    }
}

impl Drop for FileH {
    fn drop(&mut self) {
        let sh = &*self.sh;
        vtrace!("T close {}: {:?}", sh.name, sh.counters.snapshot());
        sh.handlers.shutdown.store(true, Ordering::SeqCst);
        let _ = sh.handlers.stop.write(1);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Return the budget held by clean blocks (the mapping goes with `sh`).
        let st = sh.st.lock();
        let clean = st
            .blocks
            .values()
            .filter(|b| {
                matches!(
                    b,
                    Block::Clean { hole: false, .. }
                        | Block::Mapped { tick: Some(_) }
                        | Block::MappedRw
                )
            })
            .count() as u64;
        sh.release_mapped_count();
        sh.budget
            .sub(clean * sh.bs as u64 + sh.recycled_bytes() + sh.donor_bytes());
    }
}

impl Shared {
    pub(super) fn block_range(&self, blk: u64) -> (usize, usize) {
        (blk as usize * self.bs, self.bs)
    }

    pub(super) fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Os { op, source }
    }
}
