//! A convolution's weight gradient summed over the batch in one pass:
//! `dW[o, r] = Σₙ Σₗ dY[n, o, l] · cols[n, r, l]`, a sum over samples of dot
//! products of rows, each row read where it lies: forward's saved columns, or,
//! without them, windows of the (zero-bordered) input itself, a row then being
//! `OH` runs of `OW` elements.
//!
//! Through the `gemm` crate this was one product per sample, `cols [r, l] · dYᵀ`,
//! whose left operand the crate packs first: a strided transpose of every sample's
//! columns, 14% of a LeNet-5 step on Zen 5, more than the multiply-adds themselves.
//! Here nothing is packed: a tile of up to 6 × 4 outputs keeps its partial sums in
//! 24 vector registers over a block of samples (ten loads feed 24 fused
//! multiply-adds), and each output is reduced once at the end. Each output is summed
//! in a fixed order (a fixed cut of the samples into parts), so the result does not
//! depend on the thread count.
//!
//! It needs fused multiply-adds in hardware and 32 vector registers, so it runs on
//! AVX-512 CPUs; [`available`] tells the caller, which otherwise keeps the product.

use super::simd::{level, wide_fn, Level};
use super::SendPtr;
use crate::Element;
use rayon::prelude::*;

/// Output columns (rows of `b`) per tile.
const TILE: usize = 4;
/// Output rows (rows of `a`) per tile, at most: 6 × 4 accumulators, the 4 rows of `b`
/// and one of `a` fill 29 of the 32 vector registers.
const ROWS: usize = 6;

/// One side of the sums: sample `s`'s row `i` is `runs` runs of `run` elements
/// (given in [`RowDots`]), run `y` starting at `s·sample_stride + rows[i] + y·run_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) sample_stride: usize,
    pub(crate) rows: &'a [usize],
    pub(crate) run_stride: usize,
}

impl<T> Rows<'_, T> {
    /// Whether every run of every row of `samples` samples lies inside `data`.
    fn fits(&self, samples: usize, runs: usize, run: usize) -> bool {
        let far = self
            .rows
            .iter()
            .max()
            .map_or(0, |&r| r + (runs - 1) * self.run_stride + run);
        samples == 0 || runs == 0 || run == 0 || (samples - 1) * self.sample_stride + far <= self.data.len()
    }
}

/// The operands: `samples` samples of `a` rows (`m` of them) and `b` rows (`n`),
/// each row `runs` runs of `run` elements.
#[derive(Clone, Copy)]
pub(crate) struct RowDots<'a, T> {
    pub(crate) a: Rows<'a, T>,
    pub(crate) b: Rows<'a, T>,
    pub(crate) run: usize,
    pub(crate) runs: usize,
    pub(crate) samples: usize,
}

impl<T> RowDots<'_, T> {
    fn m(&self) -> usize {
        self.a.rows.len()
    }
    fn n(&self) -> usize {
        self.b.rows.len()
    }
}

/// Whether [`sum_of_row_dots`] runs on this CPU.
pub(crate) fn available() -> bool {
    level() == Level::Avx512
}

/// The samples are cut into this many parts, each summed apart and the parts added in
/// order at the end: a fixed cut, so the result does not depend on the thread count,
/// and enough tasks for the threads when the output has few column tiles.
const PARTS: usize = 4;

/// Bytes of rows a block of samples may take, so that they stay in the L1 cache while
/// every tile of a column block reads them.
const L1_BYTES: usize = 32 << 10;

/// `out[i·out_rs + j] = Σₛ Σₚ a[s, i, p] · b[s, j, p]`, column tiles and parts of the
/// samples in parallel. Only where [`available`].
pub(crate) fn sum_of_row_dots<T: Element>(x: RowDots<T>, out: &mut [T], out_rs: usize) {
    assert!(available(), "sum_of_row_dots needs AVX-512");
    let (m, n) = (x.m(), x.n());
    if m == 0 || n == 0 {
        return;
    }
    assert!(out.len() > (m - 1) * out_rs + n - 1 && n <= out_rs);
    assert!(x.a.fits(x.samples, x.runs, x.run) && x.b.fits(x.samples, x.runs, x.run));
    let (parts, col_tiles) = (PARTS.min(x.samples).max(1), n.div_ceil(TILE));
    let per_part = x.samples.div_ceil(parts);
    let mut partial = vec![T::zero(); parts * m * n];
    let dst = SendPtr(partial.as_mut_ptr());
    let dst = &dst;
    (0..parts * col_tiles).into_par_iter().for_each(|t| {
        let (part, j0) = (t / col_tiles, (t % col_tiles) * TILE);
        let samples = part * per_part..((part + 1) * per_part).min(x.samples);
        // The asserts above keep every run read inside the slices; each task writes its
        // own columns of its own part's `m × n` block of `partial`.
        column_tile(&x, samples, j0, dst.0.wrapping_add(part * m * n))
    });
    for i in 0..m {
        for j in 0..n {
            let at = i * n + j;
            out[i * out_rs + j] = (1..parts).fold(partial[at], |sum, p| sum + partial[p * m * n + at]);
        }
    }
}

wide_fn! {
    fn column_tile<T>(x: &RowDots<T>, samples: std::ops::Range<usize>, j0: usize, out: *mut T) = column_tile_plain;
}

/// Columns `j0..j0 + 4` (fewer at the end) of every row, summed over `samples` into
/// `out` (`m × n`, row-major). Called only by [`sum_of_row_dots`], which checks that
/// every row read lies inside its slice; `out` is this task's own block.
#[inline(always)]
fn column_tile_plain<T: Element>(x: &RowDots<T>, samples: std::ops::Range<usize>, j0: usize, out: *mut T) {
    match size_of::<T>() {
        4 => column_tile_lanes::<T, 16>(x, samples, j0, out),
        _ => column_tile_lanes::<T, 8>(x, samples, j0, out),
    }
}

/// [`column_tile_plain`] with `W` lanes per accumulator. Samples go in blocks whose
/// rows fit the L1 cache; within a block each tile of up to 4 rows takes its
/// accumulators from memory, runs over the block, and puts them back.
#[inline(always)]
fn column_tile_lanes<T: Element, const W: usize>(
    x: &RowDots<T>,
    samples: std::ops::Range<usize>,
    j0: usize,
    out: *mut T,
) {
    let (m, n) = (x.m(), x.n());
    let cols = (n - j0).min(TILE);
    // Missing columns of a last, narrow tile repeat its first one; their sums are dropped.
    let js: [usize; TILE] = std::array::from_fn(|j| x.b.rows[j0 + if j < cols { j } else { 0 }]);
    let block = (L1_BYTES / ((m + TILE) * x.runs * x.run * size_of::<T>()).max(1)).max(1);
    let mut acc = vec![[[[T::zero(); W]; TILE]; ROWS]; m.div_ceil(ROWS)];
    let mut s0 = samples.start;
    while s0 < samples.end {
        let s1 = (s0 + block).min(samples.end);
        for (t, acc) in acc.iter_mut().enumerate() {
            let i0 = t * ROWS;
            // SAFETY: see above.
            unsafe {
                match (m - i0).min(ROWS) {
                    6 => accumulate::<T, 6, W>(x, i0, js, s0..s1, acc),
                    5 => accumulate::<T, 5, W>(x, i0, js, s0..s1, acc),
                    4 => accumulate::<T, 4, W>(x, i0, js, s0..s1, acc),
                    3 => accumulate::<T, 3, W>(x, i0, js, s0..s1, acc),
                    2 => accumulate::<T, 2, W>(x, i0, js, s0..s1, acc),
                    _ => accumulate::<T, 1, W>(x, i0, js, s0..s1, acc),
                }
            }
        }
        s0 = s1;
    }
    for (t, acc) in acc.iter().enumerate() {
        for (i, row) in acc.iter().enumerate().take((m - t * ROWS).min(ROWS)) {
            for (j, &lanes) in row.iter().enumerate().take(cols) {
                // SAFETY: see above; row t·6 + i < m, column j0 + j < n.
                unsafe { *out.add((t * ROWS + i) * n + j0 + j) = reduce_lanes(lanes) };
            }
        }
    }
}

/// `mem[i][j] += Σₛ Σₚ a[s, i0 + i, p] · b[s, j, p]` over `samples`, for `MI` rows,
/// where `js` are the starts of `b`'s rows: the `MI × 4` accumulators of `W` lanes stay
/// in registers over the samples' runs (each run's last `run % W` elements by a masked
/// load).
///
/// # Safety
/// Every run read lies inside `x.a` and `x.b`; the CPU has AVX-512.
#[inline(always)]
unsafe fn accumulate<T: Element, const MI: usize, const W: usize>(
    x: &RowDots<T>,
    i0: usize,
    js: [usize; TILE],
    samples: std::ops::Range<usize>,
    mem: &mut [[[T; W]; TILE]; ROWS],
) {
    let mut acc: [[[T; W]; TILE]; MI] = std::array::from_fn(|i| mem[i]);
    let full = x.run / W * W;
    let tail = x.run - full;
    for s in samples {
        let a0 = x.a.data.as_ptr().add(s * x.a.sample_stride);
        let b0 = x.b.data.as_ptr().add(s * x.b.sample_stride);
        for y in 0..x.runs {
            let a: [*const T; MI] = std::array::from_fn(|i| a0.add(x.a.rows[i0 + i] + y * x.a.run_stride));
            let b: [*const T; TILE] = std::array::from_fn(|j| b0.add(js[j] + y * x.b.run_stride));
            let mut p = 0;
            while p < full {
                fma(&mut acc, &a, &b, |r| (r.add(p) as *const [T; W]).read_unaligned());
                p += W;
            }
            if tail > 0 {
                fma(&mut acc, &a, &b, |r| load_first::<T, W>(r.add(full), tail));
            }
        }
    }
    mem[..MI].copy_from_slice(&acc);
}

/// `acc[i][j] += a[i] · b[j]`, lane by lane, with the vectors `load` reads at the rows'
/// pointers: `b`'s four first, then `a`'s one at a time, so that at most 29 registers
/// are live (a function, not a closure: a closure is not compiled with the caller's
/// target features).
#[inline(always)]
fn fma<T: Element, const MI: usize, const W: usize>(
    acc: &mut [[[T; W]; TILE]; MI],
    a: &[*const T; MI],
    b: &[*const T; TILE],
    load: impl Fn(*const T) -> [T; W],
) {
    let bv = b.map(&load);
    for i in 0..MI {
        let av = load(a[i]);
        for j in 0..TILE {
            for l in 0..W {
                acc[i][j][l] = av[l].mul_add(bv[j][l], acc[i][j][l]);
            }
        }
    }
}

/// The `n < W` elements at `r`, zero-padded to `W` lanes, by one masked load (reading
/// nothing past them).
///
/// # Safety
/// `r..r + n` is readable; the CPU has AVX-512 (only [`sum_of_row_dots`] calls this).
#[inline(always)]
pub(crate) unsafe fn load_first<T: Element, const W: usize>(r: *const T, n: usize) -> [T; W] {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm512_maskz_loadu_pd, _mm512_maskz_loadu_ps};
        if size_of::<T>() == 4 && W == 16 {
            let v = _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, r as *const f32);
            return std::mem::transmute_copy(&v);
        }
        if size_of::<T>() == 8 && W == 8 {
            let v = _mm512_maskz_loadu_pd(((1u32 << n) - 1) as u8, r as *const f64);
            return std::mem::transmute_copy(&v);
        }
    }
    let mut v = [T::zero(); W];
    v[..n].copy_from_slice(std::slice::from_raw_parts(r, n));
    v
}

/// The lanes' sum, halving: lane l += lane l + W/2, then W/4, ….
#[inline(always)]
fn reduce_lanes<T: Element, const W: usize>(mut v: [T; W]) -> T {
    let mut half = W / 2;
    while half > 0 {
        for l in 0..half {
            v[l] += v[l + half];
        }
        half /= 2;
    }
    v[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums in plain f64 loops.
    fn plain(x: &RowDots<f64>) -> Vec<f64> {
        let (m, n) = (x.m(), x.n());
        let element = |r: &Rows<f64>, s: usize, row: usize, p: usize| {
            r.data[s * r.sample_stride + r.rows[row] + (p / x.run) * r.run_stride + p % x.run]
        };
        let mut out = vec![0.0; m * n];
        for s in 0..x.samples {
            for i in 0..m {
                for j in 0..n {
                    for p in 0..x.runs * x.run {
                        out[i * n + j] += element(&x.a, s, i, p) * element(&x.b, s, j, p);
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104729) % 2003) as f64 - 1001.0) / 1000.0)
            .collect()
    }

    fn rows<'a, T>(data: &'a [T], sample_stride: usize, rows: &'a [usize], run_stride: usize) -> Rows<'a, T> {
        Rows {
            data,
            sample_stride,
            rows,
            run_stride,
        }
    }

    /// Checks f64 and f32 against the plain sums, for `m × n` rows of `runs` runs of
    /// `run` elements: `a` rows contiguous, `b` rows overlapping windows (as a zero-
    /// bordered input's are) with a run stride wider than the run.
    fn check(m: usize, n: usize, run: usize, runs: usize, samples: usize) {
        let a_rows: Vec<usize> = (0..m).map(|i| i * run * runs).collect();
        let b_rows: Vec<usize> = (0..n).map(|j| (j % 3) * (run + 2) + j / 3).collect();
        let (a_stride, b_stride) = (m * run * runs + 3, n + (runs + 3) * (run + 2));
        let (a, b) = (
            values(samples.max(1) * a_stride, 1),
            values(samples.max(1) * b_stride, 2),
        );
        let (a32, b32): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&v| v as f32).collect(),
            b.iter().map(|&v| v as f32).collect(),
        );
        let x = RowDots {
            a: rows(&a[..], a_stride, &a_rows[..], run),
            b: rows(&b[..], b_stride, &b_rows[..], run + 2),
            run,
            runs,
            samples,
        };
        let want = plain(&x);
        let mut got = vec![f64::NAN; m * n];
        sum_of_row_dots(x, &mut got, n);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                "{m}x{n}, {runs} runs of {run}: {g} vs {w}"
            );
        }
        let x32 = RowDots {
            a: rows(&a32[..], a_stride, &a_rows[..], run),
            b: rows(&b32[..], b_stride, &b_rows[..], run + 2),
            run,
            runs,
            samples,
        };
        let mut got32 = vec![f32::NAN; m * (n + 2)];
        sum_of_row_dots(x32, &mut got32, n + 2);
        for i in 0..m {
            for j in 0..n {
                let (g, w) = (got32[i * (n + 2) + j] as f64, want[i * n + j]);
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "f32 {m}x{n}: {g} vs {w}");
            }
            assert!(got32[i * (n + 2) + n].is_nan(), "wrote past the row's columns");
        }
    }

    /// Every tile shape (1–6 rows, narrow last column tiles), runs around the lane
    /// counts, one run or many, no samples; LeNet-5's two layers.
    #[test]
    fn matches_plain_sums_for_every_tile_shape() {
        if !available() {
            return;
        }
        for (m, n, run, runs, samples) in [
            (6, 25, 28, 28, 3),
            (16, 150, 100, 1, 2),
            (1, 1, 1, 1, 1),
            (5, 7, 17, 2, 4),
            (3, 9, 8, 3, 0),
            (2, 4, 33, 1, 5),
            (13, 6, 16, 2, 6),
        ] {
            check(m, n, run, runs, samples);
        }
    }

    /// One thread or two: the same bits.
    #[test]
    fn the_result_does_not_depend_on_the_thread_count() {
        if !available() {
            return;
        }
        let (m, n, len, samples) = (16, 150, 100, 8);
        let a: Vec<f32> = values(samples * m * len, 3).iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = values(samples * n * len, 4).iter().map(|&v| v as f32).collect();
        let (a_rows, b_rows): (Vec<usize>, Vec<usize>) =
            ((0..m).map(|i| i * len).collect(), (0..n).map(|j| j * len).collect());
        let x = RowDots {
            a: Rows {
                data: &a,
                sample_stride: m * len,
                rows: &a_rows,
                run_stride: len,
            },
            b: Rows {
                data: &b,
                sample_stride: n * len,
                rows: &b_rows,
                run_stride: len,
            },
            run: len,
            runs: 1,
            samples,
        };
        let mut two = vec![0.0f32; m * n];
        sum_of_row_dots(x, &mut two, n);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut one = vec![0.0f32; m * n];
        pool.install(|| sum_of_row_dots(x, &mut one, n));
        assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
