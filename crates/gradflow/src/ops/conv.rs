//! 2-D convolution (cross-correlation, as in PyTorch) by im2col + GEMM, with
//! stride, padding, dilation and groups. Samples run in parallel; each
//! unfolds its own patches into a column matrix and multiplies by the weights.
//! Backward reuses forward's columns when they are small enough to keep, and
//! recomputes them otherwise, to bound memory.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::kernels::conv_windows;
use crate::kernels::gemm::{gemm_to, MatRef};
use crate::kernels::im2col::{col2im, im2col, im2col_uninit, Geometry};
use crate::kernels::weight_grad::{self, RowDots, Rows};
use crate::kernels::Contiguous;
use crate::layout::fmt_shape;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// A strided operand: element (i, j) at `ptr + i·rs + j·cs`.
fn mat<T>(ptr: *const T, rs: usize, cs: usize) -> MatRef<T> {
    MatRef {
        ptr,
        rs: rs as isize,
        cs: cs as isize,
    }
}

/// Forward's columns of a batch are kept for backward up to this size (LeNet-5 at
/// batch 64: 5 MB and 4 MB); larger ones are recomputed, sample by sample.
const KEEP_COLS_BYTES: usize = 128 << 20;

/// From this output width on, at unit stride and dilation, the weight gradient reads
/// windows of the input instead of forward's columns (a row of `OW` outputs then fills
/// most of a run of vector lanes), so forward keeps no columns: LeNet-5's first layer
/// (`OW` 28) unfolds each sample into the thread's scratch memory, in cache, instead of
/// writing 5 MB of columns a step for backward to read again; its second (`OW` 10)
/// keeps them.
const WINDOWS_MIN_OW: usize = 12;

fn reads_windows(g: &Geometry) -> bool {
    weight_grad::available() && g.p.stride == (1, 1) && g.p.dilation == (1, 1) && g.ow >= WINDOWS_MIN_OW
}

/// Forward, sample by sample: each sample is unfolded and multiplied while its columns
/// are still in cache (unfolding the whole batch first and multiplying once measured
/// twice as slow on LeNet-5). Returns `out [N, O, L]`, plus every sample's columns
/// `[C·kk, L]` when `keep_cols`, for backward to reuse.
fn conv_forward<T: Element>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    g: &Geometry,
    keep_cols: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    // Not zeroed first: every path below writes every element (each sample's chunk).
    let len = g.n * g.o * g.l();
    let mut out: Vec<T> = Vec::with_capacity(len);
    let cols = forward_into(&mut out.spare_capacity_mut()[..len], x, w, b, g, keep_cols);
    // SAFETY: `forward_into` wrote every element of the first `len`.
    unsafe { out.set_len(len) };
    (out, cols)
}

/// [`conv_forward`] into `out`'s memory, which it writes whole; returns the kept columns.
fn forward_into<T: Element>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    g: &Geometry,
    keep_cols: bool,
) -> Option<Vec<T>> {
    let sample = g.c * g.h * g.w;
    let cols_len = g.c * g.kk() * g.l();
    // (`max(1)`: with no output channels or no columns there is nothing to chunk.)
    let out_chunk = (g.o * g.l()).max(1);
    // (With no output channels there is nothing to multiply, and nothing would
    // write the columns.)
    if keep_cols && cols_len > 0 && g.o > 0 {
        // Not zeroed first: im2col writes every element. (A buffer of the previous
        // step's graph, handed back when its node was freed; see kernels::recycle.)
        let mut cols = crate::kernels::recycle::take::<T>(g.n * cols_len);
        out.par_chunks_mut(out_chunk)
            .zip(cols.spare_capacity_mut().par_chunks_mut(cols_len))
            .enumerate()
            .for_each(|(n, (out_n, cols_n))| {
                im2col_uninit(&x[n * sample..(n + 1) * sample], g, cols_n);
                // SAFETY: im2col_uninit initialized all of cols_n.
                let cols_n = unsafe { &*(cols_n as *const [MaybeUninit<T>] as *const [T]) };
                multiply_sample(out_n, cols_n, w, b, g);
            });
        // SAFETY: every sample's chunk was initialized above.
        unsafe { cols.set_len(g.n * cols_len) };
        Some(cols)
    } else if reads_windows(g) && g.o > 0 {
        // No columns at all: each sample's zero-bordered input, in the thread's scratch
        // memory, read through windows (see `kernels::conv_windows`).
        let padded = g.c * (g.h + 2 * g.p.padding.0) * (g.w + 2 * g.p.padding.1);
        let taps = conv_windows::tap_offsets(g);
        out.par_chunks_mut(out_chunk).enumerate().for_each(|(n, out_n)| {
            crate::kernels::with_scratch(padded, |xp: &mut [T]| {
                zero_border(&x[n * sample..(n + 1) * sample], g, xp);
                conv_windows::forward_sample(xp, w, b, g, &taps, out_n);
            })
        });
        None
    } else {
        // Each sample's columns in the thread's scratch memory, still in cache for the product.
        out.par_chunks_mut(out_chunk).enumerate().for_each(|(n, out_n)| {
            crate::kernels::with_scratch(cols_len, |cols: &mut [T]| {
                im2col(&x[n * sample..(n + 1) * sample], g, cols);
                multiply_sample(out_n, cols, w, b, g);
            })
        });
        None
    }
}

/// One sample's `out_n [O, L]` = its columns times the weights (plus the bias), every
/// element written (the products overwrite, or add to the bias written first).
///
/// Each product is written transposed, `outᵀ [L, O] = colsᵀ [L, C·kk] · Wᵀ`: few output
/// channels (6 and 16 in LeNet-5) are then the narrow side of the product, which the
/// GEMM micro-kernel covers in one pass, and the many output pixels its long side.
#[inline]
fn multiply_sample<T: Element>(out_n: &mut [MaybeUninit<T>], cols: &[T], w: &[T], b: Option<&[T]>, g: &Geometry) {
    let (cg, og, kk, l) = (g.cg(), g.og(), g.kk(), g.l());
    if let Some(b) = b {
        for (o, row) in out_n.chunks_mut(l).enumerate() {
            row.fill(MaybeUninit::new(b[o]));
        }
    }
    for grp in 0..g.p.groups {
        // SAFETY: out_n holds O×L, cols C·kk×L and w O×Cg·kk elements; group grp
        // reads and writes inside its own rows of each.
        unsafe {
            gemm_to(
                l,
                og,
                cg * kk,
                out_n[grp * og * l..].as_mut_ptr() as *mut T,
                1,
                l as isize,
                mat(cols[grp * cg * kk * l..].as_ptr(), 1, l),
                mat(w[grp * og * cg * kk..].as_ptr(), 1, cg * kk),
                b.is_some(),
                false,
            )
        };
    }
}

/// What backward of [`conv_forward`] reads: its operands, the output gradient `gout
/// [N, O, L]`, forward's columns of every sample when it kept them, and which of the
/// input and weight gradients are wanted.
#[derive(Clone, Copy)]
struct ConvBackwardPass<'a, T> {
    x: &'a [T],
    w: &'a [T],
    gout: &'a [T],
    saved_cols: Option<&'a [T]>,
    g: Geometry,
    need_x: bool,
    need_w: bool,
}

impl<T: Element> ConvBackwardPass<'_, T> {
    /// (dx, dW), each empty when not needed. The weight gradient comes from
    /// [`Self::weight_grad`] where its kernel runs; otherwise, and for dx, samples run
    /// in parallel, each thread adding its samples' weight gradients into its own
    /// buffer, summed at the end.
    fn run(&self) -> (Vec<T>, Vec<T>) {
        if let Some(dw) = self.need_w.then(|| self.weight_grad()).flatten() {
            let dx = match self.need_x {
                true => ConvBackwardPass { need_w: false, ..*self }.run().0,
                false => Vec::new(),
            };
            return (dx, dw);
        }
        let g = &self.g;
        let cols_len = g.c * g.kk() * g.l();
        let wlen = if self.need_w { g.o * g.cg() * g.kk() } else { 0 };
        let mut dx = vec![T::zero(); if self.need_x { g.n * g.c * g.h * g.w } else { 0 }];
        let init = || {
            (
                vec![T::zero(); wlen],
                // Scratch columns: for dx, and for dW when forward kept none.
                vec![
                    T::zero();
                    if self.need_x || self.saved_cols.is_none() {
                        cols_len
                    } else {
                        0
                    }
                ],
            )
        };
        let dw = if self.need_x {
            // (`max(1)`: with no input channels `dx` is empty and so is every weight gradient.)
            dx.par_chunks_mut((g.c * g.h * g.w).max(1))
                .enumerate()
                .fold(init, |(mut dw, mut cols), (n, dx_n)| {
                    self.sample(n, Some(dx_n), &mut dw, &mut cols);
                    (dw, cols)
                })
                .map(|(dw, _)| dw)
                .reduce(|| vec![T::zero(); wlen], add_vecs)
        } else {
            (0..g.n)
                .into_par_iter()
                .fold(init, |(mut dw, mut cols), n| {
                    self.sample(n, None, &mut dw, &mut cols);
                    (dw, cols)
                })
                .map(|(dw, _)| dw)
                .reduce(|| vec![T::zero(); wlen], add_vecs)
        };
        (dx, dw)
    }

    /// Sample `n`'s share: its weight gradient added into `dw`, its input gradient
    /// written into `dx_n`; `cols` is scratch of C·kk×L elements when needed.
    fn sample(&self, n: usize, dx_n: Option<&mut [T]>, dw: &mut [T], cols: &mut [T]) {
        let g = &self.g;
        let (sample, cols_len) = (g.c * g.h * g.w, g.c * g.kk() * g.l());
        let go = &self.gout[n * g.o * g.l()..(n + 1) * g.o * g.l()];
        if self.need_w {
            let cols: &[T] = match self.saved_cols {
                Some(all) if cols_len > 0 => &all[n * cols_len..(n + 1) * cols_len],
                _ => {
                    im2col(&self.x[n * sample..(n + 1) * sample], g, cols);
                    cols
                }
            };
            self.add_weight_grad(go, cols, dw);
        }
        if let Some(dx_n) = dx_n {
            self.input_grad(go, cols, dx_n);
        }
    }

    /// The weight gradient of the whole batch in one pass (see `kernels::weight_grad`):
    /// `dW_g [og, cg·kk] = Σₙ dY_g,n [og, L] · cols_g,nᵀ`, the columns read where forward
    /// left them, or else, at unit stride and dilation, as windows of the zero-bordered
    /// input: column row (c, i, j) is the input's rows from i, shifted by j, `OW` long.
    /// None where the kernel does not run.
    fn weight_grad(&self) -> Option<Vec<T>> {
        let g = &self.g;
        let (cg, og, kk, l) = (g.cg(), g.og(), g.kk(), g.l());
        let unit = g.p.stride == (1, 1) && g.p.dilation == (1, 1);
        if !weight_grad::available() || (self.saved_cols.is_none() && !unit) {
            return None;
        }
        let mut dw = vec![T::zero(); g.o * cg * kk];
        if g.n == 0 || l == 0 {
            return Some(dw);
        }
        // The windows' input: the batch itself when it has no border to add.
        let bordered;
        let input: &[T] = match (self.saved_cols, g.p.padding) {
            (Some(_), _) => &[],
            (None, (0, 0)) => self.x,
            (None, _) => {
                bordered = zero_bordered(self.x, g);
                &bordered
            }
        };
        let (hp, wp) = (g.h + 2 * g.p.padding.0, g.w + 2 * g.p.padding.1);
        for (grp, dw) in dw.chunks_mut((og * cg * kk).max(1)).enumerate().take(g.p.groups) {
            let dy_rows: Vec<usize> = (0..og).map(|o| (grp * og + o) * l).collect();
            let (run, runs, b_rows, b) = match self.saved_cols {
                Some(cols) => {
                    let rows = (0..cg * kk).map(|r| (grp * cg * kk + r) * l).collect();
                    let b = Rows {
                        data: cols,
                        sample_stride: g.c * kk * l,
                        rows: &[][..],
                        run_stride: l,
                    };
                    (l, 1, rows, b)
                }
                None => {
                    let group = grp * cg * hp * wp;
                    let b = Rows {
                        data: input,
                        sample_stride: g.c * hp * wp,
                        rows: &[][..],
                        run_stride: wp,
                    };
                    let rows: Vec<usize> = conv_windows::tap_offsets(g).into_iter().map(|t| group + t).collect();
                    (g.ow, g.oh, rows, b)
                }
            };
            let x = RowDots {
                a: Rows {
                    data: self.gout,
                    sample_stride: g.o * l,
                    rows: &dy_rows,
                    run_stride: run,
                },
                b: Rows { rows: &b_rows, ..b },
                run,
                runs,
                samples: g.n,
            };
            weight_grad::sum_of_row_dots(x, dw, cg * kk);
        }
        Some(dw)
    }

    /// `dw += ` one sample's weight gradient, from its columns and output gradient `go`.
    fn add_weight_grad(&self, go: &[T], cols: &[T], dw: &mut [T]) {
        let g = &self.g;
        let (cg, og, kk, l) = (g.cg(), g.og(), g.kk(), g.l());
        for grp in 0..g.p.groups {
            // dW_gᵀ [cg·kk, og] += cols_g [cg·kk, L] · dY_gᵀ [L, og]
            // SAFETY: dw holds O×Cg·kk, cols C·kk×L, go O×L; each group stays in its rows.
            unsafe {
                gemm_to(
                    cg * kk,
                    og,
                    l,
                    dw[grp * og * cg * kk..].as_mut_ptr(),
                    1,
                    (cg * kk) as isize,
                    mat(cols[grp * cg * kk * l..].as_ptr(), l, 1),
                    mat(go[grp * og * l..].as_ptr(), 1, l),
                    true,
                    false,
                )
            };
        }
    }

    /// One sample's input gradient: the columns' gradient (into the scratch `cols`),
    /// folded back onto the sample's pixels.
    fn input_grad(&self, go: &[T], cols: &mut [T], dx_n: &mut [T]) {
        let g = &self.g;
        let (cg, og, kk, l) = (g.cg(), g.og(), g.kk(), g.l());
        for grp in 0..g.p.groups {
            // dcols_gᵀ [L, cg·kk] = dY_gᵀ [L, og] · W_g [og, cg·kk]
            // SAFETY: cols holds C·kk×L, w O×Cg·kk, go O×L; each group stays in its rows.
            unsafe {
                gemm_to(
                    l,
                    cg * kk,
                    og,
                    cols[grp * cg * kk * l..].as_mut_ptr(),
                    1,
                    l as isize,
                    mat(go[grp * og * l..].as_ptr(), 1, l),
                    mat(self.w[grp * og * cg * kk..].as_ptr(), cg * kk, 1),
                    false,
                    false,
                )
            };
        }
        col2im(cols, g, dx_n);
    }
}

/// The batch `x [N, C, H, W]` with its padding as zeros, `[N, C, H + 2·ph, W + 2·pw]`.
fn zero_bordered<T: Element>(x: &[T], g: &Geometry) -> Vec<T> {
    let padded = g.c * (g.h + 2 * g.p.padding.0) * (g.w + 2 * g.p.padding.1);
    let mut out = vec![T::zero(); g.n * padded];
    for (dst, src) in out
        .chunks_exact_mut(padded.max(1))
        .zip(x.chunks_exact((g.c * g.h * g.w).max(1)))
    {
        zero_border(src, g, dst);
    }
    out
}

/// One sample `x [C, H, W]` into `dst [C, H + 2·ph, W + 2·pw]`, the border zeros.
fn zero_border<T: Element>(x: &[T], g: &Geometry, dst: &mut [T]) {
    let (ph, pw) = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    if (ph, pw) != (0, 0) {
        dst.fill(T::zero());
    }
    for (plane, src) in dst
        .chunks_exact_mut((hp * wp).max(1))
        .zip(x.chunks_exact((g.h * g.w).max(1)))
    {
        for (r, row) in src.chunks_exact(g.w.max(1)).enumerate() {
            plane[(r + ph) * wp + pw..][..g.w].copy_from_slice(row);
        }
    }
}

/// The bias gradient: `gout [N, O, L]` summed over samples and pixels.
fn bias_grad<T: Element>(gout: &[T], g: &Geometry) -> Vec<T> {
    let l = g.l();
    let mut db = vec![T::zero(); g.o];
    for n in 0..g.n {
        for (o, d) in db.iter_mut().enumerate() {
            *d += crate::kernels::reduce::sum_slice(&gout[(n * g.o + o) * l..(n * g.o + o + 1) * l]);
        }
    }
    db
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
    /// Forward's columns of every sample, when kept (see [`KEEP_COLS_BYTES`]).
    cols: Option<CpuStorage>,
}

impl Drop for Conv2dBackward {
    fn drop(&mut self) {
        // The columns are a few megabytes that the next step's forward needs again.
        match self.cols.take() {
            Some(CpuStorage::F32(v)) => crate::kernels::recycle::give(v),
            Some(CpuStorage::F64(v)) => crate::kernels::recycle::give(v),
            _ => {}
        }
    }
}

fn tests_force_recompute() -> bool {
    #[cfg(test)]
    return FORCE_RECOMPUTE.with(|f| f.get());
    #[cfg(not(test))]
    false
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
        // Borrowed in place when contiguous (the usual case), copied otherwise.
        let (xs, ws, gs) = (Contiguous::of(&self.x), Contiguous::of(&self.w), Contiguous::of(g));
        let [dx, dw, db] = self
            .grads::<f32>(&xs, &ws, &gs, needs)
            .or_else(|| self.grads::<f64>(&xs, &ws, &gs, needs))
            .expect("same dtype");
        drop((xs, ws, gs));
        let wrap = |v: Option<CpuStorage>, shape: &[usize]| v.map(|s| Tensor::from_storage(s, shape));
        let mut out = vec![wrap(dx, self.x.shape()), wrap(dw, self.w.shape())];
        if let Some(b) = &self.b {
            out.push(wrap(db, b.shape()));
        }
        Ok(out)
    }
}

impl Conv2dBackward {
    /// The wanted gradients of x, W and b, when the operands are of element type `T`.
    fn grads<T: Element>(
        &self,
        x: &Contiguous,
        w: &Contiguous,
        gout: &Contiguous,
        needs: &[bool],
    ) -> Option<[Option<CpuStorage>; 3]> {
        let pass = ConvBackwardPass {
            x: x.slice()?,
            w: w.slice()?,
            gout: gout.slice()?,
            saved_cols: self.cols.as_ref().and_then(T::slice),
            g: self.geom,
            need_x: needs[0],
            need_w: needs[1],
        };
        let (dx, dw) = pass.run();
        let db = (self.b.is_some() && needs[2]).then(|| bias_grad(pass.gout, &self.geom));
        Some([
            pass.need_x.then(|| T::into_storage(dx)),
            pass.need_w.then(|| T::into_storage(dw)),
            db.map(T::into_storage),
        ])
    }
}

impl Tensor {
    /// Convolve `self [N, C, H, W]` with `weight [O, C/groups, kh, kw]`, plus optional `bias [O]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
        let geom = conv_geometry(self, weight, bias, p)?;
        let cols_bytes = geom.n * geom.c * geom.kk() * geom.l() * self.dtype().size_in_bytes();
        let keep_cols = crate::autograd::is_grad_enabled()
            && weight.requires_grad()
            && cols_bytes <= KEEP_COLS_BYTES
            && !reads_windows(&geom)
            && !tests_force_recompute();
        let (out, cols) = {
            let (xs, ws) = (Contiguous::of(self), Contiguous::of(weight));
            let bs = bias.map(Contiguous::of);
            forward_storage::<f32>(&xs, &ws, bs.as_ref(), &geom, keep_cols)
                .or_else(|| forward_storage::<f64>(&xs, &ws, bs.as_ref(), &geom, keep_cols))
                .expect("dtype checked")
        };
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(
            Tensor::from_storage(out, &[geom.n, geom.o, geom.oh, geom.ow]).attach(&inputs, || {
                node(Conv2dBackward {
                    x: self.clone(),
                    w: weight.clone(),
                    b: bias.cloned(),
                    geom,
                    cols,
                })
            }),
        )
    }
}

/// [`conv_forward`] when the operands are of element type `T`: the output, and the columns if kept.
fn forward_storage<T: Element>(
    x: &Contiguous,
    w: &Contiguous,
    b: Option<&Contiguous>,
    geom: &Geometry,
    keep_cols: bool,
) -> Option<(CpuStorage, Option<CpuStorage>)> {
    let (x, w) = (x.slice::<T>()?, w.slice::<T>()?);
    let b = b.map(|b| b.slice::<T>().expect("dtype checked"));
    let (out, cols) = conv_forward(x, w, b, geom, keep_cols);
    Some((T::into_storage(out), cols.map(T::into_storage)))
}

/// A bias, if any, must be `[o]` in the input's dtype.
fn check_bias(x: &Tensor, bias: Option<&Tensor>, o: usize) -> Result<()> {
    let Some(b) = bias else { return Ok(()) };
    x.same_dtype("conv2d", b)?;
    if b.shape() != [o] {
        return shape_err(
            "conv2d",
            format!("bias {} does not match {o} output channels", fmt_shape(b.shape())),
        );
    }
    Ok(())
}

/// The sizes of `x`'s convolution with `weight`, once every shape and parameter is checked.
fn conv_geometry(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Result<Geometry> {
    x.same_dtype("conv2d", weight)?;
    let (sx, sw) = (x.shape(), weight.shape());
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
    check_bias(x, bias, o)?;
    Ok(Geometry {
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
    })
}

#[cfg(test)]
thread_local! {
    /// Set by tests to take the recomputing path with small convolutions too.
    static FORCE_RECOMPUTE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::{conv_out_size, Conv2dParams, FORCE_RECOMPUTE};
    use crate::testutil::{check, rand64};
    use crate::{seeded_rng, DType, Tensor};

    fn params(
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Conv2dParams {
        Conv2dParams {
            stride,
            padding,
            dilation,
            groups,
        }
    }

    /// Direct convolution, one output element at a time (f64).
    fn naive(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> (Vec<usize>, Vec<f64>) {
        let (xs, ws) = (x.shape(), w.shape());
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let og = o / p.groups;
        let oh = conv_out_size(h, kh, p.stride.0, p.padding.0, p.dilation.0).unwrap();
        let ow = conv_out_size(wd, kw, p.stride.1, p.padding.1, p.dilation.1).unwrap();
        let (xv, wv) = (x.to_vec_f64(), w.to_vec_f64());
        let bv = b.map(|b| b.to_vec_f64());
        let mut out = vec![0.0; n * o * oh * ow];
        for ni in 0..n {
            for oi in 0..o {
                let g = oi / og;
                for i in 0..oh {
                    for j in 0..ow {
                        let mut s = bv.as_ref().map_or(0.0, |b| b[oi]);
                        for ci in 0..cg {
                            let cin = g * cg + ci;
                            for a in 0..kh {
                                for bb in 0..kw {
                                    let ih = (i * p.stride.0 + a * p.dilation.0) as isize - p.padding.0 as isize;
                                    let iw = (j * p.stride.1 + bb * p.dilation.1) as isize - p.padding.1 as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                        continue;
                                    }
                                    let xval = xv[((ni * c + cin) * h + ih as usize) * wd + iw as usize];
                                    s += xval * wv[((oi * cg + ci) * kh + a) * kw + bb];
                                }
                            }
                        }
                        out[((ni * o + oi) * oh + i) * ow + j] = s;
                    }
                }
            }
        }
        let _ = c;
        (vec![n, o, oh, ow], out)
    }

    /// (x shape, w shape, params) for a set of small configurations.
    fn configs() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
        vec![
            ([2, 3, 5, 5], [4, 3, 3, 3], Conv2dParams::default()),
            ([1, 2, 6, 5], [3, 2, 3, 2], params((2, 1), (0, 0), (1, 1), 1)),
            ([2, 2, 5, 4], [2, 2, 3, 3], params((1, 1), (1, 1), (1, 1), 1)),
            ([1, 2, 7, 6], [2, 2, 2, 3], params((1, 2), (2, 1), (2, 2), 1)),
            ([2, 4, 5, 5], [4, 2, 3, 3], params((1, 1), (1, 1), (1, 1), 2)),
            ([1, 4, 6, 6], [6, 2, 2, 2], params((2, 2), (1, 0), (1, 2), 2)),
            ([1, 3, 4, 4], [3, 1, 3, 3], params((1, 1), (1, 1), (1, 1), 3)), // depthwise
            ([2, 2, 3, 3], [3, 2, 1, 1], Conv2dParams::default()),           // 1x1
            ([1, 1, 3, 4], [2, 1, 3, 4], Conv2dParams::default()),           // kernel = input
            ([1, 1, 1, 1], [2, 1, 3, 3], params((1, 1), (1, 1), (1, 1), 1)), // all padding but the centre
            // Output rows of 8 and of 19 (copied 8 at a time, the last 8 overlapping).
            ([1, 2, 4, 10], [2, 2, 3, 3], params((1, 1), (1, 0), (1, 1), 1)),
            ([1, 1, 3, 19], [2, 1, 2, 3], params((1, 1), (0, 2), (1, 1), 1)),
            // Rows of 12 and more outputs at unit stride: forward and the weight gradient
            // read windows of the input (with AVX-512), with groups, with padding.
            ([2, 4, 3, 14], [4, 2, 2, 3], params((1, 1), (0, 0), (1, 1), 2)),
            ([2, 1, 6, 16], [7, 1, 5, 5], params((1, 1), (2, 2), (1, 1), 1)),
        ]
    }

    /// Run `f` on both paths: columns kept from forward, then recomputed in backward.
    fn both_paths(f: impl Fn()) {
        for recompute in [false, true] {
            FORCE_RECOMPUTE.with(|c| c.set(recompute));
            f();
        }
        FORCE_RECOMPUTE.with(|c| c.set(false));
    }

    #[test]
    fn forward_matches_direct_convolution() {
        both_paths(forward_matches_direct_convolution_on_one_path);
    }

    fn forward_matches_direct_convolution_on_one_path() {
        for (i, (xs, ws, p)) in configs().into_iter().enumerate() {
            let x = rand64(&xs, 10 + i as u64);
            let w = rand64(&ws, 20 + i as u64);
            let b = rand64(&[ws[0]], 30 + i as u64);
            for bias in [None, Some(&b)] {
                let y = x.conv2d(&w, bias, p).unwrap();
                let (shape, want) = naive(&x, &w, bias, p);
                assert_eq!(y.shape(), &shape[..], "config {i}");
                for (g, w) in y.to_vec_f64().iter().zip(&want) {
                    assert!((g - w).abs() < 1e-12, "config {i}: {g} vs {w}");
                }
            }
            // f32 agrees too.
            let y32 = x
                .to_dtype(DType::F32)
                .conv2d(&w.to_dtype(DType::F32), Some(&b.to_dtype(DType::F32)), p)
                .unwrap();
            assert_eq!(y32.dtype(), DType::F32);
            let (_, want) = naive(&x, &w, Some(&b), p);
            for (g, w) in y32.to_vec_f64().iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "config {i} f32: {g} vs {w}");
            }
        }
    }

    #[test]
    fn gradcheck_every_configuration() {
        both_paths(gradcheck_every_configuration_on_one_path);
    }

    fn gradcheck_every_configuration_on_one_path() {
        for (i, (xs, ws, p)) in configs().into_iter().enumerate() {
            let x = rand64(&xs, 40 + i as u64);
            let w = rand64(&ws, 50 + i as u64);
            let b = rand64(&[ws[0]], 60 + i as u64);
            eprintln!("config {i}: x {xs:?} w {ws:?} {p:?}");
            check(
                |t| t[0].conv2d(&t[1], Some(&t[2]), p),
                &[x.clone(), w.clone(), b.clone()],
            );
            check(|t| t[0].conv2d(&t[1], None, p), &[x.clone(), w.clone()]);
        }
    }

    #[test]
    fn gradcheck_partial_needs_and_strided_inputs() {
        both_paths(gradcheck_partial_needs_and_strided_inputs_on_one_path);
    }

    fn gradcheck_partial_needs_and_strided_inputs_on_one_path() {
        let p = params((2, 1), (1, 1), (1, 1), 2);
        let x = rand64(&[2, 4, 5, 4], 1);
        let w = rand64(&[2, 2, 3, 2], 2);
        let b = rand64(&[2], 3);
        // Only the weight, only the input, only bias + input.
        check(|t| x.conv2d(&t[0], Some(&b), p), &[w.clone()]);
        check(|t| t[0].conv2d(&w, None, p), &[x.clone()]);
        check(|t| t[0].conv2d(&w, Some(&t[1]), p), &[x.clone(), b.clone()]);
        check(|t| x.conv2d(&w, Some(&t[0]), p), &[b.clone()]);
        // Non-contiguous input (NHWC storage permuted to NCHW) and a transposed kernel.
        check(
            |t| {
                t[0].permute(&[0, 3, 1, 2])?
                    .conv2d(&t[1].transpose(2, 3)?, Some(&t[2]), p)
            },
            &[rand64(&[2, 5, 4, 4], 4), rand64(&[2, 2, 2, 3], 5), b.clone()],
        );
        // The same tensor as input of two convolutions (gradients add).
        check(
            |t| {
                t[0].conv2d(&t[1], None, p)?
                    .add(&t[0].conv2d(&t[1], None, p)?.mul_scalar(0.5))
            },
            &[x, w],
        );
    }

    #[test]
    fn larger_f32_batch_gradients_match_f64() {
        both_paths(larger_f32_batch_gradients_match_f64_on_one_path);
    }

    fn larger_f32_batch_gradients_match_f64_on_one_path() {
        // Enough samples for the rayon fold/reduce of the weight gradient to split.
        let mut rng = seeded_rng(9);
        let p = params((1, 1), (1, 1), (1, 1), 1);
        let x = Tensor::rand_normal(&[16, 3, 8, 8], 0.0, 1.0, DType::F64, &mut rng);
        let w = Tensor::rand_normal(&[4, 3, 3, 3], 0.0, 1.0, DType::F64, &mut rng);
        let b = Tensor::rand_normal(&[4], 0.0, 1.0, DType::F64, &mut rng);
        let r = Tensor::rand_normal(&[16, 4, 8, 8], 0.0, 1.0, DType::F64, &mut rng);
        let run = |dtype: DType| {
            let (x, w, b) = (
                x.to_dtype(dtype).requires_grad_(true),
                w.to_dtype(dtype).requires_grad_(true),
                b.to_dtype(dtype).requires_grad_(true),
            );
            let g = x
                .conv2d(&w, Some(&b), p)
                .unwrap()
                .mul(&r.to_dtype(dtype))
                .unwrap()
                .sum_all()
                .backward()
                .unwrap();
            [&x, &w, &b].map(|t| g.get(t).unwrap().to_vec_f64())
        };
        let (g64, g32) = (run(DType::F64), run(DType::F32));
        for (a, b) in g64.iter().zip(&g32) {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() < 1e-3 * (1.0 + u.abs()), "{u} vs {v}");
            }
        }
    }

    #[test]
    fn shape_errors_name_the_op() {
        let x = rand64(&[1, 4, 5, 5], 0);
        let e = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        let d = Conv2dParams::default();
        assert_eq!(
            e(rand64(&[4, 5, 5], 0).conv2d(&rand64(&[2, 4, 3, 3], 0), None, d)),
            "conv2d: input [4, 5, 5] and weight [2, 4, 3, 3] must both be 4-D"
        );
        assert!(e(x.conv2d(&rand64(&[2, 3, 3, 3], 0), None, d))
            .starts_with("conv2d: input [1, 4, 5, 5] and weight [2, 3, 3, 3] do not fit groups=1"));
        assert!(e(x.conv2d(&rand64(&[3, 2, 3, 3], 0), None, params((1, 1), (0, 0), (1, 1), 2))).starts_with("conv2d:"));
        assert!(e(x.conv2d(&rand64(&[2, 4, 3, 3], 0), None, params((1, 1), (0, 0), (1, 1), 3))).starts_with("conv2d:"));
        assert_eq!(
            e(x.conv2d(&rand64(&[2, 4, 6, 3], 0), None, d)),
            "conv2d: kernel 6x3 (dilation (1, 1)) does not fit input [1, 4, 5, 5] with padding (0, 0)"
        );
        assert!(
            e(x.conv2d(&rand64(&[2, 4, 3, 3], 0), None, params((1, 1), (0, 0), (3, 1), 1)))
                .starts_with("conv2d: kernel 3x3")
        );
        assert!(
            e(x.conv2d(&rand64(&[2, 4, 3, 3], 0), None, params((0, 1), (0, 0), (1, 1), 1)))
                .starts_with("conv2d: stride (0, 1)")
        );
        assert!(e(x.conv2d(&rand64(&[2, 4, 3, 3], 0), None, params((1, 1), (0, 0), (1, 1), 0))).starts_with("conv2d:"));
        assert_eq!(
            e(x.conv2d(&rand64(&[2, 4, 3, 3], 0), Some(&rand64(&[3], 0)), d)),
            "conv2d: bias [3] does not match 2 output channels"
        );
        assert_eq!(
            e(x.conv2d(&rand64(&[2, 4, 3, 3], 0).to_dtype(DType::F32), None, d)),
            "conv2d: dtype mismatch: f64 and f32"
        );
    }

    #[test]
    fn empty_batch_and_channels() {
        both_paths(empty_batch_and_channels_on_one_path);
    }

    #[test]
    fn zero_width_input_with_padding_sees_only_padding() {
        // Width 0, padded by 1 on each side: every window reads padding, so the output is the bias.
        let p = params((1, 1), (0, 1), (1, 1), 1);
        let x = Tensor::zeros(&[1, 1, 2, 0], DType::F64).requires_grad_(true);
        let w = rand64(&[2, 1, 1, 1], 1).requires_grad_(true);
        let b = Tensor::from_vec(vec![0.5f64, -1.0], &[2]).unwrap();
        let y = x.conv2d(&w, Some(&b), p).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2, 2]);
        assert_eq!(y.to_vec_f64(), vec![0.5, 0.5, 0.5, 0.5, -1.0, -1.0, -1.0, -1.0]);
        let g = y.sum_all().backward().unwrap();
        assert_eq!(g.get(&w).unwrap().to_vec_f64(), vec![0.0, 0.0]);
    }

    fn empty_batch_and_channels_on_one_path() {
        let d = Conv2dParams::default();
        for (xs, ws) in [
            ([0, 2, 4, 4], [3, 2, 3, 3]),
            ([1, 2, 4, 4], [0, 2, 3, 3]),
            ([2, 0, 4, 4], [3, 0, 3, 3]),
        ] {
            let x = Tensor::zeros(&xs, DType::F64).requires_grad_(true);
            let w = rand64(&ws, 1).requires_grad_(true);
            let b = rand64(&[ws[0]], 2).requires_grad_(true);
            let y = x.conv2d(&w, Some(&b), d).unwrap();
            assert_eq!(y.shape(), &[xs[0], ws[0], 2, 2]);
            let g = y.sum_all().backward().unwrap();
            assert_eq!(g.get(&x).unwrap().shape(), &xs);
            assert_eq!(g.get(&w).unwrap().shape(), &ws);
            // Each output pixel adds 1 to its channel's bias gradient.
            assert_eq!(g.get(&b).unwrap().to_vec_f64(), vec![(xs[0] * 4) as f64; ws[0]]);
        }
    }
}
