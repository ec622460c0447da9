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
//! made to cover the indexed data, and each record's header is read and
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
use crate::mapped::MappedRecord;

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
