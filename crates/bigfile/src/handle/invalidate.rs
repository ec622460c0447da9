//! Exact invalidation at a transaction boundary.
//!
//! The connection hands over the oids other transactions changed between
//! the old and the new snapshot. Blocks with a changed direct dependency are
//! dropped; blocks whose blktab lookup path changed are looked up at both
//! snapshots and dropped only if their ZBlk reference differs. Nothing else
//! is touched: pages of unchanged blocks stay mapped across transactions.

use super::Shared;
use crate::Error;
use crate::reader::SnapshotFile;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use storage::{Invalidation, Tid};

impl Shared {
    pub(super) fn invalidate(&self, inv: &Invalidation) -> Result<(), Error> {
        if inv.own.is_some()
            && let Some(p) = self.pending.lock().take()
        {
            self.complete(p, inv.own)?;
        }
        let b = &self.backend;
        let old_at = Tid(b.at.swap(inv.to.0, Ordering::AcqRel));
        // Blocks mapped read-write stay pinned in the budget until a
        // boundary: this is one (virtmem `mapped_rw`).
        self.fileh.unmap_pinned_if_idle();
        // A cut of the transaction that just ended is in the new snapshot
        // (or was aborted): its holes reload from there.
        self.end_cut()?;
        let (mut blocks, candidates) = {
            let deps = b.deps.lock();
            let mut blocks = BTreeSet::new();
            let mut cand = BTreeSet::new();
            for o in &inv.oids {
                if let Some(s) = deps.direct.get(o) {
                    blocks.extend(s.iter().copied());
                }
                if let Some(s) = deps.path.get(o) {
                    cand.extend(s.iter().copied());
                }
            }
            (blocks, cand)
        };
        let candidates: Vec<u64> = candidates.difference(&blocks).copied().collect();
        if !candidates.is_empty() {
            let old = SnapshotFile::open(b.storage.as_ref(), old_at, b.file)?;
            let new = SnapshotFile::open(b.storage.as_ref(), inv.to, b.file)?;
            if old.meta.blksize != new.meta.blksize {
                return Err(Error::Usage(format!("file {} changed its blksize", b.file)));
            }
            for blk in candidates {
                let mut p = Vec::new();
                if old.zblk_ref(blk, &mut p)? != new.zblk_ref(blk, &mut p)? {
                    blocks.insert(blk);
                }
            }
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let mut fh = self
            .fileh
            .exclusive("invalidation at a transaction boundary")?;
        let fh = &mut *fh.guard;
        for blk in &blocks {
            fh.invalidate(*blk)?;
        }
        let mut deps = b.deps.lock();
        for blk in blocks {
            deps.forget(blk);
        }
        Ok(())
    }
}
