//! The file handle: one registered mapping, its block states, its handler
//! threads, and the handle operations (writeout, discard, invalidate,
//! prefetch).
//!
//! Block state machine (absent from the table = not resident, no pages):
//!
//! ```text
//!  absent --fault/prefetch/read-ahead--> Loading --ok--> Clean (write-protected)
//!                                          |  \--write fault / write seen--> Dirty
//!                                          \--error--> Poisoned (pages poisoned)
//!  Clean --write-protect fault--> Dirty --MARKSTORED--> Clean
//!  Clean --over budget--> Evicting --MADV_DONTNEED--> absent
//!  Dirty --discard/invalidate--> absent;  Clean/Poisoned --invalidate--> absent
//! ```
//!
//! Invariants: a Clean or Dirty block has all its pages present except a
//! Clean block's held-back read-ahead marker page; a Dirty block is fully
//! present and writable, so writeout reads it without faulting. State
//! changes are made under the state lock *before* the waiting accesses are
//! woken, so an access that returned is already accounted (e.g. dirty).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::{BitOr, Deref, DerefMut, Range};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::budget::{Budget, process_budget};
use crate::error::{Error, Result, SharedError};
use crate::mapping::{PAGE, Pagemap, Pod, Reservation, Staging, thp_possible};
use crate::uffd::{self, Fill, Msg, Uffd};
use crate::{BigFile, Loaded};

/// Options of [`FileH::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes of address space to reserve (rounded up to whole blocks). Views
    /// may cover any part of it. Default 1 TiB.
    pub reserve: u64,
    /// A budget of this handle's own (bytes of clean resident blocks), instead
    /// of the process-wide one.
    pub budget: Option<u64>,
    /// Load blocks ahead of sequential fault patterns. Default on.
    pub readahead: bool,
    /// Read-ahead window in blocks (also capped to a quarter of the budget).
    /// Default 8.
    pub readahead_window: u64,
    /// Number of handler threads. Default: number of CPUs (at least 2) plus
    /// one; all but one of them also run read-ahead.
    pub threads: usize,
    /// Map holes with the shared zero page, so they cost no memory until
    /// written (needs PAGEMAP_SCAN, Linux >= 6.7, to stay exact; without it
    /// this is ignored). `false`: holes are mapped as zero-filled data.
    /// Default `true`.
    pub zero_page_holes: bool,
    /// Install loaded blocks without a second copy when the kernel allows it
    /// (`UFFDIO_MOVE`, Linux >= 6.8, blocks a multiple of 2 MiB, transparent
    /// huge pages not disabled): the block is loaded into fresh huge pages
    /// that are then moved into place. Falls back to `UFFDIO_COPY` otherwise.
    /// Default `true`.
    pub zero_copy: bool,
}

impl Default for Options {
    fn default() -> Options {
        let ncpu = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options {
            reserve: 1 << 40,
            budget: None,
            readahead: true,
            readahead_window: 8,
            threads: ncpu.max(2) + 1,
            zero_page_holes: true,
            zero_copy: true,
        }
    }
}

/// What [`FileH::writeout`] does; combine with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writeout(u8);

impl Writeout {
    /// Store every dirty block with [`BigFile::store_block`], ascending.
    pub const STORE: Writeout = Writeout(1);
    /// Mark dirty blocks clean and write-protect them again.
    pub const MARKSTORED: Writeout = Writeout(2);

    fn has(self, f: Writeout) -> bool {
        self.0 & f.0 != 0
    }
}

impl BitOr for Writeout {
    type Output = Writeout;
    fn bitor(self, o: Writeout) -> Writeout {
        Writeout(self.0 | o.0)
    }
}

/// Counters of a handle (monotonic since open).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Fault messages received.
    pub faults: u64,
    /// Blocks loaded on demand (fault or prefetch).
    pub loads: u64,
    /// Blocks loaded by read-ahead.
    pub readahead_loads: u64,
    /// Read-ahead markers the reader reached.
    pub marker_hits: u64,
    /// Clean blocks dropped to respect the budget.
    pub evictions: u64,
    /// Blocks that failed to load (and were poisoned).
    pub load_failures: u64,
    /// Loaded blocks installed by moving their pages (no second copy).
    pub moved_loads: u64,
    /// Evictions that kept the block's pages for a later load instead of
    /// freeing them (zero-copy mode).
    pub recycled: u64,
}

#[derive(Default)]
struct Counters {
    faults: AtomicU64,
    loads: AtomicU64,
    readahead_loads: AtomicU64,
    marker_hits: AtomicU64,
    evictions: AtomicU64,
    load_failures: AtomicU64,
    moved_loads: AtomicU64,
    recycled: AtomicU64,
    /// Staging buffers found without huge pages, in a row.
    thp_misses: AtomicU64,
    /// `UFFDIO_MOVE` failures other than a present destination page.
    move_errors: AtomicU64,
}

static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Debug trace of state transitions to stderr (env `VIRTMEM_TRACE=1`).
macro_rules! vtrace {
    ($($t:tt)*) => {
        if *TRACE.get_or_init(|| std::env::var_os("VIRTMEM_TRACE").is_some()) {
            eprintln!($($t)*);
        }
    };
}

/// Huge page size (x86-64): blocks that are multiples of it can be moved in
/// as whole huge pages.
const HUGE: usize = 2 << 20;
/// Zero-copy installs are given up for the handle (loads copy) after this
/// many staging buffers in a row without huge pages, or this many failed
/// moves.
const MAX_MOVE_MISSES: u64 = 16;
/// Buffers per handle that keep evicted blocks' pages for the next loads
/// (memory outside the budget: this many blocks at most).
const RECYCLED_BUFFERS: usize = 4;

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A read-ahead block's first page in scan direction, held back.
struct Marker {
    page: usize,
    data: Box<[u8]>,
}

enum Block {
    /// A thread is loading the block. `demanded`: some access waits for it;
    /// `write`: some access wants to write it.
    Loading { demanded: bool, write: bool },
    /// Loaded, write-protected. `hole`: zero pages, not accounted.
    Clean {
        tick: u64,
        hole: bool,
        marker: Option<Marker>,
    },
    /// Written since load or last MARKSTORED; fully present and writable.
    Dirty,
    /// Being dropped to respect the budget.
    Evicting { demanded: bool },
    /// Failed to load; its pages are poisoned.
    Poisoned,
}

/// One sequential access stream (a reader walking blocks).
struct Seq {
    last: u64,
    /// +1 forward, -1 backward, 0 not yet known.
    dir: i8,
    /// Next block not yet scheduled for read-ahead in direction `dir`.
    next: Option<u64>,
    /// Tick of the last access, to replace the least recently used stream.
    used: u64,
}

/// How many concurrent streams read-ahead tracks per handle.
const STREAMS: usize = 4;

#[derive(Default)]
struct State {
    blocks: HashMap<u64, Block>,
    /// tick -> blk for clean, non-hole blocks: eviction order.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    dirty: BTreeSet<u64>,
    /// Blocks in Loading or Evicting state.
    busy: usize,
    /// No read-ahead may start (an exclusive operation runs).
    paused: bool,
    errors: BTreeMap<u64, SharedError>,
    streams: Vec<Seq>,
}

impl Block {
    fn name(&self) -> &'static str {
        match self {
            Block::Loading { write: true, .. } => "Loading(w)",
            Block::Loading { .. } => "Loading",
            Block::Clean {
                marker: Some(_), ..
            } => "Clean(marker)",
            Block::Clean { hole: true, .. } => "Clean(hole)",
            Block::Clean { .. } => "Clean",
            Block::Dirty => "Dirty",
            Block::Evicting { .. } => "Evicting",
            Block::Poisoned => "Poisoned",
        }
    }
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// What a fault handler does after releasing the state lock.
enum Action {
    None,
    Wake(usize),
    Load,
    MakeDirty(Option<Marker>),
    /// First write to a clean hole: replace its zero pages by writable
    /// zeroed pages in one go (instead of one copy-on-write fault per page).
    RefillHole,
    Poison(usize),
}

struct Shared {
    file: Arc<dyn BigFile>,
    name: String,
    bs: usize,
    nblocks: u64,
    map: Reservation,
    uffd: Uffd,
    /// Read-ahead jobs queued (semaphore counter).
    wakeup: EventFd,
    /// Becomes readable at shutdown.
    stop: EventFd,
    shutdown: AtomicBool,
    /// Handler threads between reading a fault message and serving it.
    in_flight: AtomicUsize,
    st: Mutex<State>,
    idle: Condvar,
    budget: Arc<Budget>,
    readahead: bool,
    ra_window: u64,
    ra_queue: Mutex<VecDeque<(u64, i8)>>,
    /// For the zero-page check of holes; `None`: holes are mapped as data.
    pagemap: Option<Pagemap>,
    /// A never-written block-sized buffer: the source to fill holes with zeros.
    zeros: Mutex<Option<Staging>>,
    counters: Counters,
    /// Last address answered with a bare wake, since when: an access that
    /// keeps faulting on a page its block state says is present (a broken
    /// invariant) is failed loudly instead of spinning forever.
    spurious: Mutex<Option<(usize, std::time::Instant, std::time::Instant)>>,
    /// Zero-copy installs (`UFFDIO_MOVE`) are possible: the pagemap used to
    /// check that a staging buffer got huge pages. `None`: always copy.
    move_pm: Option<Pagemap>,
    /// A mutable view may exist (set by `view_mut`, cleared by `view`: with
    /// `&self` no `&mut` borrow, hence no mutable slice, is alive). Moved
    /// pages are writable until write-protected right after the move; a
    /// write in between would not be seen, so loads copy while this is set.
    writers: AtomicBool,
    /// Held (shared) by a load from the check of `writers` to the end of the
    /// write-protection of moved pages; `view_mut` takes it exclusively to
    /// set `writers`, so no move is between the two when it returns.
    move_gate: RwLock<()>,
    /// Buffers holding the pages of evicted blocks, moved out instead of
    /// freed: a load reads into one of them and moves the pages back in,
    /// so they are neither freed, allocated nor zeroed again.
    recycled: Mutex<Recycled>,
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
    /// Buffers created so far (at most [`RECYCLED_BUFFERS`]).
    created: usize,
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

/// A shared view: a slice of the handle's mapping.
#[derive(Debug)]
pub struct View<'a, T: Pod> {
    slice: &'a [T],
    offset: u64,
}

impl<T: Pod> View<'_, T> {
    /// Byte offset of the view in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<T: Pod> Deref for View<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

/// An exclusive view: a mutable slice of the handle's mapping.
#[derive(Debug)]
pub struct ViewMut<'a, T: Pod> {
    slice: &'a mut [T],
    offset: u64,
}

impl<'a, T: Pod> ViewMut<'a, T> {
    /// Byte offset of the view in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The slice with the view's full lifetime (e.g. to split it between
    /// threads with `split_at_mut` / `chunks_mut`).
    pub fn into_slice(self) -> &'a mut [T] {
        self.slice
    }
}

impl<T: Pod> Deref for ViewMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T: Pod> DerefMut for ViewMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
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
        let want = if opts.zero_copy {
            uffd::FEATURE_MOVE
        } else {
            0
        };
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
            wakeup,
            stop,
            shutdown: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            st: Mutex::new(State::default()),
            idle: Condvar::new(),
            budget,
            readahead: opts.readahead && opts.readahead_window > 0,
            ra_window,
            ra_queue: Mutex::new(VecDeque::new()),
            pagemap: if opts.zero_page_holes {
                Pagemap::open()
            } else {
                None
            },
            zeros: Mutex::new(None),
            counters: Counters::default(),
            spurious: Mutex::new(None),
            move_pm,
            writers: AtomicBool::new(false),
            move_gate: RwLock::new(()),
            recycled: Mutex::new(Recycled::default()),
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

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let c = &self.sh.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            faults: l(&c.faults),
            loads: l(&c.loads),
            readahead_loads: l(&c.readahead_loads),
            marker_hits: l(&c.marker_hits),
            evictions: l(&c.evictions),
            load_failures: l(&c.load_failures),
            moved_loads: l(&c.moved_loads),
            recycled: l(&c.recycled),
        }
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
        // `&self`: no mutable view is alive, loads may move pages again.
        if self.sh.writers.load(Ordering::Relaxed) {
            self.sh.writers.store(false, Ordering::Relaxed);
        }
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
        if self.sh.move_pm.is_some() && !self.sh.writers.load(Ordering::Relaxed) {
            // Wait for moves being write-protected (read-ahead may run),
            // then make later loads copy.
            let _gate = self.sh.move_gate.write();
            self.sh.writers.store(true, Ordering::Relaxed);
        }
        Ok(ViewMut {
            // SAFETY: `check` tested bounds and alignment; `&mut self`
            // guarantees that no other view of the mapping exists.
            slice: unsafe { self.sh.map.slice_mut(off, count) },
            offset,
        })
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
        st.dirty.iter().copied().collect()
    }

    /// Blocks whose load failed (and are poisoned), with their errors.
    pub fn load_errors(&self) -> Vec<(u64, SharedError)> {
        let st = self.sh.st.lock();
        st.errors.iter().map(|(b, e)| (*b, e.clone())).collect()
    }

    /// Number of blocks resident now (clean, dirty or holes).
    pub fn resident_blocks(&self) -> usize {
        let st = self.sh.st.lock();
        st.blocks
            .values()
            .filter(|b| matches!(b, Block::Clean { .. } | Block::Dirty))
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

    /// Load blocks `blocks` (block numbers) that are not resident, on the
    /// calling thread, write-protected. Blocks that failed before are retried.
    /// Returns the first load error as a value (the failed block is also
    /// poisoned and recorded, as for a fault).
    pub fn prefetch(&self, blocks: Range<u64>) -> Result<()> {
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
                        st.blocks.insert(
                            blk,
                            Block::Loading {
                                demanded: false,
                                write: false,
                            },
                        );
                        st.busy += 1;
                        Some(false)
                    }
                    Some(Block::Poisoned) => {
                        st.blocks.insert(
                            blk,
                            Block::Loading {
                                demanded: false,
                                write: false,
                            },
                        );
                        st.errors.remove(&blk);
                        st.busy += 1;
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
            if let Err(e) = sh.load_and_map(blk, None, &mut staging)
                && first_err.is_none()
            {
                first_err = Some(e);
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
                    let (off, len) = sh.block_range(blk);
                    sh.uffd
                        .writeprotect(sh.map.addr() + off, len, true, false)
                        .map_err(|source| Error::Os {
                            op: "UFFDIO_WRITEPROTECT",
                            source,
                        })?;
                    let tick = st.next_tick();
                    st.blocks.insert(
                        blk,
                        Block::Clean {
                            tick,
                            hole: false,
                            marker: None,
                        },
                    );
                    st.lru.insert(tick, blk);
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
        let dirty: Vec<u64> = st.dirty.iter().copied().collect();
        vtrace!("T discard dirty {dirty:?}");
        let mut r = Ok(());
        for blk in dirty {
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
            // SAFETY: a block's range; `&mut self`: no view is alive.
            unsafe { sh.map.dontneed(off, len) }.map_err(|source| Error::Os {
                op: "madvise(MADV_DONTNEED)",
                source,
            })?;
            let Some(b) = st.blocks.get(&blk) else {
                return Ok(());
            };
            if let Block::Clean { tick, hole, .. } = b {
                let (tick, hole) = (*tick, *hole);
                st.lru.remove(&tick);
                if !hole {
                    sh.budget.sub(sh.bs as u64);
                }
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

impl Drop for FileH {
    fn drop(&mut self) {
        let sh = &*self.sh;
        sh.shutdown.store(true, Ordering::SeqCst);
        let _ = sh.stop.write(1);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Return the budget held by clean blocks (the mapping goes with `sh`).
        let st = sh.st.lock();
        let clean = st
            .blocks
            .values()
            .filter(|b| matches!(b, Block::Clean { hole: false, .. }))
            .count() as u64;
        sh.budget.sub(clean * sh.bs as u64);
    }
}

impl Shared {
    fn block_range(&self, blk: u64) -> (usize, usize) {
        (blk as usize * self.bs, self.bs)
    }

    fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Os { op, source }
    }

    /// Stop read-ahead and wait until no block is being loaded or evicted.
    /// The caller must clear `paused` when done.
    ///
    /// Also waits until no handler thread holds a fault message it has read
    /// but not yet served: with `&mut FileH` no access is running, so any such
    /// message is stale, and serving it after (say) MARKSTORED could dirty a
    /// block that was not written since.
    fn quiesce(&self) -> parking_lot::MutexGuard<'_, State> {
        self.ra_queue.lock().clear();
        {
            let mut st = self.st.lock();
            st.paused = true;
            st.streams.clear();
        }
        loop {
            while self.in_flight.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            let mut st = self.st.lock();
            while st.busy > 0 {
                self.idle.wait(&mut st);
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return st;
            }
        }
    }

    fn handler_loop(&self, ra_worker: bool) {
        let mut staging: Option<Staging> = None;
        // One message per read: a message read is served at once, and the
        // other handler threads take the next ones in parallel.
        let mut msgs = [Msg::default(); 1];
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                return;
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let r = self.uffd.read_msgs(&mut msgs);
            if let Ok(n) = r {
                for m in &msgs[..n] {
                    self.handle_fault(m, &mut staging);
                }
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if matches!(r, Ok(1..)) {
                self.refill_staging(&mut staging);
            }
            match r {
                Ok(0) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!("virtmem: reading userfaultfd of {}: {e}", self.name);
                }
            }
            if ra_worker && self.wakeup.read().is_ok() {
                let job = self.ra_queue.lock().pop_front();
                if let Some((blk, dir)) = job {
                    self.readahead(blk, dir, &mut staging);
                    self.refill_staging(&mut staging);
                }
                continue;
            }
            let mut fds = [
                PollFd::new(self.uffd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wakeup.as_fd(), PollFlags::POLLIN),
            ];
            // The fault-only thread does not take read-ahead jobs.
            let watch = if ra_worker { 3 } else { 2 };
            if let Err(e) = poll(&mut fds[..watch], PollTimeout::NONE)
                && e != nix::errno::Errno::EINTR
            {
                tracing::error!("virtmem: poll on userfaultfd of {}: {e}", self.name);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// Note an access to `blk` seen by the engine (a demand fault or a
    /// read-ahead marker) for sequential detection; returns the read-ahead
    /// jobs to queue.
    ///
    /// Up to [`STREAMS`] streams are tracked, so several threads scanning
    /// different parts of a handle each get read-ahead. An access continues a
    /// stream if it is the next block in the stream's direction, or (once the
    /// direction is known) lands within the read-ahead window past the
    /// stream's last access (blocks in between were read ahead and reached
    /// without faults).
    fn note_access(&self, st: &mut State, blk: u64) -> Option<(Range<u64>, i8)> {
        if !self.readahead || st.paused {
            return None;
        }
        let tick = st.next_tick();
        let w = self.ra_window;
        let mut found = None;
        for (i, s) in st.streams.iter().enumerate() {
            let l = s.last;
            let fwd = blk > l && (blk == l + 1 || (s.dir > 0 && blk - l <= w + 1));
            let bwd = blk < l && (blk + 1 == l || (s.dir < 0 && l - blk <= w + 1));
            if blk == l {
                found = Some((i, 0));
                break;
            }
            if (fwd && s.dir >= 0) || (bwd && s.dir <= 0) {
                found = Some((i, if fwd { 1 } else { -1 }));
                break;
            }
        }
        let Some((i, dir)) = found else {
            let new = Seq {
                last: blk,
                dir: 0,
                next: None,
                used: tick,
            };
            if st.streams.len() < STREAMS {
                st.streams.push(new);
            } else if let Some(old) = st.streams.iter_mut().min_by_key(|s| s.used) {
                *old = new;
            }
            return None;
        };
        let nblocks = self.nblocks;
        let s = &mut st.streams[i];
        s.used = tick;
        if dir == 0 {
            return None;
        }
        s.last = blk;
        s.dir = dir;
        if dir > 0 {
            let from = s.next.unwrap_or(blk + 1).max(blk + 1);
            let to = (blk + 1 + w).min(nblocks);
            if from >= to {
                return None;
            }
            s.next = Some(to);
            Some((from..to, 1))
        } else {
            let top = s.next.unwrap_or(blk).min(blk); // exclusive upper bound
            let low = blk.saturating_sub(w);
            if low >= top {
                return None;
            }
            s.next = Some(low);
            Some((low..top, -1))
        }
    }

    fn queue_readahead(&self, jobs: Range<u64>, dir: i8) {
        let n = jobs.end - jobs.start;
        {
            let mut q = self.ra_queue.lock();
            if dir > 0 {
                q.extend(jobs.map(|b| (b, 1)));
            } else {
                q.extend(jobs.rev().map(|b| (b, -1)));
            }
        }
        let _ = self.wakeup.write(n);
    }

    fn handle_fault(&self, m: &Msg, staging: &mut Option<Staging>) {
        if m.event != uffd::EVENT_PAGEFAULT {
            return;
        }
        inc(&self.counters.faults);
        let addr = m.address as usize & !(PAGE - 1);
        let base = self.map.addr();
        if addr < base || addr >= base + self.map.len() {
            return;
        }
        let off = addr - base;
        let blk = (off / self.bs) as u64;
        let write = m.flags & uffd::PAGEFAULT_FLAG_WRITE != 0;
        let wp = m.flags & uffd::PAGEFAULT_FLAG_WP != 0;
        let mut ra = None;
        let action = {
            let mut st = self.st.lock();
            let st = &mut *st;
            vtrace!(
                "T fault blk {blk} page {} write {write} wp {wp} state {}",
                (off % self.bs) / PAGE,
                st.blocks.get(&blk).map_or("absent", Block::name)
            );
            match st.blocks.get_mut(&blk) {
                // Missing-page faults never mark a block dirty, even when the
                // access was a write: the kernel queues a fault message before
                // it re-checks the page, so a message can be stale (from a
                // write already served in an earlier residency). A real write
                // to the freshly loaded, write-protected block raises a
                // write-protect fault, and only those make blocks dirty.
                None => {
                    if wp {
                        Action::Wake(addr)
                    } else {
                        st.blocks.insert(
                            blk,
                            Block::Loading {
                                demanded: true,
                                write: false,
                            },
                        );
                        st.busy += 1;
                        ra = self.note_access(st, blk);
                        Action::Load
                    }
                }
                Some(Block::Loading { demanded, write: w }) => {
                    *demanded = true;
                    *w |= wp;
                    ra = self.note_access(st, blk);
                    Action::None
                }
                Some(Block::Evicting { demanded }) => {
                    *demanded = true;
                    Action::None
                }
                Some(Block::Clean { tick, hole, marker }) => {
                    if wp && *hole {
                        // Faults on the block wait while it is refilled.
                        st.blocks.insert(
                            blk,
                            Block::Loading {
                                demanded: true,
                                write: true,
                            },
                        );
                        st.busy += 1;
                        Action::RefillHole
                    } else if wp {
                        let (t, h, mk) = (*tick, *hole, marker.take());
                        st.lru.remove(&t);
                        if !h {
                            self.budget.sub(self.bs as u64);
                        }
                        st.blocks.insert(blk, Block::Dirty);
                        st.dirty.insert(blk);
                        if mk.is_some() {
                            ra = self.note_access(st, blk);
                        }
                        Action::MakeDirty(mk)
                    } else if let Some(mk) = marker.take() {
                        let t = *tick;
                        let nt = st.next_tick();
                        if let Some(Block::Clean { tick, .. }) = st.blocks.get_mut(&blk) {
                            *tick = nt;
                        }
                        if st.lru.remove(&t).is_some() {
                            st.lru.insert(nt, blk);
                        }
                        ra = self.note_access(st, blk);
                        // Installed under the state lock, so an eviction
                        // cannot drop the block in between and leave a
                        // stray page behind.
                        inc(&self.counters.marker_hits);
                        let ba = base + blk as usize * self.bs;
                        match self.fill_marker(ba, &mk, true) {
                            Ok(()) => Action::None,
                            Err(e) => {
                                eprintln!("virtmem: installing a marker page of block {blk}: {e}");
                                Action::Poison(addr)
                            }
                        }
                    } else {
                        Action::Wake(addr)
                    }
                }
                Some(Block::Dirty) => Action::Wake(addr),
                Some(Block::Poisoned) => {
                    if wp {
                        Action::Wake(addr)
                    } else {
                        Action::Poison(addr)
                    }
                }
            }
        };
        if let Some((jobs, dir)) = ra {
            self.queue_readahead(jobs, dir);
        }
        let block_addr = base + blk as usize * self.bs;
        let r = match action {
            Action::None => Ok(()),
            Action::Wake(a) if !wp && self.spinning(a) => {
                eprintln!(
                    "virtmem: internal error: page {a:#x} of block {blk} of {} keeps faulting \
                     although its block is resident; the access gets SIGBUS",
                    self.name
                );
                tracing::error!(blk, file = %self.name, "page keeps faulting; poisoned");
                self.uffd.poison(a, PAGE, PAGE)
            }
            Action::Wake(a) => self.uffd.wake(a, PAGE),
            Action::Poison(a) => self.uffd.poison(a, PAGE, PAGE),
            Action::Load => {
                inc(&self.counters.loads);
                // Errors are recorded, logged and poisoned inside.
                let _ = self.load_and_map(blk, None, staging);
                Ok(())
            }
            Action::MakeDirty(mk) => {
                let r = match &mk {
                    Some(mk) => self.fill_marker(block_addr, mk, false),
                    None => Ok(()),
                };
                r.and_then(|()| self.uffd.writeprotect(block_addr, self.bs, false, true))
            }
            Action::RefillHole => self.refill_hole(blk, block_addr),
        };
        if let Err(e) = r {
            // The waiting thread would hang: there is nothing sane left to do
            // for this access but to make it fail loudly.
            eprintln!(
                "virtmem: serving a fault at block {blk} of {} failed: {e}; the access gets SIGBUS",
                self.name
            );
            tracing::error!(blk, file = %self.name, "serving a fault failed: {e}");
            let _ = self.uffd.poison(addr, PAGE, PAGE);
        }
    }

    /// Replace the zero pages of clean hole `blk` (state Loading, owned by the
    /// caller) by writable zeroed pages, mark it dirty and wake the waiters.
    fn refill_hole(&self, blk: u64, addr: usize) -> std::io::Result<()> {
        let (off, len) = self.block_range(blk);
        // The block is write-protected zero pages: dropping them loses nothing.
        // SAFETY: the block's range, Loading under this thread: accesses
        // wait, and then see zeros as before.
        let r = unsafe { self.map.dontneed(off, len) }.and_then(|()| {
            let mut z = self.zeros.lock();
            if z.is_none() {
                // Never written: reads of it hit the shared zero page, a
                // cache-friendly copy source.
                *z = Some(Staging::new(len)?);
            }
            match z.as_ref() {
                Some(zb) => self.copy_all(addr, zb.as_slice(), false),
                None => Ok(()),
            }
        });
        let mut st = self.st.lock();
        st.busy -= 1;
        self.idle.notify_all();
        st.blocks.insert(blk, Block::Dirty);
        st.dirty.insert(blk);
        drop(st);
        // On error the waiters refault and get a poisoned page (see the caller).
        r.and_then(|()| self.uffd.wake(addr, len))
    }

    /// True if missing faults at `addr` have been answered with bare wakes
    /// back to back (less than 10 ms apart) for more than a second.
    fn spinning(&self, addr: usize) -> bool {
        let mut g = self.spurious.lock();
        let now = std::time::Instant::now();
        match &mut *g {
            Some((a, since, last)) if *a == addr && now.duration_since(*last).as_millis() < 10 => {
                *last = now;
                now.duration_since(*since).as_secs() >= 1
            }
            _ => {
                *g = Some((addr, now, now));
                false
            }
        }
    }

    fn fill_marker(&self, block_addr: usize, mk: &Marker, wp: bool) -> std::io::Result<()> {
        let a = block_addr + mk.page * PAGE;
        match self.uffd.copy(a, &mk.data, wp, true)? {
            Fill::Done => Ok(()),
            Fill::Exists(_) => self.uffd.wake(a, PAGE),
        }
    }

    /// Copy `src` to `dst` without waking, skipping pages that already exist.
    fn copy_all(&self, dst: usize, src: &[u8], wp: bool) -> std::io::Result<()> {
        let mut off = 0;
        while off < src.len() {
            match self.uffd.copy(dst + off, &src[off..], wp, false)? {
                Fill::Done => return Ok(()),
                Fill::Exists(n) => off += n + PAGE,
            }
        }
        Ok(())
    }

    fn readahead(&self, blk: u64, dir: i8, staging: &mut Option<Staging>) {
        {
            let mut st = self.st.lock();
            vtrace!(
                "T readahead blk {blk} paused {} state {}",
                st.paused,
                st.blocks.get(&blk).map_or("absent", Block::name)
            );
            if st.paused || st.blocks.contains_key(&blk) || self.shutdown.load(Ordering::Relaxed) {
                return;
            }
            st.blocks.insert(
                blk,
                Block::Loading {
                    demanded: false,
                    write: false,
                },
            );
            st.busy += 1;
        }
        inc(&self.counters.readahead_loads);
        let _ = self.load_and_map(blk, Some(dir), staging);
    }

    /// Undo a Loading state without mapping anything (used on early errors).
    fn finish_failed_raw(&self, blk: u64) {
        let mut st = self.st.lock();
        st.blocks.remove(&blk);
        st.busy -= 1;
        self.idle.notify_all();
    }

    /// Load block `blk` (state Loading, owned by the caller) and map it.
    /// `write`: the fault was a write (map writable and dirty). `ra`: a
    /// read-ahead load in direction `dir` (hold back a marker page).
    fn load_and_map(&self, blk: u64, ra: Option<i8>, staging: &mut Option<Staging>) -> Result<()> {
        let (off, len) = self.block_range(blk);
        let addr = self.map.addr() + off;
        let r = self.load_into_place(blk, addr, len, ra, staging);
        let (hole, marker, written) = match r {
            Ok(x) => x,
            Err(e) => {
                let msg = e.to_string();
                eprintln!("virtmem: {msg}; the faulting access gets SIGBUS");
                tracing::error!(blk, file = %self.name, "{msg}; the faulting access gets SIGBUS");
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
                st.blocks.insert(blk, Block::Dirty);
                st.dirty.insert(blk);
                Action::MakeDirty(marker)
            } else {
                let tick = st.next_tick();
                let (marker, post) = match marker {
                    // Someone waits: install the marker now (under the lock,
                    // see handle_fault).
                    Some(mk) if demanded => match self.fill_marker(addr, &mk, true) {
                        Ok(()) => (None, Action::None),
                        Err(e) => {
                            eprintln!("virtmem: installing a marker page of block {blk}: {e}");
                            (Some(mk), Action::None)
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
            Action::MakeDirty(mk) => {
                let r = match &mk {
                    Some(mk) => self.fill_marker(addr, mk, false),
                    None => Ok(()),
                };
                r.and_then(|()| self.uffd.writeprotect(addr, len, false, true))
            }
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
    fn load_into_place(
        &self,
        blk: u64,
        addr: usize,
        len: usize,
        ra: Option<i8>,
        staging: &mut Option<Staging>,
    ) -> Result<(bool, Option<Marker>, bool)> {
        // An evicted block's pages, if some are kept: load into them.
        let pooled = if self.zero_copy_on() {
            self.recycled.lock().full.pop()
        } else {
            None
        };
        if let Some(mut b) = pooled {
            let r = self.load_with(blk, addr, len, ra, &mut b, true);
            let mut pool = self.recycled.lock();
            if b.moved_out {
                pool.empty.push(b);
            } else {
                pool.full.push(b);
            }
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
        // Zero-copy install: the buffer must consist of fresh huge pages
        // (its previous pages were moved away); populating them first also
        // makes every page present whatever the loader writes.
        let movable = match &self.move_pm {
            Some(pm) if self.zero_copy_on() => {
                let huge = buf.populate().and_then(|()| pm.all_huge(buf.addr(), len));
                if matches!(huge, Ok(true)) {
                    self.counters.thp_misses.store(0, Ordering::Relaxed);
                } else {
                    // No huge page (fragmented memory, or the last move had
                    // to split it): copy, try a new buffer next time, give
                    // up after many misses in a row.
                    inc(&self.counters.thp_misses);
                    buf.small_pages = true;
                    vtrace!("T staging without huge pages: {huge:?}");
                }
                matches!(huge, Ok(true))
            }
            _ => false,
        };
        self.load_with(blk, addr, len, ra, buf, movable)
    }

    /// Load block `blk` into `buf` and install it at `addr` (moving the
    /// pages if `movable`, i.e. every page of `buf` is present).
    fn load_with(
        &self,
        blk: u64,
        addr: usize,
        len: usize,
        ra: Option<i8>,
        buf: &mut Staging,
        movable: bool,
    ) -> Result<(bool, Option<Marker>, bool)> {
        let loaded = self
            .file
            .load_block(blk, buf.as_mut_slice())
            .map_err(|e| Error::Load {
                blk,
                file: self.name.clone(),
                source: SharedError(Arc::from(e)),
            })?;
        match loaded {
            Loaded::Hole => {
                let Some(pm) = &self.pagemap else {
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
                let data = buf.as_slice();
                let stride = (self.ra_window / 2).max(1);
                let marker = ra.filter(|_| blk.is_multiple_of(stride)).map(|dir| {
                    let page = if dir >= 0 { 0 } else { len / PAGE - 1 };
                    let mo = page * PAGE;
                    Marker {
                        page,
                        data: data[mo..mo + PAGE].into(),
                    }
                });
                if movable && self.move_into_place(addr, buf, marker.as_ref())? {
                    inc(&self.counters.moved_loads);
                    return Ok((false, marker, false));
                }
                let data = buf.as_slice();
                let Some(marker) = marker else {
                    self.copy_all(addr, data, true)
                        .map_err(Self::os("UFFDIO_COPY"))?;
                    return Ok((false, None, false));
                };
                let (page, mo) = (marker.page, marker.page * PAGE);
                if page == 0 {
                    self.copy_all(addr + PAGE, &data[PAGE..], true)
                } else {
                    self.copy_all(addr, &data[..mo], true)
                }
                .map_err(Self::os("UFFDIO_COPY"))?;
                Ok((false, Some(marker), false))
            }
        }
    }

    /// After a zero-copy load the staging buffer has no pages left: give it
    /// fresh (zeroed) ones now, while the woken accesses run, rather than on
    /// the next load, which may be a demand fault someone waits for. (A
    /// no-op walk when the buffer still has its pages.)
    fn refill_staging(&self, staging: &mut Option<Staging>) {
        if self.zero_copy_on()
            && let Some(b) = staging.as_mut()
            && !b.small_pages
        {
            let _ = b.populate();
        }
    }

    /// Loads move pages (not given up after repeated misses).
    fn zero_copy_on(&self) -> bool {
        self.move_pm.is_some()
            && self.counters.thp_misses.load(Ordering::Relaxed) < MAX_MOVE_MISSES
            && self.counters.move_errors.load(Ordering::Relaxed) < MAX_MOVE_MISSES
    }

    /// Install the loaded block in `buf` at `addr` by moving its (huge)
    /// pages, write-protected, without waking; the marker page, if any, is
    /// dropped again to be installed on the reader's first touch. Returns
    /// false (nothing done) when a mutable view may exist: then the caller
    /// copies. A partial move is completed by copying the rest.
    fn move_into_place(
        &self,
        addr: usize,
        buf: &mut Staging,
        marker: Option<&Marker>,
    ) -> Result<bool> {
        let len = buf.as_slice().len();
        let _gate = self.move_gate.read();
        if self.writers.load(Ordering::Relaxed) {
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
                inc(&self.counters.move_errors);
            }
            self.copy_all(addr + moved, &buf.as_slice()[moved..], true)
                .map_err(Self::os("UFFDIO_COPY"))?;
        }
        if moved > 0 {
            self.uffd
                .writeprotect(addr, moved, true, false)
                .map_err(Self::os("UFFDIO_WRITEPROTECT"))?;
        }
        if let Some(mk) = marker {
            // The block is clean and its waiters still sleep: dropping the
            // page loses nothing (the marker holds its bytes).
            let off = addr - self.map.addr() + mk.page * PAGE;
            // SAFETY: a page of the block, whose waiters still sleep and
            // whose next access is served the marker's identical bytes.
            unsafe { self.map.dontneed(off, PAGE) }
                .map_err(Self::os("madvise(MADV_DONTNEED) of a marker page"))?;
        }
        Ok(true)
    }

    /// Evict the block at `addr` by moving its pages into a recycling
    /// buffer (see [`Recycled`]). False if not done (zero-copy off, no free
    /// buffer, or the block is not made of whole huge pages, e.g. a marker
    /// page was installed): then the caller drops the block's pages, which
    /// also removes any page moved before the move stopped.
    fn recycle(&self, addr: usize, len: usize) -> bool {
        let Some(pm) = self.move_pm.as_ref().filter(|_| self.zero_copy_on()) else {
            return false;
        };
        if !matches!(pm.all_huge(addr, len), Ok(true)) {
            return false;
        }
        let mut b = {
            let mut pool = self.recycled.lock();
            if pool.full.len() >= RECYCLED_BUFFERS {
                return false;
            }
            match pool.empty.pop() {
                Some(b) => b,
                None if pool.created < RECYCLED_BUFFERS => {
                    let Ok(b) = Staging::new(len) else {
                        return false;
                    };
                    // SAFETY: a fresh buffer owned by the pool: registered
                    // for write-protection only, never filled, only moved
                    // into while borrowed exclusively and emptied.
                    if unsafe { self.uffd.register(b.addr(), len, uffd::REGISTER_MODE_WP) }.is_err()
                    {
                        return false;
                    }
                    pool.created += 1;
                    b
                }
                None => return false,
            }
        };
        // Empty, page table freed: the block's huge page moves in whole.
        let ok = b.clear().is_ok() && {
            // SAFETY: `b` is borrowed exclusively and was just emptied; the
            // source is a clean block being evicted (Evicting: accesses wait,
            // then reload the same bytes).
            let (moved, why) = unsafe { self.uffd.move_pages(b.addr(), addr, len) };
            if let Some(e) = &why {
                vtrace!("T recycling: UFFDIO_MOVE stopped after {moved} of {len} bytes: {e}");
            }
            moved == len
        };
        b.moved_out = !ok;
        let mut pool = self.recycled.lock();
        if ok {
            inc(&self.counters.recycled);
            pool.full.push(b);
        } else {
            pool.empty.push(b);
        }
        ok
    }

    /// Drop least recently faulted clean blocks while the budget is exceeded.
    fn evict_over_budget(&self) {
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
                let tick = st.next_tick();
                st.blocks.insert(
                    victim,
                    Block::Clean {
                        tick,
                        hole: false,
                        marker: None,
                    },
                );
                st.lru.insert(tick, victim);
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
