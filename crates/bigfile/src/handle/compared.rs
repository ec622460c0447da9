//! The stored chunks a commit's writer compared last, kept mapped for the
//! next commits.
//!
//! A ZBlk1 block kept as ZBlk1 is stored by comparing its 512 stored
//! ZData chunks, lent in place from the storage's file mapping, with the
//! block's new bytes: only changed chunks are written. Mapping those
//! records in (a `get_user_pages` walk of 2 MiB) and out again was 30% of
//! committing an 8-byte change (2.4-3.0 ms on the 2-core VM, measured with
//! `examples/commitprof.rs`), and a run of small changes compares the same
//! blocks again and again. So the records of the last [`KEEP_BLOCKS`]
//! blocks compared stay lent (their pages stay mapped: the storage's
//! mapping outlives commits, see `storage::filestorage::mapped`); a block
//! compared again gives back only its records that were rewritten, and the
//! oldest block beyond the bound gives back all of its pages
//! (`storage::mapped::release_together`). The process's resident set thus
//! holds at most [`KEEP_BLOCKS`] blocks of stored chunks beyond the
//! handle's budget, however many commits follow; with the keeping, an
//! 8-byte change commits in 1.6-1.7 ms.

use std::collections::{HashSet, VecDeque};
use storage::mapped::{MappedRecord, release_together};

/// Blocks whose compared chunks stay mapped: 32 MiB of page cache.
pub(super) const KEEP_BLOCKS: usize = 16;

/// The chunk records of the blocks compared last, oldest first.
#[derive(Default)]
pub(super) struct Compared {
    blocks: VecDeque<(u64, Vec<MappedRecord>)>,
}

/// A record's identity: where its bytes are mapped (records of one mapping
/// never overlap, and a mapping stays while a record of it is kept).
fn at(r: &MappedRecord) -> usize {
    r.data().as_ptr() as usize
}

impl Compared {
    /// The writer compared block `blk` with its stored chunks `recs`: keep
    /// them mapped; give back what no kept block holds any more.
    pub(super) fn keep(&mut self, blk: u64, recs: Vec<MappedRecord>) {
        if let Some(i) = self.blocks.iter().position(|(b, _)| *b == blk)
            && let Some((_, old)) = self.blocks.remove(i)
        {
            let now: HashSet<usize> = recs.iter().map(at).collect();
            let gone: Vec<&MappedRecord> = old.iter().filter(|r| !now.contains(&at(r))).collect();
            release_together(&gone);
        }
        if !recs.is_empty() {
            self.blocks.push_back((blk, recs));
        }
        while self.blocks.len() > KEEP_BLOCKS {
            if let Some((_, old)) = self.blocks.pop_front() {
                release_together(&old.iter().collect::<Vec<_>>());
            }
        }
    }

    /// The blocks kept, oldest first.
    #[cfg(test)]
    pub(super) fn blocks(&self) -> Vec<u64> {
        self.blocks.iter().map(|(b, _)| *b).collect()
    }
}

impl Drop for Compared {
    /// The handle is gone (or its commit failed): give every page back.
    fn drop(&mut self) {
        for (_, old) in self.blocks.drain(..) {
            release_together(&old.iter().collect::<Vec<_>>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::ops::Range;
    use std::sync::Arc;
    use storage::Tid;
    use storage::mapped::MappedBytes;

    /// 64 MiB of "file", recording what is released.
    struct Fake(Vec<u8>, Mutex<Vec<Range<usize>>>);

    impl MappedBytes for Fake {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
        fn release(&self, range: Range<usize>) {
            self.1.lock().push(range);
        }
    }

    /// Block `blk`'s 512 chunk records laid out one after another (the
    /// record of chunk `moved`, if any, rewritten far away).
    fn records(map: &Arc<Fake>, blk: usize, moved: Option<usize>) -> Vec<MappedRecord> {
        (0..512)
            .map(|i| {
                let at = if Some(i) == moved {
                    (48 << 20) + blk * 8192
                } else {
                    blk * (2 << 20) + i * 4096
                };
                let m: Arc<dyn MappedBytes> = map.clone();
                MappedRecord::new(m, at..at + 4096, Tid(1)).expect("in the fake file")
            })
            .collect()
    }

    fn released(map: &Fake) -> Vec<Range<usize>> {
        std::mem::take(&mut *map.1.lock())
    }

    #[test]
    fn keeps_the_last_blocks_and_gives_back_the_rest() {
        let map = Arc::new(Fake(vec![0; 64 << 20], Mutex::new(Vec::new())));
        let mut c = Compared::default();
        for b in 0..KEEP_BLOCKS {
            c.keep(b as u64, records(&map, b, None));
        }
        assert!(
            released(&map).is_empty(),
            "nothing released within the bound"
        );
        // Block 3 compared again, its chunk 7 now rewritten elsewhere: only
        // the record it no longer has is given back.
        c.keep(3, records(&map, 3, Some(7)));
        let at7 = 3 * (2 << 20) + 7 * 4096;
        assert_eq!(released(&map), vec![at7..at7 + 4096]);
        assert_eq!(*c.blocks().last().expect("kept"), 3, "most recent last");
        // One block more than the bound: the oldest (block 0) gives back its
        // pages, in one run.
        c.keep(100, records(&map, 20, None));
        assert_eq!(released(&map), vec![0..2 << 20]);
        assert_eq!(c.blocks().len(), KEEP_BLOCKS);
        assert!(!c.blocks().contains(&0));
        // A block stored as something else now (no chunks lent): all of its
        // kept records go back.
        c.keep(5, Vec::new());
        assert_eq!(released(&map), vec![5 * (2 << 20)..6 * (2 << 20)]);
        assert!(!c.blocks().contains(&5));
        // The handle goes: everything kept goes back.
        let kept = c.blocks().len();
        drop(c);
        let r = released(&map);
        // Each block's run, plus block 3's rewritten record lying apart.
        assert_eq!(r.len(), kept + 1);
        assert_eq!(
            r.iter().map(|x| x.len()).sum::<usize>(),
            kept * (2 << 20) + 4096
        );
    }
}
