//! `ZBigArray<T>`: the typed handle over a persistent array.
//!
//! The handle pairs the array object's state (dtype, shape, order) with a
//! [`ZBigFileH`] on its ZBigFile: element `i` (in memory order) is the
//! `size_of::<T>()` bytes at `i * size_of::<T>()` of the file mapping. Views
//! are lent to closures, so none outlives a transaction boundary. Reading
//! views are shared: threads and nested views read one array at once
//! (`ZBigArray` is `Send + Sync`); a mutable view is exclusive, and asking
//! for one inside a view of the same array is an error, not a deadlock.
//! Handles of read-only (historical) connections refuse every write at once.

mod state;

pub use state::{ArrayState, MODULE, Order, check_shape};

use crate::{Element, Error};
use bigfile::{HandleOptions, ZBigFileH, create_file};
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder};
use parking_lot::RwLock;
use std::marker::PhantomData;
use storage::{Connection, Oid, TransactionManager};

/// A `ZBigArray` of elements `T` through a connection: `ndarray` views of
/// the memory-mapped data, committed with the connection's transactions.
pub struct ZBigArray<T: Element> {
    conn: Connection,
    oid: Oid,
    /// The last state read from the connection (the connection's object
    /// is the truth: it follows resizes in this transaction, aborts and
    /// other transactions' changes at boundaries).
    state: RwLock<ArrayState>,
    fh: ZBigFileH,
    _t: PhantomData<fn() -> T>,
}

/// Block size of new arrays' files.
pub const BLKSIZE: u64 = 2 << 20;

/// Reserve address space for an array of `nbytes`: at least the requested
/// reservation, and room for the array to double (appends) — at most 64 TiB.
fn with_reserve(mut opts: HandleOptions, nbytes: u64) -> HandleOptions {
    let want = nbytes.saturating_mul(2).clamp(BLKSIZE, 64 << 40);
    opts.virtmem.reserve = opts.virtmem.reserve.max(want);
    opts
}

impl<T: Element> ZBigArray<T> {
    /// Create a new zero-filled array (stored at the next commit).
    pub fn create(
        conn: &Connection,
        tm: &TransactionManager,
        shape: &[usize],
        order: Order,
        opts: HandleOptions,
    ) -> Result<Self, Error> {
        let dtype = T::dtype();
        check_shape(shape, dtype.size)?;
        let zfile = create_file(conn, BLKSIZE)?;
        let state = ArrayState {
            dtype,
            shape: shape.to_vec(),
            order,
            zfile,
        };
        let oid = conn.add(state.clone())?;
        // the file object must exist for the handle: read it from the cache
        let fh = ZBigFileH::open_new(conn, tm, zfile, BLKSIZE, with_reserve(opts, state.nbytes()))?;
        Ok(Self::new(conn, oid, state, fh))
    }

    /// Open the array `oid`; its dtype must be `T` in native byte order.
    pub fn open(
        conn: &Connection,
        tm: &TransactionManager,
        oid: Oid,
        opts: HandleOptions,
    ) -> Result<Self, Error> {
        let state = Self::checked_state(conn, oid)?;
        let fh = ZBigFileH::open(conn, tm, state.zfile, with_reserve(opts, state.nbytes()))?;
        Ok(Self::new(conn, oid, state, fh))
    }

    /// Open the array `oid` read-only, in a connection that takes part in no
    /// transaction (historical or read-only): every write fails at once.
    pub fn open_read_only(conn: &Connection, oid: Oid, opts: HandleOptions) -> Result<Self, Error> {
        let state = Self::checked_state(conn, oid)?;
        let fh = ZBigFileH::open_read_only(conn, state.zfile, with_reserve(opts, state.nbytes()))?;
        Ok(Self::new(conn, oid, state, fh))
    }

    fn checked_state(conn: &Connection, oid: Oid) -> Result<ArrayState, Error> {
        let state = conn.get::<ArrayState>(oid)?.clone();
        let want = T::dtype();
        if state.dtype != want {
            return Err(Error::DType(format!(
                "array {oid} has dtype {}, opened as {}",
                state.dtype.str(),
                want.str()
            )));
        }
        Ok(state)
    }

    fn new(conn: &Connection, oid: Oid, state: ArrayState, fh: ZBigFileH) -> Self {
        ZBigArray {
            conn: conn.clone(),
            oid,
            state: RwLock::new(state),
            fh,
            _t: PhantomData,
        }
    }

    /// The array's state as the connection sees it now (after an abort or
    /// a sync it may differ from what the array was opened with).
    fn current(&self) -> Result<ArrayState, Error> {
        let st = self.conn.get::<ArrayState>(self.oid)?.clone();
        *self.state.write() = st.clone();
        Ok(st)
    }

    /// The current state, or the last one read if the connection cannot
    /// give it now (the next view or operation reports why).
    fn current_or_last(&self) -> ArrayState {
        self.current().unwrap_or_else(|_| self.state.read().clone())
    }

    /// The array object's oid.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// Shape.
    pub fn shape(&self) -> Vec<usize> {
        self.current_or_last().shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.current_or_last().len()
    }

    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory order.
    pub fn order(&self) -> Order {
        self.current_or_last().order
    }

    /// The stored state (dtype, shape, order, file).
    pub fn state(&self) -> ArrayState {
        self.current_or_last()
    }

    /// The file handle underneath.
    pub fn file(&self) -> &ZBigFileH {
        &self.fh
    }

    /// Is the array read-only (historical or read-only connection)?
    pub fn is_read_only(&self) -> bool {
        self.fh.is_read_only()
    }

    /// The index of the major axis: 0 for C order, the last for F order.
    pub fn major_axis(&self) -> usize {
        let st = self.current_or_last();
        match st.order {
            Order::C => 0,
            Order::F => st.shape.len().saturating_sub(1),
        }
    }

    fn shape_of(st: &ArrayState) -> ndarray::Shape<IxDyn> {
        IxDyn(&st.shape).set_f(st.order == Order::F)
    }

    /// Run `f` on a view of the whole array (lazily loaded; slice it with
    /// `s![...]`). The view cannot outlive the call, so it never survives a
    /// commit, abort or sync. Views are shared: other threads, and nested
    /// views in this one, read at the same time. A block that cannot be
    /// loaded is wendelin's SIGBUS behind a raw view: check a range first
    /// with [`Self::check_readable`], or use the reductions, which do.
    pub fn with_view<R>(&self, f: impl FnOnce(ArrayViewD<'_, T>) -> R) -> Result<R, Error> {
        let st = self.current()?;
        let h = self.fh.fileh_read()?;
        let v = h.view::<T>(0, st.len())?;
        let a = ArrayViewD::from_shape(Self::shape_of(&st), &v)
            .map_err(|e| Error::Usage(format!("array {}: view: {e}", self.oid)))?;
        Ok(f(a))
    }

    /// Run `f` on a mutable view of the whole array (written blocks become
    /// dirty and are stored at the next commit). Exclusive: it waits for
    /// other threads' views (bounded), and fails at once inside a view of
    /// the same array or on a read-only array.
    pub fn with_view_mut<R>(&self, f: impl FnOnce(ArrayViewMutD<'_, T>) -> R) -> Result<R, Error> {
        let st = self.current()?;
        let mut h = self.fh.fileh()?;
        let mut v = h.view_mut::<T>(0, st.len())?;
        let a = ArrayViewMutD::from_shape(Self::shape_of(&st), &mut v)
            .map_err(|e| Error::Usage(format!("array {}: view: {e}", self.oid)))?;
        Ok(f(a))
    }

    /// Load the elements `range` (memory order) now, returning the first
    /// load error (naming the block and file) instead of the SIGBUS a view
    /// would raise on touching a damaged block.
    pub fn check_readable(&self, range: std::ops::Range<usize>) -> Result<(), Error> {
        let blocks = self.blocks_of(range.clone());
        if blocks.is_empty() {
            return Ok(());
        }
        let h = self.fh.fileh_read()?;
        h.prefetch(blocks).map_err(|e| self.read_error(range, e))
    }

    /// [`check_readable`](Self::check_readable) for one pass of a scan:
    /// also returns the blocks this call loaded, for
    /// [`drop_behind`](Self::drop_behind) once the scan is done with them.
    pub(crate) fn load_for_scan(&self, range: std::ops::Range<usize>) -> Result<Vec<u64>, Error> {
        let blocks = self.blocks_of(range.clone());
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.fh.fileh_read()?;
        h.prefetch_for_scan(blocks)
            .map_err(|e| self.read_error(range, e))
    }

    /// A scan is done with `blocks` it loaded: drop them if the budget is
    /// nearly full, else keep them for a next pass (`virtmem::FileH::scan_done`).
    pub(crate) fn drop_behind(
        &self,
        blocks: &[u64],
        dropping: &std::sync::atomic::AtomicBool,
    ) -> Result<(), Error> {
        if !blocks.is_empty() {
            self.fh.fileh_read()?.scan_done(blocks, dropping);
        }
        Ok(())
    }

    /// The blocks of the file holding the elements `range` (memory order).
    pub(crate) fn blocks_of(&self, range: std::ops::Range<usize>) -> std::ops::Range<u64> {
        let size = std::mem::size_of::<T>() as u64;
        let (start, end) = (range.start as u64 * size, range.end as u64 * size);
        if start >= end {
            return 0..0;
        }
        let bs = self.fh.blksize() as u64;
        start / bs..end.div_ceil(bs)
    }

    fn read_error(&self, range: std::ops::Range<usize>, e: virtmem::Error) -> Error {
        Error::Read {
            oid: self.oid,
            start: range.start as u64,
            end: range.end as u64,
            source: Box::new(Error::Virtmem(e)),
        }
    }

    /// Change the shape in O(1): only the metadata changes; growing reads
    /// zeros, shrinking drops the data past the new end (the file cuts its
    /// blocks off: nothing past the end is stored).
    pub fn resize(&self, shape: &[usize]) -> Result<(), Error> {
        self.fh.check_writable("resize")?;
        let new_bytes = check_shape(shape, T::dtype().size)?;
        let mut st = self.current()?;
        let old_bytes = st.nbytes();
        if new_bytes < old_bytes {
            self.truncate_bytes(new_bytes, old_bytes)?;
        }
        st.shape = shape.to_vec();
        *self.conn.get_mut::<ArrayState>(self.oid)? = st.clone();
        *self.state.write() = st;
        Ok(())
    }

    /// Zero `[new, old)` of the file: the partial block is zeroed in
    /// memory, whole blocks are cut off by the file (see
    /// [`ZBigFileH::discard_from`]).
    fn truncate_bytes(&self, new: u64, old: u64) -> Result<(), Error> {
        let bs = BLKSIZE;
        let first_whole = new.div_ceil(bs);
        if !new.is_multiple_of(bs) {
            let mut h = self.fh.fileh()?;
            let mut b = h.bytes_mut(new..(first_whole * bs).min(old.div_ceil(bs) * bs))?;
            b.fill(0);
        }
        if first_whole < old.div_ceil(bs) {
            self.fh.discard_from(first_whole)?;
        }
        Ok(())
    }

    /// Append `values` along the major axis (axis 0 for C order, the last
    /// axis for F order); the other dimensions must match. O(size of values).
    pub fn append(&self, values: ndarray::ArrayViewD<'_, T>) -> Result<(), Error> {
        let axis = self.major_axis();
        let shape = self.shape();
        let n = shape.len();
        if values.ndim() != n || (0..n).any(|i| i != axis && values.shape()[i] != shape[i]) {
            return Err(Error::Usage(format!(
                "array {}: cannot append shape {:?} to {:?} along axis {axis}",
                self.oid,
                values.shape(),
                shape
            )));
        }
        let old_len = shape[axis];
        let mut grown = shape.clone();
        grown[axis] += values.shape()[axis];
        self.resize(&grown)?;
        self.with_view_mut(|mut v| {
            let mut tail = v.slice_axis_mut(ndarray::Axis(axis), ndarray::Slice::from(old_len..));
            tail.assign(&values);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ZBigArray;

    #[test]
    fn arrays_are_send_and_sync() {
        fn both<X: Send + Sync>() {}
        both::<ZBigArray<f64>>();
        both::<ZBigArray<crate::B1>>();
    }
}
