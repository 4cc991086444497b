//! Runs a loop compiled for the widest vector unit the CPU has, and reductions
//! written so that they vectorize.
//!
//! The crate is built for the x86-64 baseline (SSE2: four f32 lanes), so that the
//! same binary runs on any x86-64 machine; the element loops of the kernels would
//! stay four lanes wide on machines with AVX2 (eight) or AVX-512 (sixteen).
//! The `wide_fn!` macro compiles a loop once per instruction set and picks the
//! copy at each call by the CPU's own report (a cached load), as PyTorch's kernels
//! pick theirs by CPU capability. Only the instruction set changes: Rust never fuses or
//! reorders floating-point operations, so the results are bit-identical on every
//! path, which the tests below and the kernels' own tests rely on.
//!
//! A closure handed to a `#[target_feature]` function is not compiled with its
//! features unless it is inlined, which LLVM declines for loop-sized closures: the
//! loops are therefore `#[inline(always)]` functions that the macro wraps.

/// The widest instruction set `wide_fn!` copies are compiled for that this CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// AVX-512 F/BW/DQ/VL (with AVX2 and FMA): 16 f32 lanes.
    Avx512,
    /// AVX2 and FMA: 8 f32 lanes.
    Avx2,
    /// The build's own target (SSE2 on x86-64).
    Baseline,
}

/// What this CPU supports, asked once (the standard library caches the answer).
#[inline]
pub fn level() -> Level {
    #[cfg(test)]
    if let Some(forced) = tests::FORCED.with(|f| f.get()) {
        return forced;
    }
    detected()
}

#[inline]
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("avx2") && has!("fma") {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Defines `fn $name<T: Element>(args) -> R` that runs the `#[inline(always)]`
/// function `$body` compiled for [`level`]'s instruction set: the body is inlined
/// into one copy per level, each compiled with that level's target features.
/// Closures passed in as arguments are inlined too when small (element rules are).
macro_rules! wide_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$t:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name<$t: $crate::Element>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512<$t: $crate::Element>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$t: $crate::Element>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::kernels::simd::level() {
                    // SAFETY: the CPU has every feature the copy was compiled for.
                    $crate::kernels::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::simd::Level::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;

use crate::Element;

/// Independent partial results in a reduction: a chain of dependent adds runs one
/// add per four cycles, eight chains fill the vector unit.
const LANES: usize = 8;

/// Σ x, summed in `LANES` interleaved partial sums (so it vectorizes) then added in order.
#[inline(always)]
pub fn sum<T: Element>(x: &[T]) -> T {
    lanes(x, T::zero(), |a, b| a + b)
        .into_iter()
        .fold(T::zero(), |a, b| a + b)
}

/// Σ aᵢbᵢ, in the same order as [`sum`].
#[inline(always)]
pub fn dot<T: Element>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += a[j] * b[j];
        }
    }
    for (j, (&a, &b)) in ra.iter().zip(rb).enumerate() {
        acc[j] += a * b;
    }
    acc.into_iter().fold(T::zero(), |a, b| a + b)
}

/// The largest element (−∞ for none); a NaN is skipped here, and callers' NaN inputs
/// still end as NaN in what they compute from them.
#[inline(always)]
pub fn max<T: Element>(x: &[T]) -> T {
    let pick = |a: T, b: T| if b > a { b } else { a };
    lanes(x, T::neg_infinity(), pick)
        .into_iter()
        .fold(T::neg_infinity(), pick)
}

#[inline(always)]
fn lanes<T: Element>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> [T; LANES] {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] = f(acc[j], c[j]);
        }
    }
    for (j, &v) in rest.iter().enumerate() {
        acc[j] = f(acc[j], v);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::Level;
    use crate::Element;
    use std::cell::Cell;

    thread_local! {
        /// A level this thread's [`super::level`] reports instead of the CPU's: tests run
        /// the lower copies with it.
        pub(super) static FORCED: Cell<Option<Level>> = const { Cell::new(None) };
    }

    #[test]
    fn lane_reductions_match_plain_ones() {
        for n in [0, 1, 7, 8, 9, 28, 100] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0).collect();
            let y: Vec<f64> = x.iter().map(|v| v * 0.5 + 1.0).collect();
            assert!((super::sum(&x) - x.iter().sum::<f64>()).abs() < 1e-12);
            let d: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((super::dot(&x, &y) - d).abs() < 1e-12);
            assert_eq!(super::max(&x), x.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }

    #[inline(always)]
    fn rule<T: Element>(x: &[T], y: &mut [T]) -> T {
        for (y, &v) in y.iter_mut().zip(x) {
            *y = v.kernel_exp() / (T::one() + v * v);
        }
        y.iter().fold(T::zero(), |a, &b| a + b * T::of(1.5))
    }
    super::wide_fn! {
        fn wide_rule<T>(x: &[T], y: &mut [T]) -> T = rule;
    }

    /// The same arithmetic on every path: exp, division and a reduction in a fixed order.
    #[test]
    fn results_are_bit_identical_to_the_baseline() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
        let mut y0 = vec![0.0; 1000];
        let s0 = rule(&x, &mut y0);
        // Every copy this CPU can run (forcing a lower level than it has is safe).
        let levels = [Level::Avx512, Level::Avx2, Level::Baseline];
        let runnable = levels.iter().skip_while(|&&l| l != super::detected());
        for &l in runnable {
            FORCED.with(|f| f.set(Some(l)));
            let mut y1 = vec![0.0; 1000];
            let s1 = wide_rule(&x, &mut y1);
            FORCED.with(|f| f.set(None));
            assert_eq!(s0.to_bits(), s1.to_bits(), "{l:?}");
            assert!(y0.iter().zip(&y1).all(|(a, b)| a.to_bits() == b.to_bits()), "{l:?}");
        }
    }
}
