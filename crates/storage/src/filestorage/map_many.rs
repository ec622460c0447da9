//! Many records lent in place at once: a ZBlk1 block's 512 chunks without
//! a copy, a syscall or an allocation per record.
//!
//! # Model
//!
//! [`super::load_many`] reads the records of a block with a few large
//! `pread`s, but then still copies each record out of its span into a
//! fresh buffer, and the caller copies the payload a third time into the
//! block. Here the latest record positions of all the objects are taken
//! from the index at once, the file's mapping (see [`super::mapped`]) is
//! made to cover the indexed data, the pages of records lying together are
//! mapped in with one call per run (`MappedBytes::populate`, not a page
//! fault every few pages), and each record's header is read and
//! checked in place, exactly as a single load checks it; the record data is
//! then lent as a slice of the mapping. Whatever the fast path cannot
//! answer (a revision newer than the snapshot, a record without data that
//! holds a backpointer) goes through [`Shared::map_before`], so the result
//! is always what it gives for each oid; `None` for an object the index
//! does not know or a file that cannot be mapped (the caller loads those
//! the ordinary way).

use super::Shared;
use super::format::{DATA_HDR_LEN, DataHeader};
use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::mapped::{MappedBytes, MappedRecord};

/// Records further apart than this are populated separately.
const MAX_GAP: u64 = 64 << 10;
/// Bytes populated past the last record start of a run (room for its data:
/// a ZData record of a 4 KiB chunk).
const TAIL: u64 = 8 << 10;

/// Map the pages of the records at `at` in with one `populate` per run of
/// records lying close together (each run up to a little past its last
/// record's start), instead of a page fault every few pages.
fn populate_runs(map: &dyn MappedBytes, at: &[Option<u64>], end: u64) {
    let mut pos: Vec<u64> = at.iter().flatten().copied().collect();
    pos.sort_unstable();
    let mut i = 0;
    while i < pos.len() {
        let mut j = i + 1;
        while j < pos.len() && pos[j] - pos[j - 1] <= MAX_GAP {
            j += 1;
        }
        let stop = pos[j - 1].saturating_add(DATA_HDR_LEN + TAIL).min(end);
        if let (Ok(a), Ok(b)) = (usize::try_from(pos[i]), usize::try_from(stop)) {
            map.populate(a..b);
        }
        i = j;
    }
}

impl Shared {
    /// `Storage::map_many_before`: see the module documentation.
    pub(super) fn map_many_before(
        &self,
        oids: &[Oid],
        before: Tid,
    ) -> Result<Vec<Option<MappedRecord>>> {
        let file = self.current_file();
        let (at, end) = {
            let idx = self.index.read();
            let at: Vec<Option<u64>> = oids.iter().map(|o| idx.oids.get(o).copied()).collect();
            (at, idx.end)
        };
        let mut out: Vec<Option<MappedRecord>> = vec![None; oids.len()];
        let Some(map) = usize::try_from(end)
            .ok()
            .and_then(|e| self.mapping.covering(&file, e))
        else {
            return Ok(out);
        };
        populate_runs(map.as_ref(), &at, end);
        let bytes = map.bytes();
        for (k, pos) in at.into_iter().enumerate() {
            let Some(pos) = pos else { continue };
            let hb = usize::try_from(pos)
                .ok()
                .filter(|_| pos >= 4)
                .and_then(|p| {
                    bytes
                        .get(p..p.checked_add(DATA_HDR_LEN as usize)?)
                        .and_then(|h| <&[u8; DATA_HDR_LEN as usize]>::try_from(h).ok())
                });
            let Some(hb) = hb.filter(|_| pos.saturating_add(DATA_HDR_LEN) <= end) else {
                out[k] = self.map_before(oids[k], before)?;
                continue;
            };
            let h = self.check_record_header(DataHeader::parse(pos, hb), oids[k], end)?;
            let d = pos + DATA_HDR_LEN;
            let range = usize::try_from(d)
                .ok()
                .and_then(|d| Some(d..d.checked_add(usize::try_from(h.plen).ok()?)?));
            out[k] = match range {
                Some(r) if h.tid < before && h.plen > 0 && d + h.plen <= end => {
                    MappedRecord::new(map.clone(), r, h.tid)
                }
                _ => self.map_before(oids[k], before)?,
            };
        }
        Ok(out)
    }
}
