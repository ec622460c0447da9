//! Pack: drop the history nobody can reach, ZODB's way
//! (`ZODB.FileStorage.fspack`).
//!
//! # Model
//!
//! A pack as of time `T` keeps every revision that was current at `T` and
//! reachable from the root at `T`, plus everything committed after `T`, and
//! drops the rest. Python ZODB's pack of the same file keeps the same
//! `(oid, serial)` records with the same data (tests compare them).
//!
//! - `gc`: which revisions are reachable (references read from pickles by
//!   [`crate::refs`]);
//! - `copy`: writing `<name>.pack`, re-aiming `prev` pointers and
//!   backpointers;
//! - `swap`: putting it in place atomically, the old file kept as
//!   `<name>.old`.
//!
//! Concurrency: the pack reads a snapshot of the file (everything up to its
//! end when the pack starts) without any lock, so other processes keep
//! committing. It then copies what they committed meanwhile, still without
//! the lock, and finally takes the commit lock, copies the last few
//! transactions, swaps the files and releases the lock: the lock is held
//! for the copy of a short tail, as in ZODB. One pack at a time: the pack
//! holds an exclusive `flock` on `<name>.pack`, and it refuses to swap if
//! `<name>` is no longer the file it read (another process packed it).
//!
//! Crash safety: until the swap, only `<name>.pack` is written, which
//! nothing reads; the swap is one `rename` (see `swap`). A crash at any
//! point leaves `<name>` whole, with every committed transaction.

mod copy;
mod gc;
mod swap;

use super::{FileStorage, STATUS_PACKED, corrupt};
use crate::error::{Error, Result};
use crate::ids::Tid;
use copy::Out;
use nix::fcntl::{Flock, FlockArg};
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;

/// What a pack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackStats {
    /// The pack time: history before it is gone, the state as of it stays.
    pub pack_time: Tid,
    /// False if there was nothing to drop (the file was left as it was,
    /// as ZODB does).
    pub packed: bool,
    /// File size before.
    pub size_before: u64,
    /// File size after (equal to `size_before` if not packed).
    pub size_after: u64,
    /// Transactions committed by others while the pack ran, carried over.
    pub carried_over: usize,
    /// References to objects that had no revision at the pack time.
    pub dangling_refs: u64,
}

/// How many times the pack catches up with concurrent commits without the
/// commit lock before taking it for the rest.
const CATCH_UP_ROUNDS: usize = 4;

impl FileStorage {
    /// Pack the storage as of `at` (see the module docs): the database as of
    /// `at` and everything after stays readable; unreachable history before
    /// it is dropped. `progress(done, total)` is called with bytes of input
    /// processed.
    pub fn pack(&self, at: Tid, mut progress: impl FnMut(u64, u64)) -> Result<PackStats> {
        let inner = &self.inner;
        if inner.read_only {
            return Err(Error::ReadOnly {
                path: inner.path.clone(),
            });
        }
        if at == Tid::ZERO {
            return Err(Error::Protocol("invalid pack time 0".into()));
        }
        let path = inner.path.clone();
        let pack_path = swap::sibling(&path, ".pack");
        let pf = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pack_path)
            .map_err(|e| Error::io(&pack_path, "open", e))?;
        let pack_lock = match Flock::lock(pf, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(Error::Protocol(format!(
                    "{}: another pack is in progress",
                    path.display()
                )));
            }
            Err((_, e)) => return Err(Error::io(&pack_path, "flock", e.into())),
        };
        pack_lock
            .set_len(0)
            .map_err(|e| Error::io(&pack_path, "truncate", e))?;
        let out_file = pack_lock
            .try_clone()
            .map_err(|e| Error::io(&pack_path, "dup", e))?;

        inner.sync()?;
        let file = inner.current_file();
        let meta = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        let ident = (meta.dev(), meta.ino());
        let size_before = meta.len();
        let (end, txns_at_start) = {
            let idx = inner.index.read();
            (idx.end, idx.txns.len())
        };
        let mut total = end.saturating_mul(2);

        let reach = inner.find_reachable(&file, end, at, &mut |p| progress(p, total))?;
        let not_packed = |dangling| PackStats {
            pack_time: at,
            packed: false,
            size_before,
            size_after: size_before,
            carried_over: 0,
            dangling_refs: dangling,
        };
        if reach.all_packed && reach.packpos < end {
            // ZODB's redundant-pack check: packed before up to a later time.
            let t = inner.read_txn_headers(&file, reach.packpos, end)?;
            if t.header.status == STATUS_PACKED {
                drop(pack_lock);
                swap::discard(&path)?;
                return Ok(not_packed(reach.dangling));
            }
        }
        let mut out = Out::new(out_file, pack_path.clone(), inner.magic);
        inner.copy_to_packtime(&file, end, &reach, &mut out, &mut |p| {
            progress(end + p, total)
        })?;
        if out.pos() == reach.packpos {
            drop(pack_lock);
            swap::discard(&path)?;
            return Ok(not_packed(reach.dangling));
        }
        let mut done = inner.copy_rest(&file, reach.packpos, end, &mut out, &mut |p| {
            progress(end + p, total)
        })?;

        // Catch up with concurrent commits without the lock, then with it.
        for _ in 0..CATCH_UP_ROUNDS {
            inner.sync()?;
            let now = inner.index.read().end;
            if now == done || !same_file(&path, ident)? {
                break;
            }
            total = end + now;
            done = inner.copy_rest(&file, done, now, &mut out, &mut |p| {
                progress(end + p, total)
            })?;
        }
        inner.lock.acquire_slot();
        let _slot = super::lock::SlotGuard(Some(&inner.lock));
        let commit_lock = inner.lock.lock_file()?;
        inner.sync()?;
        if !same_file(&path, ident)? {
            drop(pack_lock);
            swap::discard(&path)?;
            return Err(Error::Protocol(format!(
                "{}: the file was replaced (packed by another process?) while packing",
                path.display()
            )));
        }
        inner.repair_tail()?;
        let now = inner.index.read().end;
        if now < done {
            return Err(corrupt(&path, now, "pack: the file shrank while packing"));
        }
        total = end + now;
        done = inner.copy_rest(&file, done, now, &mut out, &mut |p| {
            progress(end + p, total)
        })?;
        let carried_over = inner.index.read().txns.len().saturating_sub(txns_at_start);
        let (_f, size_after) = out.finish()?;
        swap::swap_in(&path)?;
        progress(end + done, total);
        inner.sync()?;
        drop(commit_lock);
        drop(pack_lock);
        Ok(PackStats {
            pack_time: at,
            packed: true,
            size_before,
            size_after,
            carried_over,
            dangling_refs: reach.dangling,
        })
    }
}

/// True if `path` is still the file with identity `ident`.
fn same_file(path: &std::path::Path, ident: (u64, u64)) -> Result<bool> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, "stat", e))?;
    Ok((m.dev(), m.ino()) == ident)
}
