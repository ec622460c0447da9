//! What changed, transaction by transaction, as the server told us: the
//! answer to [`Storage::changed_oids`](crate::Storage::changed_oids) over ZEO.
//!
//! # Model
//!
//! A FileStorage answers `changed_oids(after, upto)` from its file. A ZEO
//! client cannot read the server's file; instead it records every
//! `invalidateTransaction(tid, oids)` the server pushes, plus its own commits
//! (the server does not echo those back), from the moment it registered.
//! The object layer asks at transaction boundaries, after
//! [`Storage::sync`](crate::Storage::sync) (a ping round trip, so every
//! earlier invalidation has arrived), for ranges that start at a snapshot
//! this client handed out: those are always at or after the `horizon` (the
//! last tid when recording started). A range starting before the horizon
//! (possible only after a reconnection the server could not catch up with)
//! is an error, never a silently incomplete answer. The log is bounded: the
//! oldest transactions are dropped and the horizon moves past them.

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use std::collections::{BTreeMap, BTreeSet};

/// Most transactions remembered.
const MAX_TXNS: usize = 100_000;

/// The invalidation log.
pub struct InvalidationLog {
    horizon: Tid,
    txns: BTreeMap<Tid, Vec<Oid>>,
}

impl InvalidationLog {
    /// A log that knows everything after `horizon`.
    pub fn new(horizon: Tid) -> InvalidationLog {
        InvalidationLog {
            horizon,
            txns: BTreeMap::new(),
        }
    }

    /// Record that `oids` changed at `tid`.
    pub fn record(&mut self, tid: Tid, oids: &[Oid]) {
        if tid <= self.horizon {
            return;
        }
        self.txns.entry(tid).or_default().extend_from_slice(oids);
        while self.txns.len() > MAX_TXNS {
            if let Some((t, _)) = self.txns.pop_first() {
                self.horizon = t;
            }
        }
    }

    /// History up to `tid` is lost: nothing at or before it can be answered.
    pub fn lose_history(&mut self, tid: Tid) {
        self.horizon = self.horizon.max(tid);
        self.txns = self.txns.split_off(&Tid(tid.0.saturating_add(1)));
    }

    /// Oids changed by transactions with `after < tid <= upto`, sorted.
    pub fn changed(&self, server: &str, after: Tid, upto: Tid) -> Result<Vec<Oid>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        if after < self.horizon {
            return Err(Error::Protocol(format!(
                "{server}: the changes after {after} are not known to this client (it learned of transactions only after {}; the server could not replay older invalidations after a reconnection): reopen the connection",
                self.horizon
            )));
        }
        let mut set = BTreeSet::new();
        for (_, oids) in self.txns.range(Tid(after.0 + 1)..=upto) {
            set.extend(oids.iter().copied());
        }
        Ok(set.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_horizon() {
        let mut l = InvalidationLog::new(Tid(10));
        l.record(Tid(12), &[Oid(3), Oid(1)]);
        l.record(Tid(15), &[Oid(1), Oid(2)]);
        assert_eq!(
            l.changed("s", Tid(10), Tid(15)).expect("ok"),
            vec![Oid(1), Oid(2), Oid(3)]
        );
        assert_eq!(l.changed("s", Tid(12), Tid(14)).expect("ok"), vec![]);
        assert!(l.changed("s", Tid(9), Tid(15)).is_err());
        l.lose_history(Tid(15));
        assert!(l.changed("s", Tid(12), Tid(16)).is_err());
        assert_eq!(l.changed("s", Tid(15), Tid(16)).expect("ok"), vec![]);
    }
}
