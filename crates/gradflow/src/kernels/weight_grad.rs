//! A convolution's weight gradient from forward's saved columns:
//! `dW[o, r] = Σₙ Σₗ dY[n, o, l] · cols[n, r, l]`, a sum over samples of
//! dot products of rows that both lie contiguous in memory.
//!
//! Through the `gemm` crate this was one product per sample, `cols [r, l] · dYᵀ`,
//! whose left operand the crate packs first: a strided transpose of every sample's
//! columns, 14% of a LeNet-5 step on Zen 5, more than the multiply-adds themselves.
//! Here both operands are read in place: a tile of 4 × 4 outputs keeps its partial
//! sums in 16 vector registers across all samples (eight loads feed sixteen fused
//! multiply-adds), and each output is reduced once at the end. Each output is summed
//! by one thread in a fixed order, so the result does not depend on the thread count.
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

/// The operands: `samples` pairs of row blocks, `a` with `m` rows and `b` with `n` rows,
/// every row `len` long and contiguous; sample `s`'s row `i` of `a` starts at
/// `s·a_stride + i·len` (likewise `b`).
#[derive(Clone, Copy)]
pub(crate) struct RowDots<'a, T> {
    pub(crate) a: &'a [T],
    pub(crate) a_stride: usize,
    pub(crate) b: &'a [T],
    pub(crate) b_stride: usize,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) len: usize,
    pub(crate) samples: usize,
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
    if x.m == 0 || x.n == 0 {
        return;
    }
    assert!(out.len() > (x.m - 1) * out_rs + x.n - 1 && x.n <= out_rs);
    if x.samples > 0 {
        let last = |stride: usize, rows: usize| (x.samples - 1) * stride + rows * x.len;
        assert!(x.a.len() >= last(x.a_stride, x.m) && x.b.len() >= last(x.b_stride, x.n));
    }
    let (parts, col_tiles) = (PARTS.min(x.samples).max(1), x.n.div_ceil(TILE));
    let per_part = x.samples.div_ceil(parts);
    let mut partial = vec![T::zero(); parts * x.m * x.n];
    let dst = SendPtr(partial.as_mut_ptr());
    let dst = &dst;
    (0..parts * col_tiles).into_par_iter().for_each(|t| {
        let (part, j0) = (t / col_tiles, (t % col_tiles) * TILE);
        let samples = part * per_part..((part + 1) * per_part).min(x.samples);
        // The asserts above keep every row read inside the slices; each task writes its
        // own columns of its own part's `m × n` block of `partial`.
        column_tile(&x, samples, j0, dst.0.wrapping_add(part * x.m * x.n))
    });
    for i in 0..x.m {
        for j in 0..x.n {
            let at = i * x.n + j;
            out[i * out_rs + j] = (1..parts).fold(partial[at], |sum, p| sum + partial[p * x.m * x.n + at]);
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
    let cols = (x.n - j0).min(TILE);
    // Missing columns of a last, narrow tile repeat its first one; their sums are dropped.
    let js: [usize; TILE] = std::array::from_fn(|j| j0 + if j < cols { j } else { 0 });
    let block = (L1_BYTES / ((x.m + TILE) * x.len * size_of::<T>()).max(1)).max(1);
    let mut acc = vec![[[[T::zero(); W]; TILE]; ROWS]; x.m.div_ceil(ROWS)];
    let mut s0 = samples.start;
    while s0 < samples.end {
        let s1 = (s0 + block).min(samples.end);
        for (t, acc) in acc.iter_mut().enumerate() {
            let i0 = t * ROWS;
            // SAFETY: see above.
            unsafe {
                match (x.m - i0).min(ROWS) {
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
        for (i, row) in acc.iter().enumerate().take((x.m - t * ROWS).min(ROWS)) {
            for (j, &lanes) in row.iter().enumerate().take(cols) {
                // SAFETY: see above; row t·6 + i < m, column j0 + j < n.
                unsafe { *out.add((t * ROWS + i) * x.n + j0 + j) = reduce_lanes(lanes) };
            }
        }
    }
}

/// `mem[i][j] += Σₛ Σₚ a[s, i0 + i, p] · b[s, js[j], p]` over `samples`, for `MI` rows:
/// the `MI × 4` accumulators of `W` lanes stay in registers over the samples' rows
/// (their last `len % W` elements by a masked load).
///
/// # Safety
/// Every row read lies inside `x.a` and `x.b`; the CPU has AVX-512.
#[inline(always)]
unsafe fn accumulate<T: Element, const MI: usize, const W: usize>(
    x: &RowDots<T>,
    i0: usize,
    js: [usize; TILE],
    samples: std::ops::Range<usize>,
    mem: &mut [[[T; W]; TILE]; ROWS],
) {
    let mut acc: [[[T; W]; TILE]; MI] = std::array::from_fn(|i| mem[i]);
    let full = x.len / W * W;
    let tail = x.len - full;
    for s in samples {
        let a: [*const T; MI] = std::array::from_fn(|i| x.a.as_ptr().add(s * x.a_stride + (i0 + i) * x.len));
        let b: [*const T; TILE] = std::array::from_fn(|j| x.b.as_ptr().add(s * x.b_stride + js[j] * x.len));
        let mut p = 0;
        while p < full {
            fma(&mut acc, &a, &b, |r| (r.add(p) as *const [T; W]).read_unaligned());
            p += W;
        }
        if tail > 0 {
            fma(&mut acc, &a, &b, |r| load_first::<T, W>(r.add(full), tail));
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
unsafe fn load_first<T: Element, const W: usize>(r: *const T, n: usize) -> [T; W] {
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
        let mut out = vec![0.0; x.m * x.n];
        for s in 0..x.samples {
            for i in 0..x.m {
                for j in 0..x.n {
                    let a = &x.a[s * x.a_stride + i * x.len..][..x.len];
                    let b = &x.b[s * x.b_stride + j * x.len..][..x.len];
                    out[i * x.n + j] += a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
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

    /// Every tile shape (1–4 rows, narrow last column blocks), lengths around the lane
    /// counts, padded sample strides; f64 and f32 against the plain sums.
    #[test]
    fn matches_plain_sums_for_every_tile_shape() {
        if !available() {
            return;
        }
        for (m, n, len, samples) in [
            (6, 25, 784, 3),
            (16, 150, 100, 2),
            (1, 1, 1, 1),
            (5, 7, 17, 4),
            (3, 9, 8, 0),
            (2, 4, 33, 5),
        ] {
            let (a_stride, b_stride) = (m * len + 3, n * len + 1);
            let a = values(samples.max(1) * a_stride, 1);
            let b = values(samples.max(1) * b_stride, 2);
            let x = RowDots {
                a: &a,
                a_stride,
                b: &b,
                b_stride,
                m,
                n,
                len,
                samples,
            };
            let want = plain(&x);
            let mut got = vec![f64::NAN; m * n];
            sum_of_row_dots(x, &mut got, n);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                    "{m}x{n}x{len}x{samples}: {g} vs {w}"
                );
            }
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&v| v as f32).collect(),
                b.iter().map(|&v| v as f32).collect(),
            );
            let x32 = RowDots {
                a: &a32,
                b: &b32,
                a_stride,
                b_stride,
                m,
                n,
                len,
                samples,
            };
            let mut got32 = vec![f32::NAN; m * (n + 2)];
            sum_of_row_dots(x32, &mut got32, n + 2);
            for i in 0..m {
                for j in 0..n {
                    let (g, w) = (got32[i * (n + 2) + j] as f64, want[i * n + j]);
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "f32 {m}x{n}x{len}: {g} vs {w}");
                }
                assert!(got32[i * (n + 2) + n].is_nan(), "wrote past the row's columns");
            }
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
        let x = RowDots {
            a: &a,
            a_stride: m * len,
            b: &b,
            b_stride: n * len,
            m,
            n,
            len,
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
