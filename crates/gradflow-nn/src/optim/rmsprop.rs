//! RMSprop, following `torch.optim.RMSprop`.

use super::{
    buf, check_header, header, lerp, non_negative, opt_buf, with_param_grad, Optimizer, OptimizerConfig,
    OptimizerState, Param, Slots,
};
use gradflow::{DType, Element, GradStore, Result, Tensor};
use serde::{Deserialize, Serialize};

/// `torch.optim.RMSprop`'s hyperparameters, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsPropConfig {
    /// Learning rate (torch default 1e-2).
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f64,
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor; 0 disables the momentum buffer.
    pub momentum: f64,
    /// Normalize by the estimated variance instead of the raw second moment.
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

impl OptimizerConfig for RmsPropConfig {
    const NAME: &'static str = "rmsprop";
    const TORCH_NAME: &'static str = "RMSprop";
    const DESCRIPTION: &'static str = "Steps divided by a running RMS of the gradients (Hinton)";
    fn lr(&self) -> f64 {
        self.lr
    }
    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }
    fn validate(&self) -> crate::Result<()> {
        non_negative("epsilon value", self.eps)?;
        non_negative("momentum value", self.momentum)?;
        non_negative("weight_decay value", self.weight_decay)?;
        non_negative("alpha value", self.alpha)
    }
    fn build(&self) -> Box<dyn Optimizer> {
        Box::new(RmsProp::new(*self))
    }
}

/// `torch.optim.RMSprop`: divides each coordinate's step by a running RMS of its
/// gradients, which suits recurrent networks and non-stationary objectives.
///
/// Per element (PyTorch's documentation):
/// ```text
/// g ← g + weight_decay·p
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
    config: RmsPropConfig,
    steps: u64,
    slots: Slots<3>,
}

impl RmsProp {
    /// RMSprop at step 0.
    pub fn new(config: RmsPropConfig) -> RmsProp {
        RmsProp {
            config,
            steps: 0,
            slots: Slots::new(["square_avg", "momentum_buffer", "grad_avg"]),
        }
    }
}

/// The rule above for one parameter: `s` is `square_avg`, `b` the momentum
/// buffer (momentum > 0), `grad_avg` ḡ (centered).
fn update<T: Element>(
    param: &Tensor,
    grad: &Tensor,
    s: &mut [T],
    mut b: Option<&mut [T]>,
    mut grad_avg: Option<&mut [T]>,
    c: &RmsPropConfig,
) -> Result<()> {
    let decay = c.weight_decay != 0.0;
    let weight_decay = T::of(c.weight_decay);
    let alpha = T::of(c.alpha);
    let one_minus_alpha = T::of(1.0 - c.alpha);
    let eps = T::of(c.eps);
    let momentum = T::of(c.momentum);
    let neg_lr = T::of(-c.lr);
    with_param_grad::<T>(param, grad, |p, g| {
        let n = p.len();
        let (g, s) = (&g[..n], &mut s[..n]);
        for i in 0..n {
            let g = if decay { g[i] + weight_decay * p[i] } else { g[i] };
            s[i] = s[i] * alpha + one_minus_alpha * g * g;
            let a = match grad_avg.as_deref_mut() {
                Some(avg) => {
                    avg[i] = lerp(avg[i], g, one_minus_alpha);
                    (s[i] - avg[i] * avg[i]).sqrt()
                }
                None => s[i].sqrt(),
            } + eps;
            match b.as_deref_mut() {
                Some(b) => {
                    b[i] = b[i] * momentum + g / a;
                    p[i] += neg_lr * b[i];
                }
                None => p[i] += neg_lr * g / a,
            }
        }
    })
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        let c = self.config;
        let (use_mom, centered) = (c.momentum > 0.0, c.centered);
        let init = [Some(0.0), use_mom.then_some(0.0), centered.then_some(0.0)];
        for (p, g) in work {
            let e = self.slots.entry(p, init);
            e.step += 1;
            let [sq, mom, gavg] = &mut e.bufs;
            // Buffers loaded from a run with other settings are kept but not used.
            match p.tensor.dtype() {
                DType::F32 => {
                    let (mom, gavg) = (opt_buf(mom).filter(|_| use_mom), opt_buf(gavg).filter(|_| centered));
                    update::<f32>(&p.tensor, g, buf(sq), mom, gavg, &c)?
                }
                DType::F64 => {
                    let (mom, gavg) = (opt_buf(mom).filter(|_| use_mom), opt_buf(gavg).filter(|_| centered));
                    update::<f64>(&p.tensor, g, buf(sq), mom, gavg, &c)?
                }
            }
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn name(&self) -> &'static str {
        RmsPropConfig::NAME
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.config.lr);
        self.slots.export(&mut st, true);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        let required = [true, self.config.momentum > 0.0, self.config.centered];
        self.slots.import(state, required, true)?;
        self.steps = state.step;
        if let Some(lr) = lr {
            self.config.lr = lr;
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
        let w = steps(RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }), &[1.0]);
        assert!((w - (1.0 - 0.01 / (0.1 + 1e-8))).abs() < 1e-15, "{w}");
        // Two steps: s = 0.0199
        let w = steps(RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.99, eps: 0.0, weight_decay: 0.0, momentum: 0.0, centered: false }), &[1.0, 1.0]);
        assert!((w - (1.0 - 0.1 - 0.01 / 0.0199f64.sqrt())).abs() < 1e-12, "{w}");
    }

    #[test]
    fn centered_subtracts_the_squared_mean() {
        // ḡ = 0.01, s − ḡ² = 0.0099
        let w = steps(RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.99, eps: 0.0, weight_decay: 0.0, momentum: 0.0, centered: true }), &[1.0]);
        assert!((w - (1.0 - 0.01 / 0.0099f64.sqrt())).abs() < 1e-12, "{w}");
    }

    #[test]
    fn momentum_accumulates_scaled_steps() {
        // b1 = 1/0.1 = 10; b2 = 9 + 1/√0.0199
        let w = steps(RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.99, eps: 0.0, weight_decay: 0.0, momentum: 0.9, centered: false }), &[1.0, 1.0]);
        let b2 = 9.0 + 1.0 / 0.0199f64.sqrt();
        assert!((w - (1.0 - 0.1 - 0.01 * b2)).abs() < 1e-12, "{w}");
    }

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        // g = 1 + 0.5·1 = 1.5: s = 0.0225, a = 0.15, step = 0.01
        let w = steps(RmsProp::new(RmsPropConfig { lr: 0.001, alpha: 0.99, eps: 0.0, weight_decay: 0.5, momentum: 0.0, centered: false }), &[1.0]);
        assert!((w - (1.0 - 0.001 * 1.5 / 0.15)).abs() < 1e-12, "{w}");
    }

    #[test]
    fn minimizes_a_quadratic() {
        let w = minimize_quadratic(&mut RmsProp::new(RmsPropConfig { lr: 0.03, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }), 500);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
        let w = minimize_quadratic(&mut RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.9, eps: 1e-8, weight_decay: 0.0, momentum: 0.5, centered: true }), 500);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.99, eps: 1e-8, weight_decay: 0.01, momentum: 0.9, centered: true })));
        check_resume(|| Box::new(RmsProp::new(RmsPropConfig { lr: 0.01, alpha: 0.9, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false })));
    }
}
