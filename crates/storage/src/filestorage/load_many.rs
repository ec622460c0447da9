//! Batched loads: many small records read with a few large `pread`s.
//!
//! # Model
//!
//! A ZBlk1 block is 512 ZData records of 4 KiB, written one after the other
//! by one transaction. Loading them one by one costs two `pread`s each (the
//! record header, then the data); here the latest record positions of all
//! the objects are taken from the index at once, sorted, and positions that
//! lie close together in the file are grouped into spans that are each read
//! with one `pread` (bounded in size). Each record is then checked and cut
//! out of its span exactly as a single load would check it (the same
//! header checks). Whatever the fast path cannot answer from a span (a
//! revision newer than the snapshot, a record without data that holds a
//! backpointer, a record reaching past its span) is loaded the ordinary way,
//! so the result is always what [`Shared::load_before`] gives for each oid.

use super::Shared;
use super::format::{DATA_HDR_LEN, DataHeader};
use super::read::read_exact_at;
use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::storage::LoadedRecord;

/// Records further apart than this start a new span.
const MAX_GAP: u64 = 64 << 10;
/// Bytes read past the last record start of a span (room for its data).
const TAIL: u64 = 64 << 10;
/// Largest span read at once.
const MAX_SPAN: u64 = 8 << 20;

impl Shared {
    /// `Storage::load_many_before`: see the module documentation.
    pub(super) fn load_many_before(
        &self,
        oids: &[Oid],
        before: Tid,
    ) -> Result<Vec<Option<LoadedRecord>>> {
        let file = self.current_file();
        let (at, end) = self.latest_by_position(oids);
        let mut out: Vec<Option<LoadedRecord>> = vec![None; oids.len()];
        let mut slow = Vec::new();
        let mut buf = Vec::new();
        let mut i = 0;
        while i < at.len() {
            // One span: positions close to each other, bounded in size.
            let start = at[i].0;
            let mut j = i + 1;
            while j < at.len()
                && at[j].0 - at[j - 1].0 <= MAX_GAP
                && at[j].0 + TAIL - start <= MAX_SPAN
            {
                j += 1;
            }
            let stop = (at[j - 1].0 + TAIL).min(end);
            if start < 4 || stop <= start {
                slow.extend(at[i..j].iter().map(|&(_, k)| k));
                i = j;
                continue;
            }
            buf.resize((stop - start) as usize, 0);
            read_exact_at(&file, &self.path, &mut buf, start)?;
            for &(pos, k) in &at[i..j] {
                let r = (pos - start) as usize;
                let Some(hb) = buf.get(r..r + DATA_HDR_LEN as usize) else {
                    slow.push(k);
                    continue;
                };
                let mut b = [0u8; DATA_HDR_LEN as usize];
                b.copy_from_slice(hb);
                let h = self.check_record_header(DataHeader::parse(pos, &b), oids[k], end)?;
                let d = r + DATA_HDR_LEN as usize;
                match buf.get(d..d.saturating_add(h.plen as usize)) {
                    Some(data) if h.tid < before && h.plen > 0 => {
                        out[k] = Some(LoadedRecord {
                            data: data.to_vec(),
                            serial: h.tid,
                            next_serial: None,
                        })
                    }
                    _ => slow.push(k),
                }
            }
            i = j;
        }
        for k in slow {
            out[k] = self.load_before(oids[k], before)?;
        }
        Ok(out)
    }
}
