//! Split reads: many small records read in one pass, each record's data
//! cut by a layout the caller predicts, its large middle part landing
//! straight in the caller's memory.
//!
//! # Model
//!
//! A ZBlk1 block is 512 ZData records of 4 KiB, written one after the other
//! by one transaction. Each record's data is a small head (the class pickle
//! and the byte string's opcode), the payload, and a tail of a few bytes;
//! the payload belongs at a known place of the block. Lending the records
//! from the file mapping (`map_many_before`) and copying each payload into
//! place cost, per 2 MiB block on the 2-core VM, about 230 µs of page-table
//! work to map the pages in, 100 µs to unmap them again (the resident set
//! must not grow by what a scan read) and 180 µs of copying: half of the
//! block read. A split read is one `preadv` per run of adjacent records
//! (a few per block) whose vectors put every record header and data head in
//! a scratch area, every payload at its place in the block and every tail
//! in the scratch area: the kernel copies each byte once, from the page
//! cache to where it belongs.
//!
//! The caller predicts the layout ([`SplitShape`]: head and tail lengths,
//! the usual data length); a record's real data length is known only once
//! its header is read, so the storage takes the distance to the next record
//! in the file as the length (bounded by the usual one) and checks the
//! header afterwards exactly as a single load checks it. A record whose
//! header says otherwise (another length, a revision newer than the
//! snapshot, a record without data) is left out ([`SplitRecords::get`]
//! gives `None`): its place in the caller's memory may then hold bytes of
//! the file, and the caller loads that record the ordinary way. The head
//! and tail bytes are the caller's to check (the storage knows no pickles).

use crate::ids::Tid;

/// The predicted layout of each record's data: `head` bytes, the payload,
/// `tail` bytes; `plen` is the usual data length (that of a record whose
/// payload fills its place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitShape {
    /// Bytes before the payload.
    pub head: usize,
    /// Bytes after the payload.
    pub tail: usize,
    /// The longest data length expected.
    pub plen: u64,
}

/// One record read by a split read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitGot {
    /// The revision read.
    pub serial: Tid,
    /// Length of the payload, now at the start of the record's destination.
    pub body_len: usize,
}

/// What a split read read: per record (in the order asked), its revision
/// and payload length with its head and tail bytes, or nothing (load it
/// the ordinary way).
#[derive(Debug, Clone)]
pub struct SplitRecords {
    got: Vec<Option<SplitGot>>,
    /// Record `k`'s head then tail at `k * (head + tail)`.
    ends: Vec<u8>,
    shape: SplitShape,
}

impl SplitRecords {
    /// Nothing read yet for `n` records of `shape`.
    pub fn new(n: usize, shape: SplitShape) -> Self {
        SplitRecords {
            got: vec![None; n],
            ends: vec![0; n.saturating_mul(shape.head + shape.tail)],
            shape,
        }
    }

    /// The shape the records were read with.
    pub fn shape(&self) -> SplitShape {
        self.shape
    }

    /// Record `k`: what was read, its head and its tail; `None` if it was
    /// not read (the caller loads it the ordinary way).
    pub fn get(&self, k: usize) -> Option<(SplitGot, &[u8], &[u8])> {
        let g = (*self.got.get(k)?)?;
        let per = self.shape.head + self.shape.tail;
        let e = self.ends.get(k * per..(k + 1) * per)?;
        let (head, tail) = e.split_at(self.shape.head);
        Some((g, head, tail))
    }

    /// Mark record `k` read.
    pub fn set(&mut self, k: usize, got: Option<SplitGot>) {
        if let Some(g) = self.got.get_mut(k) {
            *g = got;
        }
    }

    /// Record by record, the room for its head and its tail (for a reader
    /// that fills them).
    pub fn ends_mut(&mut self) -> impl Iterator<Item = (&mut [u8], &mut [u8])> {
        let head = self.shape.head;
        self.ends
            .chunks_exact_mut((self.shape.head + self.shape.tail).max(1))
            .map(move |c| c.split_at_mut(head))
    }
}
