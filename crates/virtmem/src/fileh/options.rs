//! What a handle is opened with ([`Options`]), what [`FileH::writeout`]
//! does ([`Writeout`]), and what it counts ([`Stats`]).
//!
//! The counters are atomics bumped by the handler threads without a lock
//! ([`Counters`]); [`FileH::stats`] reads a snapshot. They are monotonic since
//! open and only for observation: no decision of the engine reads them (the
//! zero-copy give-up counters live with the zero-copy state).
//!
//! [`FileH::writeout`]: super::FileH::writeout
//! [`FileH::stats`]: super::FileH::stats

use std::ops::BitOr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Options of [`FileH::open`](super::FileH::open).
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
    /// (Pages moved into blocks that are dirty at once, fresh zeros for a
    /// first-written hole or [`FileH::bytes_overwrite`]'s, need no write
    /// protection and are moved either way.) Default `true`.
    ///
    /// [`FileH::bytes_overwrite`]: super::FileH::bytes_overwrite
    pub zero_copy: bool,
    /// Map blocks the file can show in place ([`BigFile::map_block`])
    /// straight from their file, read-only, while no mutable view exists
    /// and zero-copy is on (see `fileh/mapped.rs`). Default `true`.
    ///
    /// [`BigFile::map_block`]: crate::BigFile::map_block
    pub map_files: bool,
    /// With [`Self::map_files`]: map blocks read-write (private), for
    /// handles whose memory is written through pointers the engine does not
    /// see (a Python binding's numpy arrays): a write copies the page, the
    /// copies are found by a page-table scan (`PAGEMAP_SCAN`, Linux >= 6.7;
    /// without it this is ignored), and such blocks stay mapped until a
    /// transaction boundary (see `fileh/mapped_rw.rs`). Zero-copy moves are
    /// not needed. Default `false`.
    pub map_files_writable: bool,
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
            map_files_writable: false,
            zero_copy: true,
            map_files: true,
        }
    }
}

/// What [`FileH::writeout`](super::FileH::writeout) does; combine with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writeout(u8);

impl Writeout {
    /// Store every dirty block with [`BigFile::store_block`](crate::BigFile::store_block), ascending.
    pub const STORE: Writeout = Writeout(1);
    /// Mark dirty blocks clean and write-protect them again.
    pub const MARKSTORED: Writeout = Writeout(2);

    pub(super) fn has(self, f: Writeout) -> bool {
        self.0 & f.0 != 0
    }
}

impl BitOr for Writeout {
    type Output = Writeout;
    fn bitor(self, o: Writeout) -> Writeout {
        Writeout(self.0 | o.0)
    }
}

/// Counters of a handle (monotonic since open), and what fresh memory
/// costs here.
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
    /// Clean blocks a scan dropped once done with them
    /// ([`FileH::drop_behind`](super::FileH::drop_behind), read-ahead streams).
    pub dropped_behind: u64,
    /// Blocks mapped straight from their file
    /// ([`BigFile::map_block`](crate::BigFile::map_block)).
    pub mapped_loads: u64,
    /// Loads read into fresh memory and copied in rather than moved,
    /// because fresh huge pages were slow here (see
    /// [`fresh_pages_ns_per_mib`](Self::fresh_pages_ns_per_mib)).
    pub copied_for_cost: u64,
    /// Stored blocks whose pages went to a first-written hole instead of
    /// staying resident (read-write file mappings; see `fileh/donors.rs`).
    pub donated: u64,
    /// First-written holes given a donated block's pages, zeroed.
    pub donor_zeros: u64,
    /// Blocks read ahead from a cold file in turn, one reader after
    /// another in file order (see `fileh/read_order.rs`).
    pub read_in_order: u64,
    /// Moving average, ns per MiB, of giving a staging buffer fresh huge
    /// pages after its pages were moved into place (0: not measured); over
    /// 250 µs per MiB, loads into fresh memory copy instead of moving.
    pub fresh_pages_ns_per_mib: u64,
}

/// The live counters behind [`Stats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) faults: AtomicU64,
    pub(super) loads: AtomicU64,
    pub(super) readahead_loads: AtomicU64,
    pub(super) marker_hits: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) load_failures: AtomicU64,
    pub(super) moved_loads: AtomicU64,
    pub(super) recycled: AtomicU64,
    pub(super) dropped_behind: AtomicU64,
    pub(super) mapped_loads: AtomicU64,
    pub(super) copied_for_cost: AtomicU64,
    pub(super) donated: AtomicU64,
    pub(super) donor_zeros: AtomicU64,
    pub(super) read_in_order: AtomicU64,
}

impl Counters {
    /// A snapshot of the counters.
    pub(super) fn snapshot(&self) -> Stats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            faults: l(&self.faults),
            loads: l(&self.loads),
            readahead_loads: l(&self.readahead_loads),
            marker_hits: l(&self.marker_hits),
            evictions: l(&self.evictions),
            load_failures: l(&self.load_failures),
            moved_loads: l(&self.moved_loads),
            recycled: l(&self.recycled),
            dropped_behind: l(&self.dropped_behind),
            mapped_loads: l(&self.mapped_loads),
            copied_for_cost: l(&self.copied_for_cost),
            donated: l(&self.donated),
            donor_zeros: l(&self.donor_zeros),
            read_in_order: l(&self.read_in_order),
            fresh_pages_ns_per_mib: 0,
        }
    }
}

/// Count one event.
pub(super) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
