//! `_Array`: one ZBigArray whatever its element type, and `_Mapping`, the
//! object numpy arrays over its memory hang on.
//!
//! # Element types at run time
//!
//! The Rust arrays are typed (`ZBigArray<T>`); Python learns the dtype
//! only when it opens an array. [`AnyArray`] is one variant per element
//! type (numpy's i1..i8, u1..u8, f4, f8, b1, c8, c16 in native order) and
//! the `each!` macro runs the same code on whichever it holds.
//!
//! # Views without copies
//!
//! A numpy view is the array's memory mapping itself: `_Mapping` exposes
//! numpy's `__array_interface__` (address, shape, strides, typestr,
//! read-only flag), and `numpy.asarray(mapping)` makes an ndarray whose
//! `base` is the `_Mapping`. The `_Mapping` holds a clone of the array's
//! `ZBigFileH`, which holds the virtmem handle: one fixed address
//! reservation that lives as long as the handle, with its handler threads
//! and its connection. So a view that outlives its array object, the
//! connection's close or the database's close keeps the mapping alive:
//! nothing is unmapped under a view, and no Rust `unsafe` is needed here.
//!
//! Touching the memory is what wendelin.core does: a first read faults and
//! a handler thread loads the block (it never needs the GIL); a first write
//! is caught by the write protection and dirties the block; the
//! connection's transaction boundaries store, drop or invalidate blocks
//! under the views, which then read the new data. The Rust API's view
//! guards are held only while Rust code runs, never across Python views.
//! Because Python may write through a view at any moment, handles of
//! writable connections load by copying (see `connection.rs`).

use crate::errors::{DTypeError, IntoPy, ShapeError};
use num_complex::Complex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use wendelin::bigarray::{DType, Order, Real, Stats};
use wendelin::bigfile::ZBigFileH;
use wendelin::{B1, Element, ZBigArray};

/// A ZBigArray of any supported element type.
pub enum AnyArray {
    /// int8
    I1(ZBigArray<i8>),
    /// int16
    I2(ZBigArray<i16>),
    /// int32
    I4(ZBigArray<i32>),
    /// int64
    I8(ZBigArray<i64>),
    /// uint8
    U1(ZBigArray<u8>),
    /// uint16
    U2(ZBigArray<u16>),
    /// uint32
    U4(ZBigArray<u32>),
    /// uint64
    U8(ZBigArray<u64>),
    /// float32
    F4(ZBigArray<f32>),
    /// float64
    F8(ZBigArray<f64>),
    /// bool
    B1(ZBigArray<B1>),
    /// complex64
    C8(ZBigArray<Complex<f32>>),
    /// complex128
    C16(ZBigArray<Complex<f64>>),
}

/// Run `$body` with `$a` bound to the typed array, whatever the variant.
macro_rules! each {
    ($any:expr, $a:ident => $body:expr) => {
        match $any {
            AnyArray::I1($a) => $body,
            AnyArray::I2($a) => $body,
            AnyArray::I4($a) => $body,
            AnyArray::I8($a) => $body,
            AnyArray::U1($a) => $body,
            AnyArray::U2($a) => $body,
            AnyArray::U4($a) => $body,
            AnyArray::U8($a) => $body,
            AnyArray::F4($a) => $body,
            AnyArray::F8($a) => $body,
            AnyArray::B1($a) => $body,
            AnyArray::C8($a) => $body,
            AnyArray::C16($a) => $body,
        }
    };
}

/// Run `$body` with `T` the element type of `$dtype` (a [`DType`]), or
/// evaluate to a `DTypeError`.
macro_rules! with_type {
    ($dtype:expr, $t:ident => $body:expr) => {{
        let d: &DType = &$dtype;
        if !d.is_native() {
            Err(crate::errors::DTypeError::new_err(format!(
                "dtype {}: only native (little-endian) byte order is supported",
                d.str()
            )))
        } else {
            match (d.kind, d.size) {
                ('i', 1) => {
                    type $t = i8;
                    $body
                }
                ('i', 2) => {
                    type $t = i16;
                    $body
                }
                ('i', 4) => {
                    type $t = i32;
                    $body
                }
                ('i', 8) => {
                    type $t = i64;
                    $body
                }
                ('u', 1) => {
                    type $t = u8;
                    $body
                }
                ('u', 2) => {
                    type $t = u16;
                    $body
                }
                ('u', 4) => {
                    type $t = u32;
                    $body
                }
                ('u', 8) => {
                    type $t = u64;
                    $body
                }
                ('f', 4) => {
                    type $t = f32;
                    $body
                }
                ('f', 8) => {
                    type $t = f64;
                    $body
                }
                ('b', 1) => {
                    type $t = wendelin::B1;
                    $body
                }
                ('c', 8) => {
                    type $t = num_complex::Complex<f32>;
                    $body
                }
                ('c', 16) => {
                    type $t = num_complex::Complex<f64>;
                    $body
                }
                _ => Err(crate::errors::DTypeError::new_err(format!(
                    "dtype {} is not supported (i1..i8, u1..u8, f4, f8, b1, c8, c16)",
                    d.str()
                ))),
            }
        }
    }};
}
pub(crate) use with_type;

/// Element types that have an [`AnyArray`] variant.
pub trait Variant: Element {
    /// The typed array as an [`AnyArray`].
    fn wrap(a: ZBigArray<Self>) -> AnyArray;
}

macro_rules! variant {
    ($($t:ty => $v:ident),*) => { $(
        impl Variant for $t {
            fn wrap(a: ZBigArray<$t>) -> AnyArray {
                AnyArray::$v(a)
            }
        }
    )* };
}
variant!(i8 => I1, i16 => I2, i32 => I4, i64 => I8, u8 => U1, u16 => U2, u32 => U4,
    u64 => U8, f32 => F4, f64 => F8, B1 => B1, Complex<f32> => C8, Complex<f64> => C16);

fn stats_real<T: Real>(a: &ZBigArray<T>) -> Result<Stats, wendelin::bigarray::Error> {
    a.stats()
}

impl AnyArray {
    fn file(&self) -> &ZBigFileH {
        each!(self, a => a.file())
    }

    fn dtype(&self) -> DType {
        each!(self, a => a.state().dtype)
    }

    fn itemsize(&self) -> usize {
        self.dtype().size
    }

    fn stats(&self) -> PyResult<Stats> {
        match self {
            AnyArray::C8(_) | AnyArray::C16(_) => Err(DTypeError::new_err(format!(
                "stats: dtype {} is complex (count, sum, mean, min and max need real numbers)",
                self.dtype().str()
            ))),
            AnyArray::I1(a) => stats_real(a).py(),
            AnyArray::I2(a) => stats_real(a).py(),
            AnyArray::I4(a) => stats_real(a).py(),
            AnyArray::I8(a) => stats_real(a).py(),
            AnyArray::U1(a) => stats_real(a).py(),
            AnyArray::U2(a) => stats_real(a).py(),
            AnyArray::U4(a) => stats_real(a).py(),
            AnyArray::U8(a) => stats_real(a).py(),
            AnyArray::F4(a) => stats_real(a).py(),
            AnyArray::F8(a) => stats_real(a).py(),
            AnyArray::B1(a) => stats_real(a).py(),
        }
    }
}

/// An array of the database (the Rust half of `wendelin_rs.BigArray`).
#[pyclass(frozen, module = "wendelin_rs._core", name = "_Array")]
pub struct Array {
    pub(crate) inner: AnyArray,
}

impl Array {
    /// The array object and the state its handle shows.
    pub(crate) fn oid_state(&self) -> (wendelin::Oid, wendelin::bigarray::ArrayState) {
        each!(&self.inner, a => (a.oid(), a.state()))
    }
}

#[pymethods]
impl Array {
    /// The shape (a tuple).
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, each!(&self.inner, a => a.shape()))
    }

    /// The dtype as numpy's type string (e.g. "<f8").
    #[getter]
    fn dtype(&self) -> String {
        self.inner.dtype().str()
    }

    /// "C" or "F".
    #[getter]
    fn order(&self) -> &'static str {
        match each!(&self.inner, a => a.order()) {
            Order::C => "C",
            Order::F => "F",
        }
    }

    /// The index of the major axis (0 for C order, the last for F order).
    #[getter]
    fn major_axis(&self) -> usize {
        each!(&self.inner, a => a.major_axis())
    }

    /// Is the array read-only (a historical snapshot, a read-only database)?
    #[getter]
    fn read_only(&self) -> bool {
        each!(&self.inner, a => a.is_read_only())
    }

    /// The array object's oid (16 hex digits).
    #[getter]
    fn oid(&self) -> String {
        each!(&self.inner, a => a.oid()).to_string()
    }

    /// Refuse a write at once on a read-only array (`ReadOnlyError`).
    fn check_writable(&self, what: &str) -> PyResult<()> {
        self.inner
            .file()
            .check_writable(what)
            .map_err(wendelin::Error::from)
            .py()
    }

    /// The mapping of the whole array at its current shape, for
    /// `numpy.asarray`: writable unless the array is read-only or
    /// `writable` is false.
    fn mapping(&self, writable: bool) -> PyResult<Mapping> {
        let st = each!(&self.inner, a => a.state());
        let nbytes = usize::try_from(st.nbytes())
            .map_err(|_| ShapeError::new_err("array larger than the address space"))?;
        let fh = self.inner.file();
        let writable = writable && !fh.is_read_only();
        // numpy arrays outlive any guard (see `lend_raw_views`).
        fh.lend_raw_views();
        let addr = {
            let h = fh.fileh_read().py()?;
            let v = h
                .bytes(0..nbytes as u64)
                .map_err(wendelin::bigfile::Error::from)
                .py()?;
            v.as_ptr() as usize
        };
        let itemsize = self.inner.itemsize();
        let strides = match st.order {
            Order::C => None,
            Order::F => {
                let mut s = Vec::with_capacity(st.shape.len());
                let mut acc = itemsize;
                for d in &st.shape {
                    s.push(acc);
                    acc = acc.saturating_mul(*d);
                }
                Some(s)
            }
        };
        Ok(Mapping {
            _fh: fh.clone(),
            addr,
            shape: st.shape,
            strides,
            typestr: st.dtype.str(),
            writable,
        })
    }

    /// Load the elements `start..end` (memory order) now, raising the
    /// error of a block that cannot be loaded (instead of the SIGBUS a
    /// raw view would get). The GIL is released.
    fn check_readable(&self, py: Python<'_>, start: usize, end: usize) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| each!(inner, a => a.check_readable(start..end)))
            .py()
    }

    /// Change the shape (O(1); growing reads zeros).
    fn resize(&self, py: Python<'_>, shape: Vec<usize>) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| each!(inner, a => a.resize(&shape))).py()
    }

    /// count, sum, mean, min, max out of core, in parallel, GIL released.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &self.inner;
        let s = py.detach(|| inner.stats())?;
        let d = PyDict::new(py);
        d.set_item("count", s.count)?;
        d.set_item("sum", s.sum)?;
        d.set_item("mean", s.mean)?;
        d.set_item("min", s.min)?;
        d.set_item("max", s.max)?;
        Ok(d)
    }

    /// After writes through views: take and drop the exclusive access, so
    /// that a transaction's dirty blocks past the spill threshold move to
    /// the spill file instead of staying in RAM until commit.
    fn after_write(&self, py: Python<'_>) -> PyResult<()> {
        let fh = self.inner.file();
        if fh.is_read_only() {
            return Ok(());
        }
        py.detach(|| fh.fileh().map(drop)).py()
    }

    /// Virtmem counters of the array's mapping (a dict: each counter by
    /// name, and `debug`, all of them as one string).
    fn engine_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.file().stats().py()?;
        let d = PyDict::new(py);
        for (k, v) in [
            ("faults", s.faults),
            ("loads", s.loads),
            ("readahead_loads", s.readahead_loads),
            ("evictions", s.evictions),
            ("load_failures", s.load_failures),
            ("moved_loads", s.moved_loads),
            ("copied_for_cost", s.copied_for_cost),
            ("donated", s.donated),
            ("donor_zeros", s.donor_zeros),
            ("read_in_order", s.read_in_order),
            ("dropped_behind", s.dropped_behind),
            ("mapped_loads", s.mapped_loads),
            ("fresh_pages_ns_per_mib", s.fresh_pages_ns_per_mib),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("debug", format!("{s:?}"))?;
        Ok(d)
    }
}

/// The memory of an array as numpy sees it (`__array_interface__`); the
/// base object of every numpy view, keeping the mapping alive.
#[pyclass(frozen, module = "wendelin_rs._core", name = "_Mapping")]
pub struct Mapping {
    /// Keeps the virtmem handle, hence the mapping, alive.
    _fh: ZBigFileH,
    addr: usize,
    shape: Vec<usize>,
    strides: Option<Vec<usize>>,
    typestr: String,
    writable: bool,
}

#[pymethods]
impl Mapping {
    /// numpy's array interface (version 3).
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", &self.typestr)?;
        d.set_item("data", (self.addr, !self.writable))?;
        match &self.strides {
            Some(s) => d.set_item("strides", PyTuple::new(py, s)?)?,
            None => d.set_item("strides", py.None())?,
        }
        Ok(d)
    }

    /// Is numpy allowed to write through it?
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }
}
