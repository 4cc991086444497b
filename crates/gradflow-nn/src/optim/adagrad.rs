//! Adagrad, following `torch.optim.Adagrad`.

use super::{
    buf, check_header, header, non_negative, with_param_grad, Optimizer, OptimizerConfig, OptimizerState, Param, Slots,
};
use gradflow::{DType, Element, GradStore, Result, Tensor};
use serde::{Deserialize, Serialize};

/// `torch.optim.Adagrad`'s hyperparameters, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdagradConfig {
    /// Learning rate (torch default 1e-2).
    pub lr: f64,
    /// The lr is divided by `1 + (step − 1)·lr_decay`.
    pub lr_decay: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum.
    pub initial_accumulator_value: f64,
    /// Added to the denominator for numerical stability (torch default 1e-10).
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }
}

impl OptimizerConfig for AdagradConfig {
    const NAME: &'static str = "adagrad";
    const TORCH_NAME: &'static str = "Adagrad";
    const DESCRIPTION: &'static str = "Per-coordinate steps shrinking with the accumulated squared gradient";
    fn lr(&self) -> f64 {
        self.lr
    }
    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }
    fn validate(&self) -> crate::Result<()> {
        non_negative("lr_decay value", self.lr_decay)?;
        non_negative("weight_decay value", self.weight_decay)?;
        non_negative("initial_accumulator_value", self.initial_accumulator_value)?;
        non_negative("epsilon value", self.eps)
    }
    fn build(&self) -> Box<dyn Optimizer> {
        Box::new(Adagrad::new(*self))
    }
}

/// `torch.optim.Adagrad`: each coordinate's step shrinks with the sum of its
/// squared gradients, so rarely-updated features (sparse inputs, embeddings)
/// keep large steps.
///
/// Per element, with `t` this parameter's step count (PyTorch's documentation):
/// ```text
/// g ← g + weight_decay·p
/// clr = lr / (1 + (t − 1)·lr_decay)
/// s ← s + g²                       (s starts at initial_accumulator_value)
/// p ← p − clr·g / (√s + eps)
/// ```
/// State: `sum` and `step/<name>` per parameter.
pub struct Adagrad {
    config: AdagradConfig,
    steps: u64,
    slots: Slots<1>,
}

impl Adagrad {
    /// Adagrad at step 0.
    pub fn new(config: AdagradConfig) -> Adagrad {
        Adagrad {
            config,
            steps: 0,
            slots: Slots::new(["sum"]),
        }
    }
}

/// The rule above for one parameter, whose decayed lr is `clr`.
fn update<T: Element>(param: &Tensor, grad: &Tensor, sum: &mut [T], clr: f64, c: &AdagradConfig) -> Result<()> {
    let decay = c.weight_decay != 0.0;
    let (neg_clr, weight_decay, eps) = (T::of(-clr), T::of(c.weight_decay), T::of(c.eps));
    with_param_grad::<T>(param, grad, |p, g| {
        let n = p.len();
        let (g, sum) = (&g[..n], &mut sum[..n]);
        for i in 0..n {
            let g = if decay { g[i] + weight_decay * p[i] } else { g[i] };
            let s = sum[i] + g * g;
            sum[i] = s;
            p[i] += neg_clr * g / (s.sqrt() + eps);
        }
    })
}

impl Optimizer for Adagrad {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        let c = self.config;
        for (p, g) in work {
            let e = self.slots.entry(p, [Some(c.initial_accumulator_value)]);
            e.step += 1;
            let clr = c.lr / (1.0 + (e.step - 1) as f64 * c.lr_decay);
            let [sum] = &mut e.bufs;
            match p.tensor.dtype() {
                DType::F32 => update::<f32>(&p.tensor, g, buf(sum), clr, &c)?,
                DType::F64 => update::<f64>(&p.tensor, g, buf(sum), clr, &c)?,
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
        AdagradConfig::NAME
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.config.lr);
        self.slots.export(&mut st, true);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        self.slots.import(state, [true], true)?;
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

    fn steps(mut opt: Adagrad, gs: &[f64]) -> f64 {
        let p = param::<f64>("w", &[1.0]);
        for &g in gs {
            opt.step(std::slice::from_ref(&p), &grads_for(&p, &[g])).unwrap();
        }
        vals(&p)[0]
    }

    #[test]
    fn steps_by_hand() {
        // s = 4 → w = 1 − 0.1·2/2 = 0.9; then s = 8 → − 0.1·2/√8
        let w = steps(Adagrad::new(AdagradConfig { lr: 0.1, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 0.0 }), &[2.0]);
        assert!((w - 0.9).abs() < 1e-15, "{w}");
        let w = steps(Adagrad::new(AdagradConfig { lr: 0.1, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 0.0 }), &[2.0, 2.0]);
        assert!((w - (0.9 - 0.2 / 8f64.sqrt())).abs() < 1e-15, "{w}");
    }

    #[test]
    fn lr_decay_and_initial_accumulator() {
        // step 1: s = 1 + 1 = 2, clr = 0.1 → −0.1/√2; step 2: s = 3, clr = 0.1/1.5
        let w = steps(Adagrad::new(AdagradConfig { lr: 0.1, lr_decay: 0.5, weight_decay: 0.0, initial_accumulator_value: 1.0, eps: 0.0 }), &[1.0, 1.0]);
        let expected = 1.0 - 0.1 / 2f64.sqrt() - (0.1 / 1.5) / 3f64.sqrt();
        assert!((w - expected).abs() < 1e-15, "{w}");
    }

    #[test]
    fn weight_decay_and_eps() {
        // g = 1 + 1·1 = 2: s = 4, step = 0.1·2/(2 + 0.5)
        let w = steps(Adagrad::new(AdagradConfig { lr: 0.1, lr_decay: 0.0, weight_decay: 1.0, initial_accumulator_value: 0.0, eps: 0.5 }), &[1.0]);
        assert!((w - (1.0 - 0.08)).abs() < 1e-15, "{w}");
    }

    #[test]
    fn minimizes_a_quadratic() {
        let w = minimize_quadratic(&mut Adagrad::new(AdagradConfig { lr: 0.5, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10 }), 300);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(Adagrad::new(AdagradConfig { lr: 0.1, lr_decay: 0.01, weight_decay: 0.01, initial_accumulator_value: 0.1, eps: 1e-10 })));
    }
}
