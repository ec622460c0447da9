//! Trees of int keys and persistent-reference values (a ZBlk1's chunk
//! table: offset -> ZData) read without building a value tree.
//!
//! # Model
//!
//! Reading a 512-chunk table through the generic decoder costs a dozen
//! allocations per item (the reference's tuple, its oid bytes, the class
//! global's two strings) only to keep the oid: on a cold ZBlk1 read that was
//! a sixth of the time. Every writer lays such a bucket out the same way
//! (Python's pickler and ours): `[PROTO n] [MARK] MARK`, then per item an
//! int opcode (`BININT1`/`BININT2`/`BININT`) and a reference (8 oid bytes as
//! `SHORT_BINBYTES`/`SHORT_BINSTRING`, optionally a class as `GLOBAL` or a
//! memo `GET`, `TUPLE2`, `BINPERSID`), memo `PUT`s anywhere between values,
//! then `TUPLE`, an optional next-bucket reference and the closing tuple
//! opcode, `STOP`. [`parse_bucket`] reads exactly that form and says `None`
//! for anything else (another opcode, a memo `GET` of an entry this state
//! did not put, trailing bytes); such a bucket, and tree nodes, are decoded
//! generically, so the result is always what the generic path gives.

use super::family::family_of;
use super::node::{Bucket, TreeNode, TreeState};
use super::read::SnapshotReader;
use crate::error::{Error, Result};
use crate::ids::Oid;
use crate::persistent::PersistentClass;
use crate::pickle::{class_of_meta, decode};
use crate::value::Value;

use crate::pickle::opcodes::{
    BINGET, BININT, BININT1, BININT2, BINPERSID, BINPUT, GLOBAL, LONG_BINGET, LONG_BINPUT, MARK,
    PROTO, SHORT_BINBYTES, SHORT_BINSTRING, STOP, TUPLE, TUPLE1, TUPLE2,
};

/// A bucket's items and next bucket, as read by [`parse_bucket`].
pub type IntRefBucket = (Vec<(i64, Oid)>, Option<Oid>);

/// A cursor over one state pickle, remembering the memo entries it put.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    puts: Vec<u32>,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn expect(&mut self, op: u8) -> Option<()> {
        (self.take(1)? == [op]).then_some(())
    }

    /// Skip memo puts (they do not change the value on the stack).
    fn puts(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(BINPUT) => {
                    let i = self.take(2)?[1];
                    self.puts.push(u32::from(i));
                }
                Some(LONG_BINPUT) => {
                    let i = u32::from_le_bytes(self.take(5)?[1..5].try_into().ok()?);
                    self.puts.push(i);
                }
                _ => return Some(()),
            }
        }
    }

    fn int(&mut self) -> Option<i64> {
        let v = match self.take(1)?[0] {
            BININT1 => i64::from(self.take(1)?[0]),
            BININT2 => i64::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?)),
            BININT => i64::from(i32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            _ => return None,
        };
        self.puts()?;
        Some(v)
    }

    /// A persistent reference: oid bytes, optionally `(oid, class)`.
    fn reference(&mut self) -> Option<Oid> {
        match self.take(2)? {
            [SHORT_BINBYTES | SHORT_BINSTRING, 8] => {}
            _ => return None,
        }
        let oid = Oid::from_slice(self.take(8)?)?;
        self.puts()?;
        if self.peek()? != BINPERSID {
            match self.take(1)?[0] {
                GLOBAL => {
                    for _ in 0..2 {
                        let rest = self.data.get(self.at..)?;
                        let nl = rest.iter().position(|&b| b == b'\n')?;
                        self.at += nl + 1;
                    }
                }
                BINGET => {
                    let i = u32::from(self.take(1)?[0]);
                    self.puts.contains(&i).then_some(())?;
                }
                LONG_BINGET => {
                    let i = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
                    self.puts.contains(&i).then_some(())?;
                }
                _ => return None,
            }
            self.puts()?;
            self.expect(TUPLE2)?;
            self.puts()?;
        }
        self.expect(BINPERSID)?;
        self.puts()?;
        Some(oid)
    }
}

/// The items and next bucket of the bucket record `data` (class pickle and
/// state), if it is a bucket of int keys and reference values in the plain
/// form of the module docs; `None` otherwise (decode it generically).
pub fn parse_bucket(data: &[u8]) -> Option<IntRefBucket> {
    let (meta, n) = decode(data).ok()?;
    let (module, name) = class_of_meta(&meta)?;
    if !matches!(family_of(&module, &name), Some((_, true))) {
        return None;
    }
    let mut c = Cursor {
        data,
        at: n,
        puts: Vec::new(),
    };
    if c.peek()? == PROTO {
        c.take(2)?;
    }
    c.expect(MARK)?;
    let outer_mark = c.peek()? == MARK;
    if outer_mark {
        c.take(1)?;
    }
    let mut items = Vec::new();
    while c.peek()? != TUPLE {
        let k = c.int()?;
        let v = c.reference()?;
        items.push((k, v));
    }
    c.take(1)?;
    c.puts()?;
    let next = match c.peek()? {
        SHORT_BINBYTES | SHORT_BINSTRING => Some(c.reference()?),
        _ => None,
    };
    let close = match (outer_mark, next) {
        (true, _) => TUPLE,
        (false, None) => TUPLE1,
        (false, Some(_)) => TUPLE2,
    };
    c.expect(close)?;
    c.puts()?;
    c.expect(STOP)?;
    (c.at == data.len() && !items.is_empty()).then_some((items, next))
}

/// Items of a generically decoded bucket as `(int, oid)`.
fn int_refs(oid: Oid, items: Vec<(Value, Value)>) -> Result<Vec<(i64, Oid)>> {
    items
        .into_iter()
        .map(|(k, v)| match (k.as_int(), v.ref_oid()) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(Error::BadState {
                oid,
                msg: "tree item is not (int, reference)".into(),
            }),
        })
        .collect()
}

impl SnapshotReader<'_> {
    /// All items of the int -> reference tree rooted at `root`, in key
    /// order, reporting every node visited to `visit` (as
    /// [`SnapshotReader::items`]); buckets are read with [`parse_bucket`]
    /// where they have its form.
    pub fn int_ref_items(&self, root: Oid, visit: &mut dyn FnMut(Oid)) -> Result<Vec<(i64, Oid)>> {
        self.walk(
            root,
            visit,
            |items| int_refs(root, items),
            |o, data| match parse_bucket(data) {
                Some(b) => Ok(b),
                None => {
                    let bk = Bucket::from_record(o, data)?;
                    let next = bk.next.as_ref().and_then(Value::ref_oid);
                    Ok((int_refs(o, bk.items)?, next))
                }
            },
        )
    }

    /// The items of the tree rooted at `root` in key order: an inline
    /// root's through `inline`, each bucket's (and its next bucket) through
    /// `bucket` from its record.
    pub(super) fn walk<T>(
        &self,
        root: Oid,
        visit: &mut dyn FnMut(Oid),
        inline: impl FnOnce(Vec<(Value, Value)>) -> Result<Vec<T>>,
        mut bucket: impl FnMut(Oid, &[u8]) -> Result<(Vec<T>, Option<Oid>)>,
    ) -> Result<Vec<T>> {
        visit(root);
        let n: TreeNode = self.snapshot.load(root)?;
        let (first, children) = match n.state {
            TreeState::Empty => return Ok(Vec::new()),
            TreeState::Inline(items) => return inline(items),
            TreeState::General {
                first, children, ..
            } => (first, children),
        };
        // interior nodes are visited too, so changes to them are seen (the
        // root, loaded above, is not loaded again)
        let mut stack = Vec::new();
        let mut pending = children;
        loop {
            for (c, is_bucket) in pending {
                if !is_bucket {
                    visit(c);
                    stack.push(c);
                }
            }
            let Some(o) = stack.pop() else { break };
            let t: TreeNode = self.snapshot.load(o)?;
            pending = match t.state {
                TreeState::General { children, .. } => children,
                _ => Vec::new(),
            };
        }
        let mut out = Vec::new();
        let mut b = Some(first);
        let mut guard = 0u64;
        while let Some(o) = b {
            guard += 1;
            if guard > 1 << 32 {
                return Err(Error::BadState {
                    oid: o,
                    msg: "bucket chain does not end".into(),
                });
            }
            visit(o);
            let rec = self.snapshot.record(o)?;
            let (items, next) = bucket(o, &rec.data)?;
            out.extend(items);
            b = next;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::node::ref_value;
    use crate::pickle::{Dialect, encode_record};

    fn bucket_record(items: &[(i64, u64)], next: Option<u64>, dialect: Dialect) -> Vec<u8> {
        let b = Bucket {
            family: &crate::btree::IO,
            items: items
                .iter()
                .map(|&(k, o)| {
                    (
                        Value::Int(k),
                        ref_value(Oid(o), "wendelin.bigfile.file_zodb", "ZData", dialect),
                    )
                })
                .collect(),
            next: next.map(|n| ref_value(Oid(n), "BTrees.IOBTree", "IOBucket", dialect)),
        };
        let st = crate::persistent::Persistent::state(&b).unwrap();
        encode_record("BTrees.IOBTree", "IOBucket", &st, dialect).unwrap()
    }

    /// `data` with the first `from` replaced by `to`.
    fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let i = data.windows(from.len()).position(|w| w == from).unwrap();
        [&data[..i], to, &data[i + from.len()..]].concat()
    }

    #[test]
    fn parses_what_the_generic_decoder_reads() {
        let items = [(0, 5), (4096, 6), (1 << 20, 7), (70000, 1 << 40)];
        for dialect in [Dialect::Py3, Dialect::Py2] {
            for next in [None, Some(99)] {
                let rec = bucket_record(&items, next, dialect);
                let want = Bucket::from_record(Oid(1), &rec).unwrap();
                let want_items = int_refs(Oid(1), want.items).unwrap();
                let (got, got_next) = parse_bucket(&rec).expect("plain form");
                assert_eq!(got, want_items);
                assert_eq!(got_next, want.next.as_ref().and_then(Value::ref_oid));
                assert_eq!(got_next, next.map(Oid));
            }
        }
    }

    #[test]
    fn python_pickler_form_with_memo() {
        // Python's pickler: outer MARK, memo puts after every value, the
        // class of later references fetched from the memo.
        let mut rec = b"\x80\x03cBTrees.IOBTree\nIOBucket\nq\x00.\x80\x03((".to_vec();
        rec.extend(b"K\x00q\x01C\x08\0\0\0\0\0\0\0\x05q\x02cwendelin.bigfile.file_zodb\nZData\nq\x03\x86q\x04Q");
        rec.extend(b"M\x00\x10C\x08\0\0\0\0\0\0\0\x06h\x03\x86Qq\x05");
        rec.extend(b"tq\x06C\x08\0\0\0\0\0\0\0\x09cBTrees.IOBTree\nIOBucket\n\x86Qtq\x07.");
        let want = Bucket::from_record(Oid(1), &rec).unwrap();
        let (got, next) = parse_bucket(&rec).expect("plain form");
        assert_eq!(got, int_refs(Oid(1), want.items).unwrap());
        assert_eq!(got, vec![(0, Oid(5)), (4096, Oid(6))]);
        assert_eq!(next, Some(Oid(9)));
        // A GET of an entry this state did not put: generic path.
        assert!(parse_bucket(&replace(&rec, b"h\x03", b"h\x08")).is_none());
    }

    #[test]
    fn other_forms_are_left_to_the_generic_decoder() {
        let rec = bucket_record(&[(1, 2)], None, Dialect::Py3);
        // trailing bytes, truncation, another class
        let mut t = rec.clone();
        t.push(b'.');
        assert!(parse_bucket(&t).is_none());
        assert!(parse_bucket(&rec[..rec.len() - 1]).is_none());
        assert!(parse_bucket(&replace(&rec, b"IOBucket", b"IOBTree")).is_none());
        // an int value instead of a reference
        let b = Bucket {
            family: &crate::btree::IO,
            items: vec![(Value::Int(1), Value::Int(2))],
            next: None,
        };
        let st = crate::persistent::Persistent::state(&b).unwrap();
        let rec = encode_record("BTrees.IOBTree", "IOBucket", &st, Dialect::Py3).unwrap();
        assert!(parse_bucket(&rec).is_none());
    }
}
