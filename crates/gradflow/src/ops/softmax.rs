//! softmax and log_softmax along an axis, each with its fused backward rule.
//! Both subtract the row maximum first, so finite logits (even ±1e4) never
//! overflow.

use crate::autograd::{node, GradFn};
use crate::error::Result;
use crate::layout::normalize_axis;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

const ROWS_PAR: usize = 1 << 14;

fn rows_map<T: Element>(x: &[T], c: usize, f: impl Fn(&[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if c == 0 {
        return out;
    }
    if x.len() >= ROWS_PAR {
        out.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, r)| f(r, o));
    } else {
        out.chunks_mut(c).zip(x.chunks(c)).for_each(|(o, r)| f(r, o));
    }
    out
}

/// softmax of one row, numerically stable.
pub(crate) fn softmax_row<T: Element>(r: &[T], o: &mut [T]) {
    let m = r.iter().copied().fold(T::neg_infinity(), T::max);
    let mut s = T::zero();
    for (o, &x) in o.iter_mut().zip(r) {
        *o = (x - m).exp();
        s += *o;
    }
    let inv = s.recip();
    o.iter_mut().for_each(|o| *o *= inv);
}

/// log_softmax of one row: x − max − log Σ e^{x − max}.
pub(crate) fn log_softmax_row<T: Element>(r: &[T], o: &mut [T]) {
    let m = r.iter().copied().fold(T::neg_infinity(), T::max);
    let s: T = r.iter().map(|&x| (x - m).exp()).sum();
    let lse = m + s.ln();
    for (o, &x) in o.iter_mut().zip(r) {
        *o = x - lse;
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Softmax,
    LogSoftmax,
}

struct SoftmaxBackward {
    x: Tensor,
    kind: Kind,
}
impl GradFn for SoftmaxBackward {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Softmax => "softmax",
            Kind::LogSoftmax => "log_softmax",
        }
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, out: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let c = *out.shape().last().unwrap_or(&1);
        let (ys, gs) = (out.contiguous_storage(), g.contiguous_storage());
        let kind = self.kind;
        let res = match (&ys, &gs) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(backward_rows(y, g, c, kind)),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(backward_rows(y, g, c, kind)),
            _ => unreachable!("same dtype"),
        };
        Ok(vec![Some(Tensor::from_storage(res, out.shape()))])
    }
}

fn backward_rows<T: Element>(y: &[T], g: &[T], c: usize, kind: Kind) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    if c == 0 {
        return out;
    }
    let body = |(o, (y, g)): (&mut [T], (&[T], &[T]))| match kind {
        // softmax: dx = y ⊙ (g − Σ g⊙y)
        Kind::Softmax => {
            let dot: T = y.iter().zip(g).map(|(&a, &b)| a * b).sum();
            for i in 0..c {
                o[i] = y[i] * (g[i] - dot);
            }
        }
        // log_softmax: dx = g − softmax ⊙ Σ g
        Kind::LogSoftmax => {
            let s: T = g.iter().copied().sum();
            for i in 0..c {
                o[i] = g[i] - y[i].exp() * s;
            }
        }
    };
    if y.len() >= ROWS_PAR {
        out.par_chunks_mut(c)
            .zip(y.par_chunks(c).zip(g.par_chunks(c)))
            .for_each(body);
    } else {
        out.chunks_mut(c).zip(y.chunks(c).zip(g.chunks(c))).for_each(body);
    }
    out
}

impl Tensor {
    fn softmax_kind(&self, axis: isize, kind: Kind) -> Result<Tensor> {
        let a = normalize_axis("softmax", axis, self.ndim())?;
        if a + 1 != self.ndim() {
            // Move the axis last, work on rows, move it back: all differentiable views.
            let last = self.ndim() as isize - 1;
            let moved = self.transpose(a as isize, last)?;
            return moved.softmax_kind(-1, kind)?.transpose(a as isize, last);
        }
        let c = self.shape()[a];
        let xs = self.contiguous_storage();
        let out = match (&xs, kind) {
            (CpuStorage::F32(x), Kind::Softmax) => CpuStorage::F32(rows_map(x, c, softmax_row)),
            (CpuStorage::F64(x), Kind::Softmax) => CpuStorage::F64(rows_map(x, c, softmax_row)),
            (CpuStorage::F32(x), Kind::LogSoftmax) => CpuStorage::F32(rows_map(x, c, log_softmax_row)),
            (CpuStorage::F64(x), Kind::LogSoftmax) => CpuStorage::F64(rows_map(x, c, log_softmax_row)),
        };
        Ok(Tensor::from_storage(out, self.shape()).attach(&[self], || node(SoftmaxBackward { x: self.clone(), kind })))
    }

    /// softmax along `axis`: positive entries summing to 1.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_kind(axis, Kind::Softmax)
    }

    /// log of softmax along `axis`, computed without forming the softmax (stable for large logits).
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_kind(axis, Kind::LogSoftmax)
    }
}
