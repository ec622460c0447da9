//! The mmap layer: the anonymous reservation behind a file handle, the
//! per-thread staging buffers, and the conversions from mapped memory to Rust
//! slices. With [`crate::uffd`] this is where the crate's `unsafe` code
//! lives: one aligned-mapping helper ([`AlignedMap`]) maps, trims and unmaps
//! for both the reservation and the staging buffers, and the functions whose
//! callers must uphold an aliasing contract (typed slices of the reservation,
//! dropping its pages) are `unsafe fn` with the contract spelled out.

use std::io;
use std::ptr::NonNull;

/// Size of a base page on x86-64.
pub const PAGE: usize = 4096;

/// The kernel's fault-around window (`fault_around_bytes`, 64 KiB by
/// default since Linux 3.15): a read fault on a file mapping maps the page
/// cache's pages of the whole window around it.
pub const FAULT_AROUND: usize = 64 << 10;

/// Whether the page at address `at` (of a mapping of ours) is in the page
/// cache (`mincore`; it reads no memory); an error answers no.
fn page_resident(at: usize) -> bool {
    let mut v = 0u8;
    let at = at & !(PAGE - 1);
    // SAFETY: mincore writes one byte for one page into `v` and reads no
    // memory; an address that is not mapped is an error (ENOMEM), not a
    // fault.
    let rc = unsafe { libc::mincore(at as *mut libc::c_void, PAGE, &mut v) };
    rc == 0 && v & 1 == 1
}

/// How [`Reservation::populate_file`] gets a file mapping's pages that the
/// page cache lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRead {
    /// `MADV_WILLNEED` on the whole range, then a fault per window.
    Background,
    /// Every page touched in order, the caller being the one sequential
    /// reader of the file (the kernel's read-ahead follows it).
    InOrder,
}

/// Read `len` bytes of the file `fd` from offset `foff` into the page cache
/// the way a sequential reader does ([`FileRead::InOrder`]), through a
/// mapping of the range made for this and unmapped after: the pages stay
/// cached, nothing stays mapped. A range whose first and last pages are
/// cached already is left alone (`Ok(false)`); otherwise `wait` runs
/// first (the caller waits for its turn to read).
///
/// # Safety
///
/// The file's bytes there lie within the file (a read past its end is a
/// `SIGBUS`).
pub unsafe fn read_file_pages(
    fd: std::os::fd::BorrowedFd<'_>,
    foff: u64,
    len: usize,
    wait: impl FnOnce(),
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(false);
    }
    // mmap takes a page-aligned offset.
    let lead = (foff % PAGE as u64) as usize;
    let len = len
        .checked_add(lead)
        .ok_or_else(|| io::Error::other("length"))?;
    let foff =
        libc::off_t::try_from(foff - lead as u64).map_err(|_| io::Error::other("file offset"))?;
    // SAFETY: a new private read-only mapping at an address of the kernel's
    // choosing; it aliases nothing of ours.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd.as_raw_fd(),
            foff,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let cached = |at: usize| page_resident(p as usize + at);
    let read = !(cached(0) && cached((len - 1) & !(PAGE - 1)));
    if read {
        wait();
        for k in (0..len).step_by(PAGE) {
            // SAFETY: a read within the mapping just made, of file bytes that
            // lie within the file (caller contract).
            unsafe { std::ptr::read_volatile((p as *const u8).add(k)) };
        }
    }
    // SAFETY: unmaps exactly the mapping made above, which nothing else
    // references.
    if unsafe { libc::munmap(p, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(read)
}

/// Plain-old-data element types that typed views may hold: every bit pattern
/// is a valid value, there is no padding and no pointer.
///
/// This is [`bytemuck::Pod`] (the ecosystem's standard marker, derivable with
/// `#[derive(bytemuck::Pod, bytemuck::Zeroable)]` without writing `unsafe`)
/// plus `Send + Sync`, so that views can cross threads; it is implemented
/// for every such type and cannot be implemented by hand.
pub trait Pod: bytemuck::Pod + Send + Sync {}

impl<T: bytemuck::Pod + Send + Sync> Pod for T {}

/// An anonymous private mapping of `len` bytes whose start is aligned to
/// `align`; unmapped on drop. The one place that maps and unmaps memory for
/// [`Reservation`] and [`Staging`].
#[derive(Debug)]
struct AlignedMap {
    base: NonNull<u8>,
    len: usize,
}

impl AlignedMap {
    /// Map `len` bytes (a non-zero multiple of [`PAGE`]) aligned to `align`
    /// (a power of two multiple of [`PAGE`]), with `MAP_PRIVATE |
    /// MAP_ANONYMOUS | flags`: map `len + align` bytes, then unmap the
    /// unaligned head and the tail past `len`.
    fn new(len: usize, align: usize, flags: libc::c_int) -> io::Result<AlignedMap> {
        debug_assert!(align.is_power_of_two() && align.is_multiple_of(PAGE));
        if len == 0 || !len.is_multiple_of(PAGE) {
            return Err(io::Error::other(format!(
                "mapping of {len} bytes: not a non-zero multiple of the page size"
            )));
        }
        let total = len
            .checked_add(align)
            .ok_or_else(|| io::Error::other("mapping too large"))?;
        // SAFETY: anonymous mapping at a kernel-chosen address; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = p as usize;
        // `start` is page aligned and `align` a multiple of the page size:
        // head and tail are whole pages, head + len + tail == total.
        let aligned = start.next_multiple_of(align);
        let head = aligned - start;
        let tail = total - head - len;
        // SAFETY: trimming the unaligned head and the tail of the mapping we
        // just created (both page aligned, inside it); nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        let base = NonNull::new(aligned as *mut u8)
            .ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(AlignedMap { base, len })
    }

    fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// `madvise(advice)` on `[off, off+len)`, which must lie in the mapping.
    ///
    /// # Safety
    ///
    /// If the advice changes content (`MADV_DONTNEED`), no reference into the
    /// range may observe the change (see [`Reservation::dontneed`]).
    unsafe fn madvise(&self, off: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
        debug_assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: the range lies inside our own mapping; the caller vouches
        // for any effect on content.
        let rc = unsafe { libc::madvise(self.base.as_ptr().add(off).cast(), len, advice) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for AlignedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the (trimmed) mapping we own; no slice of
        // it can outlive its owner (slices borrow it).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// An anonymous, private, MAP_NORESERVE mapping: the address space of one
/// file handle. Unmapped on drop.
#[derive(Debug)]
pub struct Reservation {
    mem: AlignedMap,
}

// SAFETY: the reservation is plain memory addressed by raw pointer; access
// discipline (shared vs exclusive slices) is enforced by the borrowing API of
// `FileH`, and the handler threads only pass addresses to the kernel.
unsafe impl Send for Reservation {}
// SAFETY: see `Send`; `&Reservation` only hands out slices through unsafe
// methods whose callers uphold the aliasing rules.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserve `len` bytes (a multiple of [`PAGE`]), aligned to 2 MiB so
    /// that 2 MiB blocks can be installed as whole huge pages.
    pub fn new(len: usize) -> io::Result<Reservation> {
        let mem = AlignedMap::new(len, 2 << 20, libc::MAP_NORESERVE)?;
        // Blocks are filled with UFFDIO_COPY one page at a time or moved in
        // as whole huge pages (UFFDIO_MOVE ignores this advice); THP faults
        // and khugepaged would only waste time on this range.
        // SAFETY: advice that does not change content; failure is harmless.
        let _ = unsafe { mem.madvise(0, len, libc::MADV_NOHUGEPAGE) };
        Ok(Reservation { mem })
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.mem.addr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mem.len
    }

    /// Map `len` bytes of the file `fd` from offset `foff` (page-aligned)
    /// over `[off, off+len)` (`MAP_FIXED | MAP_PRIVATE`): the page cache's
    /// pages, no copy. Nothing is mapped in yet: [`Self::populate_file`]
    /// does that. `writable`: `PROT_READ | PROT_WRITE`, a write copies the
    /// page into private anonymous memory (copy-on-write, found by
    /// [`Pagemap::copied_on_write`]) and the file is never written;
    /// otherwise `PROT_READ`. The range then belongs to a file mapping,
    /// which the userfaultfd does not watch, until [`Self::unmap_file`].
    ///
    /// # Safety
    ///
    /// The range lies in the reservation and holds no page any thread reads
    /// (a block being loaded: its accesses wait for the handler), and the
    /// file's bytes there lie within the file (a read past its end is a
    /// `SIGBUS`) and never change while mapped. Read-only: no mutable
    /// slice overlaps it while it is mapped (writes would fault).
    pub unsafe fn map_file(
        &self,
        off: usize,
        len: usize,
        fd: std::os::fd::BorrowedFd<'_>,
        foff: u64,
        writable: bool,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        debug_assert!(off.checked_add(len).is_some_and(|e| e <= self.len()));
        let foff = libc::off_t::try_from(foff).map_err(|_| io::Error::other("file offset"))?;
        let at = self.addr() + off;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: replaces part of our own reservation (caller contract: no
        // page there is read meanwhile); MAP_FIXED at an address we own.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                fd.as_raw_fd(),
                foff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if p as usize != at {
            return Err(io::Error::other("MAP_FIXED mapped elsewhere"));
        }
        Ok(())
    }

    /// Whether the first and the last page of `[off, off+len)`, a file
    /// mapping's, are in the page cache (`mincore`).
    pub fn file_pages_cached(&self, off: usize, len: usize) -> bool {
        len < PAGE || (self.in_page_cache(off) && self.in_page_cache(off + len - PAGE))
    }

    /// Map in the pages of `[off, off+len)`, mapped by [`Self::map_file`],
    /// reading from the file those the page cache lacks.
    ///
    /// [`FileRead::Background`]: a range whose first or last page is not
    /// cached is first read ahead in the background (`MADV_WILLNEED`: the
    /// whole range in one go rather than the fault's read-around), then
    /// the pages are mapped in by reading one byte per [`FAULT_AROUND`]
    /// window: each such fault maps the whole window in one batch (the
    /// kernel's fault-around). `MAP_POPULATE` (or `MADV_POPULATE_READ`)
    /// walks all 512 pages of a block one by one (`get_user_pages`), a
    /// quarter of a two-reader scan's CPU time on the 2-core VM. Measured
    /// there, 2 GiB of f64 summed through views (`examples/viewprof.rs`)
    /// and Python's `np.asarray(A).sum()` on a snapshot, interleaved runs:
    ///
    /// | populate | 2 readers | 1 reader | Python |
    /// |---|---|---|---|
    /// | `MAP_POPULATE` | 5.9-6.6 GB/s | 5.4-6.7 GB/s | 0.34-0.39 s |
    /// | none (readers fault) | 7.0-10.2 GB/s | 5.8-7.0 GB/s | 0.40-0.45 s |
    /// | a read per window | 8.1-9.1 GB/s | 6.5-7.3 GB/s | 0.32-0.35 s |
    ///
    /// [`FileRead::InOrder`]: no advice, one byte read per page, as a
    /// sequential reader of the file reads it: the kernel's own read-ahead
    /// then reads ahead of this thread into large folios. `MADV_WILLNEED`
    /// reads into 4 KiB folios, whose disk requests stop at 1 MiB (a
    /// request takes 254 segments on the development VM's disk), where the
    /// read-ahead of a sequential reader sends 4 MiB. Every page, not every
    /// window: fault-around skips the folio that carries the read-ahead
    /// mark, and only a fault on it starts the next asynchronous window.
    ///
    /// # Safety
    ///
    /// The range was mapped by [`Self::map_file`] (the same contract: the
    /// file's bytes there lie within the file).
    pub unsafe fn populate_file(&self, off: usize, len: usize, read: FileRead) {
        debug_assert!(off.checked_add(len).is_some_and(|e| e <= self.len()));
        let at = self.addr() + off;
        let step = match read {
            FileRead::Background => {
                if !self.file_pages_cached(off, len) {
                    // SAFETY: advice that starts reading the file's pages
                    // into the page cache; it changes no content and maps
                    // nothing. Failure only leaves the reads to the faults.
                    let _ = unsafe { self.mem.madvise(off, len, libc::MADV_WILLNEED) };
                }
                FAULT_AROUND
            }
            FileRead::InOrder => PAGE,
        };
        for k in (0..len).step_by(step) {
            // SAFETY: a read of our own mapping of the file's pages, which
            // lie within the file (caller contract); reading changes
            // nothing, and a writable private mapping is faulted in for
            // reading (its pages stay the page cache's until written).
            unsafe { std::ptr::read_volatile((at + k) as *const u8) };
        }
    }

    /// Whether the page at `off` (a file mapping's) is in the page cache
    /// (`mincore`); an error answers no.
    fn in_page_cache(&self, off: usize) -> bool {
        page_resident(self.addr() + off)
    }

    /// Put fresh anonymous memory, like the reservation's own, back over
    /// `[off, off+len)` (after [`Self::map_file`]); the caller registers it
    /// with the userfaultfd again.
    ///
    /// # Safety
    ///
    /// The range lies in the reservation and no thread touches it until it
    /// is registered again (the caller holds `&mut FileH`: no view alive).
    pub unsafe fn unmap_file(&self, off: usize, len: usize) -> io::Result<()> {
        debug_assert!(off.checked_add(len).is_some_and(|e| e <= self.len()));
        let at = self.addr() + off;
        // SAFETY: replaces part of our own reservation; nobody accesses it
        // (caller contract).
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if p as usize != at {
            return Err(io::Error::other("MAP_FIXED mapped elsewhere"));
        }
        // The reservation's advice, so the range merges back into it.
        // SAFETY: advice that does not change content; failure is harmless.
        let _ = unsafe { self.mem.madvise(off, len, libc::MADV_NOHUGEPAGE) };
        Ok(())
    }

    /// Drop the pages of `[off, off+len)` (MADV_DONTNEED): the next access
    /// faults again. Also removes poison markers.
    ///
    /// # Safety
    ///
    /// The range lies in the reservation, and no thread may see its content
    /// change: either no slice of it is alive (the caller holds `&mut FileH`
    /// or the block is being loaded), or the range is registered for missing
    /// faults and the next access is served the same bytes (a clean block or
    /// a hole, which reload unchanged) or fails (a poisoned block).
    pub unsafe fn dontneed(&self, off: usize, len: usize) -> io::Result<()> {
        // SAFETY: dropping pages of private anonymous memory; the caller
        // guarantees that no reader observes the change.
        unsafe { self.mem.madvise(off, len, libc::MADV_DONTNEED) }
    }

    /// Shared typed slice over `[off, off + count*size_of::<T>())`.
    ///
    /// # Safety
    ///
    /// The range lies in the reservation and is aligned for `T`, and no
    /// `&mut` slice overlapping it exists for the returned lifetime.
    pub unsafe fn slice<T: Pod>(&self, off: usize, count: usize) -> &[T] {
        debug_assert!(off + count * size_of::<T>() <= self.len());
        debug_assert!((self.addr() + off).is_multiple_of(align_of::<T>()));
        // SAFETY: in bounds and aligned (caller contract, asserted in debug);
        // the memory is readable (faults are served by the handler); T is Pod
        // so any content is a valid value; aliasing per caller contract.
        unsafe { std::slice::from_raw_parts(self.mem.base.as_ptr().add(off).cast::<T>(), count) }
    }

    /// Exclusive typed slice over `[off, off + count*size_of::<T>())`.
    ///
    /// # Safety
    ///
    /// The range lies in the reservation and is aligned for `T`, and no other
    /// slice overlapping it exists for the returned lifetime (the caller
    /// holds `&mut FileH`).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut<T: Pod>(&self, off: usize, count: usize) -> &mut [T] {
        debug_assert!(off + count * size_of::<T>() <= self.len());
        debug_assert!((self.addr() + off).is_multiple_of(align_of::<T>()));
        // SAFETY: in bounds and aligned (caller contract); writable mapping;
        // T is Pod; exclusivity per caller contract.
        unsafe {
            std::slice::from_raw_parts_mut(self.mem.base.as_ptr().add(off).cast::<T>(), count)
        }
    }
}

/// A block-sized buffer used by a handler thread to load a block before
/// copying it into place (the fault path never reads into registered memory).
/// Aligned to 2 MiB and advised for huge pages so the copy source costs few
/// TLB misses.
pub struct Staging {
    mem: AlignedMap,
    /// Set by the user when the buffer was found made of small pages (so it
    /// is better replaced than reused for zero-copy installs).
    pub small_pages: bool,
    /// Set by the user when pages were moved out of the buffer (some pages
    /// are missing until [`Staging::populate`] or a refill).
    pub moved_out: bool,
}

// SAFETY: owned memory, used by one thread at a time through &mut.
unsafe impl Send for Staging {}

impl Staging {
    /// Allocate a zero-filled buffer of `len` bytes (multiple of [`PAGE`]).
    pub fn new(len: usize) -> io::Result<Staging> {
        let mem = AlignedMap::new(len, 2 << 20, 0)?;
        // SAFETY: advice that does not change content; failure is harmless.
        let _ = unsafe { mem.madvise(0, len, libc::MADV_HUGEPAGE) };
        Ok(Staging {
            mem,
            small_pages: false,
            moved_out: false,
        })
    }

    /// Start address (2 MiB aligned).
    pub fn addr(&self) -> usize {
        self.mem.addr()
    }

    /// Fault in every page of the buffer for writing (`MADV_POPULATE_WRITE`,
    /// Linux >= 5.14): after its pages were moved away, this gives the
    /// buffer fresh zeroed pages (huge pages when the kernel can), so that
    /// every page is present whatever the loader writes.
    pub fn populate(&mut self) -> io::Result<()> {
        // SAFETY: populating only allocates (zeroed) pages where none are
        // present, it never changes existing content.
        unsafe { self.mem.madvise(0, self.mem.len, libc::MADV_POPULATE_WRITE) }?;
        self.moved_out = false;
        Ok(())
    }

    /// Drop every page of the buffer (`MADV_DONTNEED`); it reads as zeros
    /// afterwards. With `CONFIG_PT_RECLAIM` this also frees the emptied page
    /// table, so a huge page can be moved in whole.
    pub fn clear(&mut self) -> io::Result<()> {
        // SAFETY: the buffer is borrowed exclusively, so no slice of it is
        // alive to see its content change.
        unsafe { self.mem.madvise(0, self.mem.len, libc::MADV_DONTNEED) }
    }

    /// The buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: our own mapping of `len` bytes, borrowed exclusively via &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.mem.base.as_ptr(), self.mem.len) }
    }

    /// The buffer, read-only.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: our own mapping of `len` bytes; writes need `&mut self`.
        unsafe { std::slice::from_raw_parts(self.mem.base.as_ptr(), self.mem.len) }
    }
}

/// `struct pm_scan_arg` of `linux/fs.h` (PAGEMAP_SCAN, Linux >= 6.7).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `linux/fs.h`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;
const PAGE_IS_HUGE: u64 = 1 << 6;
/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;

/// `/proc/self/pagemap`, used to ask which pages of a range are something
/// else than the shared zero page.
#[derive(Debug)]
pub struct Pagemap {
    file: std::fs::File,
}

impl Pagemap {
    /// Open `/proc/self/pagemap` and check that it supports PAGEMAP_SCAN.
    pub fn open() -> Option<Pagemap> {
        let file = std::fs::File::open("/proc/self/pagemap").ok()?;
        let pm = Pagemap { file };
        // Probe with an empty-result scan of one page of our own stack area.
        let probe = [0u8; PAGE * 2];
        let a = (probe.as_ptr() as usize).next_multiple_of(PAGE);
        pm.written(a, PAGE).ok()?;
        Some(pm)
    }

    /// True if some page of `[addr, addr+len)` is present and is not the
    /// shared zero page (i.e. was written).
    pub fn written(&self, addr: usize, len: usize) -> io::Result<bool> {
        let found = self.find(
            addr,
            len,
            PmScanArg {
                category_inverted: PAGE_IS_PFNZERO,
                category_mask: PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
                return_mask: PAGE_IS_PRESENT,
                ..PmScanArg::default()
            },
        )?;
        Ok(found)
    }

    /// True if some page of `[addr, addr+len)` is not a file page and is
    /// present or swapped out: in a private file mapping, a page some
    /// write copied (see [`Reservation::map_file`]). A copy the kernel
    /// swapped out is still one (its entry is a swap entry, never a file
    /// page's).
    pub fn copied_on_write(&self, addr: usize, len: usize) -> io::Result<bool> {
        self.find(
            addr,
            len,
            PmScanArg {
                category_inverted: PAGE_IS_FILE,
                category_mask: PAGE_IS_FILE,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..PmScanArg::default()
            },
        )
    }

    /// True if every page of `[addr, addr+len)` is present and part of a
    /// huge page.
    pub fn all_huge(&self, addr: usize, len: usize) -> io::Result<bool> {
        // Look for a page that is not (present and huge).
        let found = self.find(
            addr,
            len,
            PmScanArg {
                category_inverted: PAGE_IS_PRESENT | PAGE_IS_HUGE,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_HUGE,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_HUGE,
                ..PmScanArg::default()
            },
        )?;
        Ok(!found)
    }

    /// PAGEMAP_SCAN of `[addr, addr+len)` with the category masks of
    /// `query`: true if some page matches.
    fn find(&self, addr: usize, len: usize, query: PmScanArg) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let mut region = [PageRegion::default(); 1];
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            start: addr as u64,
            end: (addr + len) as u64,
            vec: region.as_mut_ptr() as u64,
            vec_len: 1,
            ..query
        };
        // SAFETY: `arg` is a live `struct pm_scan_arg`; `vec` points to a
        // live array of `vec_len` page_region entries that the kernel fills;
        // the scanned range is only read by the kernel.
        let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n > 0)
    }
}

/// False when transparent huge pages are off for the whole system (so a
/// staging buffer would get 4 KiB pages whatever we advise).
pub fn thp_possible() -> bool {
    match std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        Ok(s) => !s.contains("[never]"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_tells_zero_pages_from_written_ones() {
        let pm = Pagemap::open().expect("PAGEMAP_SCAN available on this kernel");
        let r = Reservation::new(4 * PAGE).unwrap();
        let a = r.addr();
        assert!(!pm.written(a, 4 * PAGE).unwrap(), "untouched pages");
        // A read of untouched private anonymous memory maps the zero page.
        // SAFETY: in bounds, u8 needs no alignment, no other slice exists.
        let s = unsafe { r.slice::<u8>(PAGE, 1) };
        assert_eq!(std::hint::black_box(s)[0], 0);
        assert!(!pm.written(a, 4 * PAGE).unwrap(), "zero page only");
        // SAFETY: as above; the previous slice is gone.
        let s = unsafe { r.slice_mut::<u8>(2 * PAGE + 5, 1) };
        s[0] = 1;
        assert!(pm.written(a, 4 * PAGE).unwrap(), "a written page");
        assert!(!pm.written(a, 2 * PAGE).unwrap(), "other range");
        // SAFETY: in bounds; no slice of the reservation is alive.
        unsafe { r.dontneed(2 * PAGE, PAGE) }.unwrap();
        assert!(!pm.written(a, 4 * PAGE).unwrap(), "after MADV_DONTNEED");
    }
}
