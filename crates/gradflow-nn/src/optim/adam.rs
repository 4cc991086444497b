//! Adam and AdamW, following `torch.optim.Adam` and `torch.optim.AdamW`.

use super::{buf, check_header, header, opt_buf, with_param_grad, Optimizer, OptimizerState, Param, Slots};
use gradflow::{DType, Element, GradStore, Result, Tensor};

/// `torch.optim.Adam` / `torch.optim.AdamW`: per-coordinate step sizes from
/// bias-corrected moment estimates, the default choice for most networks.
/// The two differ only in weight decay: Adam adds `weight_decay·p` to the
/// gradient (an L2 penalty, scaled by the adaptive denominator), AdamW shrinks
/// the weights directly, `p ← p·(1 − lr·weight_decay)`, before the Adam step.
///
/// Per element, with `t` this parameter's step count:
/// ```text
/// g ← g + wd·p                     (Adam)    |   p ← p·(1 − lr·wd)   (AdamW)
/// m ← lerp(m, g, 1 − β₁)
/// v ← β₂·v + (1 − β₂)·g²
/// v̂ ← max(v̂, v)                    (amsgrad; v̂ replaces v below)
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
/// The whole update is one pass over the elements. State: `exp_avg`,
/// `exp_avg_sq`, `max_exp_avg_sq` (amsgrad) and `step/<name>` per parameter.
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    decoupled: bool,
    steps: u64,
    slots: Slots<3>,
}

struct Hyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    step: u64,
}

impl Adam {
    /// Adam with coupled (L2) weight decay; torch's defaults are betas
    /// (0.9, 0.999), eps 1e-8, weight decay 0, no amsgrad.
    pub fn new(lr: f64, betas: (f64, f64), eps: f64, weight_decay: f64, amsgrad: bool) -> Adam {
        Adam {
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            decoupled: false,
            steps: 0,
            slots: Slots::new(["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
        }
    }

    /// AdamW: decoupled weight decay; torch's default weight decay is 0.01.
    pub fn adamw(lr: f64, betas: (f64, f64), eps: f64, weight_decay: f64, amsgrad: bool) -> Adam {
        Adam {
            decoupled: true,
            ..Adam::new(lr, betas, eps, weight_decay, amsgrad)
        }
    }
}

/// How weight decay enters the update (chosen once per parameter, outside the element loop).
const DECAY_NONE: u8 = 0;
const DECAY_COUPLED: u8 = 1;
const DECAY_DECOUPLED: u8 = 2;

/// Per-element constants of one parameter's update.
#[derive(Clone, Copy)]
struct Consts<T> {
    neg_step_size: T,
    /// 1/√(1 − β₂ᵗ): multiplying by it saves one of the three divisions and square
    /// roots per element that bound the update's speed (a difference of at most one
    /// rounding in the denominator from PyTorch's division).
    inv_bc2_sqrt: T,
    eps: T,
    w1: T,
    beta2: T,
    w2: T,
    wd: T,
    shrink: T,
}

/// One parameter's elements `p`, `g`, `m`, `v` (and `vmax`), all the same length.
/// The mode is a const parameter so that each loop is branch-free and vectorizes;
/// the arithmetic is exactly the per-element rule in the type's documentation.
#[inline(always)]
fn update_range<T: Element, const DECAY: u8, const AMSGRAD: bool, const LERP_LOW: bool>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    vmax: &mut [T],
    k: Consts<T>,
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let vmax = if AMSGRAD { &mut vmax[..n] } else { &mut vmax[..0] };
    for i in 0..n {
        let mut pi = p[i];
        let mut gi = g[i];
        if DECAY == DECAY_DECOUPLED {
            pi *= k.shrink;
        } else if DECAY == DECAY_COUPLED {
            gi += k.wd * pi;
        }
        // lerp(m, g, w1) with torch's branch, resolved outside the loop.
        let mi = if LERP_LOW {
            m[i] + k.w1 * (gi - m[i])
        } else {
            gi - (gi - m[i]) * (T::one() - k.w1)
        };
        let vi = v[i] * k.beta2 + k.w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        let second = if AMSGRAD {
            // torch.maximum: NaN wins.
            let mx = if vi > vmax[i] || vi.is_nan() { vi } else { vmax[i] };
            vmax[i] = mx;
            mx
        } else {
            vi
        };
        let denom = second.sqrt() * k.inv_bc2_sqrt + k.eps;
        p[i] = pi + k.neg_step_size * mi / denom;
    }
}

struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Below this many elements a parameter is updated on the calling thread.
const PAR_MIN_CHUNK: usize = 1 << 14;

fn update_all<T: Element, const DECAY: u8, const AMSGRAD: bool, const LERP_LOW: bool>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    vmax: &mut [T],
    k: Consts<T>,
) {
    let n = p.len();
    assert!(g.len() >= n && m.len() >= n && v.len() >= n && (!AMSGRAD || vmax.len() >= n));
    let (pp, mp, vp, xp) = (
        SendPtr(p.as_mut_ptr()),
        SendPtr(m.as_mut_ptr()),
        SendPtr(v.as_mut_ptr()),
        SendPtr(vmax.as_mut_ptr()),
    );
    let (pp, mp, vp, xp) = (&pp, &mp, &vp, &xp);
    gradflow::kernels::for_each_range(n, PAR_MIN_CHUNK, |r| {
        let len = r.len();
        // SAFETY: the ranges are disjoint and inside buffers of at least n elements
        // (vmax only when AMSGRAD), all borrowed mutably for the duration of this call.
        let (p, m, v, x) = unsafe {
            (
                std::slice::from_raw_parts_mut(pp.0.add(r.start), len),
                std::slice::from_raw_parts_mut(mp.0.add(r.start), len),
                std::slice::from_raw_parts_mut(vp.0.add(r.start), len),
                if AMSGRAD {
                    std::slice::from_raw_parts_mut(xp.0.add(r.start), len)
                } else {
                    &mut [][..]
                },
            )
        };
        update_range_dispatch::<T, DECAY, AMSGRAD, LERP_LOW>(p, &g[r], m, v, x, k);
    });
}

/// The element loop, compiled a second time for AVX-512 and picked at run time
/// (the arithmetic is the same IEEE operations in the same order either way).
fn update_range_dispatch<T: Element, const DECAY: u8, const AMSGRAD: bool, const LERP_LOW: bool>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    vmax: &mut [T],
    k: Consts<T>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide<T: Element, const DECAY: u8, const AMSGRAD: bool, const LERP_LOW: bool>(
            p: &mut [T],
            g: &[T],
            m: &mut [T],
            v: &mut [T],
            vmax: &mut [T],
            k: Consts<T>,
        ) {
            update_range::<T, DECAY, AMSGRAD, LERP_LOW>(p, g, m, v, vmax, k)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F.
            return unsafe { wide::<T, DECAY, AMSGRAD, LERP_LOW>(p, g, m, v, vmax, k) };
        }
    }
    update_range::<T, DECAY, AMSGRAD, LERP_LOW>(p, g, m, v, vmax, k)
}

fn update<T: Element>(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [T],
    v: &mut [T],
    vmax: Option<&mut [T]>,
    h: &Hyper,
) -> Result<()> {
    let t = h.step as f64;
    let bias_correction1 = 1.0 - h.beta1.powf(t);
    let bias_correction2 = 1.0 - h.beta2.powf(t);
    let w1 = T::of(1.0 - h.beta1);
    let k = Consts {
        neg_step_size: T::of(-(h.lr / bias_correction1)),
        inv_bc2_sqrt: T::of(1.0 / bias_correction2.sqrt()),
        eps: T::of(h.eps),
        w1,
        beta2: T::of(h.beta2),
        w2: T::of(1.0 - h.beta2),
        wd: T::of(h.weight_decay),
        shrink: T::of(1.0 - h.lr * h.weight_decay),
    };
    let decay = if h.decoupled {
        DECAY_DECOUPLED
    } else if h.weight_decay != 0.0 {
        DECAY_COUPLED
    } else {
        DECAY_NONE
    };
    let lerp_low = w1.abs() < T::of(0.5);
    let amsgrad = vmax.is_some();
    let mut none: [T; 0] = [];
    let vmax = vmax.unwrap_or(&mut none);
    with_param_grad::<T>(param, grad, |p, g| {
        macro_rules! go {
            ($($d:ident, $a:literal, $l:literal);*) => {
                match (decay, amsgrad, lerp_low) {
                    $(($d, $a, $l) => update_all::<T, $d, $a, $l>(p, g, m, v, vmax, k),)*
                    _ => unreachable!("decay mode"),
                }
            };
        }
        go!(DECAY_NONE, false, true; DECAY_NONE, false, false; DECAY_NONE, true, true; DECAY_NONE, true, false;
            DECAY_COUPLED, false, true; DECAY_COUPLED, false, false; DECAY_COUPLED, true, true; DECAY_COUPLED, true, false;
            DECAY_DECOUPLED, false, true; DECAY_DECOUPLED, false, false; DECAY_DECOUPLED, true, true;
            DECAY_DECOUPLED, true, false)
    })
}

impl Optimizer for Adam {
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        let work = self.slots.prepare(params, grads)?;
        self.steps += 1;
        let init = [Some(0.0), Some(0.0), self.amsgrad.then_some(0.0)];
        for (p, g) in work {
            let e = self.slots.entry(p, init);
            e.step += 1;
            let h = Hyper {
                lr: self.lr,
                beta1: self.betas.0,
                beta2: self.betas.1,
                eps: self.eps,
                weight_decay: self.weight_decay,
                decoupled: self.decoupled,
                step: e.step,
            };
            let [m, v, vmax] = &mut e.bufs;
            // A loaded amsgrad maximum is kept but ignored when amsgrad is off, as torch does.
            let amsgrad = self.amsgrad;
            match p.tensor.dtype() {
                DType::F32 => update::<f32>(&p.tensor, g, buf(m), buf(v), opt_buf(vmax).filter(|_| amsgrad), &h)?,
                DType::F64 => update::<f64>(&p.tensor, g, buf(m), buf(v), opt_buf(vmax).filter(|_| amsgrad), &h)?,
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
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }

    fn state(&self) -> OptimizerState {
        let mut st = header(self.name(), self.steps, self.lr);
        self.slots.export(&mut st, true);
        st
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let lr = check_header(state, self.name())?;
        self.slots.import(state, [true, true, self.amsgrad], true)?;
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

    #[test]
    fn first_step_moves_each_weight_by_lr_times_sign() {
        // m̂ = g, v̂ = g² after bias correction, so the step is lr·g/|g|.
        let mut opt = Adam::new(0.1, (0.9, 0.999), 0.0, 0.0, false);
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
        let mut opt = Adam::new(0.01, (0.9, 0.999), 1e-8, 0.0, false);
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
        let adam = run(Adam::new(0.1, (0.9, 0.999), 0.0, 0.5, false));
        let adamw = run(Adam::adamw(0.1, (0.9, 0.999), 0.0, 0.5, false));
        assert!((adam - 1.9).abs() < 1e-12, "{adam}");
        assert!((adamw - 1.8).abs() < 1e-12, "{adamw}");
        // A gradient of the opposite sign to the decay: Adam's L2 term flips the step.
        let run_neg = |mut opt: Adam| {
            let p = param::<f64>("w", &[2.0]);
            opt.step(std::slice::from_ref(&p), &grads_for(&p, &[-0.5])).unwrap();
            vals(&p)[0]
        };
        // Adam: g' = −0.5 + 1 = 0.5 > 0 → w = 1.9. AdamW: 1.9 + 0.1 = 2.0.
        assert!((run_neg(Adam::new(0.1, (0.9, 0.999), 0.0, 0.5, false)) - 1.9).abs() < 1e-12);
        assert!((run_neg(Adam::adamw(0.1, (0.9, 0.999), 0.0, 0.5, false)) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn amsgrad_keeps_the_largest_second_moment() {
        // g = 10 then 0: v = 0.1 then 0.0999, v̂ stays 0.1.
        let mut opt = Adam::new(0.1, (0.9, 0.999), 0.0, 0.0, true);
        let p = param::<f64>("w", &[0.0]);
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[10.0])).unwrap();
        opt.step(std::slice::from_ref(&p), &grads_for(&p, &[0.0])).unwrap();
        let st = opt.state();
        assert_close(&st.buffers["max_exp_avg_sq/w"].to_vec_f64(), &[0.1], 1e-15);
        assert_close(&st.buffers["exp_avg_sq/w"].to_vec_f64(), &[0.0999], 1e-15);
        // step 2: m = 0.9, step = 0.1/0.19 · 0.9 / (√0.1/√(1−0.999²))
        let step2 = 0.1 / 0.19 * 0.9 / (0.1f64.sqrt() / (1.0 - 0.999f64 * 0.999).sqrt());
        assert_close(&vals(&p), &[-0.1 - step2], 1e-12);
        assert!(!Adam::new(0.1, (0.9, 0.999), 0.0, 0.0, false)
            .state()
            .buffers
            .contains_key("max_exp_avg_sq/w"));
    }

    #[test]
    fn f32_matches_f64_closely() {
        let mut a = Adam::new(0.01, (0.9, 0.999), 1e-8, 0.0, false);
        let mut b = Adam::new(0.01, (0.9, 0.999), 1e-8, 0.0, false);
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
        let mut opt = Adam::new(0.1, (0.9, 0.999), 1e-8, 0.0, false);
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
        let w = minimize_quadratic(&mut Adam::new(0.1, (0.9, 0.999), 1e-8, 0.0, false), 300);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
        let w = minimize_quadratic(&mut Adam::adamw(0.1, (0.9, 0.999), 1e-8, 1e-4, true), 300);
        assert!(w.iter().all(|x| (x - 3.0).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn resumes_exactly() {
        check_resume(|| Box::new(Adam::new(0.05, (0.9, 0.999), 1e-8, 0.01, false)));
        check_resume(|| Box::new(Adam::adamw(0.05, (0.8, 0.99), 1e-8, 0.01, true)));
    }
}
