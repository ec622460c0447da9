//! Read-ahead of mapped blocks reads a cold file in the order of its jobs.
//!
//! # Model
//!
//! Read-ahead jobs leave the queue in block order, but every handler thread
//! but one takes them (two on the 2-core VM, sixteen on a 16-core machine),
//! and a job that maps a block from its file ([`super::mapped`]) reads the
//! block's pages by touching them. Several threads touching neighbouring
//! blocks at once look to the kernel's read-ahead like interleaved streams,
//! each one's misses restarting it; and the marker blocks that read-ahead
//! leaves unmapped (one in half a window, mapped on the reader's touch)
//! were holes in the stream, read later as single random blocks. The
//! kernel then reads into small folios, whose disk requests are small: a
//! cold `np.asarray(A).sum()` from Python over a 28 GiB array (larger than
//! RAM) sent 29 000 requests (with `MADV_WILLNEED` on each block, 4 KiB
//! folios, 1 MiB requests) to 65 000 (without), where `numpy.memmap`'s sum
//! of the same file sends 7 600 of 4 MiB.
//!
//! So each job takes a ticket when it leaves the queue (under the queue's
//! lock: tickets follow the queue), and a job that maps a block the page
//! cache lacks touches its pages only in its turn, once every earlier
//! ticket is done ([`crate::mapping::FileRead::InOrder`]); a marker
//! block's pages are read in its turn too, through a mapping made for that
//! ([`crate::mapping::read_file_pages`]). The mapping itself (an `mmap`)
//! and every other job (a warm block, a block loaded by copying) runs in
//! parallel and hands its ticket back at once. The threads in turn are then
//! the one sequential reader the kernel's read-ahead is built for, as the
//! out-of-core `stat`'s reader ahead is (`bigarray`'s
//! `stored_scan::read_ahead`).
//!
//! Measured on the 2-core VM (that 28 GiB array, caches dropped before
//! each run, block-layer tracepoints): the handler threads' data requests
//! went from mostly 1 MiB and smaller to 4 MiB (about 8 000 requests for
//! the data, against numpy's 7 600; the open's 15 000 header reads come on
//! top). With the two changes beside it (the lookup's header pages
//! unmapped, blktab nodes decoded once) the Python sum went from 0.75-0.82x
//! numpy's time to 0.86-0.97x, interleaved pairs.
//!
//! The handle stays in this mode until a new stream starts: pages the
//! kernel's read-ahead has in flight count as cached, so a job that judged
//! each block alone took them for warm and broke the stream. A new stream
//! finds out afresh, so a later scan of what is now cached runs unordered.
//!
//! A turn is waited for at most [`TURN_WAIT`]: a job whose predecessor is
//! stuck reads out of order rather than wait on it for good.

use std::collections::BTreeSet;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long a job waits for the earlier tickets before it reads anyway.
pub(super) const TURN_WAIT: Duration = Duration::from_secs(2);

/// The tickets of a handle's read-ahead jobs.
pub(super) struct ReadOrder {
    turns: Mutex<Turns>,
    moved: Condvar,
}

struct Turns {
    /// The next ticket to hand out.
    next: u64,
    /// Every ticket below this one is done.
    turn: u64,
    /// Tickets at or past `turn` that are done (handed back out of order).
    done: BTreeSet<u64>,
}

impl ReadOrder {
    pub(super) fn new() -> Self {
        ReadOrder {
            turns: Mutex::new(Turns {
                next: 0,
                turn: 0,
                done: BTreeSet::new(),
            }),
            moved: Condvar::new(),
        }
    }

    /// The next ticket; the caller holds the job queue's lock, so tickets
    /// follow the order of the queue. The ticket is done when the returned
    /// [`Turn`] is finished or dropped.
    pub(super) fn ticket(&self) -> Turn<'_> {
        let mut t = self.turns.lock();
        let ticket = t.next;
        t.next += 1;
        Turn {
            order: self,
            ticket,
            finished: false,
        }
    }

    fn finish(&self, ticket: u64) {
        let mut t = self.turns.lock();
        if ticket != t.turn {
            t.done.insert(ticket);
            return;
        }
        t.turn += 1;
        loop {
            let next = t.turn;
            if !t.done.remove(&next) {
                break;
            }
            t.turn += 1;
        }
        drop(t);
        self.moved.notify_all();
    }

    /// Wait until every ticket before `ticket` is done, at most `limit`;
    /// false if it timed out.
    fn wait_for(&self, ticket: u64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut t = self.turns.lock();
        while t.turn < ticket {
            if self.moved.wait_until(&mut t, deadline).timed_out() {
                return t.turn >= ticket;
            }
        }
        true
    }
}

/// One read-ahead job's ticket.
pub(super) struct Turn<'a> {
    order: &'a ReadOrder,
    ticket: u64,
    finished: bool,
}

impl Turn<'_> {
    /// Wait for this job's turn (every earlier job done), at most
    /// [`TURN_WAIT`]; false if it timed out (the caller reads anyway).
    pub(super) fn wait(&self) -> bool {
        self.finished || self.order.wait_for(self.ticket, TURN_WAIT)
    }

    /// This job is done with the file (or never needed the order): later
    /// jobs may go.
    pub(super) fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.order.finish(self.ticket);
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn turns_come_in_ticket_order_whatever_order_the_threads_run_in() {
        let order = ReadOrder::new();
        // Tickets taken in order, their jobs started in reverse.
        let log = Mutex::new(Vec::new());
        let next = AtomicU64::new(0);
        std::thread::scope(|s| {
            let mut turns: Vec<Turn<'_>> = (0..6).map(|_| order.ticket()).collect();
            turns.reverse();
            for mut turn in turns {
                let log = &log;
                let next = &next;
                s.spawn(move || {
                    assert!(turn.wait(), "ticket {} timed out", turn.ticket);
                    // Nobody else is in turn meanwhile.
                    let me = next.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(me, turn.ticket);
                    log.lock().push(turn.ticket);
                    turn.finish();
                });
            }
        });
        assert_eq!(*log.lock(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_ticket_handed_back_early_lets_later_ones_go_and_drop_hands_back() {
        let order = ReadOrder::new();
        let mut a = order.ticket();
        let b = order.ticket();
        let c = order.ticket();
        // c finished out of order (a job that needed no turn).
        drop(c);
        assert!(
            !order.wait_for(1, Duration::from_millis(20)),
            "b waits for a"
        );
        a.finish();
        assert!(b.wait());
        drop(b);
        // Every ticket is done: a new one is in turn at once.
        let d = order.ticket();
        assert!(order.wait_for(d.ticket, Duration::ZERO));
        assert_eq!(order.turns.lock().turn, 3);
        assert!(order.turns.lock().done.is_empty());
    }

    #[test]
    fn a_stuck_predecessor_is_waited_for_only_so_long() {
        let order = ReadOrder::new();
        let _stuck = order.ticket();
        let late = order.ticket();
        let t0 = std::time::Instant::now();
        assert!(!order.wait_for(late.ticket, Duration::from_millis(50)));
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }
}
