//! Which way a block read into fresh memory is installed: moved in on
//! fresh huge pages, or copied in from the staging buffer; decided by what
//! fresh huge pages cost on this machine, measured as the handle runs.
//!
//! Loading a block that is not mapped from its file (ZBlk1, unaligned
//! ZBlk0, a handle without file mappings) reads it into a staging buffer.
//! Then either the buffer's pages are moved into place (`UFFDIO_MOVE`, a
//! few microseconds) and the buffer gets fresh huge pages for the next load
//! (`MADV_POPULATE_WRITE`: the kernel allocates and zeroes 2 MiB), or the
//! block is copied in (`UFFDIO_COPY`: 512 small pages allocated and filled
//! by the copy, never zeroed) and the buffer keeps its pages.
//!
//! Where memory is at hand, zeroing a huge page runs at memory speed
//! (about 100 µs per 2 MiB on the 2-core VM, 20 GB/s) and moving wins: the
//! virtmem bench's cold scan, which warms the memory it will reuse first,
//! ran 1.23-1.67x faster moving than copying on 2026-11-27. But on a VM
//! whose free memory goes back to the host, a fresh huge page is memory
//! the host must back again on first touch: 1-5 ms per 2 MiB measured
//! here, while small pages come from recently freed, still backed memory.
//! The mechanism on the 2-core VM is virtio-balloon free page reporting
//! (device feature bit 5, `page_reporting_order` 9): free 2 MiB blocks are
//! reported to the host, which discards them, about 2 s after they are
//! freed. Measured there (a C program populating 1 GiB, 2026-11-27): first
//! touch 1465 µs/MiB, again right after freeing it 118 µs/MiB, 5 s after
//! freeing 592 µs/MiB.
//! In that state copying read ZBlk1 at 0.82-1.11 GB/s against 0.56-0.84
//! moving, and loaded ZBlk0 at 1.4-2.6 against 0.7-1.0 GB/s
//! (`crates/bigfile/examples/readprof.rs`, interleaved runs, one word per
//! page or every word summed).
//!
//! So each handle keeps a moving average of what giving its staging buffer
//! fresh pages costs, per MiB, and moves while that stays under
//! [`SLOW_NS_PER_MIB`] (memory slower than 4 GB/s to zero is being backed
//! by the host); above it, it copies, moving one load in [`EXPLORE`] to
//! keep the measure current. Comparing that average with a moving average
//! of copy installs was tried first and measured worse: both costs are
//! mostly the host backing memory, and a copy's wall time swung from 0.6 to
//! 6.4 ms per block with the other thread's activity. (Once the budget is
//! nearly full, or a scan has dropped blocks behind it, moving is always
//! taken: the pages of the blocks that leave are recycled, with no fresh
//! memory at all; see `zero_copy.rs`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Fresh huge pages slower than this to populate (ns per MiB: 4 GB/s) are
/// being backed by a host: copy instead.
pub(super) const SLOW_NS_PER_MIB: u64 = 250_000;

/// While copying, one load in this many moves, to measure again.
const EXPLORE: u64 = 16;

/// The moving average (ns per MiB, weight 1/4 for a new sample; 0: not
/// measured yet) of giving a staging buffer fresh pages.
#[derive(Default)]
pub(super) struct InstallCost {
    fresh: AtomicU64,
    /// Decisions taken while copying.
    copies: AtomicU64,
}

impl InstallCost {
    /// A staging buffer of `len` bytes got fresh pages, in `d`.
    pub(super) fn note_fresh(&self, d: Duration, len: usize) {
        let mib = (len as u64 >> 20).max(1);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX) / mib;
        let ns = ns.max(1);
        let old = self.fresh.load(Ordering::Relaxed);
        let new = if old == 0 { ns } else { old - old / 4 + ns / 4 };
        self.fresh.store(new, Ordering::Relaxed);
    }

    /// Move the next block read into fresh memory (else copy it): fresh
    /// pages are cheap here, not measured yet, or it is the load in
    /// [`EXPLORE`] that measures them again.
    pub(super) fn prefer_move(&self) -> bool {
        let fresh = self.fresh.load(Ordering::Relaxed);
        if fresh < SLOW_NS_PER_MIB {
            return true;
        }
        self.copies.fetch_add(1, Ordering::Relaxed) % EXPLORE == EXPLORE - 1
    }

    /// The average, ns per MiB (0: not measured), for `FileH::stats`.
    pub(super) fn fresh_ns_per_mib(&self) -> u64 {
        self.fresh.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 2 << 20;

    #[test]
    fn slow_fresh_memory_makes_loads_copy_and_is_measured_again() {
        let c = InstallCost::default();
        assert!(c.prefer_move(), "nothing measured: move (and measure)");
        c.note_fresh(Duration::from_micros(120), BLOCK);
        assert_eq!(c.fresh_ns_per_mib(), 60_000);
        assert!((0..100).all(|_| c.prefer_move()), "cheap: always move");
        // The host must back fresh memory now: 3 ms per block.
        for _ in 0..12 {
            c.note_fresh(Duration::from_millis(3), BLOCK);
        }
        assert!(c.fresh_ns_per_mib() > SLOW_NS_PER_MIB);
        let moves = (0..EXPLORE * 4).filter(|_| c.prefer_move()).count();
        assert_eq!(
            moves as u64, 4,
            "copy, moving once per {EXPLORE} to measure"
        );
        // Memory is at hand again: the average follows within a few loads.
        for _ in 0..12 {
            c.note_fresh(Duration::from_micros(100), BLOCK);
        }
        assert!((0..100).all(|_| c.prefer_move()));
    }
}
