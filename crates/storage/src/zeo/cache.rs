//! The client cache: recently loaded revisions, bounded in bytes, kept
//! consistent by invalidations.
//!
//! # Model
//!
//! A revision of an object is valid over a tid range: from its serial
//! (`start`) to the tid of the next revision (`end`, exclusive of nothing
//! newer known = current). `load_before(oid, before)` is answered from the
//! cache when a cached revision has `start < before <= end`:
//!
//! - a *current* revision (`end` unknown) answers every `before > start`;
//! - a *non-current* one answers only its range; it never changes again.
//!
//! An invalidation `(tid, oids)` turns each current revision of those oids
//! into a non-current one ending at `tid` (as ZEO's own cache does), so
//! readers at older snapshots keep hitting it. Entries are inserted and
//! invalidated in the order the server's messages arrive, on the connection's
//! reader thread: a reply to `loadBefore` that says "current" was current
//! when the server sent it, and every later commit's invalidation comes after
//! it on the same stream. Bounded by total bytes: the oldest inserted
//! entries go first.

use crate::ids::{Oid, Tid};
use crate::storage::LoadedRecord;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

struct Rev {
    start: Tid,
    end: Option<Tid>,
    data: Arc<Vec<u8>>,
}

/// The bounded revision cache.
pub struct Cache {
    max_bytes: usize,
    bytes: usize,
    revs: HashMap<Oid, Vec<Rev>>,
    /// Insertion order of `(oid, start)`, for eviction (may hold stale keys).
    order: VecDeque<(Oid, Tid)>,
    /// Counters for tests and benches: (hits, misses).
    pub stats: (u64, u64),
}

impl Cache {
    /// An empty cache holding at most `max_bytes` of record data.
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            max_bytes,
            bytes: 0,
            revs: HashMap::new(),
            order: VecDeque::new(),
            stats: (0, 0),
        }
    }

    /// The cached revision of `oid` current just before `before`, if cached.
    pub fn lookup(&mut self, oid: Oid, before: Tid) -> Option<LoadedRecord> {
        let hit = self.revs.get(&oid).and_then(|revs| {
            revs.iter()
                .find(|r| r.start < before && r.end.is_none_or(|e| before <= e))
                .map(|r| LoadedRecord {
                    data: r.data.as_ref().clone(),
                    serial: r.start,
                    next_serial: r.end,
                })
        });
        if hit.is_some() {
            self.stats.0 += 1;
        } else {
            self.stats.1 += 1;
        }
        hit
    }

    /// Remember a revision (`end` = `None`: current).
    pub fn insert(&mut self, oid: Oid, start: Tid, end: Option<Tid>, data: Vec<u8>) {
        if data.len() > self.max_bytes / 4 {
            return;
        }
        let revs = self.revs.entry(oid).or_default();
        if revs.iter().any(|r| r.start == start) {
            return;
        }
        if end.is_none() {
            // A newer current revision replaces an older one's openness.
            for r in revs.iter_mut().filter(|r| r.end.is_none()) {
                r.end = Some(start);
            }
        }
        self.bytes += data.len();
        revs.push(Rev {
            start,
            end,
            data: Arc::new(data),
        });
        self.order.push_back((oid, start));
        self.evict();
    }

    /// `oids` changed at `tid`: their current revisions end there.
    pub fn invalidate(&mut self, tid: Tid, oids: &[Oid]) {
        for oid in oids {
            if let Some(revs) = self.revs.get_mut(oid) {
                for r in revs.iter_mut().filter(|r| r.end.is_none()) {
                    if r.start < tid {
                        r.end = Some(tid);
                    }
                }
            }
        }
    }

    /// Forget `oids` entirely (changed at tids not known exactly).
    pub fn forget(&mut self, oids: &[Oid]) {
        for oid in oids {
            if let Some(revs) = self.revs.remove(oid) {
                self.bytes -= revs.iter().map(|r| r.data.len()).sum::<usize>();
            }
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.revs.clear();
        self.order.clear();
        self.bytes = 0;
    }

    /// Bytes of record data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn evict(&mut self) {
        while self.bytes > self.max_bytes {
            let Some((oid, start)) = self.order.pop_front() else {
                break;
            };
            if let Some(revs) = self.revs.get_mut(&oid)
                && let Some(i) = revs.iter().position(|r| r.start == start)
            {
                self.bytes -= revs.swap_remove(i).data.len();
                if revs.is_empty() {
                    self.revs.remove(&oid);
                }
            }
        }
        if self.order.len() > 1024 && self.order.len() > 4 * self.revs.len().max(1) {
            let revs = &self.revs;
            self.order
                .retain(|(o, s)| revs.get(o).is_some_and(|v| v.iter().any(|r| r.start == *s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_becomes_noncurrent_and_bound_holds() {
        let mut c = Cache::new(1000);
        c.insert(Oid(1), Tid(5), None, vec![1; 10]);
        assert_eq!(c.lookup(Oid(1), Tid(6)).map(|r| r.serial), Some(Tid(5)));
        assert_eq!(c.lookup(Oid(1), Tid::MAX).map(|r| r.serial), Some(Tid(5)));
        assert!(c.lookup(Oid(1), Tid(5)).is_none());
        c.invalidate(Tid(9), &[Oid(1)]);
        assert!(c.lookup(Oid(1), Tid(10)).is_none());
        let r = c.lookup(Oid(1), Tid(9)).expect("old snapshot still cached");
        assert_eq!(r.next_serial, Some(Tid(9)));
        for i in 0..100 {
            c.insert(Oid(100 + i), Tid(1), None, vec![0; 100]);
        }
        assert!(c.bytes() <= 1000);
        c.clear();
        assert_eq!(c.bytes(), 0);
    }
}
