//! Minimal userfaultfd binding: the syscall, the `UFFDIO_*` ioctls this crate
//! uses and the fault message, with `#[repr(C)]` structs matching
//! `linux/userfaultfd.h` (Linux 6.x layout).
//!
//! This is one of the two modules of the crate that contain `unsafe` code (the
//! other is [`crate::mapping`]). The range ioctls share one retry loop
//! (partial progress and `EAGAIN`). Filling missing pages is safe; what makes
//! it so is the contract of [`Uffd::register`], and moving pages away from
//! memory is an `unsafe fn` ([`Uffd::move_pages`]). Every ioctl takes a pointer to a local struct
//! that lives for the duration of the call; addresses passed to the kernel are
//! plain integers that the kernel validates itself (it fails with `EINVAL`/
//! `ENOENT` on ranges outside a registered area, it never dereferences them on
//! our behalf unsafely).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const UFFD_API: u64 = 0xAA;
const UFFDIO: u64 = 0xAA;

/// `UFFD_USER_MODE_ONLY`: only faults from user mode are handled.
const UFFD_USER_MODE_ONLY: libc::c_int = 1;

/// Page-fault event code in [`Msg::event`].
pub const EVENT_PAGEFAULT: u8 = 0x12;
/// Fault flag: the faulting access was a write.
pub const PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
/// Fault flag: the fault was raised by write protection.
pub const PAGEFAULT_FLAG_WP: u64 = 1 << 1;

/// Feature: write-protect faults on anonymous memory.
pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// Feature: `UFFDIO_POISON`.
pub const FEATURE_POISON: u64 = 1 << 14;
/// Feature: `UFFDIO_MOVE` (Linux >= 6.8).
pub const FEATURE_MOVE: u64 = 1 << 10;

/// Register mode: missing-page faults.
pub const REGISTER_MODE_MISSING: u64 = 1 << 0;
/// Register mode: write-protect faults.
pub const REGISTER_MODE_WP: u64 = 1 << 1;

const COPY_MODE_DONTWAKE: u64 = 1 << 0;
const COPY_MODE_WP: u64 = 1 << 1;
const ZEROPAGE_MODE_DONTWAKE: u64 = 1 << 0;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;
const POISON_MODE_DONTWAKE: u64 = 1 << 0;
const MOVE_MODE_DONTWAKE: u64 = 1 << 0;

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioPoison {
    range: UffdioRange,
    mode: u64,
    updated: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    moved: i64,
}

const UFFDIO_API: u64 = iowr(0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, size_of::<UffdioRegister>());
const UFFDIO_WAKE: u64 = ior(0x02, size_of::<UffdioRange>());
const UFFDIO_COPY: u64 = iowr(0x03, size_of::<UffdioCopy>());
const UFFDIO_MOVE: u64 = iowr(0x05, size_of::<UffdioMove>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, size_of::<UffdioZeropage>());
const UFFDIO_WRITEPROTECT: u64 = iowr(0x06, size_of::<UffdioWriteprotect>());
const UFFDIO_POISON: u64 = iowr(0x08, size_of::<UffdioPoison>());

/// One message read from a userfaultfd (`struct uffd_msg`, 32 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct Msg {
    /// Event code ([`EVENT_PAGEFAULT`] for the only events we enable).
    pub event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    /// `pagefault.flags` ([`PAGEFAULT_FLAG_WRITE`], [`PAGEFAULT_FLAG_WP`]).
    pub flags: u64,
    /// `pagefault.address`: the faulting address (page aligned).
    pub address: u64,
    arg_rest: u64,
}

const _: () = assert!(size_of::<Msg>() == 32);
const _: () = assert!(size_of::<UffdioCopy>() == 40);
const _: () = assert!(size_of::<UffdioRegister>() == 32);
const _: () = assert!(size_of::<UffdioMove>() == 40);

/// Why a userfaultfd could not be created.
#[derive(Debug)]
pub enum OpenError {
    /// `EPERM`: the process may not create a userfaultfd for user faults.
    NotPermitted(io::Error),
    /// `ENOSYS` or another error: the kernel does not offer userfaultfd.
    Unavailable(io::Error),
}

/// An open userfaultfd (non-blocking, close-on-exec, user-mode faults only).
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    /// The features negotiated (required plus the supported optional ones).
    features: u64,
}

/// Outcome of a range-filling ioctl that may stop early.
pub enum Fill {
    /// The whole range was filled.
    Done,
    /// The page at this byte offset from the start already existed (EEXIST);
    /// the bytes before it were filled.
    Exists(usize),
}

impl Fill {
    /// The outcome of a fill that did `done` bytes and stopped for `stop`.
    fn from_stop(done: usize, stop: Option<io::Error>) -> io::Result<Fill> {
        match stop {
            None => Ok(Fill::Done),
            Some(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(Fill::Exists(done)),
            Some(e) => Err(e),
        }
    }
}

/// The retry loop of the range ioctls (COPY, ZEROPAGE, MOVE, POISON): they
/// may stop early, and then the kernel stores the bytes done in the struct's
/// progress field (`copy`, `zeropage`, `moved`, `updated`) and fails with
/// `EAGAIN`, or stores `-errno` there and fails with that error.
///
/// `op(done)` issues the ioctl for the rest of a `len`-byte range, starting
/// `done` bytes in, and returns its result with the progress field. `EAGAIN`
/// (partial progress, or a transient conflict such as the address space
/// changing) is retried; another error ends the loop. Returns the bytes done
/// and the error that stopped the loop short of `len`, if any.
fn retry_range(
    len: usize,
    mut op: impl FnMut(usize) -> (io::Result<()>, i64),
) -> (usize, Option<io::Error>) {
    let mut done = 0usize;
    while done < len {
        let (r, progress) = op(done);
        if progress > 0 {
            done += progress as usize;
        }
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

impl Uffd {
    /// Create a userfaultfd and negotiate `need` (all must be supported) plus
    /// whichever of `want` the kernel offers ([`Uffd::features`] tells).
    /// Returns the fd; `Err(missing)` lists the required features the kernel lacks.
    pub fn open(need: u64, want: u64) -> Result<Result<Uffd, u64>, OpenError> {
        // Ask with no feature first to learn what the kernel supports (the
        // API handshake is one-shot per fd, so this takes a probe fd).
        let supported = Self::create()?.handshake(0)?;
        if need & !supported != 0 {
            return Ok(Err(need & !supported));
        }
        let features = need | (want & supported);
        let mut u = Self::create()?;
        u.handshake(features)?;
        u.features = features;
        Ok(Ok(u))
    }

    fn create() -> Result<Uffd, OpenError> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        // SAFETY: the userfaultfd syscall takes one integer argument and
        // returns a new fd or -1; it touches no memory of ours.
        let rc = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) => OpenError::NotPermitted(e),
                _ => OpenError::Unavailable(e),
            });
        }
        // SAFETY: `rc` is a fresh fd returned by the kernel that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) };
        Ok(Uffd { fd, features: 0 })
    }

    /// UFFDIO_API with `features`; returns the features the kernel supports.
    fn handshake(&self, features: u64) -> Result<u64, OpenError> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        self.ioctl(UFFDIO_API, &mut api)
            .map_err(OpenError::Unavailable)?;
        Ok(api.features)
    }

    /// The negotiated features (`FEATURE_*`).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The fd, for poll().
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn ioctl<T>(&self, req: u64, arg: &mut T) -> io::Result<()> {
        // SAFETY: every caller passes the struct type matching `req`; the
        // struct is borrowed mutably for the whole call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, arg as *mut T) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Register `[start, start+len)` with `mode` (REGISTER_MODE_*).
    ///
    /// # Safety
    ///
    /// The range is private anonymous memory of this process whose missing
    /// pages may be filled through this fd ([`Uffd::copy`],
    /// [`Uffd::zeropage`], [`Uffd::poison`]: safe functions, as the kernel
    /// fills only missing pages of registered ranges). With
    /// [`REGISTER_MODE_MISSING`] an access to a missing page waits for the
    /// handler, so a fill changes no content anyone has seen. Without it,
    /// missing pages read as zeros: the caller must then never fill pages of
    /// the range (only move pages into it, under [`Uffd::move_pages`]'s
    /// contract).
    pub unsafe fn register(&self, start: usize, len: usize, mode: u64) -> io::Result<()> {
        let mut r = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode,
            ioctls: 0,
        };
        self.ioctl(UFFDIO_REGISTER, &mut r)
    }

    /// Atomically fill `[dst, dst+src.len())` with a copy of `src`.
    /// `wp`: install the pages write-protected; `wake`: wake waiters.
    /// Retries on EAGAIN; stops at an existing page (reported as [`Fill::Exists`]).
    pub fn copy(&self, dst: usize, src: &[u8], wp: bool, wake: bool) -> io::Result<Fill> {
        let mode = if wp { COPY_MODE_WP } else { 0 } | if wake { 0 } else { COPY_MODE_DONTWAKE };
        let (done, stop) = retry_range(src.len(), |done| {
            let mut c = UffdioCopy {
                dst: (dst + done) as u64,
                src: src[done..].as_ptr() as u64,
                len: (src.len() - done) as u64,
                mode,
                copy: 0,
            };
            (self.ioctl(UFFDIO_COPY, &mut c), c.copy)
        });
        Fill::from_stop(done, stop)
    }

    /// Move the pages of `[src, src+len)` (private anonymous memory of this
    /// process, every page present) to `[dst, dst+len)` without copying and
    /// without waking (`UFFDIO_MOVE`). The moved pages are writable: the
    /// caller write-protects them. Returns how many bytes were moved and, if
    /// not all, why not (EEXIST: a destination page exists; EBUSY: a source
    /// page is shared or pinned; ...); the rest of the source is untouched.
    ///
    /// # Safety
    ///
    /// The moved part of the source reads as zeros afterwards (or faults, if
    /// registered), like after `MADV_DONTNEED`, and the destination gains
    /// content: no reference may observe either change. So `src` is memory
    /// whose content nobody relies on any more (a staging buffer borrowed
    /// exclusively, or a clean block being evicted, which reloads with the
    /// same bytes), and `dst` is a registered range whose missing pages no
    /// one has read (a block being loaded, or a recycling buffer borrowed
    /// exclusively and emptied).
    pub unsafe fn move_pages(
        &self,
        dst: usize,
        src: usize,
        len: usize,
    ) -> (usize, Option<io::Error>) {
        retry_range(len, |done| {
            let mut m = UffdioMove {
                dst: (dst + done) as u64,
                src: (src + done) as u64,
                len: (len - done) as u64,
                mode: MOVE_MODE_DONTWAKE,
                moved: 0,
            };
            (self.ioctl(UFFDIO_MOVE, &mut m), m.moved)
        })
    }

    /// Map the shared zero page over `[start, start+len)` without waking.
    pub fn zeropage(&self, start: usize, len: usize) -> io::Result<Fill> {
        let (done, stop) = retry_range(len, |done| {
            let mut z = UffdioZeropage {
                range: UffdioRange {
                    start: (start + done) as u64,
                    len: (len - done) as u64,
                },
                mode: ZEROPAGE_MODE_DONTWAKE,
                zeropage: 0,
            };
            (self.ioctl(UFFDIO_ZEROPAGE, &mut z), z.zeropage)
        });
        Fill::from_stop(done, stop)
    }

    /// Set (`wp = true`) or clear write protection on a range. Clearing wakes
    /// waiters unless `wake` is false; setting never wakes.
    pub fn writeprotect(&self, start: usize, len: usize, wp: bool, wake: bool) -> io::Result<()> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            // The kernel rejects DONTWAKE together with WP (protecting never wakes).
            mode: if wp {
                WRITEPROTECT_MODE_WP
            } else if wake {
                0
            } else {
                WRITEPROTECT_MODE_DONTWAKE
            },
        };
        loop {
            match self.ioctl(UFFDIO_WRITEPROTECT, &mut w) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                r => return r,
            }
        }
    }

    /// Wake threads waiting on faults in the range.
    pub fn wake(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        self.ioctl(UFFDIO_WAKE, &mut r)
    }

    /// Install poison markers on the missing pages of a range (accesses get
    /// SIGBUS) and wake waiters. Existing pages are skipped.
    pub fn poison(&self, start: usize, len: usize, page: usize) -> io::Result<()> {
        let mut off = 0usize;
        while off < len {
            let (done, stop) = retry_range(len - off, |done| {
                let mut p = UffdioPoison {
                    range: UffdioRange {
                        start: (start + off + done) as u64,
                        len: (len - off - done) as u64,
                    },
                    mode: POISON_MODE_DONTWAKE,
                    updated: 0,
                };
                (self.ioctl(UFFDIO_POISON, &mut p), p.updated)
            });
            off += done;
            match stop {
                None => {}
                // A page that exists keeps its content; skip it.
                Some(e) if e.raw_os_error() == Some(libc::EEXIST) => off += page,
                Some(e) => return Err(e),
            }
        }
        self.wake(start, len)
    }

    /// Read pending fault messages into `buf`; returns how many were read
    /// (0 if none is pending).
    pub fn read_msgs(&self, buf: &mut [Msg]) -> io::Result<usize> {
        let bytes = size_of_val(buf);
        // SAFETY: `buf` is a live, writable array of `Msg` (plain integers, any
        // bit pattern valid) of exactly `bytes` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize / size_of::<Msg>())
    }
}
