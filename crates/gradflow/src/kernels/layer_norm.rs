//! The row loops of LayerNorm: every row of `len` contiguous elements
//! normalized over itself, then scaled by γ and shifted by β, in one pass
//! forward; and the fused backward, which gives x's gradient row by row and
//! γ's and β's as sums over the rows.
//!
//! Every sum is accumulated in f64 whatever the element type (see
//! `ops/normalize.rs` for why f32 sums are not enough), over `LANES`
//! independent accumulators: one running f64 sum is a chain of dependent adds
//! that the compiler may not reorder, so it neither vectorizes nor keeps the
//! adders busy; the loops are compiled for the widest vector unit the CPU has
//! (`simd::wide_fn!`). Rows go to rayon's threads in chunks of a fixed number of rows,
//! whatever the thread count, so γ's and β's gradients, summed chunk by chunk
//! in chunk order, are the same bits on any number of threads.

use super::{simd, PAR_CHUNK, PAR_THRESHOLD};
use crate::Element;
use rayon::prelude::*;

/// Independent f64 accumulators per sum.
const LANES: usize = 8;

/// Rows of `len` contiguous elements, each normalized with `eps` added to its variance.
#[derive(Clone, Copy, Debug)]
pub struct NormRows {
    /// Elements per row: the product of the normalized trailing dimensions.
    pub len: usize,
    /// Added to each row's variance.
    pub eps: f64,
}

/// What the forward pass keeps for the backward one, per row: the mean and 1/√(var + ε).
#[derive(Clone, Debug, Default)]
pub struct RowStats {
    /// Each row's mean.
    pub mean: Vec<f64>,
    /// Each row's 1/√(var + ε), var being the biased variance.
    pub rstd: Vec<f64>,
}

/// The gradients the backward pass is asked for.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    /// The input's.
    pub x: bool,
    /// γ's.
    pub weight: bool,
    /// β's.
    pub bias: bool,
}

/// The backward pass's results, each present when it was wanted.
pub struct RowGrads<T> {
    /// The input's gradient.
    pub x: Option<Vec<T>>,
    /// γ's gradient: Σ over rows of g·x̂.
    pub weight: Option<Vec<T>>,
    /// β's gradient: Σ over rows of g.
    pub bias: Option<Vec<T>>,
}

/// Σ f(v) over `x`, in f64 lanes.
#[inline(always)]
fn lane_sum<T: Element>(x: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// (Σ ĝ, Σ ĝ·x̂) over one row, ĝ = g·γ and x̂ = (x − mean)·rstd, in f64 lanes.
#[inline(always)]
fn lane_sums_g(x: &[impl Element], g: &[impl Element], w: &[impl Element], mean: f64, rstd: f64) -> (f64, f64) {
    let (mut sg, mut sgx) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (mut tg, mut tgx) = (0.0, 0.0);
    let (xc, gc, wc) = (x.chunks_exact(LANES), g.chunks_exact(LANES), w.chunks_exact(LANES));
    for ((&x, &g), &w) in xc.remainder().iter().zip(gc.remainder()).zip(wc.remainder()) {
        let gh = g.f64() * w.f64();
        tg += gh;
        tgx += gh * (x.f64() - mean) * rstd;
    }
    for ((x, g), w) in xc.zip(gc).zip(wc) {
        for l in 0..LANES {
            let gh = g[l].f64() * w[l].f64();
            sg[l] += gh;
            sgx[l] += gh * (x[l].f64() - mean) * rstd;
        }
    }
    (sg.iter().sum::<f64>() + tg, sgx.iter().sum::<f64>() + tgx)
}

/// `f(chunk index, part)` for every part, on rayon's threads when `parallel`; results in part order.
fn each_part<P: Send, R: Send>(parts: Vec<P>, parallel: bool, f: impl Fn(usize, P) -> R + Sync + Send) -> Vec<R> {
    if parallel {
        parts.into_par_iter().enumerate().map(|(c, p)| f(c, p)).collect()
    } else {
        parts.into_iter().enumerate().map(|(c, p)| f(c, p)).collect()
    }
}

simd::wide_fn! {
    /// Normalizes the rows of `x` into `y` (`[x, γ, β]` in `xwb`), keeping each row's
    /// statistics, with the widest vector unit the CPU has (8 f64 lanes are one register
    /// with AVX-512, four with SSE2).
    fn forward_chunk<T>(k: NormRows, xwb: [&[T]; 3], y: &mut [T], mean: &mut [f64], rstd: &mut [f64]) = forward_loops;
}

#[inline(always)]
fn forward_loops<T: Element>(k: NormRows, [x, w, b]: [&[T]; 3], y: &mut [T], mean: &mut [f64], rstd: &mut [f64]) {
    let n = k.len;
    for (((y, x), m), r) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(mean).zip(rstd) {
        *m = lane_sum(x, |v| v.f64()) / n as f64;
        let var = lane_sum(x, |v| (v.f64() - *m).powi(2)) / n as f64;
        *r = 1.0 / (var + k.eps).sqrt();
        let (m, r) = (*m, *r);
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = T::of((x.f64() - m) * r * w.f64() + b.f64());
        }
    }
}

impl NormRows {
    /// Rows per parallel task: about [`PAR_CHUNK`] elements, at least one row.
    fn rows_per_chunk(&self) -> usize {
        (PAR_CHUNK / self.len.max(1)).max(1)
    }

    /// γ, or ones when there is none (x̂·1 is x̂ exactly, so one loop serves both).
    fn or_ones<'a, T: Element>(&self, w: Option<&'a [T]>, ones: &'a mut Vec<T>) -> &'a [T] {
        w.unwrap_or_else(|| {
            *ones = vec![T::one(); self.len];
            ones
        })
    }

    /// y = x̂·γ + β for contiguous rows `x` (γ and β optional), and each row's statistics.
    pub fn forward<T: Element>(&self, x: &[T], weight: Option<&[T]>, bias: Option<&[T]>) -> (Vec<T>, RowStats) {
        let n = self.len;
        let mut y = vec![T::zero(); x.len()];
        if n == 0 || x.is_empty() {
            return (y, RowStats::default());
        }
        let rows = x.len() / n;
        let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
        let (mut ones, mut zeros) = (Vec::new(), Vec::new());
        let w = self.or_ones(weight, &mut ones);
        let b = bias.unwrap_or_else(|| {
            zeros = vec![T::zero(); n];
            &zeros
        });
        let rpc = self.rows_per_chunk();
        let parts: Vec<_> = y
            .chunks_mut(rpc * n)
            .zip(mean.chunks_mut(rpc).zip(rstd.chunks_mut(rpc)))
            .collect();
        each_part(parts, x.len() >= PAR_THRESHOLD, |c, (y, (mean, rstd))| {
            let x = &x[c * rpc * n..][..y.len()];
            forward_chunk(*self, [x, w, b], y, mean, rstd);
        });
        (y, RowStats { mean, rstd })
    }

    /// The wanted gradients from the rows `x`, their statistics, γ (if any) and y's gradient `g`:
    /// dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = g·γ, dγ = Σ_rows g·x̂, dβ = Σ_rows g.
    pub fn backward<T: Element>(
        &self,
        x: &[T],
        g: &[T],
        weight: Option<&[T]>,
        stats: &RowStats,
        want: Wanted,
    ) -> RowGrads<T> {
        let n = self.len;
        let mut ones = Vec::new();
        let w = self.or_ones(weight, &mut ones);
        let rpc = self.rows_per_chunk();
        let chunks = match n {
            0 => 0,
            n => x.len().div_ceil(rpc * n),
        };
        let mut dx = vec![T::zero(); if want.x { x.len() } else { 0 }];
        let parts: Vec<&mut [T]> = match want.x && n > 0 {
            true => dx.chunks_mut(rpc * n).collect(),
            false => (0..chunks).map(|_| <&mut [T]>::default()).collect(),
        };
        let pass = BackwardPass {
            rows: *self,
            x,
            g,
            w,
            stats,
            want,
        };
        let partials = each_part(parts, x.len() >= PAR_THRESHOLD, |c, dx| {
            backward_chunk(&pass, c * rpc, dx)
        });
        let total = |pick: fn(&(Vec<f64>, Vec<f64>)) -> &Vec<f64>| {
            let mut sum = vec![0.0f64; n];
            for p in &partials {
                sum.iter_mut().zip(pick(p)).for_each(|(s, v)| *s += v);
            }
            sum.into_iter().map(T::of).collect::<Vec<T>>()
        };
        RowGrads {
            x: want.x.then_some(dx),
            weight: want.weight.then(|| total(|p| &p.0)),
            bias: want.bias.then(|| total(|p| &p.1)),
        }
    }
}

/// The operands of one backward pass, shared by its chunks.
struct BackwardPass<'a, T> {
    rows: NormRows,
    x: &'a [T],
    g: &'a [T],
    /// γ, or ones.
    w: &'a [T],
    stats: &'a RowStats,
    want: Wanted,
}

simd::wide_fn! {
    /// The chunk of rows from row `first` (a chunk's worth, or fewer at the end): writes
    /// their dx when wanted and returns the chunk's (Σ g·x̂, Σ g) per column.
    fn backward_chunk<T>(p: &BackwardPass<'_, T>, first: usize, dx: &mut [T]) -> (Vec<f64>, Vec<f64>) = backward_loops;
}

#[inline(always)]
fn backward_loops<T: Element>(p: &BackwardPass<'_, T>, first: usize, dx: &mut [T]) -> (Vec<f64>, Vec<f64>) {
    let n = p.rows.len;
    let count = (p.stats.mean.len() - first).min(p.rows.rows_per_chunk());
    let (x, g) = (&p.x[first * n..][..count * n], &p.g[first * n..][..count * n]);
    // Accumulated whether wanted or not: one pass, with no branch inside it.
    let (mut dw, mut db) = (vec![0.0f64; n], vec![0.0f64; n]);
    for (i, (x, g)) in x.chunks_exact(n).zip(g.chunks_exact(n)).enumerate() {
        let (m, r) = (p.stats.mean[first + i], p.stats.rstd[first + i]);
        // Slices of length n, so that the indexing below needs no bounds checks.
        let (dw, db, x, g, w) = (&mut dw[..n], &mut db[..n], &x[..n], &g[..n], &p.w[..n]);
        if p.want.x {
            let (sg, sgx) = lane_sums_g(x, g, w, m, r);
            let (mg, mgx) = (sg / n as f64, sgx / n as f64);
            let dx = &mut dx[i * n..][..n];
            for j in 0..n {
                let (xhat, g) = ((x[j].f64() - m) * r, g[j].f64());
                dx[j] = T::of(r * (g * w[j].f64() - mg - xhat * mgx));
                dw[j] += g * xhat;
                db[j] += g;
            }
        } else {
            for j in 0..n {
                let g = g[j].f64();
                dw[j] += g * (x[j].f64() - m) * r;
                db[j] += g;
            }
        }
    }
    (dw, db)
}

#[cfg(test)]
mod tests {
    use super::{forward_chunk, forward_loops, NormRows, RowStats, Wanted};

    /// The textbook version, row by row in plain f64: y, dx, dγ, dβ.
    fn plain(x: &[f64], g: &[f64], w: &[f64], b: &[f64], eps: f64) -> [Vec<f64>; 4] {
        let n = w.len();
        let (mut y, mut dx) = (Vec::new(), Vec::new());
        let (mut dw, mut db) = (vec![0.0; n], vec![0.0; n]);
        for (xr, gr) in x.chunks(n).zip(g.chunks(n)) {
            let mean = xr.iter().sum::<f64>() / n as f64;
            let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let xhat: Vec<f64> = xr.iter().map(|v| (v - mean) * rstd).collect();
            let gh: Vec<f64> = gr.iter().zip(w).map(|(g, w)| g * w).collect();
            let mg = gh.iter().sum::<f64>() / n as f64;
            let mgx = gh.iter().zip(&xhat).map(|(g, x)| g * x).sum::<f64>() / n as f64;
            for j in 0..n {
                y.push(xhat[j] * w[j] + b[j]);
                dx.push(rstd * (gh[j] - mg - xhat[j] * mgx));
                dw[j] += gr[j] * xhat[j];
                db[j] += gr[j];
            }
        }
        [y, dx, dw, db]
    }

    fn data(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| ((i * 37 + seed * 11) % 101) as f64 / 13.0 - 3.5)
            .collect()
    }

    const ALL: Wanted = Wanted {
        x: true,
        weight: true,
        bias: true,
    };

    fn close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (a, b) in a.iter().zip(b) {
            assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "{what}: {a} vs {b}");
        }
    }

    #[test]
    fn matches_the_plain_version_on_one_thread_and_many() {
        // Rows shorter than the lanes, with a tail, of one element, and enough rows to be threaded.
        for (rows, n) in [(3, 5), (4, 19), (6, 1), (1800, 64), (700, 67)] {
            let (x, g) = (data(rows * n, 1), data(rows * n, 2));
            let (w, b) = (data(n, 3), data(n, 4));
            let [y, dx, dw, db] = plain(&x, &g, &w, &b, 1e-5);
            let k = NormRows { len: n, eps: 1e-5 };
            let (fy, stats) = k.forward(&x, Some(&w), Some(&b));
            let got = k.backward(&x, &g, Some(&w), &stats, ALL);
            close(&fy, &y, "y");
            close(&got.x.unwrap(), &dx, "dx");
            close(&got.weight.unwrap(), &dw, "dγ");
            close(&got.bias.unwrap(), &db, "dβ");
        }
    }

    #[test]
    fn without_affine_and_unwanted_gradients() {
        let (rows, n) = (5, 12);
        let (x, g) = (data(rows * n, 5), data(rows * n, 6));
        let [y, dx, ..] = plain(&x, &g, &vec![1.0; n], &vec![0.0; n], 1e-3);
        let k = NormRows { len: n, eps: 1e-3 };
        let (fy, stats) = k.forward(&x, None, None);
        close(&fy, &y, "y");
        let only_x = Wanted {
            x: true,
            weight: false,
            bias: false,
        };
        let got = k.backward(&x, &g, None, &stats, only_x);
        close(&got.x.unwrap(), &dx, "dx");
        assert!(got.weight.is_none() && got.bias.is_none());
        let only_b = Wanted { x: false, ..ALL };
        let got = k.backward(&x, &g, None, &stats, only_b);
        assert!(got.x.is_none());
        assert_eq!(got.bias.unwrap().len(), n);
    }

    #[test]
    fn f32_agrees_with_f64_and_empty_input_is_no_work() {
        let (rows, n) = (40, 33);
        let x64: Vec<f64> = data(rows * n, 7).iter().map(|&v| v as f32 as f64).collect();
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let k = NormRows { len: n, eps: 1e-5 };
        let (y32, s32) = k.forward(&x32, None, None);
        let (y64, s64) = k.forward(&x64, None, None);
        for (a, b) in y32.iter().zip(&y64) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        // The statistics are f64 in both: the same values.
        close(&s32.mean, &s64.mean, "mean");
        let (y, s) = k.forward::<f64>(&[], None, None);
        assert!(y.is_empty() && s.mean.is_empty());
        let got = k.backward::<f64>(&[], &[], None, &RowStats::default(), ALL);
        assert_eq!(got.weight.unwrap(), vec![0.0; n]);
    }

    #[test]
    fn parameter_gradients_do_not_depend_on_the_thread_count() {
        let (rows, n) = (1024, 64);
        let (x, g, w) = (data(rows * n, 8), data(rows * n, 9), data(n, 10));
        let k = NormRows { len: n, eps: 1e-5 };
        let (_, stats) = k.forward(&x, Some(&w), None);
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| k.backward(&x, &g, Some(&w), &stats, ALL).weight.unwrap())
        };
        assert_eq!(on(1), on(3));
    }

    /// The copy compiled for this CPU's vector unit gives the baseline's bits.
    #[test]
    fn the_wide_copy_is_bit_identical_to_the_baseline() {
        let (rows, n) = (9, 37);
        let x: Vec<f32> = data(rows * n, 11).iter().map(|&v| v as f32).collect();
        let (w, b): (Vec<f32>, Vec<f32>) = (data(n, 12).iter().map(|&v| v as f32).collect(), vec![0.5; n]);
        let k = NormRows { len: n, eps: 1e-5 };
        let run = |f: fn(NormRows, [&[f32]; 3], &mut [f32], &mut [f64], &mut [f64])| {
            let (mut y, mut m, mut r) = (vec![0.0; rows * n], vec![0.0; rows], vec![0.0; rows]);
            f(k, [&x, &w, &b], &mut y, &mut m, &mut r);
            (
                y.iter().map(|v| v.to_bits() as u64).collect::<Vec<_>>(),
                r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(run(forward_loops), run(forward_chunk));
    }
}
