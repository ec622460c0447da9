//! FileStorage's read-only memory mapping of its data file, lent to
//! readers as [`MappedRecord`]s (see [`crate::mapped`]).
//!
//! The file is mapped whole, once, and mapped again when a record past the
//! mapped length is asked for (the file grew by commits) or the file was
//! replaced (a pack): mapping is a few microseconds of address space, the
//! pages are the page cache's. Records already lent keep their mapping.
//!
//! This module is the storage crate's only `unsafe`: a file mapping is
//! sound only while nobody truncates or rewrites the mapped bytes. A
//! FileStorage's committed records are never rewritten: commits append,
//! recovery truncates only an uncommitted tail (past the index end, which
//! is never lent), and pack writes a new file and renames it over the old
//! one, whose inode (and mapping) stays intact. A foreign process
//! truncating the file under us is outside the model (as it is for
//! Python ZODB, which would then read garbage).

use std::fs::File;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Tid;
use crate::mapped::{MappedBytes, MappedRecord};

/// Page size (x86-64): advice and residency work in whole pages.
const PAGE: usize = 4096;

/// A read-only mapping of a data file, from its offset 0, and the file.
struct FileMap(memmap2::Mmap, Arc<File>);

impl MappedBytes for FileMap {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn file(&self) -> Option<&File> {
        Some(&self.1)
    }

    fn cached(&self, range: std::ops::Range<usize>) -> bool {
        let start = range.start / PAGE * PAGE;
        let end = range.end.min(self.0.len());
        // Its first and last pages tell (mincore): pages of a record are
        // read and evicted together, near enough.
        start >= end || (self.page_cached(start) && self.page_cached((end - 1) / PAGE * PAGE))
    }

    fn will_need(&self, range: std::ops::Range<usize>) {
        // Cached already (the usual case): the advice would only walk the
        // page cache.
        if self.cached(range.clone()) {
            return;
        }
        let start = range.start / PAGE * PAGE;
        let end = range.end.min(self.0.len());
        // Advice only: failure costs nothing but speed.
        let _ = self
            .0
            .advise_range(memmap2::Advice::WillNeed, start, end - start);
    }

    fn populate(&self, range: std::ops::Range<usize>) {
        let start = range.start / PAGE * PAGE;
        let end = range.end.min(self.0.len());
        if start < end {
            // Advice only: on failure the pages fault in when read.
            let _ = self
                .0
                .advise_range(memmap2::Advice::PopulateRead, start, end - start);
        }
    }

    fn release(&self, range: std::ops::Range<usize>) {
        let start = range.start.next_multiple_of(PAGE);
        let end = range.end.min(self.0.len()) / PAGE * PAGE;
        if start < end {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only
            // unmaps the pages: any later access (a slice lent from this
            // mapping may be read at the same time) faults the same file
            // bytes in again from the page cache. The file is never
            // truncated under a mapping (see the module docs).
            let _ = unsafe {
                self.0.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

impl FileMap {
    /// The page at `off` (page-aligned, inside the mapping) is in the page
    /// cache.
    fn page_cached(&self, off: usize) -> bool {
        let mut vec = [0u8; 1];
        // SAFETY: `off` is a page inside our live mapping; mincore only
        // reports residency into `vec` (one byte for one page).
        let r = unsafe {
            nix::libc::mincore(
                self.0.as_ptr().add(off) as *mut nix::libc::c_void,
                PAGE,
                vec.as_mut_ptr(),
            )
        };
        r == 0 && vec[0] & 1 == 1
    }
}

/// The current mapping of a FileStorage's data file.
#[derive(Default)]
pub(super) struct Mapping {
    /// The mapping, with the file mapped (to notice a pack's new file).
    current: Mutex<Option<Arc<FileMap>>>,
}

impl Mapping {
    /// A mapping of `file` that covers its first `end` bytes (mapping the
    /// file again if the current one is shorter or of another file).
    /// `None` if the file cannot be mapped (the caller reads instead).
    pub(super) fn covering(&self, file: &Arc<File>, end: usize) -> Option<Arc<dyn MappedBytes>> {
        let mut cur = self.current.lock();
        let fresh = match cur.as_ref() {
            Some(m) if Arc::ptr_eq(&m.1, file) && m.0.len() >= end => None,
            _ => {
                // SAFETY: the file's committed records are never rewritten
                // or truncated while the storage is open (see the module
                // docs); the mapping is read-only.
                let m = unsafe { memmap2::Mmap::map(&**file) }.ok()?;
                if m.len() < end {
                    return None;
                }
                Some(Arc::new(FileMap(m, file.clone())))
            }
        };
        if let Some(m) = fresh {
            *cur = Some(m);
        }
        let map: Arc<dyn MappedBytes> = cur.as_ref()?.clone();
        Some(map)
    }

    /// The record data at `pos..pos+len` of `file`, lent from a mapping
    /// that covers it (mapping the file again if needed). `None` if the
    /// file cannot be mapped (the caller reads instead).
    pub(super) fn record(
        &self,
        file: &Arc<File>,
        pos: u64,
        len: u64,
        serial: Tid,
    ) -> Option<MappedRecord> {
        let start = usize::try_from(pos).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        MappedRecord::new(self.covering(file, end)?, start..end, serial)
    }
}
