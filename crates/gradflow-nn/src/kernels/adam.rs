//! The tuned Adam/AdamW update: one pass over each parameter, the element
//! loop compiled branch-free for each mode (weight decay, amsgrad, torch's
//! lerp branch) and a second time for AVX-512, split across threads for large
//! parameters. `optim/adam.rs` holds the same rule in PyTorch's plain form and
//! tests this kernel against it.

use crate::optim::AdamConfig;
use gradflow::{Element, Result, Tensor};

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
/// the arithmetic is the per-element rule of [`Adam`](crate::optim::Adam).
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

/// One Adam step of parameter `param` (whose `step`-th this is) in place: the
/// rule of [`Adam`](crate::optim::Adam), tuned. `vmax` is given with amsgrad.
#[allow(clippy::too_many_arguments)]
pub(crate) fn update<T: Element>(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [T],
    v: &mut [T],
    vmax: Option<&mut [T]>,
    c: &AdamConfig,
    decoupled: bool,
    step: u64,
) -> Result<()> {
    let t = step as f64;
    let (beta1, beta2) = c.betas;
    let bias_correction1 = 1.0 - beta1.powf(t);
    let bias_correction2 = 1.0 - beta2.powf(t);
    let w1 = T::of(1.0 - beta1);
    let k = Consts {
        neg_step_size: T::of(-(c.lr / bias_correction1)),
        inv_bc2_sqrt: T::of(1.0 / bias_correction2.sqrt()),
        eps: T::of(c.eps),
        w1,
        beta2: T::of(beta2),
        w2: T::of(1.0 - beta2),
        wd: T::of(c.weight_decay),
        shrink: T::of(1.0 - c.lr * c.weight_decay),
    };
    let decay = if decoupled {
        DECAY_DECOUPLED
    } else if c.weight_decay != 0.0 {
        DECAY_COUPLED
    } else {
        DECAY_NONE
    };
    let lerp_low = w1.abs() < T::of(0.5);
    let amsgrad = vmax.is_some();
    let mut none: [T; 0] = [];
    let vmax = vmax.unwrap_or(&mut none);
    crate::optim::with_param_grad::<T>(param, grad, |p, g| {
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
