//! Out-of-core reductions: parallel, chunked along the major axis, checked.
//!
//! An array far bigger than RAM is reduced in chunks of whole rows along
//! its major axis (axis 0 for C order, the last for F order): such a chunk
//! is one contiguous range of the file, so its blocks load once, in order,
//! and the scan drops the blocks it loaded behind itself (see `scan`). Chunks run in parallel on
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

use crate::scan::DropBehind;
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
            let elems = |i: usize| (i * rows * row_elems)..((i + 1) * rows).min(n) * row_elems;
            let behind = DropBehind::new((0..chunks).map(|i| self.blocks_of(elems(i))));
            (0..chunks)
                .into_par_iter()
                .map(|i| -> Result<A, Error> {
                    let (s, e) = (i * rows, ((i + 1) * rows).min(n));
                    behind.loaded(&self.load_for_scan(elems(i))?);
                    let r = map(s, v.slice_axis(Axis(axis), Slice::from(s..e)));
                    self.drop_behind(&behind.done(self.blocks_of(elems(i))), &behind.dropping)?;
                    Ok(r)
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
        self.stats_with_progress(&|_| {})
    }

    /// [`stats`](Self::stats), telling `progress` the bytes done so far as
    /// the scan goes (for progress bars). Blocks stored in place are read
    /// where they are (see `stored_scan`), the others through the mapping.
    pub fn stats_with_progress(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<Stats, Error>
    where
        T: Real,
    {
        if let Some(acc) = self.stats_in_place(progress)? {
            return Ok(acc.into_stats());
        }
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

/// Partial statistics of a run of elements.
#[derive(Clone, Copy)]
pub(crate) struct Acc {
    pub(crate) n: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Acc {
    pub(crate) const EMPTY: Acc = Acc {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    pub(crate) fn merge(a: Acc, b: Acc) -> Acc {
        Acc {
            n: a.n + b.n,
            sum: a.sum + b.sum,
            min: a.min.min(b.min),
            max: a.max.max(b.max),
        }
    }
}

/// Elements per leaf of the pairwise sum (numpy's `PW_BLOCKSIZE`).
const LEAF: usize = 128;
/// Independent accumulators per leaf: eight lanes keep the vector units
/// busy (a single scalar accumulator chains every add on the previous one).
const LANES: usize = 8;

/// A leaf: eight-lane sum, min and max in one pass (NaNs are skipped by
/// min/max, as `f64::min` does).
fn leaf<T: Real>(c: &[T]) -> Acc {
    let mut sum = [0.0f64; LANES];
    let mut min = [f64::INFINITY; LANES];
    let mut max = [f64::NEG_INFINITY; LANES];
    let mut chunks = c.chunks_exact(LANES);
    for ch in &mut chunks {
        for l in 0..LANES {
            let f = ch[l].to_f64();
            sum[l] += f;
            min[l] = if f < min[l] { f } else { min[l] };
            max[l] = if f > max[l] { f } else { max[l] };
        }
    }
    let mut acc = Acc {
        n: c.len() as u64,
        sum: ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7])),
        min: min.iter().copied().fold(f64::INFINITY, f64::min),
        max: max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    for x in chunks.remainder() {
        let f = x.to_f64();
        acc.sum += f;
        acc.min = acc.min.min(f);
        acc.max = acc.max.max(f);
    }
    acc
}

/// [`leaf`] over little-endian-native elements at any alignment (`c`
/// holds whole elements): unaligned loads, no copy.
fn leaf_bytes<T: Real>(c: &[u8]) -> Acc {
    let size = std::mem::size_of::<T>();
    let mut sum = [0.0f64; LANES];
    let mut min = [f64::INFINITY; LANES];
    let mut max = [f64::NEG_INFINITY; LANES];
    let mut chunks = c.chunks_exact(LANES * size);
    for ch in &mut chunks {
        for l in 0..LANES {
            let f = bytemuck::pod_read_unaligned::<T>(&ch[l * size..(l + 1) * size]).to_f64();
            sum[l] += f;
            min[l] = if f < min[l] { f } else { min[l] };
            max[l] = if f > max[l] { f } else { max[l] };
        }
    }
    let mut acc = Acc {
        n: (c.len() / size) as u64,
        sum: ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7])),
        min: min.iter().copied().fold(f64::INFINITY, f64::min),
        max: max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    for x in chunks.remainder().chunks_exact(size) {
        let f = bytemuck::pod_read_unaligned::<T>(x).to_f64();
        acc.sum += f;
        acc.min = acc.min.min(f);
        acc.max = acc.max.max(f);
    }
    acc
}

/// [`pairwise`] over elements stored at any alignment in `c` (whole
/// elements): the same summation tree, read with unaligned loads.
pub(crate) fn pairwise_bytes<T: Real>(c: &[u8]) -> Acc {
    let size = std::mem::size_of::<T>();
    let n = c.len() / size;
    if n <= LEAF {
        return leaf_bytes::<T>(&c[..n * size]);
    }
    let mid = (n / 2) / LANES * LANES * size;
    Acc::merge(
        pairwise_bytes::<T>(&c[..mid]),
        pairwise_bytes::<T>(&c[mid..]),
    )
}

/// Pairwise summation as numpy does it (leaves of 128 elements summed in
/// eight lanes, halves added recursively): the rounding error grows with
/// log(n), not n; min and max come from the same pass.
pub(crate) fn pairwise<T: Real>(c: &[T]) -> Acc {
    if c.len() <= LEAF {
        return leaf(c);
    }
    let mid = (c.len() / 2) / LANES * LANES;
    Acc::merge(pairwise(&c[..mid]), pairwise(&c[mid..]))
}

/// Statistics of a slice: in parallel chunks of 1 Mi elements, each summed
/// pairwise in eight lanes (as accurate as numpy's `sum`, at memory speed).
pub fn stats_of<T: Real>(flat: &[T]) -> Stats {
    flat.par_chunks(1 << 20)
        .map(pairwise)
        .reduce(|| Acc::EMPTY, Acc::merge)
        .into_stats()
}

impl Acc {
    /// The statistics (NaN mean, min and max when empty).
    pub(crate) fn into_stats(self) -> Stats {
        let empty = self.n == 0;
        Stats {
            count: self.n,
            sum: self.sum,
            mean: if empty {
                f64::NAN
            } else {
                self.sum / self.n as f64
            },
            min: if empty { f64::NAN } else { self.min },
            max: if empty { f64::NAN } else { self.max },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference sum with error-free transformations (Neumaier).
    fn exact_sum(xs: &[f64]) -> f64 {
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for &x in xs {
            let t = s + x;
            c += if s.abs() >= x.abs() {
                (s - t) + x
            } else {
                (x - t) + s
            };
            s = t;
        }
        s + c
    }

    #[test]
    fn sums_are_as_accurate_as_pairwise_and_min_max_exact() {
        // Values with many significant digits and a large count: a naive
        // sequential f64 sum drifts by far more than the pairwise bound.
        let n: usize = 3_000_001;
        let xs: Vec<f64> = (0..n as u64)
            .map(|i| 0.1 + ((i * 7919) % 1000) as f64 * 1e-3 + 1e6 * ((i % 3) as f64))
            .collect();
        let st = stats_of(&xs);
        let exact = exact_sum(&xs);
        // numpy's pairwise bound: about log2(n) * eps * sum|x|
        let bound = (n as f64).log2() * f64::EPSILON * xs.iter().map(|x| x.abs()).sum::<f64>();
        assert!(
            (st.sum - exact).abs() <= bound,
            "error {} > {bound}",
            (st.sum - exact).abs()
        );
        assert_eq!(st.count, n as u64);
        assert_eq!(st.min, 0.1);
        assert_eq!(st.max, xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        // The same value many times: sequential rounding errors all lean
        // one way (a plain loop over 4 Mi copies of 0.1 is off by ~1e-6,
        // far beyond the pairwise bound of ~2e-9).
        let tenths = vec![0.1f64; 4 << 20];
        let st = stats_of(&tenths);
        let exact = exact_sum(&tenths);
        let bound = 22.0 * f64::EPSILON * exact;
        assert!(
            (st.sum - exact).abs() <= bound,
            "error {} > {bound}",
            (st.sum - exact).abs()
        );
        let small: Vec<f32> = vec![3.0, -1.5, 2.0];
        let s = stats_of(&small);
        assert_eq!((s.sum, s.min, s.max, s.count), (3.5, -1.5, 3.0, 3));
        assert!(stats_of::<f64>(&[]).mean.is_nan());
    }
}
