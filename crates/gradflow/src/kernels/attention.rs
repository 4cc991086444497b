//! The row loops of attention's softmax: `softmax(scale·x)` over the last axis
//! of a stack of `[tq, tk]` score matrices, the causal mask applied by never
//! reading the masked scores (their weights are written as 0, which is what a
//! `−inf` score gives), and the fused backward `dx = scale·y⊙(g − Σ g⊙y)`.

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
    /// How many leading entries of row `r` (counted over the whole stack) take part.
    fn visible(&self, r: usize) -> usize {
        match self.causal {
            true => (r % self.tq + 1).min(self.tk),
            false => self.tk,
        }
    }

    /// Run `f(row index, rows…)` over every row of `tk` entries, threaded when large.
    fn each_row<'a, T: Element>(
        &self,
        out: &mut [T],
        ins: [&'a [T]; 2],
        f: impl Fn(usize, &mut [T], [&'a [T]; 2]) + Sync,
    ) {
        let c = self.tk;
        if c == 0 {
            return;
        }
        let job = |(r, (o, (a, b))): (usize, (&mut [T], (&'a [T], &'a [T])))| f(r, o, [a, b]);
        if out.len() >= ROWS_PAR {
            out.par_chunks_mut(c)
                .zip(ins[0].par_chunks(c).zip(ins[1].par_chunks(c)))
                .enumerate()
                .for_each(job);
        } else {
            out.chunks_mut(c)
                .zip(ins[0].chunks(c).zip(ins[1].chunks(c)))
                .enumerate()
                .for_each(job);
        }
    }

    /// The attention weights of contiguous scores `x`.
    pub fn forward<T: Element>(&self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        let s = T::of(self.scale);
        self.each_row(&mut out, [x, x], |r, o, [x, _]| {
            let v = self.visible(r);
            let (o, x) = (&mut o[..v], &x[..v]);
            let m = x.iter().copied().fold(T::neg_infinity(), T::max);
            let mut sum = T::zero();
            for (o, &x) in o.iter_mut().zip(x) {
                *o = ((x - m) * s).exp();
                sum += *o;
            }
            let inv = sum.recip();
            o.iter_mut().for_each(|o| *o *= inv);
        });
        out
    }

    /// The scores' gradient from the weights `y` and their gradient `g`.
    pub fn backward<T: Element>(&self, y: &[T], g: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); y.len()];
        let s = T::of(self.scale);
        self.each_row(&mut out, [y, g], |r, o, [y, g]| {
            let v = self.visible(r);
            let dot: T = y[..v].iter().zip(&g[..v]).map(|(&a, &b)| a * b).sum();
            for i in 0..v {
                o[i] = s * y[i] * (g[i] - dot);
            }
        });
        out
    }
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
