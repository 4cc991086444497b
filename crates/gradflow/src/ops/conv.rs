//! 2-D convolution (cross-correlation, as in PyTorch) by im2col + GEMM, with
//! stride, padding, dilation and groups. Samples run in parallel; each
//! unfolds its own patches into a column matrix and multiplies by the weights.
//! Backward recomputes the columns rather than keeping them, to save memory.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::kernels::gemm::{gemm, MatRef};
use crate::layout::fmt_shape;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

/// Hyper-parameters of a convolution, PyTorch's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows (rows, cols).
    pub stride: (usize, usize),
    /// Zeros added on each side (rows, cols).
    pub padding: (usize, usize),
    /// Spacing between kernel taps (rows, cols).
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels split into this many independent convolutions.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// Output spatial size of a window op; None when the window does not fit.
pub fn conv_out_size(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
    let span = dilation * (kernel.checked_sub(1)?) + 1;
    let padded = input + 2 * padding;
    if padded < span || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: Conv2dParams,
}

impl Geometry {
    fn cg(&self) -> usize {
        self.c / self.p.groups
    }
    fn og(&self) -> usize {
        self.o / self.p.groups
    }
    fn kk(&self) -> usize {
        self.kh * self.kw
    }
    fn l(&self) -> usize {
        self.oh * self.ow
    }
}

/// Unfold one sample `x [C, H, W]` into `cols [C·kh·kw, OH·OW]`.
fn im2col<T: Element>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let (dh, dw) = g.p.dilation;
    let l = g.l();
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                for oh in 0..g.oh {
                    let ih = (oh * sh + i * dh) as isize - ph as isize;
                    let dst = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    if ih < 0 || ih >= g.h as isize {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    for (ow, d) in dst.iter_mut().enumerate() {
                        let iw = (ow * sw + j * dw) as isize - pw as isize;
                        *d = if iw < 0 || iw >= g.w as isize {
                            T::zero()
                        } else {
                            src[iw as usize]
                        };
                    }
                }
            }
        }
    }
}

/// Fold columns back onto one sample, adding overlaps: the adjoint of im2col.
fn col2im<T: Element>(cols: &[T], g: &Geometry, dx: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let (dh, dw) = g.p.dilation;
    let l = g.l();
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                for oh in 0..g.oh {
                    let ih = (oh * sh + i * dh) as isize - ph as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    for ow in 0..g.ow {
                        let iw = (ow * sw + j * dw) as isize - pw as isize;
                        if iw >= 0 && iw < g.w as isize {
                            dst[iw as usize] += row[oh * g.ow + ow];
                        }
                    }
                }
            }
        }
    }
}

fn rm<T>(ptr: *const T, ld: usize) -> MatRef<T> {
    MatRef {
        ptr,
        rs: ld as isize,
        cs: 1,
    }
}

fn conv_forward<T: Element>(x: &[T], w: &[T], b: Option<&[T]>, g: &Geometry) -> Vec<T> {
    let (cg, og, kk, l) = (g.cg(), g.og(), g.kk(), g.l());
    let mut out = vec![T::zero(); g.n * g.o * l];
    out.par_chunks_mut(g.o * l).enumerate().for_each_init(
        || vec![T::zero(); g.c * kk * l],
        |cols, (n, out_n)| {
            im2col(&x[n * g.c * g.h * g.w..(n + 1) * g.c * g.h * g.w], g, cols);
            if let Some(b) = b {
                for (o, row) in out_n.chunks_mut(l).enumerate() {
                    row.fill(b[o]);
                }
            }
            for grp in 0..g.p.groups {
                let wg = &w[grp * og * cg * kk..];
                let cols_g = &cols[grp * cg * kk * l..];
                // SAFETY: slices cover og×(cg·kk) weights, (cg·kk)×l columns and og×l outputs.
                unsafe {
                    gemm(
                        og,
                        l,
                        cg * kk,
                        &mut out_n[grp * og * l..(grp + 1) * og * l],
                        rm(wg.as_ptr(), cg * kk),
                        rm(cols_g.as_ptr(), l),
                        b.is_some(),
                        false,
                    )
                };
            }
        },
    );
    out
}

/// Returns (dx, dw, db) for the requested inputs.
fn conv_backward<T: Element>(
    x: &[T],
    w: &[T],
    gout: &[T],
    g: &Geometry,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>) {
    let (cg, og, kk, l) = (g.cg(), g.og(), g.kk(), g.l());
    let sample = g.c * g.h * g.w;
    let wlen = g.o * cg * kk;
    let mut dx = if need_x {
        vec![T::zero(); g.n * sample]
    } else {
        Vec::new()
    };
    let per_sample = |n: usize, dx_n: Option<&mut [T]>, dw: &mut Vec<T>, cols: &mut Vec<T>| {
        let go = &gout[n * g.o * l..(n + 1) * g.o * l];
        if need_w {
            im2col(&x[n * sample..(n + 1) * sample], g, cols);
            for grp in 0..g.p.groups {
                // dW_g += dY_g [og, l] · cols_gᵀ [l, cg·kk]
                let cols_t = MatRef {
                    ptr: cols[grp * cg * kk * l..].as_ptr(),
                    rs: 1,
                    cs: l as isize,
                };
                unsafe {
                    gemm(
                        og,
                        cg * kk,
                        l,
                        &mut dw[grp * og * cg * kk..(grp + 1) * og * cg * kk],
                        rm(go[grp * og * l..].as_ptr(), l),
                        cols_t,
                        true,
                        false,
                    )
                };
            }
        }
        if let Some(dx_n) = dx_n {
            for grp in 0..g.p.groups {
                // dcols_g = W_gᵀ [cg·kk, og] · dY_g [og, l]
                let w_t = MatRef {
                    ptr: w[grp * og * cg * kk..].as_ptr(),
                    rs: 1,
                    cs: (cg * kk) as isize,
                };
                unsafe {
                    gemm(
                        cg * kk,
                        l,
                        og,
                        &mut cols[grp * cg * kk * l..(grp + 1) * cg * kk * l],
                        w_t,
                        rm(go[grp * og * l..].as_ptr(), l),
                        false,
                        false,
                    )
                };
            }
            col2im(cols, g, dx_n);
        }
    };
    let init = || {
        (
            vec![T::zero(); if need_w { wlen } else { 0 }],
            vec![T::zero(); g.c * kk * l],
        )
    };
    let dw = if need_x {
        dx.par_chunks_mut(sample)
            .enumerate()
            .fold(init, |(mut dw, mut cols), (n, dx_n)| {
                per_sample(n, Some(dx_n), &mut dw, &mut cols);
                (dw, cols)
            })
            .map(|(dw, _)| dw)
            .reduce(|| vec![T::zero(); if need_w { wlen } else { 0 }], add_vecs)
    } else {
        (0..g.n)
            .into_par_iter()
            .fold(init, |(mut dw, mut cols), n| {
                per_sample(n, None, &mut dw, &mut cols);
                (dw, cols)
            })
            .map(|(dw, _)| dw)
            .reduce(|| vec![T::zero(); if need_w { wlen } else { 0 }], add_vecs)
    };
    let db = need_b.then(|| {
        let mut db = vec![T::zero(); g.o];
        for n in 0..g.n {
            for (o, d) in db.iter_mut().enumerate() {
                *d += gout[(n * g.o + o) * l..(n * g.o + o + 1) * l]
                    .iter()
                    .copied()
                    .sum::<T>();
            }
        }
        db
    });
    (need_x.then_some(dx), need_w.then_some(dw), db)
}

fn add_vecs<T: Element>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    if a.len() < b.len() {
        return add_vecs(b, a);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

struct Conv2dBackward {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    geom: Geometry,
}

impl GradFn for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.x.clone(), self.w.clone()];
        if let Some(b) = &self.b {
            v.push(b.clone());
        }
        v
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let need_b = self.b.is_some() && needs[2];
        let (xs, ws, gs) = (
            self.x.contiguous_storage(),
            self.w.contiguous_storage(),
            g.contiguous_storage(),
        );
        let wrap = |v: Option<CpuStorage>, shape: &[usize]| v.map(|s| Tensor::from_storage(s, shape));
        let (dx, dw, db) = match (&xs, &ws, &gs) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(go)) => {
                let (a, b, c) = conv_backward(x, w, go, &self.geom, needs[0], needs[1], need_b);
                (a.map(CpuStorage::F32), b.map(CpuStorage::F32), c.map(CpuStorage::F32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(go)) => {
                let (a, b, c) = conv_backward(x, w, go, &self.geom, needs[0], needs[1], need_b);
                (a.map(CpuStorage::F64), b.map(CpuStorage::F64), c.map(CpuStorage::F64))
            }
            _ => unreachable!("same dtype"),
        };
        let mut out = vec![wrap(dx, self.x.shape()), wrap(dw, self.w.shape())];
        if let Some(b) = &self.b {
            out.push(wrap(db, b.shape()));
        }
        Ok(out)
    }
}

impl Tensor {
    /// Convolve `self [N, C, H, W]` with `weight [O, C/groups, kh, kw]`, plus optional `bias [O]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
        self.same_dtype("conv2d", weight)?;
        let (sx, sw) = (self.shape(), weight.shape());
        if sx.len() != 4 || sw.len() != 4 {
            return shape_err(
                "conv2d",
                format!("input {} and weight {} must both be 4-D", fmt_shape(sx), fmt_shape(sw)),
            );
        }
        if p.groups == 0 || p.stride.0 == 0 || p.stride.1 == 0 || p.dilation.0 == 0 || p.dilation.1 == 0 {
            return arg_err(
                "conv2d",
                format!(
                    "stride {:?}, dilation {:?} and groups {} must be positive",
                    p.stride, p.dilation, p.groups
                ),
            );
        }
        let (n, c, h, w) = (sx[0], sx[1], sx[2], sx[3]);
        let (o, cg, kh, kw) = (sw[0], sw[1], sw[2], sw[3]);
        if c % p.groups != 0 || o % p.groups != 0 || cg * p.groups != c {
            return shape_err(
                "conv2d",
                format!("input {} and weight {} do not fit groups={} (need in_channels = weight[1]·groups and out_channels divisible by groups)", fmt_shape(sx), fmt_shape(sw), p.groups),
            );
        }
        let (Some(oh), Some(ow)) = (
            conv_out_size(h, kh, p.stride.0, p.padding.0, p.dilation.0),
            conv_out_size(w, kw, p.stride.1, p.padding.1, p.dilation.1),
        ) else {
            return shape_err(
                "conv2d",
                format!(
                    "kernel {kh}x{kw} (dilation {:?}) does not fit input {} with padding {:?}",
                    p.dilation,
                    fmt_shape(sx),
                    p.padding
                ),
            );
        };
        if let Some(b) = bias {
            self.same_dtype("conv2d", b)?;
            if b.shape() != [o] {
                return shape_err(
                    "conv2d",
                    format!("bias {} does not match {o} output channels", fmt_shape(b.shape())),
                );
            }
        }
        let geom = Geometry {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            p,
        };
        let (xs, ws) = (self.contiguous_storage(), weight.contiguous_storage());
        let bs = bias.map(|b| b.contiguous_storage());
        let out = match (&xs, &ws) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(conv_forward(
                x,
                w,
                bs.as_ref().map(|b| f32::slice(b).expect("dtype")),
                &geom,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(conv_forward(
                x,
                w,
                bs.as_ref().map(|b| f64::slice(b).expect("dtype")),
                &geom,
            )),
            _ => unreachable!("dtype checked"),
        };
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(Tensor::from_storage(out, &[n, o, oh, ow]).attach(&inputs, || {
            node(Conv2dBackward {
                x: self.clone(),
                w: weight.clone(),
                b: bias.cloned(),
                geom,
            })
        }))
    }
}
