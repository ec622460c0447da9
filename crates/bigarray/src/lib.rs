//! ZBigArray: n-dimensional arrays over a ZBigFile, as wendelin.core stores
//! them, with `ndarray` views and out-of-core reductions.
//!
//! # Model
//!
//! A `ZBigArray` (class `wendelin.bigarray.array_zodb.ZBigArray`) is a small
//! persistent object holding the dtype (a pickled `numpy.dtype`), the shape,
//! the memory order (`C` or `F`) and a reference to a ZBigFile that holds the
//! element bytes from offset 0. [`ZBigArray<T>`] opens one through a
//! connection: the data is the file's memory mapping (virtmem), so a view of
//! the whole array costs nothing until touched, and any numeric code runs on
//! it as an ordinary [`ndarray::ArrayViewD`]. Views are lent to a closure
//! ([`ZBigArray::with_view`]) and cannot outlive it, so no view survives a
//! commit, abort or sync of the transaction.
//!
//! `resize` changes only the metadata (growing reads zeros; shrinking drops
//! the blocks past the end), `append` writes only the new elements.
//! Reductions ([`ZBigArray::stats`], [`ZBigArray::map_reduce`]) run in
//! parallel chunks with rayon; memory stays within the RAM budget because
//! a scan hands the blocks it loaded back once done with them (dropped when
//! the budget is nearly full, see `scan`), and `stats` reads ZBlk0 blocks
//! in place from the storage's file mapping without loading them (see
//! `stored_scan`).
//!
//! Element types implement [`Element`]: i8..i64, u8..u64, f32, f64, numpy
//! bool ([`B1`]) and complex64/128 (`num_complex::Complex<f32|f64>`) in
//! native (little-endian) order; the real ones also implement [`Real`] for
//! statistics. Arrays stored big-endian or with other dtypes are
//! refused by the typed handle with a clear error; [`open_untyped`] gives
//! their metadata and raw bytes, and [`read_converted`] reads big-endian
//! numbers explicitly.
//!
//! The crate has no `unsafe` code: element types are plain old data by
//! `bytemuck`'s checked derive (and its impls for the numeric and complex
//! types), which is what virtmem's typed views ask for.

#![forbid(unsafe_code)]

pub mod array;
pub mod dtype;
pub mod reduce;
mod scan;
mod stored_scan;

pub use array::{ArrayState, Order, ZBigArray, check_shape};
pub use dtype::{ByteOrder, DType};
pub use reduce::{Stats, stats_of};

use storage::{Connection, Oid};

/// Errors of the bigarray layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the object database.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// From the file layer.
    #[error(transparent)]
    Bigfile(#[from] bigfile::Error),
    /// From the paging engine.
    #[error(transparent)]
    Virtmem(#[from] virtmem::Error),
    /// A dtype that is not supported or does not match.
    #[error("dtype: {0}")]
    DType(String),
    /// A shape outside numpy's limits.
    #[error("shape {shape:?}: {msg}")]
    Shape {
        /// The shape asked for.
        shape: Vec<usize>,
        /// What is wrong.
        msg: String,
    },
    /// Reading array data for the caller failed (a damaged or missing block).
    #[error("array {oid}: reading elements {start}..{end}: {source}")]
    Read {
        /// The array object.
        oid: Oid,
        /// First element (memory order) of the range being read.
        start: u64,
        /// End of the range.
        end: u64,
        /// The error (names the block and the file).
        source: Box<Error>,
    },
    /// The stored array state is invalid.
    #[error("array {oid}: {msg}")]
    BadArray {
        /// The array object.
        oid: Oid,
        /// What is wrong.
        msg: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
}

/// An element type of arrays (native byte order).
pub trait Element: virtmem::Pod + Default + Send + Sync {
    /// numpy kind character.
    const KIND: char;
    /// The dtype of this type in native order.
    fn dtype() -> DType {
        let size = std::mem::size_of::<Self>();
        DType {
            kind: Self::KIND,
            size,
            order: if size == 1 {
                ByteOrder::NotApplicable
            } else {
                ByteOrder::Little
            },
        }
    }
}

/// A real-valued element type (statistics need an order and an f64 value).
pub trait Real: Element + PartialOrd {
    /// The value as f64.
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($($t:ty => $k:literal),*) => { $(
        impl Element for $t {
            const KIND: char = $k;
        }
        impl Real for $t {
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )* };
}

mod boolean {
    /// numpy's `bool` (`|b1`): one byte, 0 or 1. Any other byte reads as true.
    // `Pod` by derive: a transparent wrapper of u8 (one byte, no padding,
    // every bit pattern a valid value), checked by bytemuck at compile time.
    #[derive(
        Debug,
        Clone,
        Copy,
        Default,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        bytemuck::Pod,
        bytemuck::Zeroable,
    )]
    #[repr(transparent)]
    pub struct B1(pub u8);

    impl B1 {
        /// The boolean value.
        pub fn get(self) -> bool {
            self.0 != 0
        }
    }

    impl From<bool> for B1 {
        fn from(b: bool) -> B1 {
            B1(u8::from(b))
        }
    }

    impl super::Element for B1 {
        const KIND: char = 'b';
    }

    impl super::Real for B1 {
        fn to_f64(self) -> f64 {
            f64::from(u8::from(self.get()))
        }
    }
}
pub use boolean::B1;

/// numpy `complex64` (`<c8`).
impl Element for num_complex::Complex<f32> {
    const KIND: char = 'c';
}

/// numpy `complex128` (`<c16`).
impl Element for num_complex::Complex<f64> {
    const KIND: char = 'c';
}
element!(i8 => 'i', i16 => 'i', i32 => 'i', i64 => 'i', u8 => 'u', u16 => 'u', u32 => 'u', u64 => 'u', f32 => 'f', f64 => 'f');

/// Metadata of any array (whatever its dtype).
pub fn open_untyped(conn: &Connection, oid: Oid) -> Result<ArrayState, Error> {
    Ok(conn.get::<ArrayState>(oid)?.clone())
}

/// The converter of one element of `d` (any integer, float or bool dtype,
/// either byte order) to f64, or None for dtypes that are not numbers.
fn converter(d: DType) -> Option<impl Fn(&[u8]) -> f64> {
    let known = matches!(
        (d.kind, d.size),
        ('u' | 'i' | 'b', 1) | ('u' | 'i', 2) | ('u' | 'i' | 'f', 4) | ('u' | 'i' | 'f', 8)
    );
    let big = d.order == ByteOrder::Big;
    known.then_some(move |c: &[u8]| -> f64 {
        let mut b = [0u8; 8];
        let n = c.len().min(8);
        b[..n].copy_from_slice(&c[..n]);
        if big {
            b[..n].reverse();
        }
        match (d.kind, d.size) {
            ('u' | 'b', 1) => f64::from(b[0]),
            ('i', 1) => f64::from(b[0] as i8),
            ('u', 2) => f64::from(u16::from_le_bytes([b[0], b[1]])),
            ('i', 2) => f64::from(i16::from_le_bytes([b[0], b[1]])),
            ('u', 4) => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ('i', 4) => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ('f', 4) => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ('u', 8) => u64::from_le_bytes(b) as f64,
            ('i', 8) => i64::from_le_bytes(b) as f64,
            _ => f64::from_le_bytes(b),
        }
    })
}

/// Stream the elements of an array of any numeric dtype (either byte order)
/// from its stored blocks, converted to f64, `f(chunk)` a block at a time.
fn for_each_converted(
    conn: &Connection,
    oid: Oid,
    mut f: impl FnMut(&[f64]),
) -> Result<ArrayState, Error> {
    let st = open_untyped(conn, oid)?;
    let d = st.dtype;
    let conv = converter(d)
        .ok_or_else(|| Error::DType(format!("cannot convert {} to numbers", d.str())))?;
    let sf = bigfile::SnapshotFile::open(conn.storage().as_ref(), conn.at(), st.zfile)?;
    let mut carry: Vec<u8> = Vec::with_capacity(d.size);
    let mut out: Vec<f64> = Vec::new();
    sf.read_range(0..st.nbytes(), |chunk| {
        out.clear();
        let mut rest = chunk;
        if !carry.is_empty() {
            let take = (d.size - carry.len()).min(rest.len());
            carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if carry.len() == d.size {
                out.push(conv(&carry));
                carry.clear();
            }
        }
        let whole = rest.len() / d.size * d.size;
        out.extend(rest[..whole].chunks_exact(d.size).map(&conv));
        carry.extend_from_slice(&rest[whole..]);
        f(&out);
        Ok(())
    })?;
    Ok(st)
}

/// Read the elements of an array of any integer or float dtype (either byte
/// order) converted to f64, in memory order; for tools and big-endian data.
pub fn read_converted(conn: &Connection, oid: Oid) -> Result<Vec<f64>, Error> {
    let mut all = Vec::new();
    for_each_converted(conn, oid, |c| all.extend_from_slice(c))?;
    Ok(all)
}

/// Statistics of an array of any numeric dtype (either byte order: what
/// the typed handle refuses, such as big-endian data), streamed from the
/// stored blocks at the connection's snapshot with bounded memory.
pub fn stats_converted(conn: &Connection, oid: Oid) -> Result<Stats, Error> {
    let mut acc = stats_of::<f64>(&[]);
    for_each_converted(conn, oid, |c| acc = Stats::merge(acc, stats_of(c)))?;
    Ok(acc)
}
