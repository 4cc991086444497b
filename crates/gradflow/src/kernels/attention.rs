//! The row loops of attention's softmax: `softmax(scale·x)` over the last axis
//! of a stack of `[tq, tk]` score matrices, the causal mask applied by never
//! reading the masked scores (their weights are written as 0, which is what a
//! `−inf` score gives), and the fused backward `dx = scale·y⊙(g − Σ g⊙y)`.

use super::simd;
use crate::Element;
use rayon::prelude::*;

/// Below this many scores the rows run on the calling thread.
const ROWS_PAR: usize = 1 << 14;

/// The shape of a stack of score matrices and what is done to each row.
#[derive(Clone, Copy, Debug)]
pub struct ScoreRows {
    /// Query steps: rows per matrix.
    pub tq: usize,
    /// Key steps: the row length.
    pub tk: usize,
    /// Multiplies every score before the softmax (1/√d in attention).
    pub scale: f64,
    /// Row i sees keys 0..=i only.
    pub causal: bool,
}

impl ScoreRows {
    /// Run `f(self, first row index, rows…)` over chunks of whole rows, threaded when large.
    fn each_rows<'a, T: Element>(
        &self,
        out: &mut [T],
        ins: [&'a [T]; 2],
        f: impl Fn(&ScoreRows, usize, &mut [T], [&'a [T]; 2]) + Sync,
    ) {
        let c = self.tk;
        if c == 0 {
            return;
        }
        // Whole rows per task, about ROWS_PAR / 4 scores each.
        let rows = (ROWS_PAR / 4 / c).max(1);
        let job = |(i, (o, (a, b))): (usize, (&mut [T], (&'a [T], &'a [T])))| f(self, i * rows, o, [a, b]);
        if out.len() >= ROWS_PAR {
            out.par_chunks_mut(c * rows)
                .zip(ins[0].par_chunks(c * rows).zip(ins[1].par_chunks(c * rows)))
                .enumerate()
                .for_each(job);
        } else {
            job((0, (out, (ins[0], ins[1]))));
        }
    }

    /// How many leading entries of row `r` (counted over the whole stack) take part.
    #[inline(always)]
    fn visible(&self, r: usize) -> usize {
        match self.causal {
            true => (r % self.tq + 1).min(self.tk),
            false => self.tk,
        }
    }

    /// The attention weights of contiguous scores `x`.
    pub fn forward<T: Element>(&self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        self.each_rows(&mut out, [x, x], |rows, r0, o, [x, _]| forward_rows(rows, r0, o, x));
        out
    }

    /// The scores' gradient from the weights `y` and their gradient `g`.
    pub fn backward<T: Element>(&self, y: &[T], g: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); y.len()];
        self.each_rows(&mut out, [y, g], |rows, r0, o, [y, g]| backward_rows(rows, r0, o, y, g));
        out
    }
}

#[inline(always)]
fn forward_rows_plain<T: Element>(rows: &ScoreRows, r0: usize, out: &mut [T], x: &[T]) {
    let s = T::of(rows.scale);
    for (i, (o, x)) in out.chunks_mut(rows.tk).zip(x.chunks(rows.tk)).enumerate() {
        let v = rows.visible(r0 + i);
        let (o, x) = (&mut o[..v], &x[..v]);
        let m = simd::max(x);
        for (o, &x) in o.iter_mut().zip(x) {
            *o = ((x - m) * s).kernel_exp();
        }
        let inv = simd::sum(o).recip();
        o.iter_mut().for_each(|o| *o *= inv);
    }
}

#[inline(always)]
fn backward_rows_plain<T: Element>(rows: &ScoreRows, r0: usize, out: &mut [T], y: &[T], g: &[T]) {
    let s = T::of(rows.scale);
    let tk = rows.tk;
    for (i, (o, (y, g))) in out.chunks_mut(tk).zip(y.chunks(tk).zip(g.chunks(tk))).enumerate() {
        let v = rows.visible(r0 + i);
        let dot = simd::dot(&y[..v], &g[..v]);
        for ((o, &y), &g) in o[..v].iter_mut().zip(&y[..v]).zip(&g[..v]) {
            *o = s * y * (g - dot);
        }
    }
}

simd::wide_fn! {
    fn forward_rows<T>(rows: &ScoreRows, r0: usize, out: &mut [T], x: &[T]) = forward_rows_plain;
}
simd::wide_fn! {
    fn backward_rows<T>(rows: &ScoreRows, r0: usize, out: &mut [T], y: &[T], g: &[T]) = backward_rows_plain;
}

#[cfg(test)]
mod tests {
    use super::ScoreRows;

    /// The textbook version: scores scaled, masked to −inf, softmax, Jacobian-vector product.
    fn plain(x: &[f64], g: &[f64], rows: ScoreRows) -> (Vec<f64>, Vec<f64>) {
        let (mut y, mut dx) = (Vec::new(), Vec::new());
        for (r, (xr, gr)) in x.chunks(rows.tk).zip(g.chunks(rows.tk)).enumerate() {
            let i = r % rows.tq;
            let z: Vec<f64> = (0..rows.tk)
                .map(|j| {
                    if rows.causal && j > i {
                        f64::NEG_INFINITY
                    } else {
                        rows.scale * xr[j]
                    }
                })
                .collect();
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let yr: Vec<f64> = e.iter().map(|v| v / sum).collect();
            // dx_j = scale · Σ_k g_k ∂y_k/∂z_j, with ∂y_k/∂z_j = y_k(δ_kj − y_j).
            for j in 0..rows.tk {
                let d: f64 = (0..rows.tk)
                    .map(|k| gr[k] * yr[k] * (f64::from(u8::from(k == j)) - yr[j]))
                    .sum();
                dx.push(rows.scale * d);
            }
            y.extend(yr);
        }
        (y, dx)
    }

    #[test]
    fn matches_the_plain_version_masked_or_not_on_one_thread_and_many() {
        // 3×5 (more queries than keys), 4×4, and a stack large enough for the threaded path.
        for (n, tq, tk) in [(2, 3, 2), (3, 4, 4), (40, 24, 24)] {
            let len = n * tq * tk;
            let x: Vec<f64> = (0..len).map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0).collect();
            let g: Vec<f64> = (0..len).map(|i| ((i * 13 % 29) as f64 - 14.0) / 5.0).collect();
            for causal in [false, true] {
                for scale in [1.0, 0.35] {
                    let rows = ScoreRows { tq, tk, scale, causal };
                    let (y, dx) = plain(&x, &g, rows);
                    let (fy, fdx) = (rows.forward(&x), rows.backward(&rows.forward(&x), &g));
                    for (a, b) in fy.iter().zip(&y).chain(fdx.iter().zip(&dx)) {
                        assert!((a - b).abs() < 1e-12, "{n}x{tq}x{tk} causal {causal}: {a} vs {b}");
                    }
                    // Masked weights are exactly 0, as exp(−inf) is.
                    if causal {
                        assert!(fy
                            .chunks(tk)
                            .enumerate()
                            .all(|(r, row)| row[(r % tq + 1).min(tk)..].iter().all(|&v| v == 0.0)));
                    }
                }
            }
        }
        // f32 agrees with f64; empty rows are no work.
        let rows = ScoreRows {
            tq: 3,
            tk: 3,
            scale: 0.5,
            causal: true,
        };
        let x: Vec<f32> = (0..18).map(|i| i as f32 * 0.3 - 2.0).collect();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for (a, b) in rows.forward(&x).iter().zip(rows.forward(&x64)) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        let empty = ScoreRows {
            tq: 2,
            tk: 0,
            scale: 1.0,
            causal: false,
        };
        assert!(empty.forward::<f64>(&[]).is_empty());
    }
}
