//! Statistics over the blocks as stored: the read-only scan that does not
//! load anything it can read in place.
//!
//! A reduction looks at every element once. Loading a block for it means
//! copying it out of the page cache into the engine's pages and then
//! reading it again; reading a ZBlk0 block where FileStorage's mapping
//! already has it (`ZBigFileH::stored_block`) skips both the copy and the
//! pages. Blocks this transaction may have changed (resident in the
//! handle: loaded, dirty, spilled, cut) and blocks that are not lent in
//! place (ZBlk1, ZEO) are read through the handle as before, with
//! drop-behind. Holes count as zeros without reading anything.
//!
//! The work is split by block, in parallel, the workers taking blocks in
//! file order; once the scan meets a block that is not in the page cache,
//! one thread reads the file ahead of them in order and they sum what it
//! has read ([`read_ahead`]: the kernel's read-ahead then sees the one
//! sequential reader it is built for). Each block's elements are
//! summed pairwise (eight lanes), so the sum stays within numpy's pairwise
//! error bound. Stored bytes sit at any offset of the file: a block that is
//! not aligned for its element type is summed with unaligned loads (an
//! aligned copy first cost as much time as the sum itself).
//!
//! Measured on the 2-core VM (2 GiB f8, fresh process, page cache warm,
//! `wendelin stat`): see the README's benchmark table (in-place vs loading).

mod read_ahead;

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::reduce::{Acc, pairwise, pairwise_bytes};
use crate::{Error, Real, ZBigArray};
use bigfile::StoredBlock;
use read_ahead::ReadAhead;

/// The page size the reader ahead touches at (one read per page).
const PAGE: usize = 4096;

/// The statistics of consecutive blocks' `accs`, merged pairwise in a
/// fixed tree (the same result whatever the thread count).
fn merge_pairwise(accs: &[Acc]) -> Acc {
    match accs {
        [] => Acc::EMPTY,
        [a] => *a,
        _ => {
            let (l, r) = accs.split_at(accs.len() / 2);
            Acc::merge(merge_pairwise(l), merge_pairwise(r))
        }
    }
}

/// Partial statistics of `n` zeros.
fn zeros(n: u64) -> Acc {
    if n == 0 {
        return Acc::EMPTY;
    }
    Acc {
        n,
        sum: 0.0,
        min: 0.0,
        max: 0.0,
    }
}

/// Partial statistics of the elements in `bytes` (whole elements, any
/// alignment): in place when aligned, else with unaligned loads (the same
/// summation tree either way).
fn acc_of_bytes<T: Real>(bytes: &[u8]) -> Acc {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(xs) => pairwise(xs),
        Err(_) => pairwise_bytes::<T>(bytes),
    }
}

impl<T: Real> ZBigArray<T> {
    /// count, sum, min and max over the blocks as stored (see the module
    /// docs); `progress` is told the bytes done after each block. `None`
    /// if the block size is not a multiple of the element size (elements
    /// would straddle blocks): the caller scans views instead.
    pub(crate) fn stats_in_place(
        &self,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<Acc>, Error> {
        let size = std::mem::size_of::<T>();
        let bs = self.file().blksize();
        if size == 0 || !bs.is_multiple_of(size) {
            return Ok(None);
        }
        let len = self.len();
        let per_block = bs / size;
        let nblocks = len.div_ceil(per_block);
        let h = self.file().fileh_read()?;
        let fh: &virtmem::FileH = &h;
        let done = AtomicU64::new(0);
        let dropping = AtomicBool::new(false);
        // Workers take blocks in file order (one shared cursor), so the
        // scan reads the file front to back as one stream, as a cold disk
        // wants; each worker keeps its blocks' statistics by block number,
        // and they are merged in a fixed order, so the result does not
        // depend on who took what.
        let next = AtomicU64::new(0);
        let nb = nblocks as u64;
        let workers = rayon::current_num_threads().max(1);
        let ahead = ReadAhead::new(nb);
        let table = self.file().block_table()?;
        let scan = || {
            (0..workers)
                .into_par_iter()
                .map(|_| -> Result<Vec<(usize, Acc)>, Error> {
                    let mut mine = Vec::new();
                    loop {
                        let blk = next.fetch_add(1, Ordering::Relaxed);
                        if blk >= nb {
                            return Ok(mine);
                        }
                        let b = blk as usize;
                        let first = b * per_block;
                        let n = per_block.min(len - first);
                        let nbytes = n * size;
                        // Once the scan went cold, the reader ahead reads
                        // each block first, its record's header included.
                        ahead.wait_for(blk);
                        let stored = if fh.is_resident(blk) {
                            StoredBlock::Unavailable
                        } else {
                            self.file().stored_block_in(&table, blk)?
                        };
                        if let StoredBlock::Mapped(r) = &stored {
                            if !r.is_cached() {
                                ahead.cold_at(blk);
                            }
                            ahead.wait_for(blk);
                        }
                        let acc = match stored {
                            StoredBlock::Hole => zeros(n as u64),
                            StoredBlock::Mapped(rec) if rec.data().len() % size == 0 => {
                                let data = rec.data();
                                let have = data.len().min(nbytes);
                                let acc = Acc::merge(
                                    acc_of_bytes::<T>(&data[..have]),
                                    zeros(((nbytes - have) / size) as u64),
                                );
                                // The scan's resident set stays a few blocks.
                                rec.release();
                                acc
                            }
                            _ => {
                                let loaded = self.load_for_scan(first..first + n)?;
                                let acc = pairwise(&fh.view::<T>((first * size) as u64, n)?);
                                fh.scan_done(&loaded, &dropping);
                                acc
                            }
                        };
                        mine.push((b, acc));
                        progress(done.fetch_add(nbytes as u64, Ordering::Relaxed) + nbytes as u64);
                    }
                })
                .collect::<Result<Vec<_>, Error>>()
        };
        // A cold scan's disk reads come from one thread (`read_ahead`).
        let read = |blk: u64| {
            if fh.is_resident(blk) {
                return;
            }
            if let Ok(StoredBlock::Mapped(rec)) = self.file().stored_block_in(&table, blk) {
                let data = rec.data();
                for k in (0..data.len()).step_by(PAGE) {
                    std::hint::black_box(data[k]);
                }
            }
        };
        let taken = std::thread::scope(|s| {
            let reader = std::thread::Builder::new()
                .name("scan-read-ahead".into())
                .spawn_scoped(s, || ahead.run(&next, read));
            if reader.is_err() {
                ahead.absent();
            }
            let taken = scan();
            ahead.finish();
            taken
        })?;
        let mut accs = vec![Acc::EMPTY; nblocks];
        for (b, acc) in taken.into_iter().flatten() {
            if let Some(slot) = accs.get_mut(b) {
                *slot = acc;
            }
        }
        let acc = merge_pairwise(&accs);
        Ok(Some(acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_bytes_give_the_aligned_result() {
        let xs: Vec<f64> = (0..10_000).map(|i| (i % 97) as f64 * 0.25 - 3.0).collect();
        let bytes: &[u8] = bytemuck::cast_slice(&xs);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(bytes);
        let a = acc_of_bytes::<f64>(bytes);
        let b = acc_of_bytes::<f64>(&shifted[1..]);
        assert_eq!((a.n, a.min, a.max), (b.n, b.min, b.max));
        assert!((a.sum - b.sum).abs() <= 1e-9 * a.sum.abs().max(1.0));
        let direct: f64 = xs.iter().sum();
        assert!((a.sum - direct).abs() <= 1e-9 * direct.abs());
    }

    #[test]
    fn zeros_merge_as_zeros() {
        let z = Acc::merge(zeros(5), pairwise(&[2.0f64, -1.0]));
        assert_eq!((z.n, z.sum, z.min, z.max), (7, 1.0, -1.0, 2.0));
        assert_eq!(zeros(0).n, 0);
    }
}
