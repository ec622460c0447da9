//! Access to a handle's mapping: shared read views, one mutable user at a
//! time, and misuse reported instead of deadlocking.
//!
//! Reading needs only `&FileH` (faults are served by virtmem's threads), so
//! any number of threads, and nested views in one thread, read one handle
//! at once: two threads summing halves of a resident array take about half
//! the time of one (a mutex held for a whole closure made them take turns).
//! Writing (`view_mut`, writeout, discard, invalidation) needs the mapping
//! exclusively.
//!
//! A thread that asks for exclusive access while it holds a view of the same
//! handle would wait for itself forever (a commit or a mutable view inside a
//! view; a view inside a mutable view). A per-thread list of the views it
//! holds turns those into an error naming the mistake. Waiting for views
//! held by *other* threads is bounded ([`WAIT`]) and the error says what
//! was waited for.

use crate::Error;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use storage::Oid;
use virtmem::FileH;

/// How long exclusive access waits for other threads' views to end.
pub const WAIT: Duration = Duration::from_secs(60);

thread_local! {
    /// (lock address, exclusive) of every guard this thread holds.
    static HELD: RefCell<Vec<(usize, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Does this thread hold a view (shared or exclusive) of any handle? A
/// transaction boundary (commit, abort, sync) taken inside a view would
/// change the pages under it.
pub fn views_held_by_this_thread() -> bool {
    HELD.with(|h| !h.borrow().is_empty())
}

/// The lock around a handle's virtmem mapping.
pub(super) struct AccessLock {
    lock: RwLock<FileH>,
    file: Oid,
    /// Pointers into the mapping were handed out that outlive the guards
    /// (the Python binding's numpy arrays): no moment without views can be
    /// told, so mapped blocks whose pages were dropped stay mapped.
    raw_views: AtomicBool,
}

/// Shared access; dropping it releases the view.
pub(super) struct Shared<'a> {
    pub(super) guard: RwLockReadGuard<'a, FileH>,
    _held: Held,
}

/// Exclusive access; dropping it releases the view.
pub(super) struct Exclusive<'a> {
    pub(super) guard: RwLockWriteGuard<'a, FileH>,
    _held: Held,
}

/// This thread's record of one guard (removed on drop).
struct Held(usize);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|(a, _)| *a == self.0) {
                h.remove(i);
            }
        });
    }
}

impl AccessLock {
    pub(super) fn new(fh: FileH, file: Oid) -> AccessLock {
        AccessLock {
            lock: RwLock::new(fh),
            file,
            raw_views: AtomicBool::new(false),
        }
    }

    /// A view is starting: if no view is alive now (the lock is free) and
    /// mapped blocks had their pages dropped, put them back to the engine's
    /// memory (virtmem `FileH::unmap_dropped`: no reader can be in them, so
    /// a next touch loads them through the budget instead of mapping page
    /// cache unseen). Never waits: a view or writer elsewhere makes
    /// `try_write` fail, and a later view does it.
    fn unmap_dropped_if_idle(&self) {
        if self.raw_views.load(Ordering::Relaxed) {
            return;
        }
        if let Some(mut w) = self.lock.try_write()
            && w.has_dropped_mapped()
            && let Err(e) = w.unmap_dropped()
        {
            tracing::warn!(file = %self.file, "putting dropped mapped blocks back: {e}");
        }
    }

    /// A transaction boundary: unmap the blocks mapped read-write and not
    /// written (virtmem `FileH::unmap_pinned`), so their pins go back to
    /// the budget. Never waits: with a view alive here or elsewhere it is
    /// left for a later boundary.
    pub(super) fn unmap_pinned_if_idle(&self) {
        if let Some(mut w) = self.lock.try_write()
            && w.has_pinned()
            && let Err(e) = w.unmap_pinned()
        {
            tracing::warn!(file = %self.file, "unmapping pinned mapped blocks: {e}");
        }
    }

    /// Pointers into the mapping are handed out beyond any guard (see
    /// `raw_views`).
    pub(super) fn lend_raw_views(&self) {
        self.raw_views.store(true, Ordering::Relaxed);
    }

    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// What this thread holds of this lock: None, Some(false) shared,
    /// Some(true) exclusive.
    fn held_here(&self) -> Option<bool> {
        let k = self.key();
        HELD.with(|h| {
            let h = h.borrow();
            let mine: Vec<bool> = h.iter().filter(|(a, _)| *a == k).map(|(_, x)| *x).collect();
            if mine.is_empty() {
                None
            } else {
                Some(mine.contains(&true))
            }
        })
    }

    fn hold(&self, exclusive: bool) -> Held {
        let k = self.key();
        HELD.with(|h| h.borrow_mut().push((k, exclusive)));
        Held(k)
    }

    /// Shared access for `what` (e.g. "a view").
    pub(super) fn shared(&self, what: &str) -> Result<Shared<'_>, Error> {
        if self.held_here() == Some(true) {
            return Err(Error::Reentrant {
                file: self.file,
                what: format!("{what} inside a mutable view of the same file"),
            });
        }
        self.unmap_dropped_if_idle();
        // Recursive: a nested view in this thread does not queue behind a
        // writer waiting for the outer one.
        let guard = self
            .lock
            .try_read_recursive_for(WAIT)
            .ok_or_else(|| Error::Busy {
                file: self.file,
                what: format!("{what}: a mutable view or commit in another thread"),
                waited: WAIT,
            })?;
        Ok(Shared {
            guard,
            _held: self.hold(false),
        })
    }

    /// Exclusive access for `what` (e.g. "a mutable view", "commit").
    pub(super) fn exclusive(&self, what: &str) -> Result<Exclusive<'_>, Error> {
        if let Some(excl) = self.held_here() {
            let inside = if excl { "a mutable view" } else { "a view" };
            return Err(Error::Reentrant {
                file: self.file,
                what: format!("{what} inside {inside} of the same file"),
            });
        }
        let guard = self.lock.try_write_for(WAIT).ok_or_else(|| Error::Busy {
            file: self.file,
            what: format!("{what}: views of the file in other threads"),
            waited: WAIT,
        })?;
        Ok(Exclusive {
            guard,
            _held: self.hold(true),
        })
    }
}
