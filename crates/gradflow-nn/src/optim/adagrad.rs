//! Adagrad, following `torch.optim.Adagrad`.

use super::{buf, check_header, header, with_param_grad, Optimizer, OptimizerState, Param, Slots};
use gradflow::{DType, Element, GradStore, Result, Tensor};

/// `torch.optim.Adagrad`: each coordinate's step shrinks with the sum of its
/// squared gradients, so rarely-updated features (sparse inputs, embeddings)
/// keep large steps.
///
/// Per element, with `t` this parameter's step count:
/// ```text
/// g ← g + wd·p
/// clr = lr / (1 + (t − 1)·lr_decay)
/// s ← s + g²                       (s starts at initial_accumulator_value)
/// p ← p − clr·g / (√s + eps)
/// ```
/// State: `sum` and `step/<name>` per parameter.
pub struct Adagrad {
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    initial_accumulator_value: f64,
    eps: f64,
    steps: u64,
    slots: Slots<1>,
}

impl Adagrad {
    /// Adagrad; torch's defaults are lr_decay 0, weight decay 0, initial
    /// accumulator 0, eps 1e-10.
    pub fn new(lr: f64, lr_decay: f64, weight_decay: f64, initial_accumulator_value: f64, eps: f64) -> Adagrad {
        Adagrad {
            lr,
            lr_decay,
            weight_decay,
            initial_accumulator_value,
            eps,
            steps: 0,
            slots: Slots::new(["sum"]),
        }
    }
}

fn update<T: Element>(param: &Tensor, grad: &Tensor, sum: &mut [T], neg_clr: f64, wd: f64, eps: f64) -> Result<()> {
    let decay = wd != 0.0;
    let (neg_clr, wd, eps) = (T::of(neg_clr), T::of(wd), T::of(eps));
    with_param_grad::<T>(param, grad, |p, g| {
        let n = p.len();
        let (g, sum) = (&g[..n], &mut sum[..n]);
        for i in 0..n {
            let gi = if decay { g[i] + wd * p[i] } else { g[i] };
            let s = sum[i] + gi * gi;
            sum[i] = s;
            p[i] += neg_clr * gi / (s.sqrt() + eps);
        }
    })
}

impl Optimizer for Adagrad {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        for (p, g) in work {
            let e = self.slots.entry(p, [Some(self.initial_accumulator_value)]);
            e.step += 1;
            let neg_clr = -(self.lr / (1.0 + (e.step - 1) as f64 * self.lr_decay));
            let [sum] = &mut e.bufs;
            match p.tensor.dtype() {
                DType::F32 => update::<f32>(&p.tensor, g, buf(sum), neg_clr, self.weight_decay, self.eps)?,
                DType::F64 => update::<f64>(&p.tensor, g, buf(sum), neg_clr, self.weight_decay, self.eps)?,
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
        "adagrad"
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.lr);
        self.slots.export(&mut st, true);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        self.slots.import(state, [true], true)?;
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
        let w = steps(Adagrad::new(0.1, 0.0, 0.0, 0.0, 0.0), &[2.0]);
        assert!((w - 0.9).abs() < 1e-15, "{w}");
        let w = steps(Adagrad::new(0.1, 0.0, 0.0, 0.0, 0.0), &[2.0, 2.0]);
        assert!((w - (0.9 - 0.2 / 8f64.sqrt())).abs() < 1e-15, "{w}");
    }

    #[test]
    fn lr_decay_and_initial_accumulator() {
        // step 1: s = 1 + 1 = 2, clr = 0.1 → −0.1/√2; step 2: s = 3, clr = 0.1/1.5
        let w = steps(Adagrad::new(0.1, 0.5, 0.0, 1.0, 0.0), &[1.0, 1.0]);
        let expected = 1.0 - 0.1 / 2f64.sqrt() - (0.1 / 1.5) / 3f64.sqrt();
        assert!((w - expected).abs() < 1e-15, "{w}");
    }

    #[test]
    fn weight_decay_and_eps() {
        // g = 1 + 1·1 = 2: s = 4, step = 0.1·2/(2 + 0.5)
        let w = steps(Adagrad::new(0.1, 0.0, 1.0, 0.0, 0.5), &[1.0]);
        assert!((w - (1.0 - 0.08)).abs() < 1e-15, "{w}");
    }

    #[test]
    fn minimizes_a_quadratic() {
        let w = minimize_quadratic(&mut Adagrad::new(0.5, 0.0, 0.0, 0.0, 1e-10), 300);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(Adagrad::new(0.1, 0.01, 0.01, 0.1, 1e-10)));
    }
}
