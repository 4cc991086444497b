//! Elementwise maps over one, two or three operands.

use super::{PAR_CHUNK, PAR_THRESHOLD};
use crate::layout::{for_each_offset, for_each_offset2, Layout};
use crate::tensor::gather_strided;
use crate::Element;
use rayon::prelude::*;

/// `f` over every element of a strided view, into a new row-major buffer.
pub fn map<T: Element>(x: &[T], lx: &Layout, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    match lx.contiguous_range() {
        Some(r) => map_slice(&x[r], f),
        None => {
            let mut out = Vec::with_capacity(lx.numel());
            for_each_offset(&lx.shape, &lx.strides, lx.offset, |o| out.push(f(x[o])));
            out
        }
    }
}

/// `f` over a flat slice, threaded when large.
pub fn map_slice<T: Element>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if x.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    } else {
        out.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x));
    }
    out
}

/// `f` over pairs of same-length flat slices, threaded when large.
pub fn zip_slices<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![T::zero(); a.len()];
    if a.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (a, b))| {
                for i in 0..o.len() {
                    o[i] = f(a[i], b[i]);
                }
            });
    } else {
        for i in 0..out.len() {
            out[i] = f(a[i], b[i]);
        }
    }
    out
}

/// `f` over triples of same-length flat slices (backward rules read x, y and the upstream gradient).
pub fn zip3_slices<T: Element>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    if a.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(
                a.par_chunks(PAR_CHUNK)
                    .zip(b.par_chunks(PAR_CHUNK).zip(c.par_chunks(PAR_CHUNK))),
            )
            .for_each(|(o, (a, (b, c)))| {
                for i in 0..o.len() {
                    o[i] = f(a[i], b[i], c[i]);
                }
            });
    } else {
        for i in 0..out.len() {
            out[i] = f(a[i], b[i], c[i]);
        }
    }
    out
}

/// `f(a, b)` where both views are already broadcast to the output shape `la.shape`.
pub fn zip<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let shape = &la.shape;
    debug_assert_eq!(shape, &lb.shape);
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        return zip_slices(&a[ra], &b[rb], f);
    }
    let n = la.numel();
    let nd = shape.len();
    // Row-broadcast fast path: a contiguous, b repeating along leading dims with a contiguous last dim
    // (the bias add of a Linear layer).
    if nd >= 1 {
        let inner = shape[nd - 1];
        if let Some(ra) = la.contiguous_range() {
            if lb.strides[..nd - 1].iter().all(|&s| s == 0) && (lb.strides[nd - 1] == 1 || inner == 1) {
                let a = &a[ra];
                let brow = &b[lb.offset..lb.offset + inner];
                let mut out = vec![T::zero(); n];
                let rows_per_task = (PAR_CHUNK / inner.max(1)).max(1);
                let body = |(o, a): (&mut [T], &[T])| {
                    for (orow, arow) in o.chunks_mut(inner).zip(a.chunks(inner)) {
                        for j in 0..inner {
                            orow[j] = f(arow[j], brow[j]);
                        }
                    }
                };
                if n >= PAR_THRESHOLD {
                    out.par_chunks_mut(rows_per_task * inner)
                        .zip(a.par_chunks(rows_per_task * inner))
                        .for_each(body);
                } else {
                    body((&mut out, a));
                }
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for_each_offset2(shape, &la.strides, la.offset, &lb.strides, lb.offset, |oa, ob| {
        out.push(f(a[oa], b[ob]))
    });
    out
}

/// A contiguous copy (or borrow) helper: returns the elements row-major.
pub fn contiguous<'a, T: Element>(x: &'a [T], l: &Layout) -> std::borrow::Cow<'a, [T]> {
    match l.contiguous_range() {
        Some(r) => std::borrow::Cow::Borrowed(&x[r]),
        None => std::borrow::Cow::Owned(gather_strided(x, l)),
    }
}

#[cfg(test)]
mod tests {
    use super::{map, zip};
    use crate::layout::Layout;
    use crate::tensor::gather_strided;

    /// The reference: both operands gathered row-major, then zipped.
    fn reference(a: &[f64], la: &Layout, b: &[f64], lb: &Layout) -> Vec<f64> {
        let (a, b) = (gather_strided(a, la), gather_strided(b, lb));
        a.iter().zip(&b).map(|(x, y)| x * 10.0 + y).collect()
    }

    #[test]
    fn zip_paths_agree_with_the_reference() {
        // Sizes around the threading threshold, for the flat, row-broadcast and strided paths.
        for &(rows, cols) in &[(3, 5), (300, 200), (40_000, 1)] {
            let n = rows * cols;
            let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let bias: Vec<f64> = (0..cols + 2).map(|i| -(i as f64)).collect();
            let la = Layout::contiguous(&[rows, cols]);
            // Row broadcast: b is a [cols] row (offset 2) repeated down the rows.
            let lb = Layout {
                shape: vec![rows, cols],
                strides: vec![0, 1],
                offset: 2,
            };
            let f = |x: f64, y: f64| x * 10.0 + y;
            assert_eq!(zip(&a, &la, &bias, &lb, f), reference(&a, &la, &bias, &lb));
            // Both contiguous.
            let b2: Vec<f64> = a.iter().map(|v| v * 0.5).collect();
            assert_eq!(zip(&a, &la, &b2, &la, f), reference(&a, &la, &b2, &la));
            // Transposed a (general strided walk).
            let lt = Layout {
                shape: vec![cols, rows],
                strides: vec![1, cols],
                offset: 0,
            };
            let lbt = Layout {
                shape: vec![cols, rows],
                strides: vec![1, 0],
                offset: 0,
            };
            assert_eq!(zip(&a, &lt, &bias, &lbt, f), reference(&a, &lt, &bias, &lbt));
            // map over the transposed view.
            let m = map(&a, &lt, |x| x + 1.0);
            let want: Vec<f64> = gather_strided(&a, &lt).iter().map(|x| x + 1.0).collect();
            assert_eq!(m, want);
        }
    }
}
