//! Torn tails: a transaction a process was writing when it died.
//!
//! # Model
//!
//! A commit writes its transaction header first with status `'c'` and a
//! length that cannot be complete (see `commit`), so a crash at any point
//! leaves a tail that the scan recognizes ([`Tail::Incomplete`], or
//! [`Tail::PartialHeader`] for fewer than 23 bytes) and that every reader,
//! Python's included, ignores. Reading never repairs anything.
//!
//! A writer cuts the tail off, with the commit lock held (so it is not the
//! transaction of a live committer): at a writable open when no other
//! process is committing, and at every `tpc_begin`. Like ZODB it first saves
//! the cut bytes of an incomplete transaction to the first free
//! `<name>.trN`, so nothing that was written is lost silently.

use super::Shared;
use super::index::Tail;
use super::read::read_exact_at;
use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

impl Shared {
    /// With the commit lock held: cut a torn tail off the file, saving it to
    /// `<name>.trN` as ZODB does (not for a partial header).
    pub(super) fn repair_tail(&self) -> Result<()> {
        let Some((pos, tail)) = self.index.read().tail else {
            return Ok(());
        };
        let file = self.current_file();
        let size = file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len();
        if tail == Tail::Incomplete && size > pos {
            // The first free `.trN`, created exclusively and never through
            // a symlink (an existing name, link or not, is skipped).
            let mut n = 0;
            let (tr, mut out) = loop {
                let mut name = self.path.as_os_str().to_owned();
                name.push(format!(".tr{n}"));
                let p = PathBuf::from(name);
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(super::oids::libc_o_nofollow())
                    .open(&p)
                {
                    Ok(f) => break (p, f),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                    Err(e) => return Err(Error::io(&p, "create", e)),
                }
            };
            let mut buf = vec![0u8; 1 << 20];
            let mut at = pos;
            while at < size {
                let k = buf.len().min((size - at) as usize);
                read_exact_at(&file, &self.path, &mut buf[..k], at)?;
                out.write_all(&buf[..k])
                    .map_err(|e| Error::io(&tr, "write", e))?;
                at += k as u64;
            }
            tracing::warn!(path = %self.path.display(), pos, saved = %tr.display(), "truncated an incomplete transaction at the end of the file");
        }
        file.set_len(pos)
            .map_err(|e| Error::io(&self.path, "truncate", e))?;
        file.sync_all()
            .map_err(|e| Error::io(&self.path, "fsync", e))?;
        let mut idx = self.index.write();
        idx.tail = None;
        idx.end = pos;
        Ok(())
    }
}

impl Shared {
    /// At a writable open: cut a torn tail if no other process is
    /// committing right now (if one is, the tail may be its transaction in
    /// progress; the next `tpc_begin` repairs it under the lock).
    pub(super) fn repair_at_open(&self) -> Result<()> {
        if self.index.read().tail.is_none() {
            return Ok(());
        }
        if let Some(lock) = self.lock.try_lock_file()? {
            self.sync()?;
            self.repair_tail()?;
            drop(lock);
        }
        Ok(())
    }
}
