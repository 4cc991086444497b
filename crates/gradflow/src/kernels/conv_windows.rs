//! A unit-stride convolution's forward read straight from windows of the
//! zero-bordered input, without unfolding it (an implicit GEMM):
//! `out[o, y, x] = b[o] + Σ_(c, i, j) W[o, c, i, j] · xp[c, y + i, x + j]`.
//!
//! im2col writes `kh·kw` copies of every input pixel (25 for LeNet-5's first
//! layer) for the product to read once. Here a tile of up to 6 output channels ×
//! 4 vectors of a row's outputs stays in 24 AVX-512 registers while each tap adds
//! its window of the row (loaded once, masked at the row's end) times the 6
//! weights. It runs where a row of outputs fills most of a vector (see
//! `ops/conv.rs`) on AVX-512 CPUs, as `weight_grad` does.

use super::im2col::Geometry;
use super::simd::wide_fn;
use super::weight_grad::load_first;
use crate::Element;
use std::mem::MaybeUninit;

/// Output channels per tile, at most.
const ROWS: usize = 6;

/// Where each tap `(c, i, j)` of a group's weights (in their order) starts its window
/// in the zero-bordered input `[C, hp, wp]`, from the group's first channel: the
/// forward here and the weight gradient (`weight_grad`) read the same windows.
pub(crate) fn tap_offsets(g: &Geometry) -> Vec<usize> {
    let (hp, wp) = (g.h + 2 * g.p.padding.0, g.w + 2 * g.p.padding.1);
    (0..g.cg() * g.kk())
        .map(|r| (r / g.kk()) * hp * wp + (r % g.kk() / g.kw) * wp + r % g.kw)
        .collect()
}

/// One sample: `xp [C, hp, wp]` its zero-bordered input, `w [O, C/groups·kh·kw]`,
/// `taps` from [`tap_offsets`] (computed once per batch), `out [O, OH·OW]`, every
/// element written. Only where `weight_grad::available()`.
pub(crate) fn forward_sample<T: Element>(
    xp: &[T],
    w: &[T],
    b: Option<&[T]>,
    g: &Geometry,
    taps: &[usize],
    out: &mut [MaybeUninit<T>],
) {
    let (hp, wp) = (g.h + 2 * g.p.padding.0, g.w + 2 * g.p.padding.1);
    assert!(g.p.stride == (1, 1) && g.p.dilation == (1, 1) && taps.len() == g.cg() * g.kk());
    assert!(xp.len() >= g.c * hp * wp && w.len() >= g.o * g.cg() * g.kk() && out.len() >= g.o * g.l());
    assert!(g.oh + g.kh <= hp + 1 && g.ow + g.kw <= wp + 1 && b.is_none_or(|b| b.len() >= g.o));
    windows(xp, w, b, g, taps, out)
}

wide_fn! {
    fn windows<T>(xp: &[T], w: &[T], b: Option<&[T]>, g: &Geometry, taps: &[usize], out: &mut [MaybeUninit<T>]) = windows_plain;
}

/// Every tile of one sample. Called only by [`forward_sample`], which checks the sizes.
#[inline(always)]
fn windows_plain<T: Element>(
    xp: &[T],
    w: &[T],
    b: Option<&[T]>,
    g: &Geometry,
    taps: &[usize],
    out: &mut [MaybeUninit<T>],
) {
    let lanes = 64 / size_of::<T>();
    for grp in 0..g.p.groups {
        for o0 in (0..g.og()).step_by(ROWS) {
            for y in 0..g.oh {
                for x0 in (0..g.ow).step_by(4 * lanes) {
                    let t = Tile { grp, o0, y, x0, taps };
                    // SAFETY: the sizes are checked in `forward_sample`.
                    unsafe {
                        match (size_of::<T>(), (g.ow - x0).div_ceil(lanes).min(4)) {
                            (4, 1) => tile::<T, 16, 1>(xp, w, b, g, out, t),
                            (4, 2) => tile::<T, 16, 2>(xp, w, b, g, out, t),
                            (4, 3) => tile::<T, 16, 3>(xp, w, b, g, out, t),
                            (4, _) => tile::<T, 16, 4>(xp, w, b, g, out, t),
                            (_, 1) => tile::<T, 8, 1>(xp, w, b, g, out, t),
                            (_, 2) => tile::<T, 8, 2>(xp, w, b, g, out, t),
                            (_, 3) => tile::<T, 8, 3>(xp, w, b, g, out, t),
                            _ => tile::<T, 8, 4>(xp, w, b, g, out, t),
                        }
                    }
                }
            }
        }
    }
}

/// Where a tile starts: group, first output channel in the group, output row, first output column.
#[derive(Clone, Copy)]
struct Tile<'a> {
    grp: usize,
    o0: usize,
    y: usize,
    x0: usize,
    /// Each tap's offset in the zero-bordered input from its group's first channel.
    taps: &'a [usize],
}

/// Up to [`ROWS`] channels × `NV` vectors of `W` outputs of row `y` from column `x0`;
/// channels past the group's end repeat its last one and are not stored.
///
/// # Safety
/// The sizes are as [`forward_sample`] checks them; the CPU has AVX-512.
#[inline(always)]
unsafe fn tile<T: Element, const W: usize, const NV: usize>(
    xp: &[T],
    w: &[T],
    b: Option<&[T]>,
    g: &Geometry,
    out: &mut [MaybeUninit<T>],
    t: Tile,
) {
    let (og, taps, l) = (g.og(), t.taps.len(), g.l());
    let (hp, wp) = (g.h + 2 * g.p.padding.0, g.w + 2 * g.p.padding.1);
    let rows = (og - t.o0).min(ROWS);
    let channel = |o: usize| t.grp * og + t.o0 + o.min(rows - 1);
    let valid = (g.ow - t.x0).min(NV * W);
    let width = |v: usize| valid.saturating_sub(v * W).min(W);
    let mut acc: [[[T; W]; NV]; ROWS] = std::array::from_fn(|o| [[b.map_or(T::zero(), |b| b[channel(o)]); W]; NV]);
    let weights: [*const T; ROWS] = std::array::from_fn(|o| w.as_ptr().add(channel(o) * taps));
    let row = xp.as_ptr().add(t.grp * g.cg() * hp * wp + t.y * wp + t.x0);
    for (r, &tap) in t.taps.iter().enumerate() {
        let src = row.add(tap);
        let xv: [[T; W]; NV] = std::array::from_fn(|v| match width(v) {
            n if n == W => (src.add(v * W) as *const [T; W]).read_unaligned(),
            n => load_first::<T, W>(src.add(v * W), n),
        });
        for (o, acc) in acc.iter_mut().enumerate() {
            let wv = *weights[o].add(r);
            for v in 0..NV {
                for k in 0..W {
                    acc[v][k] = wv.mul_add(xv[v][k], acc[v][k]);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate().take(rows) {
        let dst = &mut out[channel(o) * l + t.y * g.ow + t.x0..][..valid];
        for (v, chunk) in dst.chunks_mut(W).enumerate() {
            chunk.iter_mut().zip(&acc[v]).for_each(|(d, &a)| _ = d.write(a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::Conv2dParams;

    /// Against the direct sum, f64 and f32: padding, groups, rows that end mid-vector,
    /// rows of 1 to 4 vectors and more, channel counts that are not multiples of 6.
    #[test]
    fn matches_the_direct_sum() {
        if !super::super::weight_grad::available() {
            return;
        }
        for (c, h, wd, o, k, pad, groups) in [
            (1, 28, 28, 6, 5, 2, 1),
            (6, 14, 14, 16, 5, 0, 1),
            (4, 9, 70, 10, 3, 1, 2),
            (2, 5, 17, 13, 2, 0, 1),
        ] {
            let (oh, ow) = (h + 2 * pad - k + 1, wd + 2 * pad - k + 1);
            let p = Conv2dParams {
                stride: (1, 1),
                padding: (pad, pad),
                dilation: (1, 1),
                groups,
            };
            let g = Geometry {
                n: 1,
                c,
                h,
                w: wd,
                o,
                kh: k,
                kw: k,
                oh,
                ow,
                p,
            };
            let (hp, wp) = (h + 2 * pad, wd + 2 * pad);
            let value = |i: usize, s: usize| (((i * 7919 + s * 104729) % 2003) as f64 - 1001.0) / 1000.0;
            let xp: Vec<f64> = (0..c * hp * wp).map(|i| value(i, 1)).collect();
            let w: Vec<f64> = (0..o * (c / groups) * k * k).map(|i| value(i, 2)).collect();
            let b: Vec<f64> = (0..o).map(|i| value(i, 3)).collect();
            let mut want = vec![0.0; o * oh * ow];
            for oc in 0..o {
                let grp = oc / (o / groups);
                for (y, x) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
                    let mut sum = b[oc];
                    for (cc, i, j) in
                        (0..c / groups).flat_map(|cc| (0..k).flat_map(move |i| (0..k).map(move |j| (cc, i, j))))
                    {
                        let ch = grp * (c / groups) + cc;
                        sum += w[((oc * (c / groups) + cc) * k + i) * k + j] * xp[(ch * hp + y + i) * wp + x + j];
                    }
                    want[(oc * oh + y) * ow + x] = sum;
                }
            }
            let mut got = vec![MaybeUninit::new(f64::NAN); o * oh * ow];
            forward_sample(&xp, &w, Some(&b), &g, &tap_offsets(&g), &mut got);
            // SAFETY: initialized above (NaN), then written.
            let got: Vec<f64> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
            for (a, e) in got.iter().zip(&want) {
                assert!(
                    (a - e).abs() <= 1e-12 * (1.0 + e.abs()),
                    "{c}x{h}x{wd} -> {o}: {a} vs {e}"
                );
            }
            let f = |v: &Vec<f64>| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let mut got32 = vec![MaybeUninit::new(f32::NAN); o * oh * ow];
            forward_sample(&f(&xp), &f(&w), Some(&f(&b)), &g, &tap_offsets(&g), &mut got32);
            // SAFETY: as above.
            let got32: Vec<f32> = got32.iter().map(|v| unsafe { v.assume_init() }).collect();
            for (a, e) in got32.iter().zip(&want) {
                assert!(
                    (*a as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "f32 {c}x{h}x{wd} -> {o}: {a} vs {e}"
                );
            }
        }
    }
}
