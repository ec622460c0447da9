//! `Storage::read_split_before` for FileStorage: a ZBlk1 block's records
//! read with one `preadv` per run of adjacent records, each payload straight
//! into the caller's memory (see [`crate::split`] for the model and the
//! measurement behind it).
//!
//! The records' latest positions are taken from the index under one lock
//! acquisition and sorted. A record's data length is predicted as the
//! distance to the next record asked for (when that is at most the usual
//! length of the shape) or the usual length; a record whose predicted span
//! would reach past the next one, the indexed data or its destination is
//! not read here. Records that lie exactly one after the other form a run:
//! its vectors are, per record, the 42-byte header and the data head (in
//! scratch), the payload (the caller's destination) and the tail (scratch),
//! at most [`MAX_IOV`] vectors per `preadv`. Each header read is then
//! checked as a single load checks it (a record of another oid or out of
//! range is corruption, an error), and a record whose header gives another
//! data length, a revision not older than `before`, or no data, is left
//! out for the caller to load the ordinary way.

use super::Shared;
use super::format::{DATA_HDR_LEN, DataHeader};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::split::{SplitGot, SplitRecords, SplitShape};
use std::io::IoSliceMut;

/// At most this many vectors per `preadv` (Linux's `IOV_MAX` is 1024).
const MAX_IOV: usize = 1020;
/// At most this many bytes per `preadv`.
const MAX_RUN: u64 = 16 << 20;
const HDR: usize = DATA_HDR_LEN as usize;

/// One record to read: index into the request, file position, predicted
/// data length.
#[derive(Clone, Copy)]
struct Planned {
    k: usize,
    pos: u64,
    plen: u64,
}

impl Shared {
    /// `Storage::read_split_before`: see the module documentation.
    pub(super) fn read_split_before(
        &self,
        oids: &[Oid],
        bodies: &mut [&mut [u8]],
        shape: SplitShape,
        before: Tid,
    ) -> Result<SplitRecords> {
        let mut out = SplitRecords::new(oids.len(), shape);
        if bodies.len() != oids.len() {
            return Ok(out);
        }
        let file = self.current_file();
        let (at, end) = self.latest_by_position(oids);
        let plan = plan(&at, bodies, shape, end);
        let mut hdrs = vec![0u8; plan.len() * HDR];
        {
            let mut ends: Vec<Option<(&mut [u8], &mut [u8])>> = out.ends_mut().map(Some).collect();
            let mut body_of: Vec<Option<&mut [u8]>> =
                bodies.iter_mut().map(|b| Some(&mut **b)).collect();
            let mut hdr_of = hdrs.chunks_exact_mut(HDR);
            let mut done = vec![false; plan.len()];
            let mut i = 0;
            while i < plan.len() {
                // A run: records one right after the other.
                let start = plan[i].pos;
                let mut iov: Vec<IoSliceMut<'_>> = Vec::new();
                let mut j = i;
                let mut stop = start;
                while j < plan.len()
                    && plan[j].pos == stop
                    && iov.len() + 4 <= MAX_IOV
                    && stop + DATA_HDR_LEN + plan[j].plen - start <= MAX_RUN
                {
                    let p = plan[j];
                    let body_len = (p.plen as usize) - shape.head - shape.tail;
                    let (Some(h), Some((head, tail)), Some(body)) = (
                        hdr_of.next(),
                        ends.get_mut(p.k).and_then(Option::take),
                        body_of.get_mut(p.k).and_then(Option::take),
                    ) else {
                        break;
                    };
                    iov.push(IoSliceMut::new(h));
                    iov.push(IoSliceMut::new(head));
                    iov.push(IoSliceMut::new(&mut body[..body_len]));
                    iov.push(IoSliceMut::new(tail));
                    stop += DATA_HDR_LEN + p.plen;
                    j += 1;
                }
                if j == i {
                    // Cannot happen (every planned record has its slots),
                    // but never loop forever.
                    break;
                }
                let got = read_vectored_at(&file, &mut iov, start)
                    .map_err(|e| Error::io(&self.path, "read", e))?;
                // Records read whole (a short read leaves the rest out).
                let mut upto = start;
                for (d, p) in done[i..j].iter_mut().zip(&plan[i..j]) {
                    upto += DATA_HDR_LEN + p.plen;
                    *d = upto - start <= got as u64;
                }
                i = j;
            }
            for ((p, h), d) in plan.iter().zip(hdrs.chunks_exact(HDR)).zip(done) {
                if !d {
                    continue;
                }
                let Ok(hb) = <&[u8; HDR]>::try_from(h) else {
                    continue;
                };
                let h = self.check_record_header(DataHeader::parse(p.pos, hb), oids[p.k], end)?;
                if h.plen == p.plen && h.plen > 0 && h.tid < before {
                    out.set(
                        p.k,
                        Some(SplitGot {
                            serial: h.tid,
                            body_len: (p.plen as usize) - shape.head - shape.tail,
                        }),
                    );
                }
            }
        }
        Ok(out)
    }
}

/// The records to read, by position: each with its predicted data length,
/// those whose prediction does not fit left out.
fn plan(at: &[(u64, usize)], bodies: &[&mut [u8]], shape: SplitShape, end: u64) -> Vec<Planned> {
    let ends = (shape.head + shape.tail) as u64;
    let mut plan = Vec::with_capacity(at.len());
    for (i, &(pos, k)) in at.iter().enumerate() {
        let next = at.get(i + 1).map(|&(q, _)| q);
        let plen = match next.and_then(|q| q.checked_sub(pos + DATA_HDR_LEN)) {
            Some(r) if r <= shape.plen => r,
            _ => shape.plen,
        };
        let room = bodies.get(k).map_or(0, |b| b.len() as u64);
        let fits = pos >= 4
            && plen >= ends
            && plen - ends <= room
            && pos
                .checked_add(DATA_HDR_LEN + plen)
                .is_some_and(|e| e <= end && next.is_none_or(|q| e <= q))
            && usize::try_from(plen).is_ok();
        // The same oid asked twice: read it once.
        let dup = i > 0 && at[i - 1].0 == pos;
        if fits && !dup {
            plan.push(Planned { k, pos, plen });
        }
    }
    plan
}

/// One `preadv` of `iov` at `pos`: the bytes read.
fn read_vectored_at(
    file: &std::fs::File,
    iov: &mut [IoSliceMut<'_>],
    pos: u64,
) -> std::io::Result<usize> {
    let off = nix::libc::off_t::try_from(pos)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    loop {
        match nix::sys::uio::preadv(file, iov, off) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
