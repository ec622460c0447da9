//! The block state machine: what the engine knows about each block of a
//! handle, kept under one lock ([`State`]) that is held for bookkeeping only,
//! never across I/O or a fault.
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
//!  Loading --mapped from the file--> Mapped --over budget/behind a scan--> Mapped (pages dropped)
//!  Mapped --invalidate / a mutable view--> absent (anonymous memory, registered again)
//!  Loading --mapped read-write--> MappedRw --written (scan)--> MappedRw + dirty
//!  MappedRw + dirty --MARKSTORED--> absent;  --discard--> MappedRw (copies dropped)
//!  MappedRw --invalidate--> absent
//! ```
//!
//! Invariants: a Clean or Dirty block has all its pages present except a
//! Clean block's held-back read-ahead marker (one page, or every page when
//! the block is held back whole, see [`Marker`]); a Dirty block is fully
//! present and writable, so writeout reads it without faulting. State
//! changes are made under the state lock *before* the waiting accesses are
//! woken, so an access that returned is already accounted (e.g. dirty).
//!
//! Loading and Evicting are *busy* states owned by one thread (which does
//! the I/O with the lock released); [`State::busy`] counts them so that
//! exclusive operations can wait until none is in progress.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::SharedError;
use crate::mapping::Staging;

use super::readahead::Seq;

/// What a read-ahead block holds back until the reader first touches it
/// (that touch faults, and keeps the read-ahead window moving).
pub(super) enum Marker {
    /// The block's first page in scan direction (a copied block).
    Page {
        /// Page index in the block.
        page: usize,
        /// The page's bytes.
        data: Box<[u8]>,
    },
    /// The whole block, in the recycled buffer it was loaded into (a
    /// zero-copy load): its huge pages are moved in whole on the first
    /// touch. Holding back one page of a moved-in huge page would split
    /// it: the block would be copied in 4 KiB pages instead, and its pages
    /// could not be recycled whole when dropped (measured on the 2-core VM,
    /// scans with a 512 MiB budget: one block in four a page marker cost
    /// 550 ms of CPU per GiB, one in sixteen 390 ms).
    Block(Staging),
}

/// The state of one block present in [`State::blocks`].
pub(super) enum Block {
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
    /// Mapped read-only straight from the file that stores it (see
    /// `fileh/mapped.rs`); a file mapping, not watched by the userfaultfd.
    /// `tick`: accounted in the budget and in the LRU; `None` once its
    /// pages were dropped (it stays mapped: a touch reads the page cache
    /// again, unseen by the engine).
    Mapped { tick: Option<u64> },
    /// Mapped read-write (private) from its file (see
    /// `fileh/mapped_rw.rs`): accounted in the budget, never evicted (its
    /// pages cannot be dropped while a write may land); written when a
    /// page-table scan finds copied pages, then also in [`State::dirty`].
    MappedRw,
    /// Being dropped to respect the budget.
    Evicting { demanded: bool },
    /// Failed to load; its pages are poisoned.
    Poisoned,
}

impl Block {
    /// The state's name, for trace lines.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Block::Loading { write: true, .. } => "Loading(w)",
            Block::Loading { .. } => "Loading",
            Block::Clean {
                marker: Some(_), ..
            } => "Clean(marker)",
            Block::Clean { hole: true, .. } => "Clean(hole)",
            Block::Clean { .. } => "Clean",
            Block::Dirty => "Dirty",
            Block::Mapped { .. } => "Mapped",
            Block::MappedRw => "MappedRw",
            Block::Evicting { .. } => "Evicting",
            Block::Poisoned => "Poisoned",
        }
    }
}

/// The bookkeeping of a handle, under its state lock.
#[derive(Default)]
pub(super) struct State {
    /// Every block that is not absent.
    pub(super) blocks: HashMap<u64, Block>,
    /// tick -> blk for clean, non-hole blocks: eviction order.
    pub(super) lru: BTreeMap<u64, u64>,
    /// Logical clock for LRU order and stream use.
    pub(super) tick: u64,
    /// The Dirty blocks, ascending (writeout order).
    pub(super) dirty: BTreeSet<u64>,
    /// Blocks in Loading or Evicting state.
    pub(super) busy: usize,
    /// No read-ahead may start (an exclusive operation runs).
    pub(super) paused: bool,
    /// Why Poisoned blocks failed to load.
    pub(super) errors: BTreeMap<u64, SharedError>,
    /// Sequential streams seen (read-ahead).
    pub(super) streams: Vec<Seq>,
    /// Blocks loaded for a stream (by read-ahead, or by a fault that
    /// continued it) and not yet considered for drop-behind (a long stream
    /// drops those it left behind, see [`super::readahead`]).
    pub(super) stream_loaded: BTreeSet<u64>,
}

impl State {
    /// Advance the clock.
    pub(super) fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// -> Loading (a busy state), owned by the caller.
    pub(super) fn begin_load(&mut self, blk: u64, demanded: bool, write: bool) {
        self.blocks.insert(blk, Block::Loading { demanded, write });
        self.busy += 1;
    }

    /// -> Clean with a fresh tick, data (not a hole) without marker, in the
    /// LRU. The caller accounts the block in the budget.
    pub(super) fn insert_clean(&mut self, blk: u64) {
        let tick = self.next_tick();
        self.blocks.insert(
            blk,
            Block::Clean {
                tick,
                hole: false,
                marker: None,
            },
        );
        self.lru.insert(tick, blk);
    }

    /// -> Dirty.
    pub(super) fn insert_dirty(&mut self, blk: u64) {
        self.blocks.insert(blk, Block::Dirty);
        self.dirty.insert(blk);
    }
}
