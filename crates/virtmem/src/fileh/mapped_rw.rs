//! Blocks mapped read-write straight from their file, for handles whose
//! memory is written through pointers the engine never sees (the Python
//! binding hands numpy raw, writable pointers that outlive any view).
//!
//! Such a handle cannot map blocks read-only ([`super::mapped`]: a write
//! would fault with SIGSEGV) nor move pages in ([`super::zero_copy`]: a
//! write between the move and the write protection would go unseen), so
//! every load used to copy, twice (`pread`, then `UFFDIO_COPY`): Python's
//! `np.asarray(A).sum()` on a writable connection ran at 0.20-0.25x a
//! `numpy.memmap` sum on the 2-core VM, against 0.53x on a read-only
//! snapshot whose blocks are mapped.
//!
//! Here a block is mapped `MAP_PRIVATE`, `PROT_READ | PROT_WRITE`, from its
//! page-aligned, never rewritten range of the file (faulted in for
//! reading: the page cache's own pages, no copy). A write anywhere, through any
//! pointer, makes the kernel copy that page into private anonymous memory;
//! the file is never written. Which blocks were written is then a question
//! for the page tables: `PAGEMAP_SCAN` finds pages that are not file pages,
//! present or swapped out ([`Pagemap::copied_on_write`]; about 12 us per
//! 2 MiB block, measured). The scan runs when the engine needs the dirty set
//! (`dirty_blocks`, `writeout`, `discard`), and a written block joins it.
//!
//! Userfaultfd's write protection in asynchronous mode also works on file
//! mappings (measured: it costs 17 us more per block to arm), but finding
//! copies needs no userfaultfd at all, and it has no window: a write
//! between the `mmap` and arming would go unseen, while a copy is a copy
//! whenever it is made.
//!
//! What a write may land on concurrently can never be dropped: dropping
//! the pages of a private mapping (`MADV_DONTNEED`) also drops the copies,
//! and no kernel call drops a page only if it was not copied meanwhile
//! (`MADV_PAGEOUT`, measured, neither unmaps a writable private mapping's
//! pages nor keeps the page cache of read-only ones). So these blocks are
//! *pinned*: accounted in the budget, never evicted nor dropped behind a
//! scan, and at most half the budget ([`Budget::try_pin`]; past that,
//! blocks load the ordinary way, evictable). They leave at transaction
//! boundaries, which in ZODB's model no access of the connection runs
//! across: a stored block is unmapped at MARKSTORED (its next touch maps
//! the record just committed), an aborted one drops its copies (the file's
//! bytes show again), an invalidated one is unmapped, and the user of the
//! handle unmaps the clean ones at every boundary ([`FileH::unmap_pinned`]),
//! so that a handle that read much does not keep half the budget from the
//! others (found in CI: arrays left alive by earlier tests pinned it all).
//!
//! [`FileH::unmap_pinned`]: super::FileH::unmap_pinned
//!
//! [`Pagemap::copied_on_write`]: crate::mapping::Pagemap::copied_on_write
//! [`Budget::try_pin`]: crate::budget::Budget::try_pin

use crate::error::{Error, Result};

use super::Shared;
use super::state::{Block, State};

impl Shared {
    /// Add the read-write mapped blocks that were written since they were
    /// mapped (or last discarded) to the dirty set. Under the state lock.
    /// A scan that fails counts the block as written: storing a clean block
    /// costs a record, missing a written one would lose data.
    pub(super) fn collect_rw_writes(&self, st: &mut State) {
        let Some(pm) = &self.rw_scan else {
            return;
        };
        for blk in clean_rw_blocks(st) {
            let (off, len) = self.block_range(blk);
            let written = pm
                .copied_on_write(self.map.addr() + off, len)
                .unwrap_or_else(|e| {
                    vtrace!("T scanning read-write mapped blk {blk}: {e}");
                    true
                });
            if written {
                st.dirty.insert(blk);
            }
        }
    }

    /// MARKSTORED of a read-write mapped block: its bytes are stored, so it
    /// is unmapped (registered anonymous memory again) and leaves the table;
    /// its next touch maps the record just written. Under `&mut FileH`.
    pub(super) fn markstored_rw(&self, st: &mut State, blk: u64) -> Result<()> {
        self.unmap_block(blk)?;
        st.blocks.remove(&blk);
        st.dirty.remove(&blk);
        self.budget.sub(self.bs as u64);
        Ok(())
    }

    /// Unmap every read-write mapped block that was not written (the
    /// written ones stay, dirty, until stored or discarded): their pins go
    /// back to the budget and their next touch maps them again. Under
    /// `&mut FileH`, at a transaction boundary.
    pub(super) fn unmap_pinned(&self) -> Result<()> {
        if self.rw_scan.is_none()
            || self.mapped_here.load(std::sync::atomic::Ordering::Relaxed) == 0
        {
            return Ok(());
        }
        let mut st = self.quiesce();
        self.collect_rw_writes(&mut st);
        let mut r = Ok(());
        for blk in clean_rw_blocks(&st) {
            if let Err(e) = self.unmap_block(blk) {
                r = Err(e);
                break;
            }
            st.blocks.remove(&blk);
            self.budget.sub(self.bs as u64);
        }
        st.paused = false;
        r
    }

    /// Discard of a written read-write mapped block: drop its copied pages,
    /// so it shows its file's bytes again; it stays mapped and accounted.
    /// Under `&mut FileH`.
    pub(super) fn discard_rw(&self, st: &mut State, blk: u64) -> Result<()> {
        let (off, len) = self.block_range(blk);
        // SAFETY: a block's range, a private file mapping; `&mut FileH`: no
        // view is alive (a raw pointer's access across a transaction
        // boundary reads the file's bytes again, as after an abort).
        unsafe { self.map.dontneed(off, len) }.map_err(|source| Error::Os {
            op: "madvise(MADV_DONTNEED)",
            source,
        })?;
        st.dirty.remove(&blk);
        Ok(())
    }
}

/// The read-write mapped blocks not (yet) known to be written.
fn clean_rw_blocks(st: &State) -> Vec<u64> {
    st.blocks
        .iter()
        .filter(|(b, s)| matches!(s, Block::MappedRw) && !st.dirty.contains(b))
        .map(|(b, _)| *b)
        .collect()
}
