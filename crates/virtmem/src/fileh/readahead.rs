//! Read-ahead: detecting sequential streams of faults and loading a bounded
//! window of blocks ahead of them on idle handler threads.
//!
//! Every access the engine sees (a demand fault, a read-ahead marker
//! reached) is matched against up to [`STREAMS`] streams, so several threads
//! scanning different parts of a handle each get read-ahead. Once a stream's
//! direction is known, the blocks up to the window past it are queued as
//! jobs; the handler threads that run read-ahead (all but one) take them
//! from a queue counted by an eventfd semaphore. One read-ahead block in
//! half a window holds back a *marker* (see [`super::state::Marker`]): its
//! first page in scan direction, or, when the block was loaded into a
//! recycled buffer of huge pages, the whole block, moved in whole on the
//! reader's first touch. That touch tells the engine the reader arrived,
//! which moves the window on without a fault per block.
//!
//! A stream that has walked [`LONG_STREAM`] blocks is a scan: once the
//! budget is nearly full (an eighth, at least 64 MiB, free), the blocks it loaded are dropped when the
//! reader is [`KEEP_BEHIND`] blocks past them, and their pages feed the next
//! read-ahead loads (see [`super::evict`]). One pass over an array far
//! bigger than the budget then neither evicts the working set nor makes the
//! kernel zero a fresh page per block. A scan that fits in the budget
//! stays resident, so a next pass runs at memory speed (measured: a resident
//! rescan 28 GB/s, a reload of dropped blocks 4 GB/s on the 2-core VM).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;

use nix::sys::eventfd::EventFd;
use parking_lot::Mutex;

use crate::mapping::Staging;

use super::Shared;
use super::options::inc;
use super::read_order::{ReadOrder, Turn};
use super::state::{Block, State};

/// One sequential access stream (a reader walking blocks).
pub(super) struct Seq {
    /// Where the stream began.
    origin: u64,
    /// Blocks between `origin` and this one (exclusive, in scan direction)
    /// were considered for drop-behind already.
    dropped: u64,
    last: u64,
    /// +1 forward, -1 backward, 0 not yet known.
    dir: i8,
    /// Next block not yet scheduled for read-ahead in direction `dir`.
    next: Option<u64>,
    /// Tick of the last access, to replace the least recently used stream.
    used: u64,
    /// The stream drops what it leaves behind (set once the budget was
    /// nearly full; then for good, see `FileH::scan_done`).
    dropping: bool,
}

/// How many concurrent streams read-ahead tracks per handle.
const STREAMS: usize = 4;
/// A stream that has walked this many blocks is a scan: the blocks its
/// read-ahead loaded are dropped once it is [`KEEP_BEHIND`] blocks past
/// them (their pages then feed its next loads, see [`super::evict`]).
/// Shorter sequential reads keep what they loaded.
const LONG_STREAM: u64 = 32;
/// Blocks a long stream keeps loaded behind its reader.
const KEEP_BEHIND: u64 = 4;

/// What the engine does about an access it noted (see
/// [`Shared::note_access`]).
#[derive(Default)]
pub(super) struct Noted {
    /// Read-ahead jobs to queue: blocks and direction.
    pub(super) jobs: Option<(Range<u64>, i8)>,
    /// Blocks a long stream left behind, to drop.
    pub(super) behind: Vec<u64>,
}

/// The read-ahead settings and job queue of a handle (the streams live in
/// [`State`], under the state lock).
pub(super) struct Readahead {
    /// Read-ahead is on.
    pub(super) enabled: bool,
    /// Window in blocks.
    pub(super) window: u64,
    /// Jobs: (block, direction), in the order to load them.
    pub(super) queue: Mutex<VecDeque<(u64, i8)>>,
    /// Read-ahead jobs queued (semaphore counter).
    pub(super) wakeup: EventFd,
    /// The order in which jobs read a cold file ([`super::read_order`]).
    pub(super) order: ReadOrder,
    /// A job that mapped a block found it cold: from then on, until a new
    /// stream starts, jobs run in turn from their start, block lookups
    /// included.
    pub(super) cold: std::sync::atomic::AtomicBool,
}

impl Shared {
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
    pub(super) fn note_access(&self, st: &mut State, blk: u64) -> Noted {
        let jobs = self.note_stream(st, blk);
        let behind = self.left_behind(st, blk);
        Noted { jobs, behind }
    }

    /// The read-ahead half of [`Self::note_access`].
    fn note_stream(&self, st: &mut State, blk: u64) -> Option<(Range<u64>, i8)> {
        if !self.ra.enabled || st.paused {
            return None;
        }
        let tick = st.next_tick();
        let w = self.ra.window;
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
                origin: blk,
                dropped: blk,
                last: blk,
                dir: 0,
                next: None,
                used: tick,
                dropping: false,
            };
            // A new stream finds out afresh whether what it reads is cold
            // (`read_order`): a handle that once read a cold file does not
            // keep reading in turn what is now cached.
            self.ra.cold.store(false, Ordering::Relaxed);
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

    /// The drop-behind half of [`Self::note_access`]: if `blk` continues a
    /// long stream, the blocks its read-ahead loaded more than
    /// [`KEEP_BEHIND`] blocks back (taken out of [`State::stream_loaded`]).
    fn left_behind(&self, st: &mut State, blk: u64) -> Vec<u64> {
        let State {
            streams,
            stream_loaded,
            blocks,
            ..
        } = st;
        let Some(s) = streams.iter_mut().find(|s| s.last == blk && s.dir != 0) else {
            return Vec::new();
        };
        // A fault that continues the stream loads for it too (the reader
        // caught up with read-ahead).
        if matches!(blocks.get(&blk), Some(Block::Loading { .. })) {
            stream_loaded.insert(blk);
        }
        // While the budget has room, what the stream leaves behind stays
        // resident for a next pass (and is no longer a candidate); once it
        // is nearly full, the stream drops from there on, for good.
        let keep = !s.dropping && !self.budget.nearly_full();
        s.dropping |= !keep;
        let range = if s.dir > 0 {
            let upto = blk.saturating_sub(KEEP_BEHIND);
            if blk - s.origin < LONG_STREAM || upto <= s.dropped {
                return Vec::new();
            }
            let r = s.dropped..upto;
            s.dropped = upto;
            r
        } else {
            let from = blk.saturating_add(KEEP_BEHIND + 1);
            if s.origin.saturating_sub(blk) < LONG_STREAM || from > s.dropped {
                return Vec::new();
            }
            let r = from..s.dropped.saturating_add(1);
            s.dropped = from.saturating_sub(1);
            r
        };
        let behind: Vec<u64> = stream_loaded.range(range).copied().collect();
        for b in &behind {
            stream_loaded.remove(b);
        }
        if keep { Vec::new() } else { behind }
    }

    pub(super) fn queue_readahead(&self, jobs: Range<u64>, dir: i8) {
        let n = jobs.end - jobs.start;
        {
            let mut q = self.ra.queue.lock();
            if dir > 0 {
                q.extend(jobs.map(|b| (b, 1)));
            } else {
                q.extend(jobs.rev().map(|b| (b, -1)));
            }
        }
        let _ = self.ra.wakeup.write(n);
    }

    /// Run read-ahead job `blk` (ticket `turn`, see [`super::read_order`]).
    pub(super) fn readahead_job(
        &self,
        blk: u64,
        dir: i8,
        mut turn: Turn<'_>,
        staging: &mut Option<Staging>,
    ) {
        {
            let mut st = self.st.lock();
            vtrace!(
                "T readahead blk {blk} paused {} state {}",
                st.paused,
                st.blocks.get(&blk).map_or("absent", Block::name)
            );
            if st.paused
                || st.blocks.contains_key(&blk)
                || self.handlers.shutdown.load(Ordering::Relaxed)
            {
                return;
            }
            st.begin_load(blk, false, false);
            st.stream_loaded.insert(blk);
        }
        inc(&self.counters.readahead_loads);
        // A cold stream: the whole job in turn, the lookup of the block's
        // record (a read of its header) and the mapping too, so that the
        // file is read in order and the reader never meets a block mapped
        // but not read yet.
        if self.ra.cold.load(Ordering::Relaxed) && !turn.wait() {
            vtrace!("T readahead blk {blk}: the earlier jobs are late");
        }
        let _ = self.load_and_map(blk, Some(dir), false, staging, Some(&mut turn));
    }
}
