//! im2col and its adjoint col2im: a convolution's input patches unfolded into the
//! columns of a matrix, so that the convolution itself is one matrix product.

use crate::ops::conv::Conv2dParams;
use crate::Element;
use std::mem::MaybeUninit;

/// The sizes of one convolution: batch `n`, input channels `c`, input `h×w`, output
/// channels `o`, kernel `kh×kw`, output `oh×ow`, and its parameters.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) p: Conv2dParams,
}

impl Geometry {
    pub(crate) fn cg(&self) -> usize {
        self.c / self.p.groups
    }
    pub(crate) fn og(&self) -> usize {
        self.o / self.p.groups
    }
    pub(crate) fn kk(&self) -> usize {
        self.kh * self.kw
    }
    pub(crate) fn l(&self) -> usize {
        self.oh * self.ow
    }
}

/// For kernel column offset `off = j·dw − pw`: the output columns `lo..hi` whose input
/// column `ow·sw + off` lies inside `0..w` (the others read padding).
#[inline]
fn valid_cols(off: isize, sw: usize, w: usize, ow: usize) -> (usize, usize) {
    let sw = sw as isize;
    // ow·sw + off ≥ 0  ⇔  ow ≥ ⌈−off / sw⌉;   ow·sw + off < w  ⇔  ow < ⌈(w − off) / sw⌉.
    let lo = if off >= 0 { 0 } else { (-off + sw - 1) / sw };
    let hi = if (w as isize) <= off {
        0
    } else {
        (w as isize - off + sw - 1) / sw
    };
    let hi = (hi.max(0) as usize).min(ow);
    ((lo as usize).min(hi), hi)
}

/// Unfold one sample `x [C, H, W]` into `cols [C·kh·kw, OH·OW]`.
pub(crate) fn im2col<T: Element>(x: &[T], g: &Geometry, cols: &mut [T]) {
    // SAFETY: MaybeUninit<T> has T's layout, and im2col_uninit writes only initialized values.
    let cols = unsafe { &mut *(cols as *mut [T] as *mut [MaybeUninit<T>]) };
    im2col_uninit(x, g, cols)
}

/// [`im2col`] into memory that need not be initialized: every element is written.
pub(crate) fn im2col_uninit<T: Element>(x: &[T], g: &Geometry, cols: &mut [MaybeUninit<T>]) {
    if g.p.stride == (1, 1) && g.p.dilation == (1, 1) {
        return im2col_unit_stride(x, g, cols);
    }
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let (dh, dw) = g.p.dilation;
    let l = g.l();
    let zero = MaybeUninit::new(T::zero());
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                let off = (j * dw) as isize - pw as isize;
                let (lo, hi) = valid_cols(off, sw, g.w, g.ow);
                for oh in 0..g.oh {
                    let ih = (oh * sh + i * dh) as isize - ph as isize;
                    let dst = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    if ih < 0 || ih >= g.h as isize {
                        dst.fill(zero);
                        continue;
                    }
                    let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    dst[..lo].fill(zero);
                    dst[hi..].fill(zero);
                    if lo < hi {
                        // First input column read: lo·sw + off ≥ 0.
                        let start = (lo as isize * sw as isize + off) as usize;
                        for (d, s) in dst[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw)) {
                            d.write(*s);
                        }
                    }
                }
            }
        }
    }
}

/// The common case, stride and dilation 1: each plane is first copied into a zero-
/// bordered one (when padded), so every row of `cols` is whole runs of OW elements
/// copied without bounds or padding checks, in fixed-size pieces rather than through
/// `memcpy`/`memset` calls (which cost more than the copy for LeNet-5's runs of 10 and 28).
fn im2col_unit_stride<T: Element>(x: &[T], g: &Geometry, cols: &mut [MaybeUninit<T>]) {
    let (ph, pw) = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let (l, ow) = (g.l(), g.ow);
    let mut padded = if (ph, pw) == (0, 0) {
        Vec::new()
    } else {
        vec![T::zero(); hp * wp]
    };
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let src: &[T] = if padded.is_empty() {
            plane
        } else {
            for (r, row) in plane.chunks_exact(g.w.max(1)).enumerate() {
                padded[(r + ph) * wp + pw..][..g.w].copy_from_slice(row);
            }
            &padded
        };
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                for (oh, dst) in row.chunks_exact_mut(ow.max(1)).enumerate() {
                    copy_run(dst, &src[(oh + i) * wp + j..][..ow]);
                }
            }
        }
    }
}

/// `dst = src` for short runs: 8 elements at a time, the last 8 overlapping.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    let n = src.len().min(dst.len());
    let put8 = |dst: &mut [MaybeUninit<T>], at: usize| {
        let v: [T; 8] = src[at..at + 8].try_into().expect("8 elements");
        for (d, v) in dst[at..at + 8].iter_mut().zip(v) {
            d.write(v);
        }
    };
    if n < 8 {
        for (d, &v) in dst[..n].iter_mut().zip(&src[..n]) {
            d.write(v);
        }
        return;
    }
    let mut at = 0;
    while at + 8 <= n {
        put8(dst, at);
        at += 8;
    }
    if at < n {
        put8(dst, n - 8);
    }
}

/// Fold columns back onto one sample, adding overlaps: the adjoint of im2col.
pub(crate) fn col2im<T: Element>(cols: &[T], g: &Geometry, dx: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let (dh, dw) = g.p.dilation;
    let l = g.l();
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                let off = (j * dw) as isize - pw as isize;
                let (lo, hi) = valid_cols(off, sw, g.w, g.ow);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * sw as isize + off) as usize;
                for oh in 0..g.oh {
                    let ih = (oh * sh + i * dh) as isize - ph as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    let src = &row[oh * g.ow + lo..oh * g.ow + hi];
                    if sw == 1 {
                        for (d, s) in dst[start..start + src.len()].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[start..].iter_mut().step_by(sw).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{col2im, im2col, Geometry};
    use crate::ops::conv::{conv_out_size, Conv2dParams};

    /// The input position that column `col` of row `(ch, i, j)` reads, or None in the padding.
    fn source(g: &Geometry, ch: usize, i: usize, j: usize, col: usize) -> Option<usize> {
        let (oh, ow) = (col / g.ow, col % g.ow);
        let ih = (oh * g.p.stride.0 + i * g.p.dilation.0) as isize - g.p.padding.0 as isize;
        let iw = (ow * g.p.stride.1 + j * g.p.dilation.1) as isize - g.p.padding.1 as isize;
        let inside = (0..g.h as isize).contains(&ih) && (0..g.w as isize).contains(&iw);
        inside.then(|| (ch * g.h + ih as usize) * g.w + iw as usize)
    }

    /// Every (row, column) of the unfolded matrix with the input position it reads.
    fn taps(g: &Geometry) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
        let rows = (0..g.c).flat_map(move |ch| (0..g.kh).flat_map(move |i| (0..g.kw).map(move |j| (ch, i, j))));
        rows.enumerate()
            .flat_map(move |(r, (ch, i, j))| (0..g.l()).map(move |col| (r * g.l() + col, source(g, ch, i, j, col))))
    }

    fn geometries() -> Vec<Geometry> {
        let mut out = Vec::new();
        // (c, h, w, kh, kw, stride, padding, dilation): the unit-stride path with and without
        // padding, runs shorter and longer than 8, strides, dilations, rectangular kernels.
        for (c, h, w, kh, kw, stride, padding, dilation) in [
            (1, 5, 5, 3, 3, (1, 1), (0, 0), (1, 1)),
            (2, 6, 13, 3, 2, (1, 1), (1, 2), (1, 1)),
            (3, 12, 12, 5, 5, (1, 1), (2, 2), (1, 1)),
            (2, 7, 9, 3, 3, (2, 3), (1, 0), (1, 1)),
            (2, 9, 8, 2, 3, (1, 2), (2, 1), (2, 3)),
            (1, 4, 4, 1, 1, (3, 3), (3, 3), (1, 1)),
        ] {
            let p = Conv2dParams {
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let oh = conv_out_size(h, kh, stride.0, padding.0, dilation.0).unwrap();
            let ow = conv_out_size(w, kw, stride.1, padding.1, dilation.1).unwrap();
            out.push(Geometry {
                n: 1,
                c,
                h,
                w,
                o: 1,
                kh,
                kw,
                oh,
                ow,
                p,
            });
        }
        out
    }

    #[test]
    fn im2col_matches_the_plain_unfold() {
        for g in geometries() {
            let x: Vec<f64> = (0..g.c * g.h * g.w).map(|i| i as f64 + 1.0).collect();
            let mut cols = vec![f64::NAN; g.c * g.kk() * g.l()];
            im2col(&x, &g, &mut cols);
            for (at, src) in taps(&g) {
                assert_eq!(cols[at], src.map_or(0.0, |s| x[s]), "{:?} at {at}", g.p);
            }
        }
    }

    #[test]
    fn col2im_adds_every_column_back_onto_its_source() {
        for g in geometries() {
            let cols: Vec<f64> = (0..g.c * g.kk() * g.l()).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut want = vec![0.5; g.c * g.h * g.w];
            for (at, src) in taps(&g) {
                if let Some(s) = src {
                    want[s] += cols[at];
                }
            }
            let mut dx = vec![0.5; g.c * g.h * g.w];
            col2im(&cols, &g, &mut dx);
            for (d, w) in dx.iter().zip(&want) {
                assert!((d - w).abs() < 1e-12, "{:?}: {d} vs {w}", g.p);
            }
        }
    }
}
