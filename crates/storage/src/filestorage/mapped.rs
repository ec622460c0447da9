//! FileStorage's read-only memory mapping of its data file, lent to
//! readers as [`MappedRecord`]s (see [`crate::mapped`]).
//!
//! The file is mapped whole, once, with room to grow past its end (see
//! [`headroom`]), and mapped again only when a record past that room is
//! asked for or the file was replaced (a pack): mapping is a few
//! microseconds of address space, the pages are the page cache's. Records
//! already lent keep their mapping.
//!
//! The room matters for small commits. Mapped exactly to its length, the
//! file was mapped again after every commit (it grew), and the writer of a
//! ZBlk1 block, which compares its 512 stored chunks in place, paid for
//! mapping them in again (`MADV_POPULATE_READ`) and for unmapping the old
//! mapping each time: 31% of an 8-byte change's commit (2.4-3.0 ms on the
//! 2-core VM; see `crates/bigfile/examples/commitprof.rs`). With the room,
//! pages mapped in stay mapped across commits. Bytes past the file's end
//! are never lent (a read there would be a `SIGBUS`): [`MappedBytes::bytes`]
//! ends at the furthest end a caller has asked to be covered (an index end
//! or a record's end, checked against the file's length when it grows),
//! which only grows.
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
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::Tid;
use crate::mapped::{MappedBytes, MappedRecord};

/// Page size (x86-64): advice and residency work in whole pages.
const PAGE: usize = 4096;

/// The address space mapped past a file's end when it is mapped: half its
/// length, at least 256 MiB and at most 64 GiB (a few small commits never
/// map it again; a file growing by gigabytes at a time is mapped again
/// every few of them).
fn headroom(len: usize) -> usize {
    (len / 2).clamp(256 << 20, 64 << 30)
}

/// A read-only mapping of a data file, from its offset 0, reaching past the
/// file's end; the file; how many bytes of it may be read (all inside the
/// file, see the module docs); and `/proc/self/pagemap`, opened when first
/// needed (`None`: it cannot be read).
struct FileMap(
    memmap2::Mmap,
    Arc<File>,
    AtomicUsize,
    OnceLock<Option<File>>,
);

impl FileMap {
    /// The bytes that may be read (a prefix of the file).
    fn valid(&self) -> usize {
        self.2.load(Ordering::Acquire).min(self.0.len())
    }
}

impl MappedBytes for FileMap {
    fn bytes(&self) -> &[u8] {
        &self.0[..self.valid()]
    }

    fn file(&self) -> Option<&File> {
        Some(&self.1)
    }

    fn cached(&self, range: std::ops::Range<usize>) -> bool {
        let start = range.start / PAGE * PAGE;
        let end = range.end.min(self.valid());
        // Its first and last pages tell (mincore): pages of a record are
        // read and evicted together, near enough.
        start >= end || (self.page_cached(start) && self.page_cached((end - 1) / PAGE * PAGE))
    }

    fn populate(&self, range: std::ops::Range<usize>) {
        let start = range.start / PAGE * PAGE;
        let end = range.end.min(self.valid());
        // Pages are populated and released a run at a time: a run whose
        // first page is mapped was populated and is still there. Asking
        // again walks every page of it (`get_user_pages`, 0.4 us a page):
        // 12% of a small ZBlk1 commit, which compares the same 512 chunk
        // records as the commit before.
        if start < end && !self.page_mapped(start) {
            // Advice only: on failure the pages fault in when read.
            let _ = self
                .0
                .advise_range(memmap2::Advice::PopulateRead, start, end - start);
        }
    }

    fn release(&self, range: std::ops::Range<usize>) {
        let start = range.start.next_multiple_of(PAGE);
        let end = range.end.min(self.valid()) / PAGE * PAGE;
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
    /// The page at `off` (page-aligned, inside the mapping) is mapped into
    /// this process (`/proc/self/pagemap`: its entry's present bit). False
    /// when that cannot be told.
    fn page_mapped(&self, off: usize) -> bool {
        let Some(pm) = self.3.get_or_init(|| File::open("/proc/self/pagemap").ok()) else {
            return false;
        };
        let vpn = (self.0.as_ptr() as usize + off) / PAGE;
        let mut e = [0u8; 8];
        pm.read_exact_at(&mut e, vpn as u64 * 8).is_ok() && u64::from_le_bytes(e) >> 63 == 1
    }

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
    /// A mapping of `file` that covers its first `end` bytes: the current
    /// one, now lending up to `end`, or the file mapped again if the
    /// current one's room is shorter or it is of another file. `None` if
    /// the file is shorter than `end` or cannot be mapped (the caller reads
    /// instead).
    pub(super) fn covering(&self, file: &Arc<File>, end: usize) -> Option<Arc<dyn MappedBytes>> {
        let mut cur = self.current.lock();
        let fresh = match cur.as_ref() {
            Some(m) if Arc::ptr_eq(&m.1, file) && m.0.len() >= end => {
                // Lending more than before: only bytes inside the file (a
                // damaged length must not lend bytes whose read is a SIGBUS).
                if end > m.valid() {
                    let len = file.metadata().ok()?.len();
                    if u64::try_from(end).ok()? > len {
                        return None;
                    }
                    m.2.fetch_max(end, Ordering::AcqRel);
                }
                None
            }
            _ => {
                let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
                if len < end {
                    return None;
                }
                let room = len.checked_add(headroom(len))?;
                // SAFETY: the file's committed records are never rewritten
                // or truncated while the storage is open (see the module
                // docs); the mapping is read-only, and nothing past the
                // committed `end` is ever read from it (`FileMap::valid`),
                // so the room past the file's end is address space only.
                let m = unsafe { memmap2::MmapOptions::new().len(room).map(&**file) }.ok()?;
                Some(Arc::new(FileMap(
                    m,
                    file.clone(),
                    AtomicUsize::new(end),
                    OnceLock::new(),
                )))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut t = tempfile::NamedTempFile::new().expect("tmp");
        t.write_all(&vec![7u8; len]).expect("write");
        let f = Arc::new(t.reopen().expect("reopen"));
        (t, f)
    }

    #[test]
    fn one_mapping_serves_the_growing_file_and_lends_only_committed_bytes() {
        let (mut t, f) = file_of(10_000);
        let m = Mapping::default();
        let a = m.covering(&f, 10_000).expect("mapped");
        assert_eq!(a.bytes().len(), 10_000, "nothing past the committed end");
        // A committer appends; the next reader asks for more: the same
        // mapping, now lending the new bytes.
        t.write_all(&vec![9u8; 5_000]).expect("append");
        let b = m.covering(&f, 15_000).expect("mapped");
        assert!(
            std::ptr::addr_eq(Arc::as_ptr(&a), Arc::as_ptr(&b)),
            "mapped again"
        );
        assert_eq!(b.bytes().len(), 15_000);
        assert_eq!(b.bytes()[14_999], 9);
        // Asking for less does not shrink what is lent; pages past the end
        // are never populated or released (no SIGBUS, no error).
        assert_eq!(m.covering(&f, 100).expect("mapped").bytes().len(), 15_000);
        b.populate(0..1 << 30);
        b.release(0..1 << 30);
        assert_eq!(b.bytes()[0], 7);
        // Another file (a pack's): mapped anew.
        let (_t2, g) = file_of(4_096);
        let c = m.covering(&g, 4_096).expect("mapped");
        assert!(!std::ptr::addr_eq(Arc::as_ptr(&b), Arc::as_ptr(&c)));
        // More than the file holds cannot be covered.
        assert!(m.covering(&g, 4_097).is_none());
    }

    #[test]
    fn populated_runs_are_told_mapped() {
        let (_t, f) = file_of(64 << 10);
        let m = Mapping::default();
        let a = m.covering(&f, 64 << 10).expect("mapped");
        a.release(0..64 << 10);
        let fm = m.current.lock().clone().expect("current");
        assert!(!fm.page_mapped(8192), "released");
        a.populate(8192..16384);
        assert!(fm.page_mapped(8192), "populated");
    }

    #[test]
    fn a_record_released_with_its_folios_leaves_nothing_mapped_around_it() {
        use crate::mapped::{LARGE_FOLIO, MappedRecord};
        const MIB: usize = 1 << 20;
        let len = 12 * MIB;
        let (_t, f) = file_of(len);
        let m = Mapping::default();
        let a = m.covering(&f, len).expect("mapped");
        let fm = m.current.lock().clone().expect("current");
        a.populate(0..len);
        let pages = [
            0,
            2 * MIB,
            3 * MIB + 8192,
            5 * MIB,
            7 * MIB,
            9 * MIB,
            11 * MIB,
        ];
        assert!(pages.iter().all(|&p| fm.page_mapped(p)), "all populated");
        // A record from 4 MiB + 100 to 6 MiB - 100, as a block's header
        // read would leave it: its pages and the folios around it mapped.
        let rec = MappedRecord::new(a.clone(), 4 * MIB + 100..6 * MIB - 100, crate::Tid(1))
            .expect("in range");
        rec.release_with_folios();
        for p in [2 * MIB + 4096, 3 * MIB + 8192, 5 * MIB, 7 * MIB] {
            assert!(!fm.page_mapped(p), "page at {p} released");
        }
        // Beyond a large folio on either side: left alone.
        const { assert!(4 * MIB + 100 - LARGE_FOLIO > 2 * MIB) };
        for p in [0, MIB, 9 * MIB, 11 * MIB] {
            assert!(fm.page_mapped(p), "page at {p} kept");
        }
        // Still readable: the same bytes fault in again.
        assert!(rec.data().iter().all(|&b| b == 7));
    }
}
