//! A handle in the transaction protocol.
//!
//! The handle is a `DataManager` joined to every transaction of its
//! manager, committing before its connection: in the commit phase it stores
//! every spilled and dirty block into ZBlk objects through the connection's
//! storage transaction (the connection then stores the blktab nodes the
//! writer changed, and votes). The blocks are marked stored only once the
//! transaction is durable, at the boundary (`complete`), where the stored
//! blocks also get their new dependencies and sibling handles drop their
//! copies. Abort, a failed vote or a failed finish discard the dirty blocks
//! and the spill file.

use super::{Shared, writer::Writer};
use crate::Error;
use crate::reader::SnapshotFile;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use storage::{CommitPhase, DataManager, SortKey, Synchronizer, Tid, TxnMeta};
use virtmem::Writeout;

impl Shared {
    pub(super) fn join_current(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(tm) = self.tm.upgrade() else { return };
        let dm: Arc<dyn DataManager> = me.clone();
        tm.join(dm);
        // The connection takes part in every transaction too: this handle
        // stores ZBlk objects through it during the commit phase.
        if let Err(e) = self.conn.join_transaction() {
            tracing::debug!(error = %e, "ZBigFileH: connection cannot join (read-only?)");
        }
    }

    /// STORE: write every spilled and dirty block into ZBlk objects.
    pub(super) fn store_dirty(&self) -> Result<(), Error> {
        if self.conn.objects_written() {
            // The order comes from CommitPhase; this guards it.
            return Err(Error::Usage(format!(
                "ZBigFile {}: commit order violated: the connection wrote its objects before the file handle stored its blocks",
                self.backend.file
            )));
        }
        let mut access = self.fileh.exclusive("commit")?;
        let fh = &mut *access.guard;
        let dirty = fh.dirty_blocks();
        let spilled: Vec<u64> = {
            let sp = self.backend.spill.lock();
            sp.blocks
                .iter()
                .copied()
                .filter(|b| !dirty.contains(b))
                .collect()
        };
        if dirty.is_empty() && spilled.is_empty() {
            return Ok(());
        }
        *self.backend.writer.lock() = Some(Writer {
            conn: self.conn.clone(),
            format: self.format,
            blocks: Vec::new(),
            prev: None,
            old: std::mem::take(&mut *self.backend.scratch.lock()),
            compared: std::mem::take(&mut *self.backend.compared.lock()),
        });
        // Spilled blocks first (one block of memory at a time), then the dirty ones.
        let mut buf = if spilled.is_empty() {
            Vec::new()
        } else {
            vec![0u8; self.backend.blksize]
        };
        for blk in spilled {
            use std::os::unix::fs::FileExt;
            let r = {
                let sp = self.backend.spill.lock();
                match &sp.file {
                    Some(f) => f
                        .read_exact_at(&mut buf, blk * self.backend.blksize as u64)
                        .map_err(|e| Error::Usage(format!("reading the spill file: {e}"))),
                    None => Err(Error::Usage("spill file missing".into())),
                }
            };
            let r = r.and_then(|()| {
                let mut w = self.backend.writer.lock();
                match w.as_mut() {
                    Some(w) => w.store(&self.backend, blk, &buf, None),
                    None => Err(Error::Usage("no writer".into())),
                }
            });
            if let Err(e) = r {
                self.finish_writer();
                return Err(e);
            }
        }
        let r = fh.writeout(Writeout::STORE);
        if let Err(e) = r {
            self.finish_writer();
            return Err(Error::from_store(e));
        }
        Ok(())
    }

    /// After our commit is durable: mark the dirty blocks stored, record
    /// that the stored blocks now depend on the objects just committed (as
    /// of `own`, so later changes by others invalidate them), and drop them
    /// from the other handles of this file in this connection.
    pub(super) fn complete(&self, blocks: Vec<u64>, own: Option<Tid>) -> Result<(), Error> {
        if own.is_some() && self.backend.new_file.swap(false, Ordering::AcqRel) {
            // The file is in the database now. Holes served while it was new
            // carry no dependencies: drop those we did not just store.
            let holes = std::mem::take(&mut *self.backend.new_holes.lock());
            let mut fh = self.fileh.exclusive("completing the commit")?;
            for blk in holes.into_iter().filter(|b| !blocks.contains(b)) {
                fh.guard.invalidate(blk)?;
            }
        }
        if let Some(tid) = own.filter(|_| !blocks.is_empty()) {
            let b = &self.backend;
            let sf = SnapshotFile::open(b.storage.as_ref(), tid, b.file)?;
            let mut deps = b.deps.lock();
            for blk in &blocks {
                let mut d = sf.block_deps(*blk)?;
                d.path.push(b.file);
                deps.record(*blk, d);
            }
        }
        {
            let mut access = self.fileh.exclusive("completing the commit")?;
            let fh = &mut *access.guard;
            fh.writeout(Writeout::MARKSTORED)?;
            // The blocks just stored are clean now: keep the handle within
            // its RAM budget by dropping the oldest of them if needed (they
            // reload from the database when touched again).
            let bs = self.backend.blksize as u64;
            let limit = fh.budget().limit();
            let mut resident = fh.resident_blocks() as u64 * bs;
            if resident > limit {
                let mut deps = self.backend.deps.lock();
                for blk in &blocks {
                    if resident <= limit {
                        break;
                    }
                    fh.invalidate(*blk)?;
                    deps.forget(*blk);
                    resident = resident.saturating_sub(bs);
                }
            }
            // Spilled blocks are committed: their pages (if resident) hold
            // the committed data, and evicted ones reload from the database.
            let mut sp = self.backend.spill.lock();
            sp.file = None;
            sp.blocks.clear();
        }
        if !blocks.is_empty() {
            for sib in self.siblings() {
                let mut access = sib.fileh.exclusive("completing a sibling's commit")?;
                let fh = &mut *access.guard;
                let mut deps = sib.backend.deps.lock();
                for blk in &blocks {
                    fh.invalidate(*blk)?;
                    deps.forget(*blk);
                }
            }
        }
        Ok(())
    }

    /// End the commit's STORE pass: the blocks it wrote (its scratch
    /// memory and the chunks it compared go back to the backend for the
    /// next commit).
    pub(super) fn finish_writer(&self) -> Vec<u64> {
        let Some(w) = self.backend.writer.lock().take() else {
            return Vec::new();
        };
        *self.backend.scratch.lock() = w.old;
        *self.backend.compared.lock() = w.compared;
        w.blocks
    }
}

impl DataManager for Shared {
    fn sort_key(&self) -> SortKey {
        // Blocks are stored before the connection stores its modified
        // objects (the blktab nodes the writer changed) and votes.
        SortKey {
            phase: CommitPhase::BeforeConnection,
            id: format!("{}:{:p}", self.backend.file, self as *const _),
        }
    }

    fn abort(&self, _txn: &TxnMeta) -> storage::Result<()> {
        self.finish_writer();
        let discard = || -> Result<(), Error> {
            let mut access = self.fileh.exclusive("abort")?;
            access.guard.discard()?;
            self.drop_spill(&mut access.guard)
        };
        discard().map_err(|e| storage::Error::Protocol(format!("ZBigFileH: abort: {e}")))?;
        self.end_cut()
            .map_err(|e| storage::Error::Protocol(format!("ZBigFileH discard cut: {e}")))
    }

    fn tpc_begin(&self, _txn: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }

    /// STORE: every dirty block is written into ZBlk objects now, in the
    /// commit phase (this data manager sorts before its connection, whose
    /// storage transaction receives the records directly: large blocks never
    /// pile up in the object cache).
    fn commit(&self, _txn: &TxnMeta) -> storage::Result<()> {
        self.store_dirty().map_err(|e| match e {
            Error::Storage(s) => s,
            other => storage::Error::Protocol(format!("ZBigFileH: storing dirty blocks: {other}")),
        })
    }

    fn tpc_vote(&self, _txn: &TxnMeta) -> storage::Result<()> {
        Ok(())
    }

    /// The connection finishes after this data manager (it sorts later), so
    /// marking the blocks stored waits for the transaction boundary: see
    /// `Shared::complete`.
    fn tpc_finish(&self, _txn: &TxnMeta) -> storage::Result<()> {
        *self.pending.lock() = Some(self.finish_writer());
        Ok(())
    }

    fn tpc_abort(&self, txn: &TxnMeta) {
        if let Err(e) = DataManager::abort(self, txn) {
            tracing::error!(error = %e, "ZBigFileH: discard after a failed commit");
        }
    }
}

impl Synchronizer for Shared {
    fn after_completion(&self, committed: bool) {
        if let Some(p) = self.pending.lock().take() {
            let r = if committed {
                self.complete(p, None)
            } else {
                self.fileh.exclusive("abort").and_then(|mut a| {
                    a.guard.discard()?;
                    self.drop_spill(&mut a.guard)
                })
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "ZBigFileH: completing the transaction");
            }
        }
        self.join_current();
    }
}
