//! Reachability as of the pack time (ZODB's `fspack.GC`).
//!
//! # Model
//!
//! A revision survives a pack if it is reachable: either it was the current
//! revision, at the pack time, of an object reachable from the root through
//! strong persistent references ([`crate::refs::strong_refs`]), or a
//! transaction after the pack time holds a backpointer to it (an undo, or a
//! revision an undo restored). Such a backpointed revision may itself refer
//! to objects that were otherwise unreachable at the pack time; those are
//! marked too.
//!
//! Two passes over the file, headers only except for the records whose
//! references are read:
//!
//! 1. up to the pack time: `oid -> position of its current revision`
//!    (a record without data and without backpointer deletes the object),
//!    and `packpos`, the first transaction after the pack time;
//! 2. from `packpos` to the end: the backpointers into the packed region.
//!
//! Records whose state is one plain byte string (wendelin blocks and
//! chunks, the bulk of a database) are recognized from their first bytes
//! and never read whole.

use super::super::Shared;
use super::super::format::{DATA_HDR_LEN, DataHeader};
use super::super::read::read_exact_at;
use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::pickle;
use crate::refs::strong_refs;
use std::collections::HashMap;
use std::fs::File;

/// The reachable revisions, by position in the file being packed.
pub(super) struct Reachable {
    /// oid -> one reachable revision (the common case).
    one: HashMap<Oid, u64>,
    /// oid -> further reachable revisions (backpointed from after the pack time).
    extra: HashMap<Oid, Vec<u64>>,
    /// First transaction after the pack time.
    pub(super) packpos: u64,
    /// True if every transaction up to the pack time was already packed
    /// (status `'p'`): then a pack to this time may be redundant.
    pub(super) all_packed: bool,
    /// References to objects without a revision at the pack time.
    pub(super) dangling: u64,
}

impl Reachable {
    /// Whether the revision of `oid` at `pos` survives.
    pub(super) fn contains(&self, oid: Oid, pos: u64) -> bool {
        match self.one.get(&oid) {
            None => false,
            Some(&p) if p == pos => true,
            Some(_) => self.extra.get(&oid).is_some_and(|l| l.contains(&pos)),
        }
    }
}

impl Shared {
    /// Both passes of the module docs over `file` up to `end`; `progress`
    /// gets the input offset reached.
    pub(super) fn find_reachable(
        &self,
        file: &File,
        end: u64,
        packtime: Tid,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Reachable> {
        let mut cur: HashMap<Oid, u64> = HashMap::new();
        let mut pos = 4;
        let mut all_packed = true;
        while pos < end {
            let t = self.read_txn_headers(file, pos, end)?;
            if t.header.tid > packtime {
                break;
            }
            if t.header.status != super::super::STATUS_PACKED {
                all_packed = false;
            }
            for r in &t.records {
                if r.header.plen > 0 || r.backpointer.unwrap_or(0) != 0 {
                    cur.insert(r.header.oid, r.header.pos);
                } else {
                    cur.remove(&r.header.oid);
                }
            }
            pos = t.header.next_pos();
            progress(pos);
        }
        let mut reach = Reachable {
            one: HashMap::new(),
            extra: HashMap::new(),
            packpos: pos,
            all_packed,
            dangling: 0,
        };
        let mut todo = vec![Oid::ROOT];
        if cur.is_empty() {
            todo.clear(); // packing to before the database was created
        }
        self.mark(file, end, &cur, &mut reach, todo)?;

        // Backpointers from after the pack time into the packed region.
        let mut extra_roots = Vec::new();
        let mut pos = reach.packpos;
        while pos < end {
            let t = self.read_txn_headers(file, pos, end)?;
            for r in &t.records {
                let back = r.backpointer.unwrap_or(0);
                if back == 0 || back >= reach.packpos {
                    continue;
                }
                let oid = r.header.oid;
                match reach.one.entry(oid) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        let l = reach.extra.entry(oid).or_default();
                        if !l.contains(&back) {
                            l.push(back);
                            extra_roots.push((oid, back));
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        // ZODB does not follow this revision's references;
                        // an undo after the pack time would then restore an
                        // object whose references were dropped. We do.
                        v.insert(back);
                        extra_roots.push((oid, back));
                    }
                }
            }
            pos = t.header.next_pos();
            progress(pos);
        }
        for (oid, back) in extra_roots {
            let h = self.read_data_header(file, back, oid, end)?;
            let refs = self.refs_of(file, &h, end)?;
            self.mark(file, end, &cur, &mut reach, refs)?;
        }
        Ok(reach)
    }

    /// Mark everything reachable from `todo` through revisions current at
    /// the pack time.
    fn mark(
        &self,
        file: &File,
        end: u64,
        cur: &HashMap<Oid, u64>,
        reach: &mut Reachable,
        mut todo: Vec<Oid>,
    ) -> Result<()> {
        while let Some(oid) = todo.pop() {
            if reach.one.contains_key(&oid) {
                continue;
            }
            let Some(&pos) = cur.get(&oid) else {
                // ZODB's pack fails here; a reference to an object that
                // does not exist keeps nothing alive, so we go on.
                tracing::warn!(path = %self.path.display(), %oid, "pack: reference to an object without a revision at the pack time");
                reach.dangling += 1;
                continue;
            };
            reach.one.insert(oid, pos);
            let h = self.read_data_header(file, pos, oid, end)?;
            for r in self.refs_of(file, &h, end)? {
                if !reach.one.contains_key(&r) {
                    todo.push(r);
                }
            }
        }
        Ok(())
    }

    /// The strong references of the revision `h` (following backpointers).
    fn refs_of(&self, file: &File, h: &DataHeader, end: u64) -> Result<Vec<Oid>> {
        let Some(d) = self.data_holder(file, h, end)? else {
            return Ok(Vec::new());
        };
        let at = d.pos + DATA_HDR_LEN;
        const HEAD: u64 = pickle::BYTES_STATE_HEAD as u64;
        if d.plen > HEAD {
            // A plain byte-string state has no references: tell from its
            // first bytes and its last few, without reading the payload.
            let mut head = vec![0u8; HEAD as usize];
            read_exact_at(file, &self.path, &mut head, at)?;
            if let Some(l) = pickle::bytes_state_layout(&head) {
                let stop = (l.offset as u64).saturating_add(l.len);
                if stop <= d.plen && d.plen - stop <= 6 {
                    let mut tail = vec![0u8; (d.plen - stop) as usize];
                    read_exact_at(file, &self.path, &mut tail, at + stop)?;
                    if pickle::is_bytes_state_tail(&tail) {
                        return Ok(Vec::new());
                    }
                }
            }
        }
        let mut data = vec![0u8; d.plen as usize];
        read_exact_at(file, &self.path, &mut data, at)?;
        strong_refs(&data)
    }
}
