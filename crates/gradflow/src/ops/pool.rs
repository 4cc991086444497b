//! Max and average pooling over 2-D windows. Backward scatters into the
//! input through the recorded windows, so overlapping windows (stride smaller
//! than the kernel) and gaps (stride larger) are both handled.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
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
        });
    (out, arg)
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
        let xs = self.contiguous_storage();
        let (out, arg) = match &xs {
            CpuStorage::F32(x) => {
                let (o, a) = max_forward(x, planes, &geo);
                (CpuStorage::F32(o), a)
            }
            CpuStorage::F64(x) => {
                let (o, a) = max_forward(x, planes, &geo);
                (CpuStorage::F64(o), a)
            }
        };
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
