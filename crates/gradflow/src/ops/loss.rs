//! Cross-entropy from logits, fused with its softmax: the forward never
//! forms log(softmax) explicitly and the backward is simply
//! `(softmax − target distribution) / N`.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::layout::fmt_shape;
use crate::ops::softmax::softmax_row;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

struct CrossEntropyBackward {
    logits: Tensor,
    probs: CpuStorage,
    targets: Vec<usize>,
    smoothing: f64,
}

impl GradFn for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.logits.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let scale = g.item()?;
        let c = self.logits.shape()[1];
        let out = match &self.probs {
            CpuStorage::F32(p) => CpuStorage::F32(ce_grad(p, &self.targets, c, self.smoothing, scale)),
            CpuStorage::F64(p) => CpuStorage::F64(ce_grad(p, &self.targets, c, self.smoothing, scale)),
        };
        Ok(vec![Some(Tensor::from_storage(out, self.logits.shape()))])
    }
}

fn ce_grad<T: Element>(p: &[T], targets: &[usize], c: usize, eps: f64, scale: f64) -> Vec<T> {
    let n = targets.len();
    let k = T::of(scale / n as f64);
    let off = T::of(eps / c as f64);
    let on = T::of(1.0 - eps);
    let mut out = vec![T::zero(); p.len()];
    out.par_chunks_mut(c.max(1))
        .zip(p.par_chunks(c.max(1)))
        .zip(targets.par_iter())
        .for_each(|((o, p), &t)| {
            for j in 0..c {
                o[j] = (p[j] - off) * k;
            }
            o[t] -= on * k;
        });
    out
}

fn ce_forward<T: Element>(x: &[T], targets: &[usize], c: usize, eps: f64) -> (f64, Vec<T>) {
    let mut probs = vec![T::zero(); x.len()];
    let total: f64 = probs
        .par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .zip(targets.par_iter())
        .map(|((p, r), &t)| {
            softmax_row(r, p);
            let m = r.iter().copied().fold(T::neg_infinity(), T::max).f64();
            let lse = m + r.iter().map(|&v| (v.f64() - m).exp()).sum::<f64>().ln();
            let mean_logit = r.iter().map(|v| v.f64()).sum::<f64>() / c as f64;
            lse - (1.0 - eps) * r[t].f64() - eps * mean_logit
        })
        .sum();
    (total / targets.len() as f64, probs)
}

impl Tensor {
    /// Mean cross-entropy of logits `[N, C]` against class indices, with optional
    /// label smoothing ε (the target puts 1 − ε on the class and ε/C everywhere).
    pub fn cross_entropy(&self, targets: &[usize], label_smoothing: f64) -> Result<Tensor> {
        if self.ndim() != 2 {
            return shape_err(
                "cross_entropy",
                format!("logits must be [N, C], got {}", fmt_shape(self.shape())),
            );
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        if targets.len() != n {
            return shape_err(
                "cross_entropy",
                format!("{} targets for logits {}", targets.len(), fmt_shape(self.shape())),
            );
        }
        if n == 0 || c == 0 {
            return shape_err("cross_entropy", format!("empty logits {}", fmt_shape(self.shape())));
        }
        if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t >= c) {
            return arg_err(
                "cross_entropy",
                format!("target {t} at row {i} is not below the {c} classes"),
            );
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return arg_err(
                "cross_entropy",
                format!("label_smoothing {label_smoothing} is not in [0, 1]"),
            );
        }
        let xs = self.contiguous_storage();
        let (loss, probs) = match &xs {
            CpuStorage::F32(x) => {
                let (l, p) = ce_forward(x, targets, c, label_smoothing);
                (l, CpuStorage::F32(p))
            }
            CpuStorage::F64(x) => {
                let (l, p) = ce_forward(x, targets, c, label_smoothing);
                (l, CpuStorage::F64(p))
            }
        };
        let out = Tensor::full(&[], loss, self.dtype());
        Ok(out.attach(&[self], || {
            node(CrossEntropyBackward {
                logits: self.clone(),
                probs,
                targets: targets.to_vec(),
                smoothing: label_smoothing,
            })
        }))
    }
}
