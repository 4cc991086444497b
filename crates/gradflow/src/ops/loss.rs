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

/// Below this many logits the loss runs on the calling thread (a classifier's batch
/// of 64×10 costs less than handing it to another thread).
const PAR_ELEMENTS: usize = 1 << 14;

fn ce_grad<T: Element>(p: &[T], targets: &[usize], c: usize, eps: f64, scale: f64) -> Vec<T> {
    let n = targets.len();
    let k = T::of(scale / n as f64);
    let off = T::of(eps / c as f64);
    let on = T::of(1.0 - eps);
    let mut out = vec![T::zero(); p.len()];
    let row = |((o, p), &t): ((&mut [T], &[T]), &usize)| {
        for j in 0..c {
            o[j] = (p[j] - off) * k;
        }
        o[t] -= on * k;
    };
    if p.len() >= PAR_ELEMENTS {
        out.par_chunks_mut(c.max(1))
            .zip(p.par_chunks(c.max(1)))
            .zip(targets.par_iter())
            .for_each(row);
    } else {
        out.chunks_mut(c.max(1))
            .zip(p.chunks(c.max(1)))
            .zip(targets)
            .for_each(row);
    }
    out
}

fn ce_forward<T: Element>(x: &[T], targets: &[usize], c: usize, eps: f64) -> (f64, Vec<T>) {
    let mut probs = vec![T::zero(); x.len()];
    let row = |((p, r), &t): ((&mut [T], &[T]), &usize)| {
        softmax_row(r, p);
        let m = r.iter().copied().fold(T::neg_infinity(), T::max).f64();
        let lse = m + r.iter().map(|&v| (v.f64() - m).exp()).sum::<f64>().ln();
        let mean_logit = r.iter().map(|v| v.f64()).sum::<f64>() / c as f64;
        lse - (1.0 - eps) * r[t].f64() - eps * mean_logit
    };
    let total: f64 = if x.len() >= PAR_ELEMENTS {
        probs
            .par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .zip(targets.par_iter())
            .map(row)
            .sum()
    } else {
        probs.chunks_mut(c).zip(x.chunks(c)).zip(targets).map(row).sum()
    };
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

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{seeded_rng, DType, Tensor};
    use rand::Rng;

    /// The composed reference: `(1 − ε)·(−log_softmax.gather(target).mean()) + ε·(−log_softmax.mean())`.
    fn reference(logits: &Tensor, targets: &[usize], eps: f64) -> crate::Result<Tensor> {
        let ls = logits.log_softmax(-1)?;
        let n = targets.len();
        let nll = ls.gather(1, targets, &[n, 1])?.mean_all().neg();
        let uniform = ls.mean_all().neg();
        nll.mul_scalar(1.0 - eps).add(&uniform.mul_scalar(eps))
    }

    fn targets(n: usize, c: usize, seed: u64) -> Vec<usize> {
        let mut rng = seeded_rng(seed);
        (0..n).map(|_| rng.gen_range(0..c)).collect()
    }

    #[test]
    fn matches_the_composed_reference_and_its_gradient() {
        for &(n, c) in &[(1, 1), (1, 5), (4, 3), (7, 10)] {
            let x = rand64(&[n, c], n as u64 * 31 + c as u64).mul_scalar(3.0);
            let t = targets(n, c, 5);
            for eps in [0.0, 0.1, 1.0] {
                let got = x.cross_entropy(&t, eps).unwrap();
                assert_eq!(got.shape(), &[] as &[usize]);
                let want = reference(&x, &t, eps).unwrap();
                assert!(
                    (got.item().unwrap() - want.item().unwrap()).abs() < 1e-12,
                    "{n}x{c} eps {eps}"
                );
                // Gradients agree with the composed graph's.
                let xa = x.clone().requires_grad_(true);
                let ga = xa.cross_entropy(&t, eps).unwrap().backward().unwrap();
                let gb = reference(&xa, &t, eps).unwrap().backward().unwrap();
                for (a, b) in ga
                    .get(&xa)
                    .unwrap()
                    .to_vec_f64()
                    .iter()
                    .zip(gb.get(&xa).unwrap().to_vec_f64())
                {
                    assert!((a - b).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn gradcheck_with_and_without_label_smoothing() {
        let x = rand64(&[5, 4], 1);
        let t = targets(5, 4, 2);
        check(|v| v[0].cross_entropy(&t, 0.0), &[x.clone()]);
        check(|v| v[0].cross_entropy(&t, 0.1), &[x.clone()]);
        // Scaled downstream (the upstream gradient is not 1), and on a transposed view.
        check(|v| Ok(v[0].cross_entropy(&t, 0.2)?.mul_scalar(-2.5)), &[x.clone()]);
        check(|v| v[0].t()?.cross_entropy(&t, 0.05), &[rand64(&[4, 5], 3)]);
        // Logits computed by a layer: the loss gradient flows on.
        check(
            |v| v[0].linear(&v[1], None)?.cross_entropy(&t, 0.1),
            &[rand64(&[5, 3], 4), rand64(&[4, 3], 5)],
        );
    }

    #[test]
    fn finite_for_huge_logits_in_f32() {
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, -1e4, 1e4, 1e4], &[2, 3])
            .unwrap()
            .requires_grad_(true);
        let loss = x.cross_entropy(&[1, 2], 0.1).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        let l = loss.item().unwrap();
        assert!(l.is_finite());
        // Row 0 picks a logit 2e4 below the max: loss about 2e4·0.9 + smoothing terms.
        let l64 = Tensor::from_vec(vec![1e4f64, -1e4, 0.0, -1e4, 1e4, 1e4], &[2, 3])
            .unwrap()
            .cross_entropy(&[1, 2], 0.1)
            .unwrap()
            .item()
            .unwrap();
        assert!((l - l64).abs() < 1e-2 * l64.abs().max(1.0), "{l} vs {l64}");
        let g = loss.backward().unwrap();
        assert!(g
            .get(&x)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
        // Confident and right: loss (nearly) zero.
        let y = Tensor::from_vec(vec![1e4f32, -1e4], &[1, 2]).unwrap();
        assert_eq!(y.cross_entropy(&[0], 0.0).unwrap().item().unwrap(), 0.0);
    }

    #[test]
    fn bad_targets_and_shapes_are_errors() {
        let x = rand64(&[3, 4], 0);
        let e = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        assert_eq!(
            e(x.cross_entropy(&[0, 4, 1], 0.0)),
            "cross_entropy: target 4 at row 1 is not below the 4 classes"
        );
        assert_eq!(
            e(x.cross_entropy(&[0, 1], 0.0)),
            "cross_entropy: 2 targets for logits [3, 4]"
        );
        assert_eq!(
            e(rand64(&[3], 0).cross_entropy(&[0, 1, 2], 0.0)),
            "cross_entropy: logits must be [N, C], got [3]"
        );
        assert!(e(x.cross_entropy(&[0, 1, 2], 1.5)).starts_with("cross_entropy: label_smoothing 1.5"));
        assert!(e(x.cross_entropy(&[0, 1, 2], -0.1)).starts_with("cross_entropy: label_smoothing"));
        assert!(e(x.cross_entropy(&[0, 1, 2], f64::NAN)).starts_with("cross_entropy: label_smoothing"));
        assert!(e(Tensor::zeros(&[0, 3], DType::F32).cross_entropy(&[], 0.0)).starts_with("cross_entropy: empty"));
        assert!(e(Tensor::zeros(&[2, 0], DType::F32).cross_entropy(&[0, 0], 0.0)).starts_with("cross_entropy:"));
    }
}
