//! The cold scan's reader ahead: one thread reads the file in order, the
//! workers sum what it has read.
//!
//! # Model
//!
//! The scan's workers take blocks in file order from one cursor, so
//! together they read the file front to back; but two of them faulting in
//! neighbouring blocks at once look to the kernel's read-ahead like two
//! interleaved streams, and each one's misses restart it. Once a worker
//! meets a block that is not in the page cache, a reader-ahead thread
//! touches the stored blocks one page after another from that block on,
//! at most [`LEAD`] blocks past the workers' cursor; a worker then sums a
//! block only once the reader has been through it. The reader is the one
//! sequential reader the kernel's read-ahead is built for: the disk gets
//! the 4 MiB requests of large folios that a `numpy.memmap` scan gets (256
//! bios of 16 KiB folios and more, where 4 KiB folios cap a request at 1
//! MiB), and the workers find their pages cached.
//!
//! Measured on the 2-core VM's disk, a 28 GiB array (larger than RAM,
//! caches dropped), `wendelin stat --ram-budget 2GiB` against a cold
//! numpy.memmap sum of the same Data.fs (7 600 requests, nearly all of
//! 4 MiB); requests counted from `/proc/diskstats`, the open's 15 000
//! header reads included:
//!
//! | read-ahead | requests | against numpy |
//! |---|---|---|
//! | `MADV_WILLNEED` 16 blocks ahead (4 KiB folios) | 30 k | 0.77-1.08x, mostly 0.8-0.9 |
//! | none (the two workers' faults) | 60-65 k | 41-52 s against 36-42 s |
//! | this reader | 22.7 k (7 400 of 4 MiB for the data) | 0.86-1.03x, median 0.99 |
//!
//! The disk alternates bursts of up to 2.4 GB/s with stretches near
//! 0.5 GB/s, for both sides, so single pairs swing by 15%.
//!
//! A warm scan never starts it: the workers find their blocks cached and
//! the thread only waits for the scan's end.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How many blocks past the workers' cursor the reader may be: enough to
/// keep the disk streaming while the workers sum (the kernel's own
/// read-ahead adds its window, 8 MiB here, in the background), few enough
/// that what it read is still cached when they get there.
pub(super) const LEAD: u64 = 8;

/// Block numbers shared by the workers and the reader ahead.
pub(super) struct ReadAhead {
    nb: u64,
    /// Every block from `first_cold` below this one has been read
    /// (`u64::MAX`: the reader ended, nothing is to be waited for).
    ready: AtomicU64,
    /// The first block a worker found cold (`u64::MAX`: none yet).
    first_cold: AtomicU64,
    /// The scan is over: the reader stops.
    finished: AtomicBool,
    lock: Mutex<()>,
    moved: Condvar,
}

/// How long one wait lasts before looking again: the reader wakes the
/// workers after each block and the scan's end wakes the reader, so this
/// only bounds a missed wakeup.
const RECHECK: Duration = Duration::from_millis(100);

/// How often a reader as far ahead as allowed looks at the workers' cursor
/// again (a cold block takes milliseconds to arrive).
const CURSOR_POLL: Duration = Duration::from_micros(500);

impl ReadAhead {
    /// For a scan of `nb` blocks.
    pub(super) fn new(nb: u64) -> ReadAhead {
        ReadAhead {
            nb,
            ready: AtomicU64::new(0),
            first_cold: AtomicU64::new(u64::MAX),
            finished: AtomicBool::new(false),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        }
    }

    /// A reader ahead that will never run (its thread did not start):
    /// nobody waits.
    pub(super) fn absent(&self) {
        self.ready.store(u64::MAX, Ordering::Release);
        self.wake();
    }

    /// A worker found block `blk` not in the page cache: the reader starts
    /// there (or has started earlier).
    pub(super) fn cold_at(&self, blk: u64) {
        if self.first_cold.fetch_min(blk, Ordering::AcqRel) > blk {
            self.wake();
        }
    }

    /// Wait until the reader has been through block `blk`, if the scan
    /// went cold at or before it; returns at once otherwise.
    pub(super) fn wait_for(&self, blk: u64) {
        if blk < self.first_cold.load(Ordering::Acquire) {
            return;
        }
        let mut g = self.lock.lock();
        // Waits for the reader ahead to read block `blk` from the disk
        // (it wakes us after each block, and at its end).
        while self.ready.load(Ordering::Acquire) <= blk {
            self.moved.wait_for(&mut g, RECHECK);
        }
    }

    /// The scan is over: the reader stops.
    pub(super) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.wake();
    }

    /// The reader's loop: from the first cold block on, `read(blk)` each
    /// block in order, at most [`LEAD`] blocks past the workers' cursor
    /// `next`, until the last block or [`Self::finish`].
    pub(super) fn run(&self, next: &AtomicU64, read: impl Fn(u64)) {
        let mut blk = loop {
            if self.finished.load(Ordering::Acquire) {
                return self.absent();
            }
            let first = self.first_cold.load(Ordering::Acquire);
            if first != u64::MAX {
                break first;
            }
            let mut g = self.lock.lock();
            // Waits for a worker to find a cold block, or the scan's end.
            if self.first_cold.load(Ordering::Acquire) == u64::MAX
                && !self.finished.load(Ordering::Acquire)
            {
                self.moved.wait_for(&mut g, RECHECK);
            }
        };
        while blk < self.nb && !self.finished.load(Ordering::Acquire) {
            if blk >= next.load(Ordering::Acquire).saturating_add(LEAD) {
                std::thread::sleep(CURSOR_POLL);
                continue;
            }
            read(blk);
            blk += 1;
            self.ready.store(blk, Ordering::Release);
            self.wake();
        }
        self.absent();
    }

    fn wake(&self) {
        let _g = self.lock.lock();
        self.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_warm_scan_reads_nothing_ahead() {
        let ra = ReadAhead::new(10);
        let next = AtomicU64::new(0);
        let reads = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                ra.run(&next, |_| {
                    reads.fetch_add(1, Ordering::Relaxed);
                })
            });
            for b in 0..10 {
                next.store(b + 1, Ordering::Release);
                ra.wait_for(b);
            }
            ra.finish();
        });
        assert_eq!(reads.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn workers_sum_only_blocks_the_reader_went_through_in_order() {
        let nb = 40;
        let ra = ReadAhead::new(nb);
        let next = AtomicU64::new(0);
        let read: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        let summed: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                ra.run(&next, |b| {
                    // The reader never gets more than LEAD past the cursor.
                    assert!(b < next.load(Ordering::Acquire) + LEAD, "{b}");
                    std::thread::sleep(Duration::from_micros(200));
                    read.lock().push(b);
                })
            });
            let work = || {
                loop {
                    let b = next.fetch_add(1, Ordering::AcqRel);
                    if b >= nb {
                        return;
                    }
                    // Blocks from 5 on are cold.
                    if b >= 5 {
                        ra.cold_at(b);
                    }
                    ra.wait_for(b);
                    if b >= 5 {
                        // Read, unless the reader started past it (the
                        // other worker's cold block was told first).
                        let r = read.lock();
                        let started_past = r.first().is_some_and(|&f| b < f);
                        assert!(
                            r.contains(&b) || started_past,
                            "block {b} summed before read"
                        );
                    }
                    summed.lock().push(b);
                }
            };
            std::thread::scope(|w| {
                w.spawn(work);
                w.spawn(work);
            });
            ra.finish();
        });
        let read = read.into_inner();
        let first = read.first().copied().unwrap_or(u64::MAX);
        // The reader started at the first cold block a worker found (5,
        // or 6 if the other worker's check came first) and read the rest
        // in order, once each.
        assert!(first == 5 || first == 6, "{read:?}");
        assert_eq!(read, (first..nb).collect::<Vec<_>>());
        let mut summed = summed.into_inner();
        summed.sort_unstable();
        assert_eq!(summed, (0..nb).collect::<Vec<_>>());
    }

    #[test]
    fn a_reader_that_never_started_is_not_waited_for() {
        let ra = ReadAhead::new(4);
        ra.absent();
        ra.cold_at(0);
        // Returns at once: no reader will ever mark block 3 read.
        ra.wait_for(3);
    }
}
