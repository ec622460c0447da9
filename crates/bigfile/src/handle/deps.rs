//! Which blocks depend on which objects, for exact invalidation.
//!
//! A block's content comes from its ZBlk object (and, for ZBlk1, the chunk
//! table and ZData records): *direct* dependencies, whose change always
//! changes the block. The lookup of the block in the file's `blktab` BTree
//! went through some tree nodes: *path* dependencies, whose change may or may
//! not move this block's entry, so at a transaction boundary the block is
//! looked up again at both snapshots and dropped only if its ZBlk changed.
//! Recording both per block is what makes invalidation exact: a commit by
//! another process that rewrites one block drops that block and no other.

use crate::reader::BlockDeps;
use std::collections::{BTreeSet, HashMap};
use storage::Oid;

/// Which blocks depend on which objects (for exact invalidation).
#[derive(Default)]
pub(super) struct Deps {
    /// blktab node -> blocks whose lookup went through it.
    pub(super) path: HashMap<Oid, BTreeSet<u64>>,
    /// ZBlk / chunk table / ZData -> blocks whose content it is.
    pub(super) direct: HashMap<Oid, BTreeSet<u64>>,
    /// What each loaded block depended on.
    pub(super) per_blk: HashMap<u64, BlockDeps>,
}

impl Deps {
    pub(super) fn record(&mut self, blk: u64, d: BlockDeps) {
        self.forget(blk);
        for o in &d.path {
            self.path.entry(*o).or_default().insert(blk);
        }
        for o in &d.direct {
            self.direct.entry(*o).or_default().insert(blk);
        }
        self.per_blk.insert(blk, d);
    }

    pub(super) fn forget(&mut self, blk: u64) {
        if let Some(d) = self.per_blk.remove(&blk) {
            for (map, oids) in [(&mut self.path, &d.path), (&mut self.direct, &d.direct)] {
                for o in oids {
                    if let Some(s) = map.get_mut(o) {
                        s.remove(&blk);
                        if s.is_empty() {
                            map.remove(o);
                        }
                    }
                }
            }
        }
    }
}
