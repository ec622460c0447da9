//! Damage versus a torn tail.
//!
//! # Model
//!
//! A transaction that cannot be complete (status `'c'`, or a length that
//! runs past the end of the file) is what a committer that died leaves
//! behind, and ZODB ignores it and cuts it off at the next writable open.
//! But a torn transaction is always the *last* thing in the file: a byte
//! flip in the length field of a transaction in the middle of the file
//! looks the same to a forward scan, and cutting there would throw away
//! every committed transaction after it.
//!
//! The two are told apart from the other end of the file. Every committed
//! transaction ends with a redundant copy of its length, so the last 8
//! bytes of a file that ends with a complete transaction lead back to that
//! transaction's header, whose length must be the same and whose status
//! must be a committed one. If such a transaction starts after the suspect
//! position, committed data follows it: that is damage, reported as
//! [`crate::Error::Corrupt`] at the suspect position, and nothing is cut.
//! A genuine torn tail (or a commit of another process in progress) has no
//! valid committed transaction after it: its last bytes are not a trailer
//! that leads back to a committed header beyond it. A file that shrinks
//! while we look (another process aborting its commit) is not damage either.

use super::format::{STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE, TXN_HDR_LEN, TxnHeader};
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The position of a complete committed transaction that ends the file
/// and starts after `pos`, if there is one.
pub(super) fn committed_after(
    file: &File,
    path: &Path,
    pos: u64,
    size: u64,
) -> Result<Option<u64>> {
    if size < pos.saturating_add(TXN_HDR_LEN + 8) {
        return Ok(None);
    }
    let mut b = [0u8; 8];
    if !read_at(file, path, &mut b, size - 8)? {
        return Ok(None);
    }
    let tlen = u64::from_be_bytes(b);
    let Some(start) = (size - 8).checked_sub(tlen) else {
        return Ok(None);
    };
    if start <= pos || tlen < TXN_HDR_LEN {
        return Ok(None);
    }
    let mut hb = [0u8; 23];
    if !read_at(file, path, &mut hb, start)? {
        return Ok(None);
    }
    let h = TxnHeader::parse(start, &hb);
    let valid = h.tlen == tlen
        && [STATUS_COMMITTED, STATUS_PACKED, STATUS_UNDONE].contains(&h.status)
        && h.header_len() <= tlen;
    Ok(valid.then_some(start))
}

/// Read `buf` at `at`; false if the file is now shorter (another process
/// aborting its commit truncated it while we scanned: not damage).
fn read_at(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<bool> {
    match file.read_exact_at(buf, at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path, "read", e)),
    }
}
