//! The fault path: the handler threads, their loop over the userfaultfd,
//! and the service of one fault message ([`Shared::handle_fault`]).
//!
//! All handler threads read messages from the handle's one userfaultfd, one
//! message per read, so parallel readers fault in parallel. A message is
//! turned into an [`Action`] under the state lock (a state transition, see
//! [`super::state`]) and the action (load, wake, make dirty, poison) runs
//! after the lock is released. The threads that run read-ahead poll the job
//! semaphore as well; the last thread only serves faults, so a fault never
//! waits behind a read-ahead load.
//!
//! Missing-page faults never make a block dirty: the kernel queues a fault
//! message before it re-checks the page, so a message can be stale. Only
//! write-protect faults make blocks dirty. An access that keeps faulting on a
//! page the state says is present (a broken invariant) is failed with
//! SIGBUS after a second rather than spun forever.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;
use parking_lot::Mutex;

use crate::mapping::{PAGE, Staging};
use crate::uffd::{self, Msg};

use super::Shared;
use super::options::inc;
use super::readahead::Noted;
use super::state::{Block, Marker};

/// What a fault handler does after releasing the state lock.
pub(super) enum Action {
    None,
    Wake(usize),
    Load,
    MakeDirty(Option<Marker>),
    /// First write to a clean hole: replace its zero pages by writable
    /// zeroed pages in one go (instead of one copy-on-write fault per page).
    RefillHole,
    Poison(usize),
}

/// What the handler threads share besides the block state: shutdown, the
/// count of messages being served, and the spin detector.
pub(super) struct Handlers {
    /// Becomes readable at shutdown.
    pub(super) stop: EventFd,
    pub(super) shutdown: AtomicBool,
    /// Handler threads between reading a fault message and serving it.
    pub(super) in_flight: AtomicUsize,
    /// Last address answered with a bare wake, since when: an access that
    /// keeps faulting on a page its block state says is present (a broken
    /// invariant) is failed loudly instead of spinning forever.
    pub(super) spurious: Mutex<Option<(usize, Instant, Instant)>>,
}

impl Shared {
    pub(super) fn handler_loop(&self, ra_worker: bool) {
        let mut staging: Option<Staging> = None;
        // One message per read: a message read is served at once, and the
        // other handler threads take the next ones in parallel.
        let mut msgs = [Msg::default(); 1];
        loop {
            if self.handlers.shutdown.load(Ordering::Relaxed) {
                return;
            }
            self.handlers.in_flight.fetch_add(1, Ordering::SeqCst);
            let r = self.uffd.read_msgs(&mut msgs);
            if let Ok(n) = r {
                for m in &msgs[..n] {
                    self.handle_fault(m, &mut staging);
                }
            }
            self.handlers.in_flight.fetch_sub(1, Ordering::SeqCst);
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
            if ra_worker && self.ra.wakeup.read().is_ok() {
                // The ticket is taken under the queue's lock: tickets follow
                // the queue (`read_order`).
                let job = {
                    let mut q = self.ra.queue.lock();
                    q.pop_front().map(|j| (j, self.ra.order.ticket()))
                };
                if let Some(((blk, dir), turn)) = job {
                    self.readahead_job(blk, dir, turn, &mut staging);
                    self.refill_staging(&mut staging);
                }
                continue;
            }
            let mut fds = [
                PollFd::new(self.uffd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.handlers.stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.ra.wakeup.as_fd(), PollFlags::POLLIN),
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

    pub(super) fn handle_fault(&self, m: &Msg, staging: &mut Option<Staging>) {
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
        let mut ra = Noted::default();
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
                        st.begin_load(blk, true, false);
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
                        st.begin_load(blk, true, true);
                        Action::RefillHole
                    } else if wp {
                        let (t, h, mk) = (*tick, *hole, marker.take());
                        st.lru.remove(&t);
                        if !h {
                            self.budget.sub(self.bs as u64);
                        }
                        st.insert_dirty(blk);
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
                        match self.fill_marker(ba, mk, true) {
                            Ok(()) => Action::None,
                            Err(e) => {
                                eprintln!("virtmem: installing a marker of block {blk}: {e}");
                                Action::Poison(addr)
                            }
                        }
                    } else {
                        Action::Wake(addr)
                    }
                }
                // Mapped from its file: a message queued before the
                // mapping replaced the range (its accesses now read the
                // file's pages).
                Some(Block::Dirty | Block::Mapped { .. } | Block::MappedRw) => Action::Wake(addr),
                Some(Block::Poisoned) => {
                    if wp {
                        Action::Wake(addr)
                    } else {
                        Action::Poison(addr)
                    }
                }
            }
        };
        // Read-ahead starts at once, unless the stream also left blocks
        // behind: those are dropped first (below), so that the read-ahead
        // loads find their pages to reuse.
        let mut jobs = ra.jobs;
        if ra.behind.is_empty()
            && let Some((jobs, dir)) = jobs.take()
        {
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
                let _ = self.load_and_map(blk, None, false, staging, None);
                Ok(())
            }
            Action::MakeDirty(mk) => self.unprotect(block_addr, mk),
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
        // After the wake: the reader goes on while this thread drops what
        // its stream left behind.
        if !ra.behind.is_empty() {
            self.evict_now(&ra.behind);
        }
        if let Some((jobs, dir)) = jobs {
            self.queue_readahead(jobs, dir);
        }
    }

    /// The second half of Clean/Loading -> Dirty (the state says Dirty):
    /// install the held-back marker, if any, writable, then lift the
    /// write protection of the block at `block_addr` and wake the waiters.
    pub(super) fn unprotect(&self, block_addr: usize, mk: Option<Marker>) -> std::io::Result<()> {
        if let Some(mk) = mk {
            self.fill_marker(block_addr, mk, false)?;
        }
        self.uffd.writeprotect(block_addr, self.bs, false, true)
    }

    /// Replace the zero pages of clean hole `blk` (state Loading, owned by the
    /// caller) by writable zeroed pages, mark it dirty and wake the waiters.
    pub(super) fn refill_hole(&self, blk: u64, addr: usize) -> std::io::Result<()> {
        let (off, len) = self.block_range(blk);
        // The block is write-protected zero pages: dropping them loses nothing.
        // SAFETY: the block's range, Loading under this thread: accesses
        // wait, and then see zeros as before.
        let r = unsafe { self.map.dontneed(off, len) }.and_then(|()| {
            if self.zeros_from_donor(addr, len)? || self.move_in_zeros(addr, len)? {
                return Ok(());
            }
            let mut z = self.holes.zeros.lock();
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
        st.insert_dirty(blk);
        drop(st);
        // On error the waiters refault and get a poisoned page (see the caller).
        r.and_then(|()| self.uffd.wake(addr, len))
    }

    /// True if missing faults at `addr` have been answered with bare wakes
    /// back to back (less than 10 ms apart) for more than a second.
    pub(super) fn spinning(&self, addr: usize) -> bool {
        let mut g = self.handlers.spurious.lock();
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
}
