//! `ZBigArray`: the persistent object and the typed handle over it.

use crate::dtype::DType;
use crate::{Element, Error, Real};
use bigfile::{HandleOptions, ZBigFileH, create_file};
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder};
use rayon::prelude::*;
use std::marker::PhantomData;
use storage::{Connection, Oid, Persistent, PersistentClass, TransactionManager, Value};

/// Module of wendelin's array class.
pub const MODULE: &str = "wendelin.bigarray.array_zodb";

/// Memory order of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Row-major (last index fastest).
    C,
    /// Column-major (first index fastest).
    F,
}

/// The stored state of a `ZBigArray`: `({_dtype, _shape, _order, _stridev}, {zfile})`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayState {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Memory order.
    pub order: Order,
    /// The ZBigFile holding the bytes.
    pub zfile: Oid,
}

fn strides(shape: &[usize], itemsize: usize, order: Order) -> Vec<i64> {
    let n = shape.len();
    let mut st = vec![0i64; n];
    let mut acc = itemsize as i64;
    match order {
        Order::C => {
            for i in (0..n).rev() {
                st[i] = acc;
                acc = acc.saturating_mul(shape[i] as i64);
            }
        }
        Order::F => {
            for i in 0..n {
                st[i] = acc;
                acc = acc.saturating_mul(shape[i] as i64);
            }
        }
    }
    st
}

impl ArrayState {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data.
    pub fn nbytes(&self) -> u64 {
        self.len() as u64 * self.dtype.size as u64
    }

    /// Parse the stored state.
    pub fn parse(oid: Oid, state: &Value) -> Result<ArrayState, Error> {
        let bad = |m: &str| Error::BadArray {
            oid,
            msg: m.to_owned(),
        };
        let parts = state
            .as_seq()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| bad("state is not a (dict, slots) tuple"))?;
        let d = &parts[0];
        let dtype = DType::from_value(d.dict_get("_dtype").ok_or_else(|| bad("no _dtype"))?)?;
        let int = |v: &Value| -> Option<i64> {
            v.as_int().or_else(|| {
                // numpy scalar: REDUCE(multiarray.scalar, (dtype, raw LE bytes))
                let Value::Reduce { args, .. } = v else {
                    return None;
                };
                let raw = args.as_seq()?.get(1)?.as_bytes()?;
                let mut b = [0u8; 8];
                let n = raw.len().min(8);
                b[..n].copy_from_slice(&raw[..n]);
                Some(i64::from_le_bytes(b))
            })
        };
        let shape = d
            .dict_get("_shape")
            .and_then(Value::as_seq)
            .ok_or_else(|| bad("no _shape"))?
            .iter()
            .map(|x| int(x).and_then(|i| usize::try_from(i).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("_shape has a non-integer"))?;
        let order = match d.dict_get("_order").and_then(Value::as_text) {
            None | Some("C") => Order::C,
            Some("F") => Order::F,
            Some(o) => return Err(bad(&format!("unknown _order {o:?}"))),
        };
        let zfile = parts[1]
            .dict_get("zfile")
            .and_then(Value::ref_oid)
            .ok_or_else(|| bad("no zfile reference"))?;
        shape
            .iter()
            .try_fold(dtype.size as u64, |a, &x| a.checked_mul(x as u64))
            .ok_or_else(|| bad("shape overflows"))?;
        Ok(ArrayState {
            dtype,
            shape,
            order,
            zfile,
        })
    }

    /// The state value, as wendelin stores it.
    pub fn to_value(&self) -> Value {
        let s = |x: &str| Value::Str(x.into());
        let tuple = |v: Vec<i64>| Value::Tuple(v.into_iter().map(Value::Int).collect());
        Value::Tuple(vec![
            Value::Dict(vec![
                (s("_dtype"), self.dtype.to_value()),
                (
                    s("_shape"),
                    tuple(self.shape.iter().map(|&x| x as i64).collect()),
                ),
                (
                    s("_order"),
                    s(if self.order == Order::C { "C" } else { "F" }),
                ),
                (
                    s("_stridev"),
                    tuple(strides(&self.shape, self.dtype.size, self.order)),
                ),
            ]),
            Value::Dict(vec![(
                s("zfile"),
                Value::persistent_ref(self.zfile, bigfile::objects::MODULE, "ZBigFile"),
            )]),
        ])
    }
}

impl Persistent for ArrayState {
    fn class_path(&self) -> (&str, &str) {
        (MODULE, "ZBigArray")
    }
    fn state(&self) -> storage::Result<Value> {
        Ok(self.to_value())
    }
}

impl PersistentClass for ArrayState {
    fn from_state(oid: Oid, module: &str, name: &str, state: Value) -> storage::Result<Self> {
        if (module, name) != (MODULE, "ZBigArray") {
            return Err(storage::Error::BadState {
                oid,
                msg: format!("{module}.{name} is not a ZBigArray"),
            });
        }
        ArrayState::parse(oid, &state).map_err(|e| storage::Error::BadState {
            oid,
            msg: e.to_string(),
        })
    }
}

/// Out-of-core statistics of an array.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Number of elements.
    pub count: u64,
    /// Sum (as f64).
    pub sum: f64,
    /// Mean (NaN for an empty array).
    pub mean: f64,
    /// Minimum (NaN for an empty array).
    pub min: f64,
    /// Maximum (NaN for an empty array).
    pub max: f64,
}

/// A `ZBigArray` of elements `T` through a connection: `ndarray` views of
/// the memory-mapped data, committed with the connection's transactions.
pub struct ZBigArray<T: Element> {
    conn: Connection,
    oid: Oid,
    state: ArrayState,
    fh: ZBigFileH,
    _t: PhantomData<T>,
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
        shape
            .iter()
            .try_fold(dtype.size as u64, |a, &x| a.checked_mul(x as u64))
            .ok_or_else(|| Error::Usage(format!("shape {shape:?} overflows")))?;
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
        Ok(ZBigArray {
            conn: conn.clone(),
            oid,
            state,
            fh,
            _t: PhantomData,
        })
    }

    /// Open the array `oid`; its dtype must be `T` in native byte order.
    pub fn open(
        conn: &Connection,
        tm: &TransactionManager,
        oid: Oid,
        opts: HandleOptions,
    ) -> Result<Self, Error> {
        let state = conn.get::<ArrayState>(oid)?.clone();
        let want = T::dtype();
        if state.dtype != want {
            return Err(Error::DType(format!(
                "array {oid} has dtype {}, opened as {}",
                state.dtype.str(),
                want.str()
            )));
        }
        let fh = ZBigFileH::open(conn, tm, state.zfile, with_reserve(opts, state.nbytes()))?;
        Ok(ZBigArray {
            conn: conn.clone(),
            oid,
            state,
            fh,
            _t: PhantomData,
        })
    }

    /// The array object's oid.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.state.shape
    }

    /// Memory order.
    pub fn order(&self) -> Order {
        self.state.order
    }

    /// The stored state (dtype, shape, order, file).
    pub fn state(&self) -> &ArrayState {
        &self.state
    }

    /// The file handle underneath.
    pub fn file(&self) -> &ZBigFileH {
        &self.fh
    }

    fn shape_of(&self) -> ndarray::Shape<IxDyn> {
        IxDyn(&self.state.shape).set_f(self.state.order == Order::F)
    }

    /// Run `f` on a view of the whole array (lazily loaded; slice it with
    /// `s![...]`). The view cannot outlive the call, so it never survives a
    /// commit, abort or sync.
    pub fn with_view<R>(&self, f: impl FnOnce(ArrayViewD<'_, T>) -> R) -> Result<R, Error> {
        let h = self.fh.fileh();
        let v = h.view::<T>(0, self.state.len())?;
        let a = ArrayViewD::from_shape(self.shape_of(), &v)
            .map_err(|e| Error::Usage(format!("view: {e}")))?;
        Ok(f(a))
    }

    /// Run `f` on a mutable view of the whole array (written blocks become
    /// dirty and are stored at the next commit).
    pub fn with_view_mut<R>(&self, f: impl FnOnce(ArrayViewMutD<'_, T>) -> R) -> Result<R, Error> {
        let shape = self.shape_of();
        let mut h = self.fh.fileh();
        let mut v = h.view_mut::<T>(0, self.state.len())?;
        let a = ArrayViewMutD::from_shape(shape, &mut v)
            .map_err(|e| Error::Usage(format!("view: {e}")))?;
        Ok(f(a))
    }

    /// Change the shape in O(1): only the metadata changes; growing reads
    /// zeros, shrinking drops the data past the new end.
    pub fn resize(&mut self, shape: &[usize]) -> Result<(), Error> {
        let size = T::dtype().size as u64;
        let new_bytes = shape
            .iter()
            .try_fold(size, |a, &x| a.checked_mul(x as u64))
            .ok_or_else(|| Error::Usage(format!("shape {shape:?} overflows")))?;
        let old_bytes = self.state.nbytes();
        if new_bytes < old_bytes {
            self.truncate_bytes(new_bytes, old_bytes)?;
        }
        self.state.shape = shape.to_vec();
        let st = self.state.clone();
        *self.conn.get_mut::<ArrayState>(self.oid)? = st;
        Ok(())
    }

    /// Zero `[new, old)` of the file: the partial block is zeroed in
    /// memory, whole blocks are cut off by the file (see
    /// [`ZBigFileH::discard_from`]).
    fn truncate_bytes(&mut self, new: u64, old: u64) -> Result<(), Error> {
        let bs = BLKSIZE;
        let first_whole = new.div_ceil(bs);
        if !new.is_multiple_of(bs) {
            let mut h = self.fh.fileh();
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
    pub fn append(&mut self, values: ndarray::ArrayViewD<'_, T>) -> Result<(), Error> {
        let n = self.state.shape.len();
        let axis = if self.state.order == Order::C {
            0
        } else {
            n.saturating_sub(1)
        };
        if values.ndim() != n
            || (0..n).any(|i| i != axis && values.shape()[i] != self.state.shape[i])
        {
            return Err(Error::Usage(format!(
                "cannot append shape {:?} to {:?} along axis {axis}",
                values.shape(),
                self.state.shape
            )));
        }
        let old_len = self.state.shape[axis];
        let mut shape = self.state.shape.clone();
        shape[axis] += values.shape()[axis];
        self.resize(&shape)?;
        self.with_view_mut(|mut v| {
            let mut tail = v.slice_axis_mut(ndarray::Axis(axis), ndarray::Slice::from(old_len..));
            tail.assign(&values);
        })
    }

    /// count, sum, mean, min, max, computed out of core in parallel chunks
    /// (memory stays within the RAM budget: clean blocks are evicted).
    pub fn stats(&self) -> Result<Stats, Error>
    where
        T: Real,
    {
        self.with_view(|v| {
            let flat = v.as_slice_memory_order().unwrap_or(&[]);
            stats_of(flat)
        })
    }

    /// Visit the elements in memory order, `budget_bytes` at a time (at least
    /// one element): `f(first element index, chunk)`. Chunks already visited
    /// are dropped from memory as the RAM budget requires, so any array size
    /// can be scanned with bounded memory.
    pub fn for_each_chunk(
        &self,
        budget_bytes: usize,
        mut f: impl FnMut(usize, &[T]),
    ) -> Result<(), Error> {
        let per = (budget_bytes / std::mem::size_of::<T>().max(1)).max(1);
        self.with_view(|v| {
            let flat = v.as_slice_memory_order().unwrap_or(&[]);
            for (i, c) in flat.chunks(per).enumerate() {
                f(i * per, c);
            }
        })
    }

    /// Map each chunk of elements (in memory order, `chunk` elements at a
    /// time, in parallel) with `map` and combine the results with `reduce`.
    pub fn map_reduce<A: Send>(
        &self,
        chunk: usize,
        map: impl Fn(&[T]) -> A + Sync + Send,
        identity: impl Fn() -> A + Sync + Send,
        reduce: impl Fn(A, A) -> A + Sync + Send,
    ) -> Result<A, Error> {
        self.with_view(|v| {
            let flat = v.as_slice_memory_order().unwrap_or(&[]);
            flat.par_chunks(chunk.max(1))
                .map(&map)
                .reduce(&identity, &reduce)
        })
    }
}

/// Statistics of a slice, in parallel chunks of 1 Mi elements.
pub fn stats_of<T: Real>(flat: &[T]) -> Stats {
    #[derive(Clone, Copy)]
    struct Acc {
        n: u64,
        sum: f64,
        min: f64,
        max: f64,
    }
    let id = || Acc {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };
    let acc = flat
        .par_chunks(1 << 20)
        .map(|c| {
            let mut a = id();
            for x in c {
                let f = x.to_f64();
                a.sum += f;
                a.min = a.min.min(f);
                a.max = a.max.max(f);
            }
            a.n = c.len() as u64;
            a
        })
        .reduce(id, |a, b| Acc {
            n: a.n + b.n,
            sum: a.sum + b.sum,
            min: a.min.min(b.min),
            max: a.max.max(b.max),
        });
    let empty = acc.n == 0;
    Stats {
        count: acc.n,
        sum: acc.sum,
        mean: if empty {
            f64::NAN
        } else {
            acc.sum / acc.n as f64
        },
        min: if empty { f64::NAN } else { acc.min },
        max: if empty { f64::NAN } else { acc.max },
    }
}
