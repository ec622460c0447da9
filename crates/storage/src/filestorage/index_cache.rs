//! The index kept next to the data file (`<name>.rsindex`), so that opening
//! a large database does not read every record header again.
//!
//! # Model
//!
//! Opening a FileStorage builds its index (see [`super::index`]) by reading
//! the header of every transaction and data record: one small read per
//! record of a large file, and records of 2 MiB blocks lie 2 MiB apart.
//! With a cold page cache that is one disk access per block: 1.5 s of the
//! 42-50 s `wendelin stat` of a 28 GiB array took (14,400 records),
//! minutes for a terabyte. Python ZODB keeps `<name>.index` for the same
//! reason; this is our own file, which Python ignores (FORMATS.md).
//!
//! A writable storage saves its index when it closes, if the index moved
//! since it was opened or saved (written to `<name>.rsindex.tmp<pid>` and
//! renamed over, so a reader never sees half of one). Every open, read-only
//! ones included, uses a saved index only when all of these hold, and
//! otherwise scans the whole file as before:
//! - its checksum (FNV-1a 64 over the rest) is right and its counts match
//!   its length, and every offset in it lies before its end;
//! - the data file is the same inode (a pack writes a new file: Python's
//!   or ours) and at least as long as the saved end;
//! - the first and last saved transactions are still there: their headers
//!   at the saved offsets carry the saved tids, and the last one ends
//!   exactly at the saved end.
//!
//! Then only what was appended since (by any process, Python's included)
//! is scanned, from the saved end. A wrong offset that slipped through
//! would still not read wrong data: every load checks that the record
//! header at an indexed offset names the oid asked for.

use super::format::TxnHeader;
use super::index::Index;
use crate::ids::{Oid, Tid};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// First bytes of a saved index.
const MAGIC: &[u8; 8] = b"WRSIDX1\n";
/// Fixed part: magic, dev, ino, end, last tid, max tid seen, max oid,
/// transaction count, object count.
const HEAD: usize = 8 + 8 * 8;

/// `<name>.rsindex` of the data file `path`.
pub(super) fn path_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".rsindex");
    PathBuf::from(p)
}

/// FNV-1a, 64 bits.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The bytes of a saved `idx` of the data file with metadata `meta`.
fn encode(idx: &Index, meta: &std::fs::Metadata) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD + 16 * (idx.txns.len() + idx.oids.len()) + 8);
    b.extend_from_slice(MAGIC);
    for v in [
        meta.dev(),
        meta.ino(),
        idx.end,
        idx.last_tid.0,
        idx.max_tid_seen.0,
        idx.max_oid.map_or(u64::MAX, |o| o.0),
        idx.txns.len() as u64,
        idx.oids.len() as u64,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for (tid, pos) in &idx.txns {
        b.extend_from_slice(&tid.0.to_le_bytes());
        b.extend_from_slice(&pos.to_le_bytes());
    }
    for (oid, pos) in &idx.oids {
        b.extend_from_slice(&oid.0.to_le_bytes());
        b.extend_from_slice(&pos.to_le_bytes());
    }
    let c = checksum(&b);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

/// Little-endian u64 at `at` of `b` (in bounds by the caller's checks).
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// The index saved in `b`, if it is well-formed and saved for the file
/// with metadata `meta` (see the module docs); not yet checked against the
/// file's content.
fn decode(b: &[u8], meta: &std::fs::Metadata) -> Option<Index> {
    if b.len() < HEAD + 8 || &b[..8] != MAGIC {
        return None;
    }
    let (body, sum) = b.split_at(b.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let f = |i: usize| u64_at(b, 8 + 8 * i);
    if f(0)? != meta.dev() || f(1)? != meta.ino() {
        return None;
    }
    let (end, last_tid, max_seen, max_oid) = (f(2)?, Tid(f(3)?), Tid(f(4)?), f(5)?);
    let (ntx, nobj) = (usize::try_from(f(6)?).ok()?, usize::try_from(f(7)?).ok()?);
    let want = ntx
        .checked_add(nobj)?
        .checked_mul(16)?
        .checked_add(HEAD + 8)?;
    if want != b.len() || end > meta.len() || end < 4 {
        return None;
    }
    let pair = |k: usize| -> Option<(u64, u64)> {
        let at = HEAD + 16 * k;
        Some((u64_at(b, at)?, u64_at(b, at + 8)?))
    };
    let mut txns = Vec::with_capacity(ntx);
    for k in 0..ntx {
        let (tid, pos) = pair(k)?;
        if pos >= end || txns.last().is_some_and(|&(_, p): &(Tid, u64)| p >= pos) {
            return None;
        }
        txns.push((Tid(tid), pos));
    }
    let mut oids = HashMap::with_capacity(nobj);
    for k in ntx..ntx + nobj {
        let (oid, pos) = pair(k)?;
        if pos >= end {
            return None;
        }
        oids.insert(Oid(oid), pos);
    }
    Some(Index {
        oids,
        txns,
        end,
        last_tid,
        max_tid_seen: max_seen,
        max_oid: (max_oid != u64::MAX).then_some(Oid(max_oid)),
        tail: None,
    })
}

/// The transaction header at `pos` of `file` carries `tid`, and ends at
/// `end` if given.
fn txn_is(file: &File, pos: u64, tid: Tid, end: Option<u64>) -> bool {
    let mut hb = [0u8; 23];
    if file.read_exact_at(&mut hb, pos).is_err() {
        return false;
    }
    let h = TxnHeader::parse(pos, &hb);
    h.tid == tid
        && end.is_none_or(|e| pos.checked_add(h.tlen).and_then(|x| x.checked_add(8)) == Some(e))
}

/// The index saved for `file` (the data file at `path`), if there is one
/// and it still describes the file's start (see the module docs).
pub(super) fn load(path: &Path, file: &File) -> Option<Index> {
    let meta = file.metadata().ok()?;
    let cache = File::open(path_of(path)).ok()?;
    let len = cache.metadata().ok()?.len();
    // Bounded before reading: an index holds 16 bytes per record, and a
    // record takes more than that in the data file.
    if len > meta.len().saturating_add(1 << 20) {
        return None;
    }
    let mut b = vec![0u8; usize::try_from(len).ok()?];
    cache.read_exact_at(&mut b, 0).ok()?;
    let idx = decode(&b, &meta)?;
    let ok = match (idx.txns.first(), idx.txns.last()) {
        (Some(&(t0, p0)), Some(&(tn, pn))) => {
            txn_is(file, p0, t0, None) && txn_is(file, pn, tn, Some(idx.end))
        }
        _ => idx.end == 4,
    };
    ok.then_some(idx)
}

/// Save `idx` of the data file `file` at `path` (best effort: a cache that
/// cannot be written only costs the next open a scan).
pub(super) fn save(path: &Path, file: &File, idx: &Index) {
    let Ok(meta) = file.metadata() else {
        return;
    };
    let bytes = encode(idx, &meta);
    let dst = path_of(path);
    // Per process: two writers closing at once each rename a whole file.
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let r = File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, &dst));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(path = %dst.display(), "index not saved: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_reads_back_and_damage_is_refused() {
        let t = tempfile::NamedTempFile::new().expect("tmp");
        t.as_file().write_all_at(&[0u8; 4096], 0).expect("grow");
        let meta = t.as_file().metadata().expect("meta");
        let idx = Index {
            oids: [(Oid(0), 27), (Oid(7), 300)].into_iter().collect(),
            txns: vec![(Tid(5), 4), (Tid(9), 200)],
            end: 400,
            last_tid: Tid(9),
            max_tid_seen: Tid(9),
            max_oid: Some(Oid(7)),
            tail: None,
        };
        let b = encode(&idx, &meta);
        let back = decode(&b, &meta).expect("decodes");
        assert_eq!(back.oids, idx.oids);
        assert_eq!(back.txns, idx.txns);
        assert_eq!(
            (back.end, back.last_tid, back.max_tid_seen, back.max_oid),
            (400, Tid(9), Tid(9), Some(Oid(7)))
        );
        // Any flipped byte, a cut, or another file: refused.
        for i in [0, 9, 20, HEAD + 3, b.len() - 12, b.len() - 1] {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(decode(&d, &meta).is_none(), "byte {i} flipped");
        }
        assert!(decode(&b[..b.len() - 8], &meta).is_none());
        let other = tempfile::NamedTempFile::new().expect("tmp");
        other.as_file().write_all_at(&[0u8; 4096], 0).expect("grow");
        let ometa = other.as_file().metadata().expect("meta");
        assert!(decode(&b, &ometa).is_none(), "another inode");
    }
}
