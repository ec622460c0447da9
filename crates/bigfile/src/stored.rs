//! Blocks as stored, lent in place: what a read-only scan needs instead of
//! loading blocks into memory it will look at once.
//!
//! A ZBlk0 block's bytes lie contiguous in its record (a pickled byte
//! string), so when the storage can lend records from its file mapping
//! (FileStorage, see `storage::mapped`) a scan can read them where they
//! are: no copy out of the page cache, no page of the engine's mapping
//! touched, nothing to evict. A ZBlk1 block is 512 separate records and
//! anything unusual (not a plain byte string, a storage without a local
//! file) is `Unavailable`: the caller loads it the ordinary way.
//!
//! Measured on the 2-core VM (2 GiB f8, fresh process, page cache warm):
//! `wendelin stat` loading blocks through the engine spent about as much
//! time copying (`pread`) as summing; summing in place is the speed of a
//! plain mmap of the same bytes.

use storage::MappedRecord;

use crate::Error;
use crate::objects::{is_payload_tail, payload_layout};
use crate::reader::{BlockDeps, SnapshotFile};
use crate::zblk::ZBlkKind;
use storage::Oid;

/// A file's block table at one snapshot, read once: which ZBlk holds each
/// block. A scan that looks blocks up one by one walks the table's tree
/// for each and decodes its root and a bucket every time; on the 28 GiB
/// out-of-core array (14 400 blocks) that decoding was about a third of
/// `wendelin stat`'s CPU time, done twice per block (the reader ahead and
/// a worker). Read in one walk, a lookup is a binary search.
#[derive(Debug, Clone)]
pub struct BlockTable {
    at: storage::Tid,
    /// (block, ZBlk oid), in block order.
    refs: Vec<(u64, Oid)>,
}

impl BlockTable {
    /// The table at snapshot `at` from its items in block order.
    pub(crate) fn new(at: storage::Tid, refs: Vec<(u64, Oid)>) -> BlockTable {
        BlockTable { at, refs }
    }

    /// The snapshot the table was read at.
    pub fn at(&self) -> storage::Tid {
        self.at
    }

    /// The ZBlk of block `blk` (`None`: a hole).
    pub fn zblk(&self, blk: u64) -> Option<Oid> {
        self.refs
            .binary_search_by_key(&blk, |&(b, _)| b)
            .ok()
            .and_then(|i| self.refs.get(i))
            .map(|&(_, z)| z)
    }

    /// How many blocks are not holes.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// Whether every block is a hole.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// What is stored for one block.
#[derive(Debug, Clone)]
pub enum StoredBlock {
    /// No data: the block reads as zeros.
    Hole,
    /// The block's bytes in place (at most a block; the rest of the block
    /// reads as zeros), and the ZBlk revision they come from.
    Mapped(MappedRecord),
    /// Not available in place: load the block instead.
    Unavailable,
}

impl SnapshotFile<'_> {
    /// What is stored for block `blk` at this snapshot, lent in place if
    /// possible (see the module docs).
    pub fn stored_block(&self, blk: u64) -> Result<StoredBlock, Error> {
        Ok(self.stored_block_deps(blk)?.0)
    }

    /// [`Self::stored_block`], the block's ZBlk found in `table` (read at
    /// this snapshot; a table of another one is not used).
    pub fn stored_block_in(&self, table: &BlockTable, blk: u64) -> Result<StoredBlock, Error> {
        if table.at != self.at() {
            return self.stored_block(blk);
        }
        match table.zblk(blk) {
            None => Ok(StoredBlock::Hole),
            Some(zoid) => self.stored_zblk0(zoid),
        }
    }

    /// [`Self::stored_block`] with what the block depends on (the blktab
    /// path, the ZBlk and its revision), as a load records it for exact
    /// invalidation.
    pub(crate) fn stored_block_deps(&self, blk: u64) -> Result<(StoredBlock, BlockDeps), Error> {
        let mut deps = BlockDeps::default();
        let Some(zoid) = self.zblk_ref(blk, &mut deps.path)? else {
            return Ok((StoredBlock::Hole, deps));
        };
        deps.direct.push(zoid);
        let stored = self.stored_zblk0(zoid)?;
        if let StoredBlock::Mapped(rec) = &stored {
            deps.zblk = Some((zoid, ZBlkKind::ZBlk0, rec.serial));
        }
        Ok((stored, deps))
    }

    /// The ZBlk `zoid` at this snapshot as a ZBlk0 payload lent in place.
    fn stored_zblk0(&self, zoid: Oid) -> Result<StoredBlock, Error> {
        let Some(rec) = self
            .snap
            .storage
            .map_before(zoid, self.snap.at.successor())?
        else {
            return Ok(StoredBlock::Unavailable);
        };
        let data = rec.data();
        let head = &data[..data.len().min(storage::pickle::BYTES_STATE_HEAD)];
        let Some((off, len)) = payload_layout(head, &["ZBlk0", "ZBlk"]) else {
            return Ok(StoredBlock::Unavailable);
        };
        let Ok(len) = usize::try_from(len) else {
            return Ok(StoredBlock::Unavailable);
        };
        let Some(end) = off.checked_add(len).filter(|&e| e <= data.len()) else {
            return Ok(StoredBlock::Unavailable);
        };
        if !is_payload_tail(&data[end..]) {
            return Ok(StoredBlock::Unavailable);
        }
        if len as u64 > self.meta.blksize {
            // The ordinary load reports this damage with its context.
            return Ok(StoredBlock::Unavailable);
        }
        Ok(rec
            .narrow(off..end)
            .map_or(StoredBlock::Unavailable, StoredBlock::Mapped))
    }
}
