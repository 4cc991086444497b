//! Regularization as the seed article defines it: L1 adds λ₁·Σ|w| to the
//! objective (its gradient λ₁·sign(w) pushes every weight toward exactly 0:
//! sparsity), L2 adds λ₂·Σw² (gradient 2λ₂·w, shrinking weights in proportion
//! to their size). Both are added once per batch, over the `weight` tensors of
//! Linear and Conv2d layers unless a layer overrides its λ. Also the max-norm
//! constraint of Srivastava et al. 2014.

use crate::module::PenaltyTarget;
use gradflow::{no_grad, DType, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Global penalty strengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Penalty {
    /// λ₁.
    pub l1: f64,
    /// λ₂.
    pub l2: f64,
}

impl Penalty {
    /// True when no penalty applies anywhere.
    pub fn is_zero(&self, targets: &[PenaltyTarget]) -> bool {
        self.l1 == 0.0
            && self.l2 == 0.0
            && targets
                .iter()
                .all(|t| t.l1.unwrap_or(0.0) == 0.0 && t.l2.unwrap_or(0.0) == 0.0)
    }

    /// The penalty term as a differentiable scalar, or None when it is zero.
    pub fn term(&self, targets: &[PenaltyTarget]) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for t in targets {
            let (l1, l2) = (t.l1.unwrap_or(self.l1), t.l2.unwrap_or(self.l2));
            let mut add = |x: Tensor| -> Result<()> {
                total = Some(match total.take() {
                    Some(acc) => acc.add(&x)?,
                    None => x,
                });
                Ok(())
            };
            if l1 != 0.0 {
                add(t.tensor.abs().sum_all().mul_scalar(l1))?;
            }
            if l2 != 0.0 {
                add(t.tensor.square().sum_all().mul_scalar(l2))?;
            }
        }
        Ok(total)
    }
}

/// Rescale each unit's incoming weights (a row of a Linear weight, one output
/// channel's kernel of a Conv2d) so that its L2 norm is at most `max_norm`.
pub fn apply_max_norm(targets: &[PenaltyTarget], max_norm: f64) -> Result<()> {
    let _g = no_grad();
    for t in targets {
        let w = &t.tensor;
        let rows = w.shape()[0];
        let axes: Vec<isize> = (1..w.ndim() as isize).collect();
        let norms = w.square().sum(&axes, false)?.sqrt().to_vec_f64();
        if norms.iter().all(|&n| n <= max_norm) {
            continue;
        }
        let scale: Vec<f64> = norms
            .iter()
            .map(|&n| if n > max_norm { max_norm / (n + 1e-7) } else { 1.0 })
            .collect();
        let mut sshape = vec![1usize; w.ndim()];
        sshape[0] = rows;
        let s = Tensor::from_vec(scale, &sshape)?.to_dtype(w.dtype());
        w.assign(&w.mul(&s)?)?;
    }
    Ok(())
}

/// The proximal step of λ₁·Σ|w| after a gradient step of size `lr`:
/// soft-thresholding, w ← sign(w)·max(|w| − lr·λ₁, 0). Unlike the subgradient
/// λ₁·sign(w), which makes small weights jitter around zero, it lands them on
/// exactly 0, so L1's sparsity shows. Each target's own λ₁ overrides `l1`.
pub fn l1_proximal_step(targets: &[PenaltyTarget], l1: f64, lr: f64) -> Result<()> {
    for t in targets {
        let threshold = lr * t.l1.unwrap_or(l1);
        if threshold <= 0.0 {
            continue;
        }
        match t.tensor.dtype() {
            DType::F32 => t.tensor.with_slice_mut::<f32, _>(|w| {
                let threshold = threshold as f32;
                for v in w {
                    let shrunk = v.abs() - threshold;
                    *v = if shrunk > 0.0 { shrunk.copysign(*v) } else { 0.0 };
                }
            })?,
            DType::F64 => t.tensor.with_slice_mut::<f64, _>(|w| {
                for v in w {
                    let shrunk = v.abs() - threshold;
                    *v = if shrunk > 0.0 { shrunk.copysign(*v) } else { 0.0 };
                }
            })?,
        }
    }
    Ok(())
}

/// Fraction of entries with |w| below `threshold`, over all targets: the sparsity L1 produces.
pub fn sparsity(targets: &[PenaltyTarget], threshold: f64) -> f64 {
    let (mut small, mut total) = (0usize, 0usize);
    for t in targets {
        let v = t.tensor.to_vec_f64();
        small += v.iter().filter(|x| x.abs() < threshold).count();
        total += v.len();
    }
    if total == 0 {
        0.0
    } else {
        small as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(v: Vec<f64>, shape: &[usize]) -> PenaltyTarget {
        PenaltyTarget {
            name: "0.weight".into(),
            tensor: Tensor::from_vec(v, shape).unwrap().requires_grad_(true),
            l1: None,
            l2: None,
        }
    }

    #[test]
    fn l1_and_l2_by_hand() {
        let t = target(vec![1.0, -2.0, 0.0, 3.0], &[2, 2]);
        let p = Penalty { l1: 0.1, l2: 0.01 };
        let term = p.term(std::slice::from_ref(&t)).unwrap().unwrap();
        // 0.1·6 + 0.01·14
        assert!((term.item().unwrap() - 0.74).abs() < 1e-12);
        let g = term.backward().unwrap();
        let gw = g.get(&t.tensor).unwrap().to_vec::<f64>().unwrap();
        // λ₁·sign(w) + 2λ₂·w, with sign(0) = 0.
        let expect = [0.1 + 0.02, -0.1 - 0.04, 0.0, 0.1 + 0.06];
        for (a, b) in gw.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn layer_override_exempts_a_layer() {
        let mut t = target(vec![1.0; 4], &[2, 2]);
        t.l1 = Some(0.0);
        assert!(Penalty { l1: 0.5, l2: 0.0 }.term(&[t]).unwrap().is_none());
    }

    #[test]
    fn max_norm_caps_each_row() {
        let t = target(vec![3.0, 4.0, 0.3, 0.4], &[2, 2]);
        apply_max_norm(std::slice::from_ref(&t), 1.0).unwrap();
        let v = t.tensor.to_vec::<f64>().unwrap();
        assert!(((v[0] * v[0] + v[1] * v[1]).sqrt() - 1.0).abs() < 1e-6);
        assert_eq!(&v[2..], &[0.3, 0.4]);
        assert_eq!(sparsity(&[t], 0.35), 0.25);
    }

    #[test]
    fn l1_proximal_step_soft_thresholds_to_exact_zeros() {
        let t = target(vec![0.75, -0.125, 0.25, -2.0], &[2, 2]);
        l1_proximal_step(std::slice::from_ref(&t), 0.5, 0.5).unwrap();
        assert_eq!(t.tensor.to_vec::<f64>().unwrap(), [0.5, 0.0, 0.0, -1.75]);
        let mut exempt = target(vec![0.05], &[1, 1]);
        exempt.l1 = Some(0.0);
        l1_proximal_step(std::slice::from_ref(&exempt), 0.1, 1.0).unwrap();
        assert_eq!(exempt.tensor.to_vec::<f64>().unwrap(), [0.05]);
    }
}
