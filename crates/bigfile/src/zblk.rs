//! Block formats of a ZBigFile (FORMATS.md §6.3-6.5), as pure functions over
//! bytes: trimming, chunking for ZBlk1, re-assembly with validation, and the
//! `auto` format heuristic. The persistent-object glue lives elsewhere; this
//! module has no I/O so every rule here is unit-tested in isolation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Chunk size ZBlk1 writes (wendelin's `CHUNKSIZE`). Readers accept any.
pub const CHUNK_SIZE: usize = 4096;

/// Environment variable selecting the write format, as in wendelin.core.
pub const ZBLK_FMT_ENV: &str = "WENDELIN_CORE_ZBLK_FMT";

/// How a single block is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZBlkKind {
    /// One object with the block's bytes (trailing zeros trimmed).
    ZBlk0,
    /// An IOBTree offset -> ZData of chunks.
    ZBlk1,
}

/// The write format chosen per database handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ZBlkFormat {
    /// Always ZBlk0 (fast reads; wendelin's default without wcfs).
    #[default]
    ZBlk0,
    /// Always ZBlk1 (small changes stay small in the database).
    ZBlk1,
    /// wendelin's heuristic, see [`choose_auto`].
    Auto,
}

/// An unknown format name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown ZBlk format {:?} (expected ZBlk0, ZBlk1 or auto)",
            self.0
        )
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for ZBlkFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ZBlk0" => Ok(ZBlkFormat::ZBlk0),
            "ZBlk1" => Ok(ZBlkFormat::ZBlk1),
            "auto" => Ok(ZBlkFormat::Auto),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

impl ZBlkFormat {
    /// The format named by `$WENDELIN_CORE_ZBLK_FMT`, or ZBlk0 when unset.
    /// An unknown name is an error, as in wendelin.core.
    pub fn from_env() -> Result<Self, UnknownFormat> {
        match std::env::var(ZBLK_FMT_ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(ZBlkFormat::ZBlk0),
        }
    }
}

/// `data` without its trailing zero bytes.
pub fn trim_zeros(data: &[u8]) -> &[u8] {
    // 64 bytes at a time from the end (an OR the compiler vectorizes), so
    // that a mostly-zero 2 MiB block is not scanned a byte at a time.
    let mut end = data.len();
    for c in data.rchunks(64) {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            let i = c.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            return &data[..end - c.len() + i];
        }
        end -= c.len();
    }
    &data[..0]
}

/// Split a block into `(offset, trimmed chunk)` pairs of `chunk_size` bytes,
/// leaving out all-zero chunks (ZBlk1 writer rule).
pub fn split_chunks(block: &[u8], chunk_size: usize) -> Vec<(usize, &[u8])> {
    let chunk_size = chunk_size.max(1);
    block
        .chunks(chunk_size)
        .enumerate()
        .filter_map(|(i, c)| {
            let t = trim_zeros(c);
            (!t.is_empty()).then_some((i * chunk_size, t))
        })
        .collect()
}

/// What must change in a ZBlk1 chunk table to hold a new block content.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkDelta<'a> {
    /// True if the old table used another chunk layout and must be cleared first.
    pub clear: bool,
    /// Chunks to (re)write: offset -> new trimmed bytes.
    pub set: Vec<(usize, &'a [u8])>,
    /// Offsets whose chunk became all zeros and must be deleted.
    pub delete: Vec<usize>,
}

impl ChunkDelta<'_> {
    /// True if the block content did not change.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.set.is_empty() && self.delete.is_empty()
    }

    /// True if applying this delta to the chunks `old` (those it was
    /// computed from) changes the block's bytes: a cleared table, or a set
    /// or deleted chunk whose old bytes differ beyond trailing zeros (a
    /// foreign writer may have stored chunks with trailing zeros).
    pub fn changes_content<B: AsRef<[u8]>>(&self, old: &BTreeMap<usize, B>) -> bool {
        let old_of = |off: &usize| old.get(off).map_or(&[][..], |b| trim_zeros(b.as_ref()));
        self.clear
            || self.set.iter().any(|(off, n)| old_of(off) != *n)
            || self.delete.iter().any(|off| !old_of(off).is_empty())
    }
}

/// Compare `block` against the chunks stored now (`old`: offset -> stored
/// bytes) and return the minimal change: only chunks whose bytes changed are
/// rewritten. A table written with another chunk size is cleared and rewritten.
pub fn chunk_delta<'a, B: AsRef<[u8]>>(
    old: &BTreeMap<usize, B>,
    block: &'a [u8],
) -> ChunkDelta<'a> {
    let foreign = old
        .iter()
        .any(|(off, data)| off % CHUNK_SIZE != 0 || data.as_ref().len() > CHUNK_SIZE);
    let mut delta = ChunkDelta {
        clear: foreign,
        ..ChunkDelta::default()
    };
    let mut new: BTreeMap<usize, &[u8]> = split_chunks(block, CHUNK_SIZE).into_iter().collect();
    if foreign {
        delta.set = new.into_iter().collect();
        return delta;
    }
    for (off, data) in old {
        match new.remove(off) {
            None => delta.delete.push(*off),
            Some(n) if n != data.as_ref() => delta.set.push((*off, n)),
            Some(_) => {}
        }
    }
    delta.set.extend(new);
    delta.set.sort_by_key(|(off, _)| *off);
    delta
}

/// Why stored block data could not be assembled into a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssembleError {
    /// Stored data is longer than the block.
    TooLong {
        /// Length of the stored data (or end of the last chunk).
        len: u64,
        /// The block size.
        blksize: usize,
    },
    /// A chunk offset is negative.
    NegativeOffset(i64),
    /// Two chunks overlap (or offsets are not ascending).
    Overlap {
        /// Offset of the chunk that overlaps its predecessor.
        offset: i64,
    },
}

impl fmt::Display for AssembleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssembleError::TooLong { len, blksize } => {
                write!(
                    f,
                    "stored block data of {len} bytes exceeds blksize {blksize}"
                )
            }
            AssembleError::NegativeOffset(o) => write!(f, "chunk at negative offset {o}"),
            AssembleError::Overlap { offset } => {
                write!(f, "chunk at offset {offset} overlaps the previous chunk")
            }
        }
    }
}

impl std::error::Error for AssembleError {}

/// Fill `out` (the whole block) from ZBlk0 data: copy, zero the rest.
pub fn assemble_zblk0(data: &[u8], out: &mut [u8]) -> Result<(), AssembleError> {
    if data.len() > out.len() {
        return Err(AssembleError::TooLong {
            len: data.len() as u64,
            blksize: out.len(),
        });
    }
    out[..data.len()].copy_from_slice(data);
    out[data.len()..].fill(0);
    Ok(())
}

/// Fill `out` (the whole block) from ZBlk1 chunks given in ascending offset
/// order: zeros everywhere, each chunk copied at its offset. Offsets must be
/// non-negative, chunks must not overlap and must end within the block.
pub fn assemble_chunks<'a>(
    chunks: impl IntoIterator<Item = (i64, &'a [u8])>,
    out: &mut [u8],
) -> Result<(), AssembleError> {
    out.fill(0);
    let mut stop = None;
    for (off, data) in chunks {
        stop = Some(place_chunk(out, stop, off, data)?);
    }
    Ok(())
}

/// Copy one chunk into `out` (the whole block) at `off`, checking that the
/// offset is non-negative, that it does not overlap the previous chunk
/// (which ended at `prev_end`, `None` for the first chunk), and that it ends
/// within the block. Returns where this chunk ends.
pub fn place_chunk(
    out: &mut [u8],
    prev_end: Option<u64>,
    off: i64,
    data: &[u8],
) -> Result<u64, AssembleError> {
    let (start, end) = chunk_span(out.len(), prev_end, off, data.len())?;
    // Both bounds were checked against out.len() by chunk_span.
    out[start as usize..end as usize].copy_from_slice(data);
    Ok(end)
}

/// Where a chunk of `len` bytes at `off` lies in a block of `blksize`
/// bytes, `[start, end)`, checked as [`place_chunk`] checks it (without
/// copying: the commit's writer validates a stored table it compares
/// chunk by chunk).
pub fn chunk_span(
    blksize: usize,
    prev_end: Option<u64>,
    off: i64,
    len: usize,
) -> Result<(u64, u64), AssembleError> {
    let start = u64::try_from(off).map_err(|_| AssembleError::NegativeOffset(off))?;
    if prev_end.is_some_and(|p| start < p) {
        return Err(AssembleError::Overlap { offset: off });
    }
    let end = start + len as u64;
    if end > blksize as u64 {
        return Err(AssembleError::TooLong { len: end, blksize });
    }
    Ok((start, end))
}

/// Number of bytes that differ between `a` and `b`, counting a length
/// difference as differing bytes (wendelin's `memdelta`).
pub fn memdelta(a: &[u8], b: &[u8]) -> usize {
    let common = a.iter().zip(b).filter(|(x, y)| x != y).count();
    common + a.len().abs_diff(b.len())
}

/// The decision of the `auto` heuristic for one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoChoice {
    /// Format for this block.
    pub kind: ZBlkKind,
    /// True if this write appends a new block right after the last one: the
    /// caller must then rewrite the previous block as ZBlk0 if it was also
    /// changed in this transaction and is not ZBlk0 already.
    pub migrate_previous: bool,
}

/// wendelin's `auto` heuristic (FORMATS.md §6.5). `old` and `new` are the
/// block's previous and new bytes with trailing zeros trimmed; `last_blk` is
/// the highest block present in the file before this write.
pub fn choose_auto(
    blk: i64,
    last_blk: Option<i64>,
    old: &[u8],
    new: &[u8],
    blksize: usize,
) -> AutoChoice {
    let last = last_blk.unwrap_or(-1);
    let append_oldblk = blk == last && new.starts_with(old);
    let append_newblk = last.checked_add(1) == Some(blk) && old.is_empty();
    let small = memdelta(old, new) * 2 < blksize;
    let filled = new.len() == blksize;
    let kind = if append_oldblk || append_newblk {
        if small && !filled {
            ZBlkKind::ZBlk1
        } else {
            ZBlkKind::ZBlk0
        }
    } else if small {
        ZBlkKind::ZBlk1
    } else {
        ZBlkKind::ZBlk0
    };
    AutoChoice {
        kind,
        migrate_previous: append_newblk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_trailing_zeros_only() {
        for len in [0usize, 1, 63, 64, 65, 200, 4096] {
            for nz in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut v = vec![0u8; len];
                if let Some(i) = nz.filter(|&i| i < len) {
                    v[i] = 3;
                }
                let want = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                assert_eq!(trim_zeros(&v).len(), want, "len {len} nz {nz:?}");
            }
        }
        assert_eq!(trim_zeros(&[0, 1, 0, 2, 0, 0]), &[0, 1, 0, 2]);
        assert_eq!(trim_zeros(&[0, 0]), &[] as &[u8]);
        assert_eq!(trim_zeros(&[]), &[] as &[u8]);
    }

    #[test]
    fn split_skips_zero_chunks_and_trims() {
        let mut block = vec![0u8; 4 * CHUNK_SIZE];
        block[10] = 1;
        block[2 * CHUNK_SIZE + 100] = 7;
        let chunks = split_chunks(&block, CHUNK_SIZE);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].0, 0);
        assert_eq!(chunks[0].1.len(), 11);
        assert_eq!(chunks[1].0, 2 * CHUNK_SIZE);
        assert_eq!(chunks[1].1.len(), 101);
    }

    #[test]
    fn delta_rewrites_only_changed_chunks() {
        let mut block = vec![0u8; 3 * CHUNK_SIZE];
        block[0] = 1;
        block[CHUNK_SIZE] = 2;
        let old: BTreeMap<usize, Vec<u8>> = split_chunks(&block, CHUNK_SIZE)
            .into_iter()
            .map(|(o, d)| (o, d.to_vec()))
            .collect();
        assert!(chunk_delta(&old, &block).is_empty());
        block[CHUNK_SIZE] = 0; // chunk 1 becomes zero -> deleted
        block[2 * CHUNK_SIZE + 5] = 3; // chunk 2 appears -> set
        let d = chunk_delta(&old, &block);
        assert!(!d.clear);
        assert_eq!(d.delete, vec![CHUNK_SIZE]);
        assert_eq!(d.set.len(), 1);
        assert_eq!(d.set[0].0, 2 * CHUNK_SIZE);
        assert_eq!(d.set[0].1, &block[2 * CHUNK_SIZE..2 * CHUNK_SIZE + 6]);
    }

    #[test]
    fn delta_tells_content_changes_from_trailing_zeros() {
        let mut block = vec![0u8; 2 * CHUNK_SIZE];
        block[0] = 1;
        // A foreign writer stored chunk 0 with trailing zeros and an
        // all-zero chunk 1: same content, though the delta rewrites both.
        let old: BTreeMap<usize, Vec<u8>> = [(0usize, vec![1u8, 0, 0]), (CHUNK_SIZE, vec![0u8; 4])]
            .into_iter()
            .collect();
        let d = chunk_delta(&old, &block);
        assert!(!d.is_empty());
        assert!(!d.changes_content(&old));
        block[CHUNK_SIZE + 1] = 5;
        assert!(chunk_delta(&old, &block).changes_content(&old));
        block[CHUNK_SIZE + 1] = 0;
        block[1] = 2;
        assert!(chunk_delta(&old, &block).changes_content(&old));
    }

    #[test]
    fn delta_clears_foreign_chunk_layout() {
        let old: BTreeMap<usize, Vec<u8>> = [(100usize, vec![1u8; 10])].into_iter().collect();
        let block = vec![5u8; CHUNK_SIZE];
        let d = chunk_delta(&old, &block);
        assert!(d.clear);
        assert_eq!(d.set, vec![(0, &block[..])]);
        assert!(d.delete.is_empty());
    }

    #[test]
    fn assemble_round_trips_and_validates() {
        let mut block = vec![0u8; 8 * CHUNK_SIZE];
        for (i, b) in block.iter_mut().enumerate().skip(5000).take(9000) {
            *b = (i % 251) as u8 + 1;
        }
        let chunks = split_chunks(&block, CHUNK_SIZE);
        let mut out = vec![0xAAu8; block.len()];
        assemble_chunks(chunks.iter().map(|(o, d)| (*o as i64, *d)), &mut out).unwrap();
        assert_eq!(out, block);

        let mut out = vec![0u8; 16];
        assert_eq!(
            assemble_chunks([(-1, &b"x"[..])], &mut out),
            Err(AssembleError::NegativeOffset(-1))
        );
        assert_eq!(
            assemble_chunks([(0, &b"abcd"[..]), (2, &b"x"[..])], &mut out),
            Err(AssembleError::Overlap { offset: 2 })
        );
        assert_eq!(
            assemble_chunks([(10, &b"abcdefg"[..])], &mut out),
            Err(AssembleError::TooLong {
                len: 17,
                blksize: 16
            })
        );
        // Chunks of any size and alignment are accepted (readers must not assume 4 KiB).
        assemble_chunks([(1, &b"ab"[..]), (3, &b"c"[..]), (15, &b"z"[..])], &mut out).unwrap();
        assert_eq!(&out[..4], b"\0abc");
        assert_eq!(out[15], b'z');
    }

    #[test]
    fn assemble_zblk0_zero_fills() {
        let mut out = vec![9u8; 8];
        assemble_zblk0(b"abc", &mut out).unwrap();
        assert_eq!(out, b"abc\0\0\0\0\0");
        assert!(assemble_zblk0(&[1; 9], &mut out).is_err());
    }

    #[test]
    fn memdelta_counts_changes_and_length() {
        assert_eq!(memdelta(b"abc", b"abc"), 0);
        assert_eq!(memdelta(b"abc", b"axc"), 1);
        assert_eq!(memdelta(b"abc", b"abcde"), 2);
        assert_eq!(memdelta(b"", b"xyz"), 3);
    }

    #[test]
    fn auto_heuristic_follows_wendelin() {
        let bs = 1000;
        // small append to the last block -> ZBlk1
        let c = choose_auto(3, Some(3), b"abc", b"abcdef", bs);
        assert_eq!(
            c,
            AutoChoice {
                kind: ZBlkKind::ZBlk1,
                migrate_previous: false
            }
        );
        // append that fills the block -> ZBlk0
        let full = vec![1u8; bs];
        assert_eq!(
            choose_auto(3, Some(3), &full[..10], &full, bs).kind,
            ZBlkKind::ZBlk0
        );
        // small new block right after the last -> ZBlk1, previous block migrates
        let c = choose_auto(4, Some(3), b"", b"xy", bs);
        assert_eq!(
            c,
            AutoChoice {
                kind: ZBlkKind::ZBlk1,
                migrate_previous: true
            }
        );
        // first block of an empty file counts as an append
        assert!(choose_auto(0, None, b"", b"x", bs).migrate_previous);
        // big change elsewhere -> ZBlk0, small change elsewhere -> ZBlk1
        assert_eq!(
            choose_auto(0, Some(9), b"", &full[..600], bs).kind,
            ZBlkKind::ZBlk0
        );
        assert_eq!(
            choose_auto(0, Some(9), b"aaaa", b"abaa", bs).kind,
            ZBlkKind::ZBlk1
        );
        // exactly half the block changed is not small
        assert_eq!(
            choose_auto(0, Some(9), b"", &full[..500], bs).kind,
            ZBlkKind::ZBlk0
        );
    }

    #[test]
    fn format_names() {
        assert_eq!("ZBlk0".parse(), Ok(ZBlkFormat::ZBlk0));
        assert_eq!("ZBlk1".parse(), Ok(ZBlkFormat::ZBlk1));
        assert_eq!("auto".parse(), Ok(ZBlkFormat::Auto));
        assert!("zblk0".parse::<ZBlkFormat>().is_err());
    }
}
