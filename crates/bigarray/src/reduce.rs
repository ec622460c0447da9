//! Out-of-core reductions: parallel, chunked along the major axis, checked.
//!
//! An array far bigger than RAM is reduced in chunks of whole rows along
//! its major axis (axis 0 for C order, the last for F order): such a chunk
//! is one contiguous range of the file, so its blocks load once, in order,
//! and the RAM budget evicts them behind the scan. Chunks run in parallel on
//! rayon's pool; each is handed its position (the first major-axis index)
//! and a view of its rows, so position-dependent work (moving averages,
//! writing results elsewhere) needs no bookkeeping. One unit throughout:
//! chunk sizes are counted in major-axis rows.
//!
//! Reading for the caller is checked: each chunk's blocks are loaded first
//! (`prefetch`), so a damaged or missing block is an error naming the array,
//! the elements, the block and the file, never a SIGBUS in the middle of a
//! computation. Sums accumulate in f64 whatever the element type (an f32
//! accumulator was off by up to 8.75 on sums of values 20-83).

use crate::{Element, Error, Real, ZBigArray};
use ndarray::{ArrayD, ArrayViewD, Axis, Slice};
use rayon::prelude::*;

/// Rows per chunk such that a chunk holds about `bytes` bytes (at least one row).
fn rows_for<T: Element>(shape: &[usize], major: usize, bytes: usize) -> usize {
    let row_elems: usize = shape
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != major)
        .map(|(_, d)| *d)
        .product();
    let row_bytes = row_elems.saturating_mul(std::mem::size_of::<T>()).max(1);
    (bytes / row_bytes).max(1)
}

/// Bytes per chunk of the built-in reductions: a few blocks, so that every
/// core has work and a chunk's blocks are in memory together.
const CHUNK_BYTES: usize = 8 << 20;

impl<T: Element> ZBigArray<T> {
    /// Map each chunk of `rows` major-axis rows (in parallel) with
    /// `map(first row, view of the rows)` and combine the results with
    /// `reduce`. Each chunk's blocks are loaded (and checked) before `map`
    /// sees them; the first load error is returned.
    pub fn map_reduce<A: Send>(
        &self,
        rows: usize,
        map: impl Fn(usize, ArrayViewD<'_, T>) -> A + Sync + Send,
        identity: impl Fn() -> A + Sync + Send,
        reduce: impl Fn(A, A) -> A + Sync + Send,
    ) -> Result<A, Error> {
        let axis = self.major_axis();
        let rows = rows.max(1);
        self.with_view(|v| {
            if v.ndim() == 0 {
                self.check_readable(0..v.len())?;
                return Ok(map(0, v));
            }
            let n = v.len_of(Axis(axis));
            let row_elems = v.len() / n.max(1);
            let chunks = n.div_ceil(rows);
            (0..chunks)
                .into_par_iter()
                .map(|i| -> Result<A, Error> {
                    let (s, e) = (i * rows, ((i + 1) * rows).min(n));
                    self.check_readable(s * row_elems..e * row_elems)?;
                    Ok(map(s, v.slice_axis(Axis(axis), Slice::from(s..e))))
                })
                .try_reduce(&identity, |a, b| Ok(reduce(a, b)))
        })?
    }

    /// Run `f(first row, view of the rows)` on each chunk of `rows`
    /// major-axis rows, in parallel, with every chunk's blocks checked first.
    pub fn for_each_chunk(
        &self,
        rows: usize,
        f: impl Fn(usize, ArrayViewD<'_, T>) + Sync + Send,
    ) -> Result<(), Error> {
        self.map_reduce(rows, f, || (), |(), ()| ())
    }

    /// Rows per chunk for about `bytes` bytes per chunk (at least one row).
    pub fn rows_per_chunk(&self, bytes: usize) -> usize {
        rows_for::<T>(&self.shape(), self.major_axis(), bytes)
    }

    /// count, sum, mean, min, max, computed out of core in parallel chunks
    /// (memory stays within the RAM budget: clean blocks are evicted).
    pub fn stats(&self) -> Result<Stats, Error>
    where
        T: Real,
    {
        self.map_reduce(
            self.rows_per_chunk(CHUNK_BYTES),
            |_, v| match v.as_slice_memory_order() {
                Some(flat) => stats_of(flat),
                None => stats_of(&v.iter().copied().collect::<Vec<T>>()),
            },
            || stats_of::<T>(&[]),
            Stats::merge,
        )
    }

    /// Sum along `axis`, accumulated in f64; the result has the array's
    /// shape without `axis`.
    pub fn sum_axis(&self, axis: usize) -> Result<ArrayD<f64>, Error>
    where
        T: Real,
    {
        let shape = self.shape();
        if axis >= shape.len() {
            return Err(Error::Usage(format!(
                "array {}: axis {axis} is out of range for {} dimensions",
                self.oid(),
                shape.len()
            )));
        }
        let major = self.major_axis();
        let mut out_shape = shape.clone();
        out_shape.remove(axis);
        let lane_sum = |v: &ArrayViewD<'_, T>| {
            v.map_axis(Axis(axis), |lane| {
                lane.iter().map(|x| x.to_f64()).sum::<f64>()
            })
        };
        if axis == major {
            // every chunk adds to the whole result
            let zero = || ArrayD::<f64>::zeros(out_shape.clone());
            self.map_reduce(
                self.rows_per_chunk(CHUNK_BYTES),
                |_, v| lane_sum(&v),
                zero,
                |a, b| a + b,
            )
        } else {
            // every chunk fills its own rows of the result
            let out_major = if major > axis { major - 1 } else { major };
            let parts = self.map_reduce(
                self.rows_per_chunk(CHUNK_BYTES),
                |s, v| vec![(s, lane_sum(&v))],
                Vec::new,
                |mut a, mut b| {
                    a.append(&mut b);
                    a
                },
            )?;
            let mut out = ArrayD::<f64>::zeros(out_shape);
            for (s, part) in parts {
                let e = s + part.len_of(Axis(out_major));
                out.slice_axis_mut(Axis(out_major), Slice::from(s..e))
                    .assign(&part);
            }
            Ok(out)
        }
    }

    /// Mean along `axis`, accumulated in f64 (NaN where `axis` is empty).
    pub fn mean_axis(&self, axis: usize) -> Result<ArrayD<f64>, Error>
    where
        T: Real,
    {
        let n = self.shape().get(axis).copied().unwrap_or(0);
        Ok(self.sum_axis(axis)? / n as f64)
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

impl Stats {
    /// The statistics of two disjoint parts together.
    pub fn merge(a: Stats, b: Stats) -> Stats {
        if a.count == 0 {
            return b;
        }
        if b.count == 0 {
            return a;
        }
        let count = a.count + b.count;
        let sum = a.sum + b.sum;
        Stats {
            count,
            sum,
            mean: sum / count as f64,
            min: a.min.min(b.min),
            max: a.max.max(b.max),
        }
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
