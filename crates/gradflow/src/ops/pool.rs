//! Max and average pooling over 2-D windows. Backward scatters into the
//! input through the recorded windows, so overlapping windows (stride smaller
//! than the kernel) and gaps (stride larger) are both handled.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::kernels::Contiguous;
use crate::layout::fmt_shape;
use crate::ops::conv::conv_out_size;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

/// Window geometry of a pooling op, PyTorch's names (no dilation, floor mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window size (rows, cols).
    pub kernel: (usize, usize),
    /// Step between windows; PyTorch defaults it to the kernel size.
    pub stride: (usize, usize),
    /// Implicit padding on each side (-inf for max, zeros for average).
    pub padding: (usize, usize),
}

impl Pool2dParams {
    /// Square window with stride equal to the kernel and no padding (PyTorch's default).
    pub fn square(k: usize) -> Self {
        Pool2dParams {
            kernel: (k, k),
            stride: (k, k),
            padding: (0, 0),
        }
    }
}

#[derive(Clone, Copy)]
struct Geo {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    p: Pool2dParams,
}

impl Geo {
    /// In-bounds input positions of output (i, j)'s window, row-major.
    fn window(&self, i: usize, j: usize, mut f: impl FnMut(Option<usize>)) {
        for a in 0..self.p.kernel.0 {
            let ih = (i * self.p.stride.0 + a) as isize - self.p.padding.0 as isize;
            for b in 0..self.p.kernel.1 {
                let iw = (j * self.p.stride.1 + b) as isize - self.p.padding.1 as isize;
                if ih < 0 || iw < 0 || ih >= self.h as isize || iw >= self.w as isize {
                    f(None);
                } else {
                    f(Some(ih as usize * self.w + iw as usize));
                }
            }
        }
    }
}

fn geometry(op: &'static str, x: &Tensor, p: Pool2dParams) -> Result<(usize, Geo)> {
    let s = x.shape();
    if s.len() != 4 {
        return shape_err(op, format!("input must be [N, C, H, W], got {}", fmt_shape(s)));
    }
    if s[2] == 0 || s[3] == 0 {
        return shape_err(op, format!("input {} has an empty spatial dimension", fmt_shape(s)));
    }
    if p.kernel.0 == 0 || p.kernel.1 == 0 || p.stride.0 == 0 || p.stride.1 == 0 {
        return arg_err(
            op,
            format!("kernel {:?} and stride {:?} must be positive", p.kernel, p.stride),
        );
    }
    if 2 * p.padding.0 > p.kernel.0 || 2 * p.padding.1 > p.kernel.1 {
        return arg_err(
            op,
            format!("padding {:?} must be at most half the kernel {:?}", p.padding, p.kernel),
        );
    }
    let (Some(oh), Some(ow)) = (
        conv_out_size(s[2], p.kernel.0, p.stride.0, p.padding.0, 1),
        conv_out_size(s[3], p.kernel.1, p.stride.1, p.padding.1, 1),
    ) else {
        return shape_err(
            op,
            format!(
                "kernel {:?} does not fit input {} with padding {:?}",
                p.kernel,
                fmt_shape(s),
                p.padding
            ),
        );
    };
    Ok((
        s[0] * s[1],
        Geo {
            h: s[2],
            w: s[3],
            oh,
            ow,
            p,
        },
    ))
}

fn max_forward<T: Element>(x: &[T], planes: usize, g: &Geo) -> (Vec<T>, Vec<u32>) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![T::zero(); planes * ohw];
    let mut arg = vec![0u32; planes * ohw];
    out.par_chunks_mut(ohw)
        .zip(arg.par_chunks_mut(ohw))
        .enumerate()
        .for_each(|(pl, (o, a))| {
            let xp = &x[pl * hw..(pl + 1) * hw];
            if g.p.padding != (0, 0) {
                max_plane_padded(xp, g, o, a);
            } else if (g.p.kernel, g.p.stride) == ((2, 2), (2, 2)) {
                max_pool_2x2(xp, g, o, a);
            } else {
                max_plane_unpadded(xp, g, o, a);
            }
        });
    (out, arg)
}

/// One plane's windows when every window lies inside the plane: no bounds checks per tap.
/// The first maximum wins; a NaN anywhere in a window wins instead.
fn max_plane_unpadded<T: Element>(xp: &[T], g: &Geo, o: &mut [T], a: &mut [u32]) {
    let (kh, kw, sh, sw) = (g.p.kernel.0, g.p.kernel.1, g.p.stride.0, g.p.stride.1);
    for i in 0..g.oh {
        for j in 0..g.ow {
            let first = i * sh * g.w + j * sw;
            let (mut best, mut at, mut nan) = (xp[first], first, false);
            for r in 0..kh {
                let row = first + r * g.w;
                for (b, &v) in xp[row..row + kw].iter().enumerate() {
                    // Selects, not branches (random data mispredicts): the first
                    // maximum wins; a NaN anywhere takes the exact rule below.
                    let gt = v > best;
                    at = if gt { row + b } else { at };
                    best = if gt { v } else { best };
                    nan |= v.is_nan();
                }
            }
            if nan {
                // First NaN of the window, as the general path picks it.
                'find: for r in 0..kh {
                    for b in 0..kw {
                        let pos = first + r * g.w + b;
                        if xp[pos].is_nan() {
                            (best, at) = (xp[pos], pos);
                            break 'find;
                        }
                    }
                }
            }
            o[i * g.ow + j] = best;
            a[i * g.ow + j] = at as u32;
        }
    }
}

/// One plane's windows, some taps of which fall in the padding (never chosen).
fn max_plane_padded<T: Element>(xp: &[T], g: &Geo, o: &mut [T], a: &mut [u32]) {
    for i in 0..g.oh {
        for j in 0..g.ow {
            let (mut best, mut at) = (T::neg_infinity(), u32::MAX);
            g.window(i, j, |pos| {
                if let Some(pos) = pos {
                    let v = xp[pos];
                    if at == u32::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                        best = v;
                        at = pos as u32;
                    }
                }
            });
            o[i * g.ow + j] = best;
            a[i * g.ow + j] = at;
        }
    }
}

/// The common 2×2, stride-2 window (no padding) of one plane, two input rows at a time,
/// with the same rule as the general path: the first maximum wins, and a NaN wins.
fn max_pool_2x2<T: Element>(xp: &[T], g: &Geo, o: &mut [T], a: &mut [u32]) {
    let w = g.w;
    for i in 0..g.oh {
        let top = 2 * i * w;
        let (r0, r1) = (&xp[top..top + 2 * g.ow], &xp[top + w..top + w + 2 * g.ow]);
        let (oi, ai) = (&mut o[i * g.ow..(i + 1) * g.ow], &mut a[i * g.ow..(i + 1) * g.ow]);
        let mut nan = false;
        for (j, (ov, av)) in oi.iter_mut().zip(ai.iter_mut()).enumerate() {
            let (p, q, r, s) = (r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]);
            // Selects rather than branches: on real data the winner is unpredictable.
            let (mut best, mut k) = (p, 0usize);
            let gt = q > best;
            (best, k) = (if gt { q } else { best }, if gt { 1 } else { k });
            let gt = r > best;
            (best, k) = (if gt { r } else { best }, if gt { w } else { k });
            let gt = s > best;
            (best, k) = (if gt { s } else { best }, if gt { w + 1 } else { k });
            nan |= p.is_nan() | q.is_nan() | r.is_nan() | s.is_nan();
            *ov = best;
            *av = (top + 2 * j + k) as u32;
        }
        if nan {
            // Rare: redo this row's windows that hold a NaN (the first NaN wins).
            for (j, (ov, av)) in oi.iter_mut().zip(ai.iter_mut()).enumerate() {
                let first = top + 2 * j;
                if let Some(pos) = [first, first + 1, first + w, first + w + 1]
                    .into_iter()
                    .find(|&p| xp[p].is_nan())
                {
                    (*ov, *av) = (xp[pos], pos as u32);
                }
            }
        }
    }
}

fn max_backward<T: Element>(go: &[T], arg: &[u32], planes: usize, g: &Geo) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![T::zero(); planes * hw];
    dx.par_chunks_mut(hw).enumerate().for_each(|(pl, d)| {
        for k in 0..ohw {
            let a = arg[pl * ohw + k];
            if a != u32::MAX {
                d[a as usize] += go[pl * ohw + k];
            }
        }
    });
    dx
}

fn avg_forward<T: Element>(x: &[T], planes: usize, g: &Geo) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let inv = T::of(1.0 / (g.p.kernel.0 * g.p.kernel.1) as f64);
    let mut out = vec![T::zero(); planes * ohw];
    out.par_chunks_mut(ohw).enumerate().for_each(|(pl, o)| {
        let xp = &x[pl * hw..(pl + 1) * hw];
        for i in 0..g.oh {
            for j in 0..g.ow {
                let mut s = T::zero();
                g.window(i, j, |pos| {
                    if let Some(pos) = pos {
                        s += xp[pos];
                    }
                });
                o[i * g.ow + j] = s * inv;
            }
        }
    });
    out
}

fn avg_backward<T: Element>(go: &[T], planes: usize, g: &Geo) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let inv = T::of(1.0 / (g.p.kernel.0 * g.p.kernel.1) as f64);
    let mut dx = vec![T::zero(); planes * hw];
    dx.par_chunks_mut(hw).enumerate().for_each(|(pl, d)| {
        for i in 0..g.oh {
            for j in 0..g.ow {
                let v = go[pl * ohw + i * g.ow + j] * inv;
                g.window(i, j, |pos| {
                    if let Some(pos) = pos {
                        d[pos] += v;
                    }
                });
            }
        }
    });
    dx
}

struct MaxPoolBackward {
    x: Tensor,
    arg: Vec<u32>,
    planes: usize,
    geo: Geo,
}
impl GradFn for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gs = g.contiguous_storage();
        let dx = match &gs {
            CpuStorage::F32(v) => CpuStorage::F32(max_backward(v, &self.arg, self.planes, &self.geo)),
            CpuStorage::F64(v) => CpuStorage::F64(max_backward(v, &self.arg, self.planes, &self.geo)),
        };
        Ok(vec![Some(Tensor::from_storage(dx, self.x.shape()))])
    }
}

struct AvgPoolBackward {
    x: Tensor,
    planes: usize,
    geo: Geo,
}
impl GradFn for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gs = g.contiguous_storage();
        let dx = match &gs {
            CpuStorage::F32(v) => CpuStorage::F32(avg_backward(v, self.planes, &self.geo)),
            CpuStorage::F64(v) => CpuStorage::F64(avg_backward(v, self.planes, &self.geo)),
        };
        Ok(vec![Some(Tensor::from_storage(dx, self.x.shape()))])
    }
}

impl Tensor {
    /// Max over each window of `[N, C, H, W]`; the gradient goes to the first maximum of each window.
    pub fn max_pool2d(&self, p: Pool2dParams) -> Result<Tensor> {
        let (planes, geo) = geometry("max_pool2d", self, p)?;
        let xs = Contiguous::of(self);
        let (out, arg) = match (xs.slice::<f32>(), xs.slice::<f64>()) {
            (Some(x), _) => {
                let (o, a) = max_forward(x, planes, &geo);
                (CpuStorage::F32(o), a)
            }
            (_, Some(x)) => {
                let (o, a) = max_forward(x, planes, &geo);
                (CpuStorage::F64(o), a)
            }
            _ => unreachable!("f32 or f64"),
        };
        drop(xs);
        let shape = [self.shape()[0], self.shape()[1], geo.oh, geo.ow];
        Ok(Tensor::from_storage(out, &shape).attach(&[self], || {
            node(MaxPoolBackward {
                x: self.clone(),
                arg,
                planes,
                geo,
            })
        }))
    }

    /// Mean over each window (padding counts as zeros in the divisor, PyTorch's default).
    pub fn avg_pool2d(&self, p: Pool2dParams) -> Result<Tensor> {
        let (planes, geo) = geometry("avg_pool2d", self, p)?;
        let xs = self.contiguous_storage();
        let out = match &xs {
            CpuStorage::F32(x) => CpuStorage::F32(avg_forward(x, planes, &geo)),
            CpuStorage::F64(x) => CpuStorage::F64(avg_forward(x, planes, &geo)),
        };
        let shape = [self.shape()[0], self.shape()[1], geo.oh, geo.ow];
        Ok(Tensor::from_storage(out, &shape).attach(&[self], || {
            node(AvgPoolBackward {
                x: self.clone(),
                planes,
                geo,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Pool2dParams;
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};

    fn pp(kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Pool2dParams {
        Pool2dParams {
            kernel,
            stride,
            padding,
        }
    }

    /// Direct pooling: (output shape, max, average with padding counted in the divisor).
    fn naive(x: &Tensor, p: Pool2dParams) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
        let s = x.shape();
        let (planes, h, w) = (s[0] * s[1], s[2], s[3]);
        let oh = (h + 2 * p.padding.0 - p.kernel.0) / p.stride.0 + 1;
        let ow = (w + 2 * p.padding.1 - p.kernel.1) / p.stride.1 + 1;
        let xv = x.to_vec_f64();
        let (mut mx, mut avg) = (Vec::new(), Vec::new());
        for pl in 0..planes {
            for i in 0..oh {
                for j in 0..ow {
                    let (mut m, mut sum) = (f64::NEG_INFINITY, 0.0);
                    for a in 0..p.kernel.0 {
                        for b in 0..p.kernel.1 {
                            let ih = (i * p.stride.0 + a) as isize - p.padding.0 as isize;
                            let iw = (j * p.stride.1 + b) as isize - p.padding.1 as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                                let v = xv[pl * h * w + ih as usize * w + iw as usize];
                                m = m.max(v);
                                sum += v;
                            }
                        }
                    }
                    mx.push(m);
                    avg.push(sum / (p.kernel.0 * p.kernel.1) as f64);
                }
            }
        }
        (vec![s[0], s[1], oh, ow], mx, avg)
    }

    #[test]
    fn max_pool_ties_go_to_the_first_maximum_and_nan_wins() {
        let nan = f64::NAN;
        #[rustfmt::skip]
        let v = vec![
            1.0, 3.0, 0.0, nan,
            3.0, 2.0, nan, 7.0,
            5.0, 5.0, -1.0, -2.0,
            5.0, 4.0, -3.0, -1.0,
        ];
        for dtype in [DType::F64, DType::F32] {
            let x = Tensor::from_vec(v.clone(), &[1, 1, 4, 4])
                .unwrap()
                .to_dtype(dtype)
                .requires_grad_(true);
            let y = x.max_pool2d(Pool2dParams::square(2)).unwrap();
            let out = y.to_vec_f64();
            assert_eq!(out[0], 3.0);
            assert!(out[1].is_nan());
            assert_eq!((out[2], out[3]), (5.0, -1.0));
            // The gradient goes to the winner of each window: (0,1), (0,3), (2,0), (2,2).
            let g = y.sum_all().backward().unwrap();
            let mut want = vec![0.0; 16];
            for i in [1, 3, 8, 10] {
                want[i] = 1.0;
            }
            assert_eq!(g.get(&x).unwrap().to_vec_f64(), want);
            // Overlapping 2×2 windows at stride 1 (the general unpadded path).
            let x = Tensor::from_vec(vec![1.0, nan, 2.0, 4.0, 4.0, 0.0, 3.0, 5.0, 5.0], &[1, 1, 3, 3])
                .unwrap()
                .to_dtype(dtype)
                .requires_grad_(true);
            let p = pp((2, 2), (1, 1), (0, 0));
            let y = x.max_pool2d(p).unwrap();
            let out = y.to_vec_f64();
            assert!(out[0].is_nan() && out[1].is_nan());
            assert_eq!((out[2], out[3]), (5.0, 5.0));
            let g = y.sum_all().backward().unwrap();
            assert_eq!(
                g.get(&x).unwrap().to_vec_f64(),
                vec![0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]
            );
        }
    }

    fn configs() -> Vec<([usize; 4], Pool2dParams)> {
        vec![
            ([2, 3, 4, 6], Pool2dParams::square(2)),    // stride == kernel
            ([1, 2, 5, 5], pp((3, 3), (1, 1), (0, 0))), // overlapping windows
            ([1, 2, 7, 7], pp((2, 2), (3, 3), (0, 0))), // gaps between windows
            ([2, 1, 5, 6], pp((3, 3), (2, 2), (1, 1))), // padding
            ([1, 1, 4, 5], pp((2, 3), (1, 2), (1, 1))), // rectangular, padded
            ([1, 2, 3, 3], pp((3, 3), (1, 1), (1, 1))), // "same" pooling
            ([1, 1, 5, 4], pp((2, 2), (2, 2), (0, 0))), // floor mode drops the last row
            ([1, 1, 1, 1], Pool2dParams::square(1)),
        ]
    }

    #[test]
    fn values_match_direct_pooling() {
        for (i, (xs, p)) in configs().into_iter().enumerate() {
            let x = rand64(&xs, i as u64);
            let (shape, mx, avg) = naive(&x, p);
            let m = x.max_pool2d(p).unwrap();
            assert_eq!(m.shape(), &shape[..], "config {i}");
            assert_eq!(m.to_vec_f64(), mx, "config {i}");
            let a = x.avg_pool2d(p).unwrap();
            assert_eq!(a.shape(), &shape[..]);
            for (g, w) in a.to_vec_f64().iter().zip(&avg) {
                assert!((g - w).abs() < 1e-12, "config {i}: {g} vs {w}");
            }
            // f32 path.
            let x32 = x.to_dtype(DType::F32);
            let m32 = x32.max_pool2d(p).unwrap();
            assert_eq!(m32.dtype(), DType::F32);
            assert_eq!(
                m32.to_vec_f64(),
                mx.iter().map(|&v| v as f32 as f64).collect::<Vec<_>>()
            );
            for (g, w) in x32.avg_pool2d(p).unwrap().to_vec_f64().iter().zip(&avg) {
                assert!((g - w).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn gradcheck_every_configuration() {
        for (i, (xs, p)) in configs().into_iter().enumerate() {
            let x = rand64(&xs, 100 + i as u64);
            eprintln!("config {i}: {xs:?} {p:?}");
            check(|t| t[0].max_pool2d(p), &[x.clone()]);
            check(|t| t[0].avg_pool2d(p), &[x.clone()]);
        }
        // Non-contiguous input: NHWC storage permuted to NCHW.
        let p = pp((2, 2), (1, 1), (1, 0));
        check(
            |t| t[0].permute(&[0, 3, 1, 2])?.max_pool2d(p),
            &[rand64(&[2, 4, 3, 2], 7)],
        );
        check(
            |t| t[0].permute(&[0, 3, 1, 2])?.avg_pool2d(p),
            &[rand64(&[2, 4, 3, 2], 8)],
        );
    }

    #[test]
    fn max_pool_gradient_goes_to_the_first_maximum() {
        // All equal: each window sends its gradient to its top-left element.
        let x = Tensor::ones(&[1, 1, 3, 3], DType::F64).requires_grad_(true);
        let g = x
            .max_pool2d(pp((2, 2), (1, 1), (0, 0)))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec_f64(),
            vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
        // Overlapping windows sharing one maximum accumulate on it.
        let x = Tensor::from_vec(vec![0.0f64, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0], &[1, 1, 3, 3])
            .unwrap()
            .requires_grad_(true);
        let g = x
            .max_pool2d(pp((2, 2), (1, 1), (0, 0)))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec_f64()[4], 4.0);
        // Avg pool spreads 1/k² to every tap, padding taps included in the divisor.
        let x = Tensor::ones(&[1, 1, 2, 2], DType::F64).requires_grad_(true);
        let y = x.avg_pool2d(pp((2, 2), (2, 2), (1, 1))).unwrap();
        assert_eq!(y.to_vec_f64(), vec![0.25; 4]);
        let g = y.sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec_f64(), vec![0.25; 4]);
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let x = rand64(&[1, 1, 4, 4], 0);
        let e = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        assert_eq!(
            e(rand64(&[4, 4], 0).max_pool2d(Pool2dParams::square(2))),
            "max_pool2d: input must be [N, C, H, W], got [4, 4]"
        );
        assert_eq!(
            e(x.avg_pool2d(pp((3, 3), (1, 1), (2, 0)))),
            "avg_pool2d: padding (2, 0) must be at most half the kernel (3, 3)"
        );
        assert!(e(x.max_pool2d(pp((0, 2), (1, 1), (0, 0)))).starts_with("max_pool2d: kernel (0, 2) and stride"));
        assert!(e(x.max_pool2d(pp((2, 2), (1, 0), (0, 0)))).starts_with("max_pool2d:"));
        assert_eq!(
            e(x.max_pool2d(Pool2dParams::square(5))),
            "max_pool2d: kernel (5, 5) does not fit input [1, 1, 4, 4] with padding (0, 0)"
        );
        assert!(
            e(Tensor::zeros(&[1, 1, 0, 4], DType::F32).max_pool2d(pp((2, 2), (2, 2), (1, 1))))
                .starts_with("max_pool2d: input [1, 1, 0, 4] has an empty spatial dimension")
        );
        // An empty batch is fine.
        let z = Tensor::zeros(&[0, 3, 4, 4], DType::F64).requires_grad_(true);
        let y = z.max_pool2d(Pool2dParams::square(2)).unwrap();
        assert_eq!(y.shape(), &[0, 3, 2, 2]);
        let y = z.avg_pool2d(Pool2dParams::square(2)).unwrap();
        assert_eq!(y.shape(), &[0, 3, 2, 2]);
    }
}
