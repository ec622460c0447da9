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
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use storage::Oid;

/// The blocks that depend on one object. Almost always one block (a ZBlk,
/// a ZData chunk: a ZBlk1 block records 514 of them per load), kept inline
/// without an allocation; a shared tree node has many.
pub(super) enum Blocks {
    /// One block.
    One(u64),
    /// Several blocks.
    Many(BTreeSet<u64>),
}

impl Blocks {
    /// The blocks, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &u64> {
        let (one, many) = match self {
            Blocks::One(b) => (Some(b), None),
            Blocks::Many(s) => (None, Some(s.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn insert(&mut self, blk: u64) {
        match self {
            Blocks::One(b) if *b == blk => {}
            Blocks::One(b) => *self = Blocks::Many([*b, blk].into_iter().collect()),
            Blocks::Many(s) => {
                s.insert(blk);
            }
        }
    }

    /// Remove `blk`; true if no block is left.
    fn remove(&mut self, blk: u64) -> bool {
        match self {
            Blocks::One(b) => *b == blk,
            Blocks::Many(s) => {
                s.remove(&blk);
                s.is_empty()
            }
        }
    }
}

/// Add `blk` to the blocks depending on `o`.
fn add(map: &mut HashMap<Oid, Blocks>, o: Oid, blk: u64) {
    match map.entry(o) {
        Entry::Occupied(mut e) => e.get_mut().insert(blk),
        Entry::Vacant(e) => {
            e.insert(Blocks::One(blk));
        }
    }
}

/// Which blocks depend on which objects (for exact invalidation).
#[derive(Default)]
pub(super) struct Deps {
    /// blktab node -> blocks whose lookup went through it.
    pub(super) path: HashMap<Oid, Blocks>,
    /// ZBlk / chunk table / ZData -> blocks whose content it is.
    pub(super) direct: HashMap<Oid, Blocks>,
    /// What each loaded block depended on.
    pub(super) per_blk: HashMap<u64, BlockDeps>,
}

impl Deps {
    pub(super) fn record(&mut self, blk: u64, d: BlockDeps) {
        // The same objects as before (a block whose ZBlk1 chunks were
        // rewritten in place, the usual small commit): the maps from
        // objects to blocks stand; unlinking and linking again its 514
        // objects was 4% of an 8-byte change's commit.
        if let Some(old) = self.per_blk.get_mut(&blk)
            && old.path == d.path
            && old.direct == d.direct
        {
            *old = d;
            return;
        }
        self.forget(blk);
        for o in &d.path {
            add(&mut self.path, *o, blk);
        }
        for o in &d.direct {
            add(&mut self.direct, *o, blk);
        }
        self.per_blk.insert(blk, d);
    }

    pub(super) fn forget(&mut self, blk: u64) {
        if let Some(d) = self.per_blk.remove(&blk) {
            for (map, oids) in [(&mut self.path, &d.path), (&mut self.direct, &d.direct)] {
                for o in oids {
                    if map.get_mut(o).is_some_and(|s| s.remove(blk)) {
                        map.remove(o);
                    }
                }
            }
        }
    }
}
