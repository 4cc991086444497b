//! Matrix products: `matmul` (2-D and batched, with broadcast batch
//! dimensions) and the fused `linear` of a dense layer. Both go through the
//! `gemm` crate with strides, so transposed operands are never copied.

use crate::autograd::{node, GradFn};
use crate::error::{shape_err, Result};
use crate::kernels::gemm::{gemm, MatRef};
use crate::layout::{broadcast_shapes, fmt_shape, for_each_offset2, Layout};
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

fn mat<T>(data: &[T], offset: usize, l: &Layout) -> MatRef<T> {
    let nd = l.shape.len();
    MatRef {
        ptr: data[offset..].as_ptr(),
        rs: l.strides[nd - 2] as isize,
        cs: l.strides[nd - 1] as isize,
    }
}

struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// out[batch…, m, n] = a[batch…, m, k] · b[batch…, k, n], both already broadcast to the batch shape.
fn batched_kernel<T: Element>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    batch: &[usize],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<T> {
    let nb: usize = batch.iter().product();
    let mut out = vec![T::zero(); nb * m * n];
    let nbd = batch.len();
    let mut pairs = Vec::with_capacity(nb);
    for_each_offset2(
        batch,
        &la.strides[..nbd],
        la.offset,
        &lb.strides[..nbd],
        lb.offset,
        |oa, ob| pairs.push((oa, ob)),
    );
    if nb == 1 {
        let (oa, ob) = pairs[0];
        // SAFETY: offsets and strides come from valid layouts of these buffers.
        unsafe { gemm(m, n, k, &mut out, mat(a, oa, la), mat(b, ob, lb), false, true) };
        return out;
    }
    let optr = SendPtr(out.as_mut_ptr());
    let optr = &optr;
    pairs.par_iter().enumerate().for_each(|(i, &(oa, ob))| {
        // SAFETY: each batch writes its own disjoint m×n block of `out`.
        let dst = unsafe { std::slice::from_raw_parts_mut(optr.0.add(i * m * n), m * n) };
        unsafe { gemm(m, n, k, dst, mat(a, oa, la), mat(b, ob, lb), false, false) };
    });
    out
}

struct MatmulBackward {
    a: Tensor,
    b: Tensor,
}
impl GradFn for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.a.clone(), self.b.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // C = A·B  ⇒  dA = dC·Bᵀ, dB = Aᵀ·dC (summed over broadcast batch dimensions).
        let ga = if needs[0] {
            Some(g.matmul(&self.b.t()?)?.sum_to(self.a.shape())?)
        } else {
            None
        };
        let gb = if needs[1] {
            Some(self.a.t()?.matmul(g)?.sum_to(self.b.shape())?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

impl Tensor {
    /// Matrix product of the last two dimensions, broadcasting the others.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.same_dtype("matmul", other)?;
        let (sa, sb) = (self.shape(), other.shape());
        if sa.len() < 2 || sb.len() < 2 {
            return shape_err(
                "matmul",
                format!(
                    "{} x {}: both operands need at least 2 dimensions",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            );
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            return shape_err(
                "matmul",
                format!(
                    "{} x {}: inner dimensions {k} and {k2} differ",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            );
        }
        let batch = broadcast_shapes("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2]).or_else(|_| {
            shape_err(
                "matmul",
                format!(
                    "{} x {}: batch dimensions do not broadcast",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            )
        })?;
        let mut shape_a = batch.clone();
        shape_a.extend([m, k]);
        let mut shape_b = batch.clone();
        shape_b.extend([k, n]);
        let la = self.layout().broadcast_to("matmul", &shape_a)?;
        let lb = other.layout().broadcast_to("matmul", &shape_b)?;
        let (xa, xb) = (self.storage(), other.storage());
        let out = match (xa.cpu(), xb.cpu()) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(batched_kernel(a, &la, b, &lb, &batch, m, n, k))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(batched_kernel(a, &la, b, &lb, &batch, m, n, k))
            }
            _ => unreachable!("dtype checked"),
        };
        let mut shape = batch;
        shape.extend([m, n]);
        Ok(Tensor::from_storage(out, &shape).attach(&[self, other], || {
            node(MatmulBackward {
                a: self.clone(),
                b: other.clone(),
            })
        }))
    }

    /// A dense layer in one op: `x · Wᵀ + b` for x `[N, in]`, W `[out, in]` (PyTorch's layout), b `[out]`.
    /// The bias is written first and the product accumulated onto it, saving a pass;
    /// backward computes exactly the three products it needs.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.same_dtype("linear", weight)?;
        let (sx, sw) = (self.shape(), weight.shape());
        if sx.len() != 2 || sw.len() != 2 || sx[1] != sw[1] {
            return shape_err(
                "linear",
                format!(
                    "input {} and weight {} (expected [N, in] and [out, in] with equal in)",
                    fmt_shape(sx),
                    fmt_shape(sw)
                ),
            );
        }
        let (nrows, nin, nout) = (sx[0], sx[1], sw[0]);
        if let Some(b) = bias {
            self.same_dtype("linear", b)?;
            if b.shape() != [nout] {
                return shape_err(
                    "linear",
                    format!("bias {} does not match weight {}", fmt_shape(b.shape()), fmt_shape(sw)),
                );
            }
        }
        let out = {
            let (xs, ws) = (self.storage(), weight.storage());
            let bs = bias.map(|b| b.contiguous_storage());
            match (xs.cpu(), ws.cpu()) {
                (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(linear_kernel(
                    x,
                    self.layout(),
                    w,
                    weight.layout(),
                    bs.as_ref().map(|b| f32::slice(b).expect("dtype")),
                    nrows,
                    nin,
                    nout,
                )),
                (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(linear_kernel(
                    x,
                    self.layout(),
                    w,
                    weight.layout(),
                    bs.as_ref().map(|b| f64::slice(b).expect("dtype")),
                    nrows,
                    nin,
                    nout,
                )),
                _ => unreachable!("dtype checked"),
            }
        };
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(Tensor::from_storage(out, &[nrows, nout]).attach(&inputs, || {
            node(LinearBackward {
                x: self.clone(),
                w: weight.clone(),
                b: bias.cloned(),
            })
        }))
    }
}

#[allow(clippy::too_many_arguments)]
fn linear_kernel<T: Element>(
    x: &[T],
    lx: &Layout,
    w: &[T],
    lw: &Layout,
    b: Option<&[T]>,
    nrows: usize,
    nin: usize,
    nout: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); nrows * nout];
    if let Some(b) = b {
        for row in out.chunks_mut(nout) {
            row.copy_from_slice(b);
        }
    }
    // Wᵀ as a strided view: element (i, j) of Wᵀ is W[j, i].
    let wt = MatRef {
        ptr: w[lw.offset..].as_ptr(),
        rs: lw.strides[1] as isize,
        cs: lw.strides[0] as isize,
    };
    // SAFETY: layouts describe valid regions of x and w.
    unsafe { gemm(nrows, nout, nin, &mut out, mat(x, lx.offset, lx), wt, b.is_some(), true) };
    out
}

struct LinearBackward {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
}
impl GradFn for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.x.clone(), self.w.clone()];
        if let Some(b) = &self.b {
            v.push(b.clone());
        }
        v
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // y = x·Wᵀ + b  ⇒  dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.
        let gx = if needs[0] { Some(g.matmul(&self.w)?) } else { None };
        let gw = if needs[1] { Some(g.t()?.matmul(&self.x)?) } else { None };
        let mut out = vec![gx, gw];
        if self.b.is_some() {
            out.push(if needs[2] { Some(g.sum(&[0], false)?) } else { None });
        }
        Ok(out)
    }
}
