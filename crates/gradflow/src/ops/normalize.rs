//! Normalization over a set of axes, BatchNorm's core (LayerNorm has its own
//! fused op, `ops/layer_norm.rs`, γ and β included): x̂ = (x − mean) / √(var + ε),
//! with mean and (biased) variance taken over `axes`, and its fused backward rule
//!
//! ```text
//! dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)),   rstd = 1/√(var + ε)
//! ```
//!
//! All sums are accumulated in f64 whatever the tensor's dtype, as PyTorch's
//! CPU kernels do through their `acc_type`. In f32 a batch of two samples
//! with a large mean and a small spread loses most of its digits when the
//! statistics and the backward's two reductions are summed in f32; composed
//! from generic ops (mean, sub, div) gradflow's BatchNorm was 5× further from
//! the f64 result than PyTorch on such a batch.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, Result};
use crate::ops::reduce::resolve_axes;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

/// Above this many elements, groups and rows are spread over threads.
const PAR_MIN: usize = 1 << 15;

/// The output of [`Tensor::normalize`].
pub struct Normalized {
    /// (x − mean)/√(var + ε), differentiable with respect to x.
    pub xhat: Tensor,
    /// The mean over the normalized axes (kept as size-1 axes), detached.
    pub mean: Tensor,
    /// The biased variance over the normalized axes (kept as size-1 axes), detached.
    pub var: Tensor,
}

/// The tensor seen as `[outer, groups, inner]`: statistics are taken over
/// `outer` and `inner` for each of the `groups`.
#[derive(Clone, Copy)]
struct Dims {
    outer: usize,
    groups: usize,
    inner: usize,
}

impl Dims {
    /// Splits `shape` around the kept axes, which must be one contiguous run
    /// (BatchNorm keeps axis 1, LayerNorm the leading axes).
    fn of(shape: &[usize], reduced: &[usize]) -> Result<Dims> {
        let kept: Vec<usize> = (0..shape.len()).filter(|a| !reduced.contains(a)).collect();
        let (a, b) = match (kept.first(), kept.last()) {
            (Some(&a), Some(&b)) => (a, b + 1),
            _ => (shape.len(), shape.len()),
        };
        if kept.len() != b - a {
            return arg_err(
                "normalize",
                format!("axes {reduced:?} of shape {shape:?} leave a gap: normalize over leading and/or trailing axes"),
            );
        }
        let prod = |r: &[usize]| r.iter().product::<usize>();
        Ok(Dims {
            outer: prod(&shape[..a]),
            groups: prod(&shape[a..b]),
            inner: prod(&shape[b..]),
        })
    }

    fn count(&self) -> usize {
        self.outer * self.inner
    }

    /// The contiguous runs of `inner` elements that belong to group `g`.
    fn rows_of<'a, T>(&self, v: &'a [T], g: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (groups, inner) = (self.groups, self.inner);
        (0..self.outer).map(move |o| &v[(o * groups + g) * inner..][..inner])
    }
}

/// Per group: mean and rstd = 1/√(var + ε), and the biased variance.
struct Stats {
    mean: Vec<f64>,
    var: Vec<f64>,
    rstd: Vec<f64>,
}

fn group_stats<T: Element>(x: &[T], d: Dims, eps: f64) -> Stats {
    let n = d.count() as f64;
    let one = |g: usize| {
        let mean = d.rows_of(x, g).flatten().map(|v| v.f64()).sum::<f64>() / n;
        let var = d.rows_of(x, g).flatten().map(|v| (v.f64() - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    };
    let mv: Vec<(f64, f64)> = if x.len() >= PAR_MIN {
        (0..d.groups).into_par_iter().map(one).collect()
    } else {
        (0..d.groups).map(one).collect()
    };
    Stats {
        rstd: mv.iter().map(|&(_, v)| 1.0 / (v + eps).sqrt()).collect(),
        mean: mv.iter().map(|&(m, _)| m).collect(),
        var: mv.into_iter().map(|(_, v)| v).collect(),
    }
}

/// Applies `f(group, row_in, row_out)` to every row of `inner` elements.
fn for_rows<T: Element>(len: usize, d: Dims, x: &[T], f: impl Fn(usize, &[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); len];
    if d.inner == 0 {
        return out;
    }
    let body = |(r, (o, i)): (usize, (&mut [T], &[T]))| f(r % d.groups, i, o);
    if len >= PAR_MIN {
        out.par_chunks_mut(d.inner)
            .zip(x.par_chunks(d.inner))
            .enumerate()
            .for_each(body);
    } else {
        out.chunks_mut(d.inner)
            .zip(x.chunks(d.inner))
            .enumerate()
            .for_each(body);
    }
    out
}

fn normalize_forward<T: Element>(x: &[T], d: Dims, eps: f64) -> (Vec<T>, Stats) {
    let s = group_stats(x, d, eps);
    let out = for_rows(x.len(), d, x, |g, xi, o| {
        let (m, r) = (s.mean[g], s.rstd[g]);
        for (o, &v) in o.iter_mut().zip(xi) {
            *o = T::of((v.f64() - m) * r);
        }
    });
    (out, s)
}

/// dx = rstd · (g − mean(g) − x̂ · mean(g·x̂)), with x̂ recomputed in f64 from x.
fn normalize_backward<T: Element>(x: &[T], gy: &[T], d: Dims, mean: &[f64], rstd: &[f64]) -> Vec<T> {
    let n = d.count() as f64;
    let sums = |g: usize| {
        let (m, r) = (mean[g], rstd[g]);
        d.rows_of(x, g)
            .flatten()
            .zip(d.rows_of(gy, g).flatten())
            .fold((0.0, 0.0), |(sg, sgx), (&xv, &gv)| {
                let gv = gv.f64();
                (sg + gv, sgx + gv * (xv.f64() - m) * r)
            })
    };
    let s: Vec<(f64, f64)> = if x.len() >= PAR_MIN {
        (0..d.groups).into_par_iter().map(sums).collect()
    } else {
        (0..d.groups).map(sums).collect()
    };
    let mut out = vec![T::zero(); x.len()];
    if d.inner == 0 {
        return out;
    }
    let body = |(row, (o, (x, gy))): (usize, (&mut [T], (&[T], &[T])))| {
        let g = row % d.groups;
        let (m, r, mg, mgx) = (mean[g], rstd[g], s[g].0 / n, s[g].1 / n);
        for ((o, &xv), &gv) in o.iter_mut().zip(x).zip(gy) {
            let xhat = (xv.f64() - m) * r;
            *o = T::of(r * (gv.f64() - mg - xhat * mgx));
        }
    };
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(d.inner)
            .zip(x.par_chunks(d.inner).zip(gy.par_chunks(d.inner)))
            .enumerate()
            .for_each(body);
    } else {
        out.chunks_mut(d.inner)
            .zip(x.chunks(d.inner).zip(gy.chunks(d.inner)))
            .enumerate()
            .for_each(body);
    }
    out
}

struct NormalizeBackward {
    x: Tensor,
    dims: Dims,
    mean: Vec<f64>,
    rstd: Vec<f64>,
}

impl GradFn for NormalizeBackward {
    fn name(&self) -> &'static str {
        "normalize"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (xs, gs) = (self.x.contiguous_storage(), g.contiguous_storage());
        let (d, m, r) = (self.dims, &self.mean, &self.rstd);
        let dx = match (&xs, &gs) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(normalize_backward(x, g, d, m, r)),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(normalize_backward(x, g, d, m, r)),
            _ => unreachable!("gradient has the input's dtype"),
        };
        Ok(vec![Some(Tensor::from_storage(dx, self.x.shape()))])
    }
}

impl Tensor {
    /// Normalizes over `axes` (all of them if empty) to zero mean and unit
    /// variance: BatchNorm's core (axes 0, 2, 3…); over the trailing axes it is
    /// LayerNorm without γ and β (see [`Tensor::layer_norm`] for the fused op).
    /// The axes left must be one contiguous run.
    /// Statistics and the backward's reductions are accumulated in f64.
    pub fn normalize(&self, axes: &[isize], eps: f64) -> Result<Normalized> {
        let reduced = resolve_axes("normalize", axes, self.ndim())?;
        let dims = Dims::of(self.shape(), &reduced)?;
        if dims.count() == 0 && self.numel() > 0 {
            return arg_err("normalize", "cannot normalize over an empty axis");
        }
        let xs = self.contiguous_storage();
        let (out, stats) = match &xs {
            CpuStorage::F32(x) => {
                let (o, s) = normalize_forward(x, dims, eps);
                (CpuStorage::F32(o), s)
            }
            CpuStorage::F64(x) => {
                let (o, s) = normalize_forward(x, dims, eps);
                (CpuStorage::F64(o), s)
            }
        };
        let stat_shape: Vec<usize> = (0..self.ndim())
            .map(|a| if reduced.contains(&a) { 1 } else { self.shape()[a] })
            .collect();
        let stat = |v: &[f64]| -> Result<Tensor> {
            Tensor::from_vec(v.to_vec(), &stat_shape).map(|t| t.to_dtype(self.dtype()))
        };
        let (mean, var) = (stat(&stats.mean)?, stat(&stats.var)?);
        let xhat = Tensor::from_storage(out, self.shape()).attach(&[self], || {
            node(NormalizeBackward {
                x: self.clone(),
                dims,
                mean: stats.mean,
                rstd: stats.rstd,
            })
        });
        Ok(Normalized { xhat, mean, var })
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};

    #[test]
    fn batchnorm_axes_match_the_composed_formula() {
        let x = rand64(&[4, 3, 5], 1);
        let n = x.normalize(&[0, 2], 1e-5).unwrap();
        let mean = x.mean(&[0, 2], true).unwrap();
        let var = x.var(&[0, 2], true, 0).unwrap();
        let want = x.sub(&mean).unwrap().div(&var.add_scalar(1e-5).sqrt()).unwrap();
        let (a, b) = (n.xhat.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(n.mean.shape(), &[1, 3, 1]);
        let (m, v) = (n.var.to_vec::<f64>().unwrap(), var.to_vec::<f64>().unwrap());
        assert!(m.iter().zip(&v).all(|(a, b)| (a - b).abs() < 1e-12));
    }

    #[test]
    fn gradcheck_batchnorm_and_layernorm_axes() {
        for (shape, axes) in [
            (vec![4, 3, 5], vec![0, 2]),
            (vec![5, 4], vec![0]),
            (vec![3, 2, 6], vec![-1]),
            (vec![2, 3, 4], vec![1, 2]),
            (vec![3, 4], vec![]),
        ] {
            let axes: Vec<isize> = axes;
            check(|t| t[0].normalize(&axes, 1e-5).map(|n| n.xhat), &[rand64(&shape, 7)]);
        }
    }

    #[test]
    fn axes_with_a_gap_are_refused() {
        let x = rand64(&[2, 3, 4], 1);
        let err = x.normalize(&[1], 1e-5).err().expect("a gap").to_string();
        assert!(err.contains("leave a gap"), "{err}");
    }

    /// A batch of two samples with a large mean and a small spread: in f32
    /// the gradient must stay as close to the f64 one (from the same,
    /// f32-rounded, values) as PyTorch's, which accumulates in double.
    #[test]
    fn f32_gradient_of_an_ill_conditioned_batch_stays_close_to_f64() {
        let round = |t: Tensor| t.to_dtype(DType::F32).to_dtype(DType::F64);
        let x64 = round(rand64(&[2, 3, 4, 4], 3).mul_scalar(0.01).add_scalar(50.0));
        let w64 = round(rand64(&[2, 3, 4, 4], 4));
        let grad = |x: &Tensor, w: &Tensor| -> Vec<f64> {
            let x = x.clone().requires_grad_(true);
            let y = x.normalize(&[0, 2, 3], 1e-5).unwrap().xhat.mul(w).unwrap().sum_all();
            let g = y.backward().unwrap();
            g.get(&x).unwrap().to_dtype(DType::F64).to_vec::<f64>().unwrap()
        };
        let want = grad(&x64, &w64);
        let got = grad(&x64.to_dtype(DType::F32), &w64.to_dtype(DType::F32));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-5, "relative error {err:.2e}");
    }
}
