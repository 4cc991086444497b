//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and
//! coupled weight decay, following `torch.optim.SGD`.

use super::{
    buf, check_header, header, non_negative, with_param_grad, Optimizer, OptimizerConfig, OptimizerState, Param, Slots,
};
use gradflow::{DType, Element, GradStore, Result, Tensor};
use serde::{Deserialize, Serialize};

/// `torch.optim.SGD`'s hyperparameters, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate (torch default 1e-3).
    pub lr: f64,
    /// Momentum factor; 0 disables the momentum buffer.
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer.
    pub dampening: f64,
    /// Use Nesterov momentum (needs momentum > 0 and dampening = 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (coupled weight decay).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl OptimizerConfig for SgdConfig {
    const NAME: &'static str = "sgd";
    const TORCH_NAME: &'static str = "SGD";
    const DESCRIPTION: &'static str = "Stochastic gradient descent, optionally with (Nesterov) momentum";
    fn lr(&self) -> f64 {
        self.lr
    }
    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }
    fn validate(&self) -> crate::Result<()> {
        non_negative("momentum value", self.momentum)?;
        if !self.dampening.is_finite() {
            return Err(crate::Error::Hyperparameter(format!(
                "invalid dampening: {} (must be finite)",
                self.dampening
            )));
        }
        non_negative("weight_decay value", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(crate::Error::Hyperparameter(
                "Nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        Ok(())
    }
    fn build(&self) -> Box<dyn Optimizer> {
        Box::new(Sgd::new(*self))
    }
}

/// `torch.optim.SGD`: the baseline every other optimizer is measured against,
/// and with momentum still the usual choice for convolutional networks.
///
/// Per element, with `g` the gradient (PyTorch's documentation):
/// ```text
/// g ← g + weight_decay·p
/// if momentum ≠ 0:
///     b ← g                                   on the first step
///     b ← momentum·b + (1 − dampening)·g      afterwards
///     g ← g + momentum·b   (nesterov)   or   g ← b
/// p ← p − lr·g
/// ```
/// State: `momentum_buffer/<name>` when momentum ≠ 0; no step counts.
pub struct Sgd {
    config: SgdConfig,
    steps: u64,
    slots: Slots<1>,
}

impl Sgd {
    /// An SGD optimizer at step 0. Hyperparameters are not checked here: see
    /// [`OptimizerSpec::validate`](super::OptimizerSpec::validate).
    pub fn new(config: SgdConfig) -> Sgd {
        Sgd {
            config,
            steps: 0,
            slots: Slots::new(["momentum_buffer"]),
        }
    }
}

/// The rule above, one pass over the elements; `momentum_buf` holds the buffer and
/// whether this is its first step.
fn update<T: Element>(
    param: &Tensor,
    grad: &Tensor,
    momentum_buf: Option<(&mut [T], bool)>,
    c: &SgdConfig,
) -> Result<()> {
    let lr = T::of(c.lr);
    let weight_decay = T::of(c.weight_decay);
    let decay = c.weight_decay != 0.0;
    let momentum = T::of(c.momentum);
    let keep = T::of(1.0 - c.dampening);
    with_param_grad::<T>(param, grad, |p, g| {
        let g = &g[..p.len()];
        match momentum_buf {
            None => {
                for (p, &g) in p.iter_mut().zip(g) {
                    let g = if decay { g + weight_decay * *p } else { g };
                    *p -= lr * g;
                }
            }
            Some((b, first)) => {
                let b = &mut b[..p.len()];
                for ((p, &g), b) in p.iter_mut().zip(g).zip(b) {
                    let mut g = if decay { g + weight_decay * *p } else { g };
                    *b = if first { g } else { *b * momentum + keep * g };
                    g = if c.nesterov { g + momentum * *b } else { *b };
                    *p -= lr * g;
                }
            }
        }
    })
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        let c = self.config;
        for (p, g) in work {
            if c.momentum == 0.0 {
                match p.tensor.dtype() {
                    DType::F32 => update::<f32>(&p.tensor, g, None, &c)?,
                    DType::F64 => update::<f64>(&p.tensor, g, None, &c)?,
                }
                continue;
            }
            // torch: the buffer starts as a copy of the first (decayed) gradient.
            let first = !self.slots.has(&p.name, 0);
            let e = self.slots.entry(p, [Some(0.0)]);
            e.step += 1;
            let [b] = &mut e.bufs;
            match p.tensor.dtype() {
                DType::F32 => update::<f32>(&p.tensor, g, Some((buf(b), first)), &c)?,
                DType::F64 => update::<f64>(&p.tensor, g, Some((buf(b), first)), &c)?,
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
        SgdConfig::NAME
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.config.lr);
        self.slots.export(&mut st, false);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        self.slots.import(state, [false], false)?;
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

    fn run(opt: &mut Sgd, w0: f64, g: f64, steps: usize) -> Vec<f64> {
        let p = param::<f64>("w", &[w0]);
        let mut out = vec![];
        for _ in 0..steps {
            opt.step(std::slice::from_ref(&p), &grads_for(&p, &[g])).unwrap();
            out.push(vals(&p)[0]);
        }
        out
    }

    #[test]
    fn plain_sgd_step() {
        let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 });
        assert_close(&run(&mut opt, 1.0, 2.0, 2), &[0.8, 0.6], 1e-15);
        assert!(opt.state().buffers.is_empty());
    }

    #[test]
    fn momentum_with_constant_gradient() {
        // buf: 1, 1.9, 2.71 → w: 1 − 0.1, − 0.19, − 0.271
        let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 });
        assert_close(&run(&mut opt, 1.0, 1.0, 3), &[0.9, 0.71, 0.439], 1e-12);
        assert_close(&opt.state().buffers["momentum_buffer/w"].to_vec_f64(), &[2.71], 1e-12);
    }

    #[test]
    fn nesterov_looks_ahead() {
        // buf: 1, 1.9, 2.71; step = g + 0.9·buf: 1.9, 2.71, 3.439
        let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.0 });
        assert_close(&run(&mut opt, 1.0, 1.0, 3), &[0.81, 0.539, 0.1951], 1e-12);
    }

    #[test]
    fn dampening_does_not_touch_the_first_step() {
        // buf: 1 (a copy), then 0.9·1 + 0.5·1 = 1.4
        let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.5, nesterov: false, weight_decay: 0.0 });
        assert_close(&run(&mut opt, 1.0, 1.0, 2), &[0.9, 0.76], 1e-12);
    }

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        // g = 1 + 0.5·2 = 2 → w = 2 − 0.2; buffer holds the decayed gradient.
        let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.5 });
        assert_close(&run(&mut opt, 2.0, 1.0, 1), &[1.8], 1e-12);
        assert_close(&opt.state().buffers["momentum_buffer/w"].to_vec_f64(), &[2.0], 1e-12);
    }

    #[test]
    fn params_without_grad_are_skipped() {
        let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 });
        let a = param::<f32>("a", &[1.0]);
        let b = param::<f32>("b", &[1.0]);
        opt.step(&[a.clone(), b.clone()], &grads_for(&a, &[1.0f32])).unwrap();
        assert_eq!(vals(&b), vec![1.0]);
        assert!(!opt.state().buffers.contains_key("momentum_buffer/b"));
    }

    #[test]
    fn minimizes_a_quadratic() {
        let w = minimize_quadratic(&mut Sgd::new(SgdConfig { lr: 0.05, momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.0 }), 200);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: false, weight_decay: 0.01 })));
        check_resume(|| Box::new(Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.0 })));
    }
}
