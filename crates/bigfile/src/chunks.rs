//! The stored chunks of a ZBlk1 block, held where the storage found them.
//!
//! A ZBlk1 block is up to 512 ZData records of 4 KiB. The commit's writer
//! compares a changed block against its stored chunks: it used to read and
//! assemble the whole old block, then load every chunk a second time into
//! fresh buffers (9 ms of CPU for an 8-byte change). Now each chunk's
//! payload is lent in place from the storage's file mapping where the
//! storage can ([`ChunkBytes::Mapped`]; storages that cannot lend give
//! loaded bytes, [`ChunkBytes::Loaded`]), loaded once. Payloads are located
//! with one class-pickle decode per block ([`ClassPrefix`]), and a block is
//! assembled with one copy per chunk and zeros only in the gaps
//! ([`assemble_chunks`], [`zero_gap`]). The fault handlers' read path
//! does the same and then releases the mapped pages of the block's records
//! (see `SnapshotFile::assemble_zblk1`), so a scan does not keep the file's
//! pages in the process's RSS.

use crate::objects::MODULE;
use crate::zblk::{AssembleError, chunk_span, place_chunk};
use storage::pickle::BytesStateReader;
use storage::{MappedRecord, Tid};

/// The payload of one stored ZData chunk.
#[derive(Debug, Clone)]
pub enum ChunkBytes {
    /// In place in the storage's file mapping.
    Mapped(MappedRecord),
    /// Loaded (and decoded) into memory.
    Loaded {
        /// The chunk's bytes.
        data: Vec<u8>,
        /// The ZData's revision.
        serial: Tid,
    },
}

impl ChunkBytes {
    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            ChunkBytes::Mapped(m) => m.data(),
            ChunkBytes::Loaded { data, .. } => data,
        }
    }

    /// The revision of the ZData record the bytes are from.
    pub fn serial(&self) -> Tid {
        match self {
            ChunkBytes::Mapped(m) => m.serial,
            ChunkBytes::Loaded { serial, .. } => *serial,
        }
    }
}

/// Locates ZData payloads in record after record, decoding the class
/// pickle only when it differs from the previous record's.
#[derive(Debug, Default)]
pub struct ClassPrefix(BytesStateReader);

impl ClassPrefix {
    /// Where the payload of the ZData record `data` lies: `(offset, len)`;
    /// `None` if it is not a plain ZData record (decode it generically).
    pub fn payload(&mut self, data: &[u8]) -> Option<(usize, usize)> {
        let (module, name, r) = self.0.payload(data)?;
        (module == MODULE && name == "ZData").then_some((r.start, r.len()))
    }
}

/// Fill `buf` (one block) from `chunks` (offset order, as stored): zeros
/// where no chunk lies.
pub fn assemble_chunks(
    chunks: &[(i64, storage::Oid, ChunkBytes)],
    buf: &mut [u8],
) -> Result<(), AssembleError> {
    let mut stop: Option<u64> = None;
    for (off, _, c) in chunks {
        let start = stop.unwrap_or(0);
        let end = place_chunk(buf, stop, *off, c.bytes())?;
        zero_gap(buf, start, *off);
        stop = Some(end);
    }
    zero_gap(buf, stop.unwrap_or(0), buf.len() as i64);
    Ok(())
}

/// Check `chunks` (offset order, as stored) as [`assemble_chunks`] would
/// for a block of `blksize` bytes, without assembling them.
pub fn check_chunks(
    chunks: &[(i64, storage::Oid, ChunkBytes)],
    blksize: usize,
) -> Result<(), AssembleError> {
    let mut stop: Option<u64> = None;
    for (off, _, c) in chunks {
        stop = Some(chunk_span(blksize, stop, *off, c.bytes().len())?.1);
    }
    Ok(())
}

/// Zero `buf[start..off]` (clamped to the block): the gap before a chunk
/// placed at `off` after the previous one ended at `start` (blocks are
/// assembled without zeroing them whole first).
pub fn zero_gap(buf: &mut [u8], start: u64, off: i64) {
    let s = usize::try_from(start).unwrap_or(usize::MAX).min(buf.len());
    let o = usize::try_from(off).unwrap_or(0).clamp(s, buf.len());
    buf[s..o].fill(0);
}
