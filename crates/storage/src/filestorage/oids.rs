//! New oids, unique across every process writing the file.
//!
//! # Model
//!
//! An oid handed out by `new_oid` is not in the file until the transaction
//! that stores it commits, so the file alone cannot tell two processes
//! which oids the other has already given away: allocating from one's own
//! view of the file (what ZODB's FileStorage does, as it assumes a single
//! writer process) makes two writers pick the same fresh oid, and the later
//! commit fails with "object created concurrently".
//!
//! Processes therefore reserve oids in batches under the commit lock, in a
//! small side file `<name>.oids` (FORMATS.md §2.5): 8 bytes, the big-endian
//! highest oid reserved so far. A reservation takes the lock, reads the
//! side file and the index (synced with the file), and writes back
//! `max(side file, largest oid in the file) + BATCH`. The oids of a batch
//! are then handed out without touching the lock; a process that exits
//! leaves a gap, which ZODB does not mind. A missing or stale side file
//! (deleted, or a file packed or rebuilt by Python) is harmless: the largest
//! committed oid is always taken into account.
//!
//! A transaction of this process that is in two-phase commit holds the
//! lock already (new blocks get their oids while they are stored), so a
//! reservation then happens under that lock; the `held` flag, guarded by the
//! same mutex the transaction takes to release the lock, tells which case
//! applies. Python ZODB writers hold the lock for as long as they have the
//! file open, so they never run between our reservation and its use except
//! when one is opened while we hold unused reserved oids: it then allocates
//! from the file's largest oid, and a collision shows as a conflict error at
//! our commit, never as damage.

use super::Shared;
use super::lock::SlotGuard;
use crate::error::{Error, Result};
use crate::ids::Oid;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

/// How many oids one reservation takes.
const BATCH: u64 = 256;

/// This process's reserved, not yet handed out oids.
#[derive(Debug, Default)]
pub(super) struct OidReserve {
    /// Next oid to hand out.
    next: u64,
    /// One past the last reserved oid.
    end: u64,
    /// True while a transaction of this process holds the commit lock.
    pub(super) held: bool,
}

impl Shared {
    /// `Storage::new_oid`.
    pub(super) fn new_oid(&self) -> Result<Oid> {
        {
            let mut r = self.oids.lock();
            if r.next < r.end {
                r.next += 1;
                return Ok(Oid(r.next - 1));
            }
            if self.read_only {
                // Nothing can be stored; an oid from our own view is enough.
                let max = self.index.read().max_oid.map_or(0, |o| o.0);
                r.next = r.next.max(max + 1) + 1;
                return Ok(Oid(r.next - 1));
            }
            if r.held {
                // Our transaction holds the lock: the index is current.
                self.reserve(&mut r)?;
                r.next += 1;
                return Ok(Oid(r.next - 1));
            }
        }
        // No transaction of ours holds the lock: take it for the reservation
        // (the slot first, so we never wait on our own process's lock).
        self.lock.acquire_slot();
        let _slot = SlotGuard(Some(&self.lock));
        let lock = self.lock.lock_file()?;
        self.sync()?;
        let mut r = self.oids.lock();
        if r.next >= r.end {
            self.reserve(&mut r)?;
        }
        r.next += 1;
        let oid = Oid(r.next - 1);
        drop(r);
        drop(lock);
        Ok(oid)
    }

    fn oids_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".oids");
        PathBuf::from(name)
    }

    /// With the commit lock held: reserve the next batch in the side file.
    fn reserve(&self, r: &mut OidReserve) -> Result<()> {
        let path = self.oids_path();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc_o_nofollow())
            .open(&path)
            .map_err(|e| Error::io(&path, "open", e))?;
        let mut b = [0u8; 8];
        let stored = match f.read_exact_at(&mut b, 0) {
            Ok(()) => u64::from_be_bytes(b),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(Error::io(&path, "read", e)),
        };
        let committed = self.index.read().max_oid.map_or(0, |o| o.0);
        let last = stored.max(committed).max(r.end.saturating_sub(1));
        let top = last
            .checked_add(BATCH)
            .ok_or_else(|| Error::Protocol("oid space exhausted".into()))?;
        f.write_all_at(&top.to_be_bytes(), 0)
            .map_err(|e| Error::io(&path, "write", e))?;
        r.next = last + 1;
        r.end = top + 1;
        Ok(())
    }
}

/// `O_NOFOLLOW`: the side files of a storage are never followed through a
/// symlink (another user's link could make us write elsewhere).
pub(super) fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}
