//! RMSprop, following `torch.optim.RMSprop`.

use super::{buf, check_header, header, lerp, opt_buf, with_param_grad, Optimizer, OptimizerState, Param, Slots};
use gradflow::{DType, Element, GradStore, Result, Tensor};

/// `torch.optim.RMSprop`: divides each coordinate's step by a running RMS of its
/// gradients, which suits recurrent networks and non-stationary objectives.
///
/// Per element:
/// ```text
/// g ← g + wd·p
/// s ← α·s + (1 − α)·g²
/// a ← √(s − ḡ²) with ḡ ← lerp(ḡ, g, 1 − α)   (centered)   or   a ← √s
/// a ← a + eps
/// b ← momentum·b + g/a;  p ← p − lr·b        (momentum > 0)
/// p ← p − lr·g/a                               (otherwise)
/// ```
/// No bias correction: early steps are large (the first is `lr/√(1 − α)`).
/// State: `square_avg`, `momentum_buffer` (momentum > 0), `grad_avg`
/// (centered) and `step/<name>` per parameter.
pub struct RmsProp {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
    steps: u64,
    slots: Slots<3>,
}

impl RmsProp {
    /// RMSprop; torch's defaults are alpha 0.99, eps 1e-8, weight decay 0,
    /// momentum 0, not centered.
    pub fn new(lr: f64, alpha: f64, eps: f64, weight_decay: f64, momentum: f64, centered: bool) -> RmsProp {
        RmsProp {
            lr,
            alpha,
            eps,
            weight_decay,
            momentum,
            centered,
            steps: 0,
            slots: Slots::new(["square_avg", "momentum_buffer", "grad_avg"]),
        }
    }

    fn hyper(&self) -> Hyper {
        Hyper {
            lr: self.lr,
            alpha: self.alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
        }
    }
}

struct Hyper {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
}

fn update<T: Element>(
    param: &Tensor,
    grad: &Tensor,
    sq: &mut [T],
    mut mom: Option<&mut [T]>,
    mut gavg: Option<&mut [T]>,
    h: &Hyper,
) -> Result<()> {
    let decay = h.weight_decay != 0.0;
    let wd = T::of(h.weight_decay);
    let alpha = T::of(h.alpha);
    let w = T::of(1.0 - h.alpha);
    let eps = T::of(h.eps);
    let momentum = T::of(h.momentum);
    let neg_lr = T::of(-h.lr);
    with_param_grad::<T>(param, grad, |p, g| {
        let n = p.len();
        let (g, sq) = (&g[..n], &mut sq[..n]);
        for i in 0..n {
            let gi = if decay { g[i] + wd * p[i] } else { g[i] };
            let s = sq[i] * alpha + w * gi * gi;
            sq[i] = s;
            let avg = match gavg.as_deref_mut() {
                Some(ga) => {
                    let a = lerp(ga[i], gi, w);
                    ga[i] = a;
                    (s - a * a).sqrt()
                }
                None => s.sqrt(),
            } + eps;
            match mom.as_deref_mut() {
                Some(b) => {
                    let bi = b[i] * momentum + gi / avg;
                    b[i] = bi;
                    p[i] += neg_lr * bi;
                }
                None => p[i] += neg_lr * gi / avg,
            }
        }
    })
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        let (use_mom, centered) = (self.momentum > 0.0, self.centered);
        let init = [Some(0.0), use_mom.then_some(0.0), centered.then_some(0.0)];
        let h = self.hyper();
        for (p, g) in work {
            let e = self.slots.entry(p, init);
            e.step += 1;
            let [sq, mom, gavg] = &mut e.bufs;
            // Buffers loaded from a run with other settings are kept but not used.
            match p.tensor.dtype() {
                DType::F32 => {
                    let (mom, gavg) = (opt_buf(mom).filter(|_| use_mom), opt_buf(gavg).filter(|_| centered));
                    update::<f32>(&p.tensor, g, buf(sq), mom, gavg, &h)?
                }
                DType::F64 => {
                    let (mom, gavg) = (opt_buf(mom).filter(|_| use_mom), opt_buf(gavg).filter(|_| centered));
                    update::<f64>(&p.tensor, g, buf(sq), mom, gavg, &h)?
                }
            }
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn name(&self) -> &'static str {
        "rmsprop"
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.lr);
        self.slots.export(&mut st, true);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        self.slots
            .import(state, [true, self.momentum > 0.0, self.centered], true)?;
        self.steps = state.step;
        if let Some(lr) = lr {
            self.lr = lr;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn steps(mut opt: RmsProp, gs: &[f64]) -> f64 {
        let p = param::<f64>("w", &[1.0]);
        for &g in gs {
            opt.step(std::slice::from_ref(&p), &grads_for(&p, &[g])).unwrap();
        }
        vals(&p)[0]
    }

    #[test]
    fn first_step_by_hand() {
        // s = 0.01·1 → a = 0.1 + eps → w = 1 − 0.01·1/a
        let w = steps(RmsProp::new(0.01, 0.99, 1e-8, 0.0, 0.0, false), &[1.0]);
        assert!((w - (1.0 - 0.01 / (0.1 + 1e-8))).abs() < 1e-15, "{w}");
        // Two steps: s = 0.0199
        let w = steps(RmsProp::new(0.01, 0.99, 0.0, 0.0, 0.0, false), &[1.0, 1.0]);
        assert!((w - (1.0 - 0.1 - 0.01 / 0.0199f64.sqrt())).abs() < 1e-12, "{w}");
    }

    #[test]
    fn centered_subtracts_the_squared_mean() {
        // ḡ = 0.01, s − ḡ² = 0.0099
        let w = steps(RmsProp::new(0.01, 0.99, 0.0, 0.0, 0.0, true), &[1.0]);
        assert!((w - (1.0 - 0.01 / 0.0099f64.sqrt())).abs() < 1e-12, "{w}");
    }

    #[test]
    fn momentum_accumulates_scaled_steps() {
        // b1 = 1/0.1 = 10; b2 = 9 + 1/√0.0199
        let w = steps(RmsProp::new(0.01, 0.99, 0.0, 0.0, 0.9, false), &[1.0, 1.0]);
        let b2 = 9.0 + 1.0 / 0.0199f64.sqrt();
        assert!((w - (1.0 - 0.1 - 0.01 * b2)).abs() < 1e-12, "{w}");
    }

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        // g = 1 + 0.5·1 = 1.5: s = 0.0225, a = 0.15, step = 0.01
        let w = steps(RmsProp::new(0.001, 0.99, 0.0, 0.5, 0.0, false), &[1.0]);
        assert!((w - (1.0 - 0.001 * 1.5 / 0.15)).abs() < 1e-12, "{w}");
    }

    #[test]
    fn minimizes_a_quadratic() {
        let w = minimize_quadratic(&mut RmsProp::new(0.03, 0.99, 1e-8, 0.0, 0.0, false), 500);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
        let w = minimize_quadratic(&mut RmsProp::new(0.01, 0.9, 1e-8, 0.0, 0.5, true), 500);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(RmsProp::new(0.01, 0.99, 1e-8, 0.01, 0.9, true)));
        check_resume(|| Box::new(RmsProp::new(0.01, 0.9, 1e-8, 0.0, 0.0, false)));
    }
}
