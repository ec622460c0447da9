//! userfaultfd-based virtual memory: lazily loaded, dirty-tracked mappings of
//! block files under a RAM budget.
//!
//! # Model
//!
//! A [`BigFile`] is a sequence of fixed-size blocks that can be loaded and
//! stored (an in-memory [`MemBigFile`], a plain OS file [`FileBigFile`], or the
//! database-backed ZBigFile of the `bigfile` crate). Opening a [`FileH`] on it
//! reserves **one anonymous private mapping** for the whole file
//! (`MAP_NORESERVE`, 1 TiB of address space by default) and registers it once
//! with a userfaultfd for *missing* and *write-protect* faults. Every view of
//! the handle ([`FileH::bytes`], [`FileH::view`], their `_mut` forms) is a
//! sub-slice of that mapping, so overlapping views are coherent by
//! construction.
//!
//! Nothing is read at open. The first touch of a page of block `blk` raises a
//! fault that one of the handle's handler threads serves: it loads the block
//! into a private staging buffer with [`BigFile::load_block`] and installs the
//! whole block write-protected, then wakes the faulting threads (two faults
//! on one block load it once). Blocks that are multiples of 2 MiB are
//! installed without a second copy when the kernel allows it
//! (`UFFDIO_MOVE`, Linux >= 6.8, see [`Options::zero_copy`]): the staging
//! buffer is fresh huge pages that are moved into place, then
//! write-protected. Otherwise one `UFFDIO_COPY` with write protection copies
//! the block in. The first write
//! to a clean block raises a write-protect fault: the block is marked dirty
//! and the protection is lifted for the whole block. A first touch that is a
//! write loads the block like a read and the write then raises that
//! write-protect fault (one extra round trip of a few microseconds per block):
//! only write-protect faults make blocks dirty, because a missing-page fault
//! message can be stale (the kernel queues it before re-checking the page),
//! and inferring a write from a stale one would dirty a block that was not
//! written in its current residency. Blocks the file reports
//! as holes are mapped with the shared zero page (`UFFDIO_ZEROPAGE`) and cost
//! no memory until written.
//!
//! [`FileH::writeout`] with [`Writeout::STORE`] passes every dirty block to
//! [`BigFile::store_block`] in ascending block order; [`Writeout::MARKSTORED`]
//! makes them clean and write-protected again. [`FileH::discard`] drops all
//! dirty blocks (the next touch reloads them), [`FileH::invalidate`] drops one
//! block whatever its state. These operations take `&mut FileH`, so no view can
//! observe memory changing under it.
//!
//! Clean loaded blocks are accounted against a [`Budget`] (a process-wide one
//! by default, see [`set_process_budget`]; or one per handle): when they
//! exceed it, the least recently faulted ones are dropped with
//! `MADV_DONTNEED` and fault in again on next touch. Dirty blocks are never
//! dropped. When faults walk a handle sequentially (forward or backward), idle
//! handler threads load a bounded window of blocks ahead of the reader; one
//! read-ahead block in half a window keeps its first page (in scan
//! direction), or in zero-copy mode the whole block, back as a *marker*
//! that is installed on the reader's first touch, which tells the engine
//! the reader arrived and keeps the window moving.
//!
//! A block that fails to load never reads as zeros: the error is recorded on
//! the handle ([`FileH::load_errors`]), a line is logged, and the faulting
//! access gets `SIGBUS` (`UFFDIO_POISON`). Callers that want such errors as
//! values call [`FileH::prefetch`] before touching memory.
//!
//! # Threads
//!
//! Each handle owns its userfaultfd and its handler threads (default: the
//! number of CPUs, at least two, plus one). All of them read fault messages
//! from the same fd, so parallel readers fault in parallel; all but one also
//! run read-ahead jobs, so one thread is always free to serve a fault instead
//! of waiting behind a read-ahead load. Jobs that map blocks from a cold
//! file read it one after another in file order (`fileh/read_order.rs`):
//! several threads touching neighbouring blocks at once look to the
//! kernel's read-ahead like interleaved streams, and its disk requests
//! shrink from 4 MiB to 1 MiB and less.
//!
//! Per-handle rather than process-shared threads, because of a measurement
//! (bench row `virtmem open+close handle`): opening and closing a handle with
//! its three threads costs about 0.2 ms, less than one cold 2 MiB block fault
//! (about 1 ms), so sharing would save nothing that matters, while it would
//! need an epoll dispatch across many fds and would let one file's slow loads
//! (a database fetch) delay the faults of every other handle.
//!
//! A fault handler never takes a lock that a user thread holds while touching
//! mapped memory (the handle's state lock is only held for bookkeeping, never
//! across I/O or a fault), and never reads into memory that can raise a
//! userfault: loads go to a per-thread staging buffer (or, in zero-copy mode,
//! to a buffer holding an evicted block's pages, registered for
//! write-protection only and never protected), then the block is moved or
//! copied into place.
//!
//! # Zero-copy loads
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
//! multiples of 2 MiB, or when transparent huge pages are disabled, every
//! load copies.
//!
//! Holes are mapped with the zero page and then write-protected; as the kernel
//! cannot do both at once, `PAGEMAP_SCAN` (Linux >= 6.7) checks that no thread
//! wrote a page in between (if one did, the block is dirty). Without
//! `PAGEMAP_SCAN`, holes are mapped as zero-filled data.
//!
//! # Requirements
//!
//! Linux x86-64 >= 6.6 (write-protect faults on anonymous memory, poison), and
//! permission to create a userfaultfd for user-mode faults: root, or
//! `sysctl vm.unprivileged_userfaultfd=1`, or `CAP_SYS_PTRACE`, or access to
//! `/dev/userfaultfd`. [`FileH::open`] fails with [`Error::NotPermitted`]
//! saying so otherwise. The fd is created with `UFFD_USER_MODE_ONLY`: the
//! kernel does not resolve its own accesses to non-resident pages (a
//! `write(2)` *from* a view of blocks not yet loaded fails with `EFAULT`); call
//! [`FileH::prefetch`] first when handing views to system calls.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use virtmem::{FileH, MemBigFile, Options, Writeout};
//!
//! # fn main() -> Result<(), virtmem::Error> {
//! let file = Arc::new(MemBigFile::new(2 << 20));
//! let mut fh = FileH::open(file.clone(), Options::default())?;
//! {
//!     let mut v = fh.view_mut::<u64>(0, 1024)?;
//!     v[7] = 42;
//! }
//! assert_eq!(fh.dirty_blocks(), vec![0]);
//! fh.writeout(Writeout::STORE | Writeout::MARKSTORED)?;
//! assert_eq!(file.block(0).unwrap()[56], 42);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backends;
pub mod budget;
mod error;
mod fileh;
mod mapping;
mod uffd;

pub use backends::{FileBigFile, InjectedFailure, MemBigFile};
pub use budget::{Budget, SCAN_MARGIN, process_budget, set_process_budget};
pub use error::{BoxError, Error, Result, SharedError};
pub use fileh::{FileH, Options, Stats, View, ViewMut, Writeout};
pub use mapping::Pod;

/// What [`BigFile::load_block`] put in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The buffer holds the block's bytes.
    Data,
    /// The block is a hole (all zeros); the buffer content is unspecified.
    /// Holes are mapped with the shared zero page and cost no memory until
    /// written.
    Hole,
}

/// A block's bytes as a range of a file (see [`BigFile::map_block`]).
pub trait MappableBlock: Send {
    /// The file (`None`: not mappable after all; the block is loaded).
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>>;
    /// Offset of the block's first byte in the file (a multiple of 4096).
    fn offset(&self) -> u64;
}

/// A file of fixed-size blocks that a [`FileH`] maps.
///
/// Methods are called from the handle's handler threads (and from the caller's
/// thread for [`FileH::prefetch`] and [`FileH::writeout`]), concurrently for
/// different blocks.
pub trait BigFile: Send + Sync + 'static {
    /// Block size in bytes: a non-zero multiple of 4096, fixed for the file.
    fn block_size(&self) -> usize;

    /// Fill `buf` (exactly one block) with block `blk`, or report a hole.
    ///
    /// An error becomes `SIGBUS` for the faulting access (and an error value
    /// for [`FileH::prefetch`]); it is never turned into zeros.
    fn load_block(&self, blk: u64, buf: &mut [u8]) -> Result<Loaded, BoxError>;

    /// Store `data` (exactly one block) as the new content of block `blk`.
    fn store_block(&self, blk: u64, data: &[u8]) -> Result<(), BoxError>;

    /// Where block `blk`'s bytes lie in a file the engine may map read-only
    /// into the handle's mapping instead of loading them (no copy at all:
    /// the page cache's own pages, like a plain `mmap`). `Ok(None)` (the
    /// default): load it with [`Self::load_block`].
    ///
    /// The range must be exactly one block at a page-aligned offset, hold
    /// what `load_block` would give, and never change while the handle may
    /// map it (e.g. an append-only file's committed records). Asked only
    /// while no mutable view exists and [`Options::map_files`] is on.
    fn map_block(&self, blk: u64) -> Result<Option<Box<dyn MappableBlock>>, BoxError> {
        let _ = blk;
        Ok(None)
    }

    /// A name for log lines and errors.
    fn name(&self) -> String {
        "bigfile".into()
    }
}
