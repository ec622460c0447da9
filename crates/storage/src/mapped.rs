//! Stored bytes lent in place: a record's data as a slice of the storage
//! file's memory mapping, for readers that scan large payloads (a
//! ZBigArray's blocks) and would otherwise copy every byte out of the page
//! cache before looking at it once.
//!
//! A [`MappedRecord`] keeps its mapping alive (an `Arc`), so the slice stays
//! valid whatever the storage does next: FileStorage only appends, and a
//! pack writes a new file (the old one's pages stay mapped until the last
//! record lent from it is dropped). Storages without a local file (ZEO)
//! lend nothing, and callers read the ordinary way.
//!
//! Measured on the 2-core VM (2 GiB f8 array, page cache warm): summing the
//! blocks in place runs at the speed of a plain mmap of the same bytes,
//! where loading them first (pread into the engine's pages) spends as much
//! time copying as summing.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use crate::Tid;

/// Bytes of a storage file, mapped read-only (see the module docs).
pub trait MappedBytes: Send + Sync {
    /// The whole mapping.
    fn bytes(&self) -> &[u8];

    /// Unmap the pages wholly inside `range` from this process (they stay
    /// in the page cache; a later read maps them again, same content), so a
    /// scan does not grow the resident set by what it read. Default: keep.
    fn release(&self, range: Range<usize>) {
        let _ = range;
    }

    /// Map the pages of `range` into the process now, with one call
    /// instead of a page fault per few pages (a reader about to touch all
    /// of them: a ZBlk1 block's records). Default: nothing.
    fn populate(&self, range: Range<usize>) {
        let _ = range;
    }

    /// Whether `range` is in the page cache (reading it costs no disk
    /// I/O). Default: yes.
    fn cached(&self, range: Range<usize>) -> bool {
        let _ = range;
        true
    }

    /// The file this is a mapping of, from its offset 0 (byte `i` of
    /// [`bytes`](MappedBytes::bytes) is byte `i` of the file), for readers
    /// that map a range of it elsewhere themselves. Default: none.
    fn file(&self) -> Option<&File> {
        None
    }
}

/// A record's data, in place in its storage file's mapping.
#[derive(Clone)]
pub struct MappedRecord {
    map: Arc<dyn MappedBytes>,
    range: Range<usize>,
    /// The revision's tid.
    pub serial: Tid,
}

impl MappedRecord {
    /// The record data `range` of `map` (checked against the mapping's
    /// length: `None` if it does not fit).
    pub fn new(map: Arc<dyn MappedBytes>, range: Range<usize>, serial: Tid) -> Option<Self> {
        (range.start <= range.end && range.end <= map.bytes().len()).then_some(MappedRecord {
            map,
            range,
            serial,
        })
    }

    /// The record data (the pickle).
    pub fn data(&self) -> &[u8] {
        // In range by construction.
        &self.map.bytes()[self.range.clone()]
    }

    /// Done reading: unmap the pages of this record from the process
    /// (see [`MappedBytes::release`]); the record stays readable.
    pub fn release(&self) {
        self.map.release(self.range.clone());
    }

    /// Done looking at this record's header and tail (a reader that maps
    /// its bytes elsewhere, [`Self::file_range`]): unmap from the process
    /// what those reads may have mapped, the record's pages and those of
    /// the large folios its first and last pages may lie in
    /// ([`LARGE_FOLIO`] each side). A read fault maps the whole fault-around
    /// window, and on Linux 6.18 a whole large folio: a cold scan that read
    /// each block's header through the mapping, its data into large
    /// folios, kept 1.6 MiB mapped per 2 MiB block (measured: a 28 GiB
    /// array summed from Python under a 2 GiB budget reached 23 GB of
    /// resident file pages, 3.3 GB of it after 4 GiB). Pages of neighbours
    /// unmapped too are mapped again on their next read, same content.
    pub fn release_with_folios(&self) {
        let start = self.range.start.saturating_sub(LARGE_FOLIO);
        let end = self.range.end.saturating_add(LARGE_FOLIO);
        self.map.release(start..end);
    }

    /// This record's pages are in the page cache (see
    /// [`MappedBytes::cached`]).
    pub fn is_cached(&self) -> bool {
        self.map.cached(self.range.clone())
    }

    /// The file the record lies in and the file offset of its first byte
    /// ([`Self::data`]`[0]`), for readers that map the record's bytes from
    /// the file themselves (a large byte payload stored with
    /// [`crate::StorageTxn::store_aligned`] starts at a multiple of
    /// [`crate::PAYLOAD_ALIGN`]). `None` if the mapping has no file.
    pub fn file_range(&self) -> Option<(&File, u64)> {
        Some((self.map.file()?, self.range.start as u64))
    }

    /// The same mapping, narrowed to `sub` (relative to [`Self::data`]);
    /// `None` if `sub` is not inside it.
    pub fn narrow(&self, sub: Range<usize>) -> Option<MappedRecord> {
        let start = self.range.start.checked_add(sub.start)?;
        let end = self.range.start.checked_add(sub.end)?;
        (sub.start <= sub.end && end <= self.range.end).then(|| MappedRecord {
            map: self.map.clone(),
            range: start..end,
            serial: self.serial,
        })
    }
}

/// The largest folio the page cache makes on x86-64 (a PMD: 2 MiB).
pub const LARGE_FOLIO: usize = 2 << 20;

/// Records further apart than this are released separately by
/// [`release_together`] (the pages between them are not ours to drop).
const RELEASE_GAP: usize = 64 << 10;

/// Done reading all of `recs`: unmap their pages from the process, the
/// pages between records that lie close together in the same mapping
/// included (see [`MappedBytes::release`]). One `madvise` per run of
/// neighbouring records: a 4 KiB record rarely holds a whole page of its
/// own, so releasing records one by one would leave most pages mapped.
pub fn release_together(recs: &[&MappedRecord]) {
    let mut spans: Vec<(usize, usize, &Arc<dyn MappedBytes>)> = recs
        .iter()
        .map(|r| (r.range.start, r.range.end, &r.map))
        .collect();
    spans.sort_unstable_by_key(|&(s, _, m)| (Arc::as_ptr(m) as *const u8 as usize, s));
    let mut run: Option<(usize, usize, &Arc<dyn MappedBytes>)> = None;
    for (s, e, m) in spans {
        run = match run {
            Some((rs, re, rm)) if Arc::ptr_eq(rm, m) && s <= re.saturating_add(RELEASE_GAP) => {
                Some((rs, re.max(e), rm))
            }
            Some((rs, re, rm)) => {
                rm.release(rs..re);
                Some((s, e, m))
            }
            None => Some((s, e, m)),
        };
    }
    if let Some((rs, re, rm)) = run {
        rm.release(rs..re);
    }
}

impl std::fmt::Debug for MappedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedRecord")
            .field("range", &self.range)
            .field("serial", &self.serial)
            .finish()
    }
}
