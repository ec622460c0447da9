//! A ZBlk1 block read in one pass: its ZData payloads laid straight into
//! the block by the storage's split read (`Storage::read_split_before`,
//! see `storage::split`), one copy per byte, a few syscalls per block.
//!
//! # Model
//!
//! The block's chunk table gives each chunk's offset; chunk `k` may fill the
//! block from its offset up to the next chunk's (the last one up to the end
//! of the block), which is where the storage is asked to put its payload.
//! The layout of every ZData record is predicted from the first chunk's
//! record head: the class pickle, the byte string's opcode and length (the
//! head), a payload of at most [`CHUNK_SIZE`] bytes, the memo and `STOP`
//! (the tail). After the read each record's head and tail are checked
//! against the ZData byte-string shape (`BytesStateReader::split_payload`):
//! the record must be a plain ZData whose payload is exactly the bytes that
//! landed in place. A record the storage did not read (a chunk rewritten in
//! another transaction lies elsewhere, a revision newer than the snapshot,
//! a shorter chunk's other opcode) or whose shape differs is loaded the
//! ordinary way and decoded generically (`decode_zdata`), then copied into
//! place: bytes the split read left in its room are overwritten or zeroed
//! as a gap. A storage without split reads (ZEO), a table whose offsets are
//! not ascending within the block, or a first record of another form, and
//! the block is read as before (`SnapshotFile::assemble_zblk1`'s mapped
//! path), which reports every error with its context.
//!
//! Measured on the 2-core VM (512 MiB of ZBlk1 blocks, page cache warm,
//! `examples/zblk1prof.rs`): per 2 MiB block, lending the 512 records from
//! the file mapping and copying them into place took about 230 µs to map
//! the pages, 100 µs to unmap them and 180 µs to copy, of about 900 µs;
//! the split read replaces the three with the kernel's one copy.

use crate::Error;
use crate::chunks::zero_gap;
use crate::objects::{MODULE, decode_zdata, fast_payload, payload_layout};
use crate::reader::SnapshotFile;
use crate::zblk::{CHUNK_SIZE, chunk_span};
use storage::pickle::{BYTES_STATE_HEAD, BytesStateReader};
use storage::{Oid, SplitShape};

impl SnapshotFile<'_> {
    /// Fill `buf` (one block) from the ZData chunks `refs` (offset order)
    /// with one split read (see the module docs). `Ok(false)`: not done,
    /// `buf` untouched; read the block the other way.
    pub(crate) fn read_chunks_split(
        &self,
        blk: u64,
        refs: &[(i64, Oid)],
        buf: &mut [u8],
    ) -> Result<bool, Error> {
        let Some(&(_, first)) = refs.first() else {
            return Ok(false);
        };
        // Offsets inside the block and ascending: each chunk has its room.
        let ascending = refs.windows(2).all(|w| w[0].0 <= w[1].0);
        let inside = refs
            .iter()
            .all(|&(off, _)| usize::try_from(off).is_ok_and(|o| o <= buf.len()));
        if !ascending || !inside {
            return Ok(false);
        }
        let Some(shape) = self.zdata_shape(first)? else {
            return Ok(false);
        };
        let oids: Vec<Oid> = refs.iter().map(|&(_, o)| o).collect();
        let before = self.snap.at.successor();
        let read = {
            let mut bodies = rooms(refs, buf);
            self.snap
                .storage
                .read_split_before(&oids, &mut bodies, shape, before)?
        };
        let Some(read) = read else {
            return Ok(false);
        };
        // Payload length of each chunk read in place; `None`: load it.
        let mut shapes = BytesStateReader::default();
        let lens: Vec<Option<usize>> = (0..refs.len())
            .map(|k| {
                let (g, head, tail) = read.get(k)?;
                let (m, n) = shapes.split_payload(head, g.body_len, tail)?;
                (m == MODULE && n == "ZData").then_some(g.body_len)
            })
            .collect();
        let missing: Vec<Oid> = refs
            .iter()
            .zip(&lens)
            .filter(|(_, l)| l.is_none())
            .map(|(&(_, o), _)| o)
            .collect();
        let mut loaded = if missing.is_empty() {
            Vec::new()
        } else {
            self.snap.storage.load_many_before(&missing, before)?
        }
        .into_iter()
        .zip(&missing);
        let mut stop: Option<u64> = None;
        for (&(off, o), len) in refs.iter().zip(&lens) {
            let start = stop.unwrap_or(0);
            let end = match len {
                Some(l) => chunk_span(buf.len(), stop, off, *l),
                None => {
                    let (r, &lo) = loaded
                        .next()
                        .ok_or_else(|| self.err_chunk(blk, o, "chunk was not loaded"))?;
                    let r = r.ok_or(Error::Storage(storage::Error::NotFound {
                        oid: lo,
                        tid: Some(self.snap.at),
                    }))?;
                    let owned;
                    let data = match fast_payload(&r.data, &["ZData"]) {
                        Some(p) => p,
                        None => {
                            owned = decode_zdata(lo, &r.data)?;
                            &owned
                        }
                    };
                    let span = chunk_span(buf.len(), stop, off, data.len());
                    if let Ok((s, e)) = span {
                        buf[s as usize..e as usize].copy_from_slice(data);
                    }
                    span
                }
            }
            .map_err(|e| self.err_chunk(blk, o, e.to_string()))?
            .1;
            zero_gap(buf, start, off);
            stop = Some(end);
        }
        zero_gap(buf, stop.unwrap_or(0), buf.len() as i64);
        Ok(true)
    }

    /// The predicted layout of a block's ZData records, from the head of
    /// the record of chunk `oid`: `None` if it is not a plain ZData.
    fn zdata_shape(&self, oid: Oid) -> Result<Option<SplitShape>, Error> {
        let mut head = [0u8; BYTES_STATE_HEAD];
        let Some(r) =
            self.snap
                .storage
                .load_before_range(oid, self.snap.at.successor(), 0, &mut head)?
        else {
            return Ok(None);
        };
        let Some((off, len)) = payload_layout(&head[..r.copied], &["ZData"]) else {
            return Ok(None);
        };
        let tail = r.total_len.checked_sub(off as u64 + len);
        Ok(match tail {
            Some(t @ (1 | 3 | 6)) => Some(SplitShape {
                head: off,
                tail: t as usize,
                plen: (off + CHUNK_SIZE) as u64 + t,
            }),
            _ => None,
        })
    }

    fn err_chunk(&self, blk: u64, chunk: Oid, msg: impl std::fmt::Display) -> Error {
        Error::Block {
            file: self.oid,
            blk,
            msg: format!("chunk {chunk}: {msg}"),
        }
    }
}

/// The room of each chunk in `buf`: from its offset to the next chunk's
/// (the last one's to the end of the block). Offsets are ascending and
/// inside the block (checked by the caller).
fn rooms<'b>(refs: &[(i64, Oid)], buf: &'b mut [u8]) -> Vec<&'b mut [u8]> {
    let mut out = Vec::with_capacity(refs.len());
    let mut rest = buf;
    let mut at = 0usize;
    for (k, &(off, _)) in refs.iter().enumerate() {
        let off = usize::try_from(off).unwrap_or(at).max(at);
        let next = refs
            .get(k + 1)
            .and_then(|&(n, _)| usize::try_from(n).ok())
            .unwrap_or(at + rest.len())
            .max(off);
        let skip = (off - at).min(rest.len());
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
        let len = (next - off).min(tail.len());
        let (room, after) = tail.split_at_mut(len);
        out.push(room);
        rest = after;
        at = next;
    }
    out
}
