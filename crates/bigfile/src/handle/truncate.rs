//! Cutting a file short: every block from some block on is dropped.
//!
//! Shrinking belongs to the file, not to the array above it: a cut must
//! remove the blocks' entries from `blktab` (so the commit stores the
//! smaller table and no data past the end), drop their pages whatever their
//! state (clean, dirty, or spilled to the temporary file: a dirty block
//! past the end must not be stored), and make them read as holes for the
//! rest of the transaction, although the snapshot the handle loads from
//! still has them. The writer treats a block past the cut as having no
//! stored ZBlk, so a block written again after growing back gets a new ZBlk
//! instead of updating one that `blktab` no longer references. At the
//! transaction boundary the holes served because of the cut are dropped
//! (after a commit the snapshot has the cut; after an abort the old data
//! comes back). The same happens in the other handles of the file in the
//! same connection, which share its uncommitted state.

use super::Shared;
use super::backend::Cut;
use crate::Error;
use std::collections::BTreeSet;
use storage::Value;
use storage::btree::{self, BTree};

impl Shared {
    /// Cut the file at block `from` in the current transaction (see the
    /// module docs).
    pub(super) fn discard_from(&self, from: u64) -> Result<(), Error> {
        let meta = self
            .conn
            .get::<crate::objects::ZBigFile>(self.backend.file)?
            .clone();
        let blktab = BTree {
            family: &btree::LO,
            oid: meta.blktab,
        };
        let from_key = i64::try_from(from)
            .map_err(|_| Error::Usage(format!("block {from} is beyond any ZBigFile")))?;
        let stale: Vec<Value> = blktab
            .range(&self.conn, Some(&Value::Int(from_key)), None)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for key in &stale {
            blktab.remove(&self.conn, key)?;
        }
        let mut handles = self.siblings();
        if let Some(me) = self.me.upgrade() {
            handles.push(me);
        }
        for h in handles {
            h.cut_pages(from)?;
        }
        self.conn.join_transaction()?;
        Ok(())
    }

    /// Drop every page and spilled copy of blocks from `from` on and serve
    /// them as holes until the transaction boundary.
    fn cut_pages(&self, from: u64) -> Result<(), Error> {
        let mut fh = self.fileh.exclusive("resize")?;
        let fh = &mut *fh.guard;
        {
            let mut cut = self.backend.cut.lock();
            match cut.as_mut() {
                Some(c) => c.from = c.from.min(from),
                None => {
                    *cut = Some(Cut {
                        from,
                        holes: BTreeSet::new(),
                    })
                }
            }
        }
        let spilled: Vec<u64> = {
            let mut sp = self.backend.spill.lock();
            let past = sp.blocks.split_off(&from);
            past.into_iter().collect()
        };
        let bs = self.backend.blksize as u64;
        let nblocks = fh.size() / bs;
        let mut deps = self.backend.deps.lock();
        let loaded: Vec<u64> = deps
            .per_blk
            .keys()
            .copied()
            .filter(|b| *b >= from)
            .collect();
        let resident: BTreeSet<u64> = fh
            .dirty_blocks()
            .into_iter()
            .chain(loaded)
            .chain(spilled)
            .chain(self.backend.new_holes.lock().iter().copied())
            .filter(|b| *b >= from && *b < nblocks)
            .collect();
        for blk in resident {
            fh.invalidate(blk)?;
            deps.forget(blk);
        }
        Ok(())
    }

    /// At the transaction boundary: forget the cut and drop the blocks
    /// served as holes because of it (they carry no dependencies).
    pub(super) fn end_cut(&self) -> Result<(), Error> {
        let Some(cut) = self.backend.cut.lock().take() else {
            return Ok(());
        };
        let mut fh = self.fileh.exclusive("ending a resize")?;
        for blk in cut.holes {
            fh.guard.invalidate(blk)?;
        }
        Ok(())
    }
}
