//! Adam, following `torch.optim.Adam`; AdamW (`adamw.rs`) runs the same rule
//! with decoupled weight decay.

use super::{
    buf, check_header, header, non_negative, opt_buf, Optimizer, OptimizerConfig, OptimizerState, Param, Slots,
};
use crate::kernels;
use gradflow::{DType, GradStore, Result};
use serde::{Deserialize, Serialize};

/// `torch.optim.Adam`'s hyperparameters, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (torch default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// L2 penalty added to the gradient (coupled).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

/// The checks `torch.optim.Adam` and `AdamW` share.
pub(crate) fn validate_adam(c: &AdamConfig) -> crate::Result<()> {
    non_negative("epsilon value", c.eps)?;
    for (i, beta) in [c.betas.0, c.betas.1].into_iter().enumerate() {
        if !(0.0..1.0).contains(&beta) {
            return Err(crate::Error::Hyperparameter(format!(
                "invalid beta parameter at index {i}: {beta} (must be in [0, 1))"
            )));
        }
    }
    non_negative("weight_decay value", c.weight_decay)
}

impl OptimizerConfig for AdamConfig {
    const NAME: &'static str = "adam";
    const TORCH_NAME: &'static str = "Adam";
    const DESCRIPTION: &'static str = "Per-coordinate steps from bias-corrected moment estimates";
    fn lr(&self) -> f64 {
        self.lr
    }
    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }
    fn validate(&self) -> crate::Result<()> {
        validate_adam(self)
    }
    fn build(&self) -> Box<dyn Optimizer> {
        Box::new(Adam::new(*self))
    }
}

/// `torch.optim.Adam` / `torch.optim.AdamW`: per-coordinate step sizes from
/// bias-corrected moment estimates, the default choice for most networks.
/// The two differ only in weight decay: Adam adds `weight_decay·p` to the
/// gradient (an L2 penalty, scaled by the adaptive denominator), AdamW shrinks
/// the weights directly, `p ← p·(1 − lr·weight_decay)`, before the Adam step.
///
/// Per element, with `t` this parameter's step count (PyTorch's documentation;
/// `plain_update` in this file is this rule, line by line):
/// ```text
/// g ← g + weight_decay·p                  (Adam)  |  p ← p·(1 − lr·weight_decay)  (AdamW)
/// m ← lerp(m, g, 1 − β₁)
/// v ← β₂·v + (1 − β₂)·g²
/// v̂ ← max(v̂, v)                           (amsgrad; v̂ replaces v below)
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
/// The optimizer runs the tuned kernel (`kernels/adam.rs`), which does the
/// same in one vectorized pass. State: `exp_avg`, `exp_avg_sq`,
/// `max_exp_avg_sq` (amsgrad) and `step/<name>` per parameter.
pub struct Adam {
    config: AdamConfig,
    decoupled: bool,
    steps: u64,
    slots: Slots<3>,
}

impl Adam {
    /// Adam with coupled (L2) weight decay, at step 0.
    pub fn new(config: AdamConfig) -> Adam {
        Adam {
            config,
            decoupled: false,
            steps: 0,
            slots: Slots::new(["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
        }
    }

    /// Adam with decoupled weight decay: AdamW.
    pub fn decoupled(config: AdamConfig) -> Adam {
        Adam {
            decoupled: true,
            ..Adam::new(config)
        }
    }
}

/// The rule above for one parameter's elements, as PyTorch's documentation
/// writes it: the reference the tuned kernel is tested against.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn plain_update<T: gradflow::Element>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    mut v_max: Option<&mut [T]>,
    c: &AdamConfig,
    decoupled: bool,
    t: u64,
) {
    use super::lerp;
    let of = T::of;
    let (beta1, beta2) = c.betas;
    let bias_correction1 = 1.0 - beta1.powf(t as f64);
    let bias_correction2 = 1.0 - beta2.powf(t as f64);
    for i in 0..p.len() {
        let mut g = g[i];
        if decoupled {
            p[i] *= of(1.0 - c.lr * c.weight_decay);
        } else if c.weight_decay != 0.0 {
            g += of(c.weight_decay) * p[i];
        }
        m[i] = lerp(m[i], g, of(1.0 - beta1));
        v[i] = v[i] * of(beta2) + of(1.0 - beta2) * g * g;
        let second = match v_max.as_deref_mut() {
            Some(v_max) => {
                v_max[i] = if v[i] > v_max[i] || v[i].is_nan() { v[i] } else { v_max[i] };
                v_max[i]
            }
            None => v[i],
        };
        let denom = second.sqrt() / of(bias_correction2.sqrt()) + of(c.eps);
        p[i] -= of(c.lr / bias_correction1) * m[i] / denom;
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        let c = self.config;
        let init = [Some(0.0), Some(0.0), c.amsgrad.then_some(0.0)];
        for (p, g) in work {
            let e = self.slots.entry(p, init);
            e.step += 1;
            let step = e.step;
            let [m, v, vmax] = &mut e.bufs;
            // A loaded amsgrad maximum is kept but ignored when amsgrad is off, as torch does.
            let vmax_f32 = |b| opt_buf::<f32>(b).filter(|_| c.amsgrad);
            let vmax_f64 = |b| opt_buf::<f64>(b).filter(|_| c.amsgrad);
            match p.tensor.dtype() {
                DType::F32 => {
                    kernels::adam::update(&p.tensor, g, buf(m), buf(v), vmax_f32(vmax), &c, self.decoupled, step)?
                }
                DType::F64 => {
                    kernels::adam::update(&p.tensor, g, buf(m), buf(v), vmax_f64(vmax), &c, self.decoupled, step)?
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
        if self.decoupled {
            super::AdamWConfig::NAME
        } else {
            AdamConfig::NAME
        }
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.config.lr);
        self.slots.export(&mut st, true);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        self.slots.import(state, [true, true, self.config.amsgrad], true)?;
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

    /// The tuned kernel against the plain rule, over every mode, 3 steps of
    /// 40 000 elements (enough for the threaded, vectorized path).
    #[test]
    fn tuned_kernel_agrees_with_the_plain_rule() {
        use rand::Rng;
        let mut rng = gradflow::seeded_rng(7);
        let n = 40_000;
        for (decoupled, weight_decay, amsgrad, beta1) in [
            (false, 0.0, false, 0.9),
            (false, 0.1, true, 0.9),
            (true, 0.1, false, 0.9),
            (true, 0.01, true, 0.3),
        ] {
            let c = AdamConfig {
                lr: 0.01,
                betas: (beta1, 0.999),
                eps: 1e-8,
                weight_decay,
                amsgrad,
            };
            let p0: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let param = gradflow::Tensor::from_vec(p0.clone(), &[n]).unwrap();
            let mut plain = p0;
            let (mut m, mut v, mut vmax) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            let (mut pm, mut pv, mut pvmax) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            for t in 1..=3 {
                let g: Vec<f64> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let grad = gradflow::Tensor::from_vec(g.clone(), &[n]).unwrap();
                let vm = amsgrad.then_some(&mut vmax[..]);
                kernels::adam::update(&param, &grad, &mut m, &mut v, vm, &c, decoupled, t).unwrap();
                let pvm = amsgrad.then_some(&mut pvmax[..]);
                plain_update(&mut plain, &g, &mut pm, &mut pv, pvm, &c, decoupled, t);
            }
            let tuned = param.to_vec_f64();
            // The kernel multiplies by 1/√(1 − β₂ᵗ) where the plain rule divides:
            // a rounding apart per step, nothing more.
            for (x, y) in [(&tuned, &plain), (&m, &pm), (&v, &pv), (&vmax, &pvmax)] {
                for (a, b) in x.iter().zip(y) {
                    assert!((a - b).abs() <= 1e-13 * b.abs().max(1e-3), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn first_step_moves_each_weight_by_lr_times_sign() {
        // m̂ = g, v̂ = g² after bias correction, so the step is lr·g/|g|.
        let mut opt = Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.0, amsgrad: false });
        let p = param::<f64>("w", &[1.0, 1.0, 1.0]);
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[3.0, -0.02, 1e4]))
            .unwrap();
        assert_close(&vals(&p), &[0.9, 1.1, 0.9], 1e-12);
        let st = opt.state();
        assert_eq!(st.scalars["step/w"], 1.0);
        assert_close(&st.buffers["exp_avg/w"].to_vec_f64(), &[0.3, -0.002, 1e3], 1e-12);
    }

    #[test]
    fn second_step_by_hand() {
        // g = 1 then 2, β = (0.9, 0.999), lr = 0.01, eps = 1e-8
        let mut opt = Adam::new(AdamConfig { lr: 0.01, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false });
        let p = param::<f64>("w", &[0.0]);
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[1.0])).unwrap();
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[2.0])).unwrap();
        let m: f64 = 0.9 * 0.1 + 0.1 * 2.0;
        let v: f64 = 0.999 * 0.001 + 0.001 * 4.0;
        let step2 = 0.01 / (1.0 - 0.81) * m / (v.sqrt() / (1.0 - 0.999f64 * 0.999).sqrt() + 1e-8);
        let expected = -0.01 / (1.0 + 1e-8) - step2;
        assert_close(&vals(&p), &[expected], 1e-12);
    }

    #[test]
    fn adam_and_adamw_decay_differently() {
        // One step, w = 2, g = 1, lr = 0.1, wd = 0.5, eps = 0.
        // Adam: g' = 2 → still a step of exactly lr: w = 1.9.
        // AdamW: w = 2·(1 − 0.05) = 1.9, then − lr·sign(g) → 1.8.
        let run = |mut opt: Adam| {
            let p = param::<f64>("w", &[2.0]);
            opt.step(std::slice::from_ref(&p), &grads_for(&p, &[1.0])).unwrap();
            vals(&p)[0]
        };
        let adam = run(Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.5, amsgrad: false }));
        let adamw = run(Adam::decoupled(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.5, amsgrad: false }));
        assert!((adam - 1.9).abs() < 1e-12, "{adam}");
        assert!((adamw - 1.8).abs() < 1e-12, "{adamw}");
        // A gradient of the opposite sign to the decay: Adam's L2 term flips the step.
        let run_neg = |mut opt: Adam| {
            let p = param::<f64>("w", &[2.0]);
            opt.step(std::slice::from_ref(&p), &grads_for(&p, &[-0.5])).unwrap();
            vals(&p)[0]
        };
        // Adam: g' = −0.5 + 1 = 0.5 > 0 → w = 1.9. AdamW: 1.9 + 0.1 = 2.0.
        assert!((run_neg(Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.5, amsgrad: false })) - 1.9).abs() < 1e-12);
        assert!((run_neg(Adam::decoupled(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.5, amsgrad: false })) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn amsgrad_keeps_the_largest_second_moment() {
        // g = 10 then 0: v = 0.1 then 0.0999, v̂ stays 0.1.
        let mut opt = Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.0, amsgrad: true });
        let p = param::<f64>("w", &[0.0]);
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[10.0])).unwrap();
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[0.0])).unwrap();
        let st = opt.state();
        assert_close(&st.buffers["max_exp_avg_sq/w"].to_vec_f64(), &[0.1], 1e-15);
        assert_close(&st.buffers["exp_avg_sq/w"].to_vec_f64(), &[0.0999], 1e-15);
        // step 2: m = 0.9, step = 0.1/0.19 · 0.9 / (√0.1/√(1−0.999²))
        let step2 = 0.1 / 0.19 * 0.9 / (0.1f64.sqrt() / (1.0 - 0.999f64 * 0.999).sqrt());
        assert_close(&vals(&p), &[-0.1 - step2], 1e-12);
        assert!(!Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 0.0, weight_decay: 0.0, amsgrad: false })
            .state()
            .buffers
            .contains_key("max_exp_avg_sq/w"));
    }

    #[test]
    fn f32_matches_f64_closely() {
        let mut a = Adam::new(AdamConfig { lr: 0.01, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false });
        let mut b = Adam::new(AdamConfig { lr: 0.01, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false });
        let p32 = param::<f32>("w", &[0.5, -0.25]);
        let p64 = param::<f64>("w", &[0.5, -0.25]);
        for _ in 0..3 {
            a.step(std::slice::from_ref(&p32), &grads_for(&p32, &[0.3f32, -1.5]))
                .unwrap();
            b.step(std::slice::from_ref(&p64), &grads_for(&p64, &[0.3f64, -1.5]))
                .unwrap();
        }
        assert_close(&vals(&p32), &vals(&p64), 1e-6);
        assert_eq!(a.state().buffers["exp_avg/w"].dtype(), DType::F32);
    }

    #[test]
    fn per_parameter_steps() {
        let mut opt = Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false });
        let a = param::<f64>("a", &[0.0]);
        let b = param::<f64>("b", &[0.0]);
        opt.step(&[a.clone(), b.clone()], &grads_for(&a, &[1.0])).unwrap();
        let mut gs = grads_for(&a, &[1.0]);
        gs.insert(&b.tensor, gradflow::Tensor::from_vec(vec![1.0f64], &[1]).unwrap());
        opt.step(&[a.clone(), b.clone()], &gs).unwrap();
        let st = opt.state();
        assert_eq!((st.step, st.scalars["step/a"], st.scalars["step/b"]), (2, 2.0, 1.0));
        // b's first step is a full bias-corrected step of lr.
        assert_close(&vals(&b), &[-0.1 / (1.0 + 1e-8)], 1e-12);
    }

    #[test]
    fn minimizes_a_quadratic() {
        let w = minimize_quadratic(&mut Adam::new(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false }), 300);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
        let w = minimize_quadratic(&mut Adam::decoupled(AdamConfig { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-4, amsgrad: true }), 300);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(Adam::new(AdamConfig { lr: 0.05, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.01, amsgrad: false })));
        check_resume(|| Box::new(Adam::decoupled(AdamConfig { lr: 0.05, betas: (0.8, 0.99), eps: 1e-8, weight_decay: 0.01, amsgrad: true })));
    }
}
