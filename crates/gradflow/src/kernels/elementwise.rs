//! Elementwise maps over one, two or three operands.

use super::simd::wide_fn;
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
            .for_each(|(o, x)| map_loop(o, x, &f));
    } else {
        map_loop(&mut out, x, &f);
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
            .for_each(|(o, (a, b))| pair_loop(o, a, b, &f));
    } else {
        pair_loop(&mut out, a, b, &f);
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
            .for_each(|(o, (a, (b, c)))| triple_loop(o, a, b, c, &f));
    } else {
        triple_loop(&mut out, a, b, c, &f);
    }
    out
}

/// `f(a, b)` where both views are already broadcast to the output shape `la.shape`.
pub fn zip<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    debug_assert_eq!(la.shape, lb.shape);
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        return zip_slices(&a[ra], &b[rb], f);
    }
    // One operand whole, the other a block repeated along leading dimensions: the bias
    // of a Linear layer (a row), a position embedding ([T, E] over the batch).
    if let (Some(ra), Some(inner)) = (la.contiguous_range(), repeated_block(lb)) {
        return zip_repeated(&a[ra], &b[lb.offset..lb.offset + inner], f);
    }
    if let (Some(rb), Some(inner)) = (lb.contiguous_range(), repeated_block(la)) {
        return zip_repeated(&b[rb], &a[la.offset..la.offset + inner], |y, x| f(x, y));
    }
    let mut out = Vec::with_capacity(la.numel());
    for_each_offset2(&la.shape, &la.strides, la.offset, &lb.strides, lb.offset, |oa, ob| {
        out.push(f(a[oa], b[ob]))
    });
    out
}

/// The length of the contiguous block that `l` repeats along its leading dimensions
/// (stride 0 there, row-major within the block), if it is such a view.
fn repeated_block(l: &Layout) -> Option<usize> {
    let nd = l.shape.len();
    // The block: the trailing dimensions that are row-major (size-1 ones are free).
    let (mut k, mut acc) = (nd, 1);
    while k > 0 && (l.shape[k - 1] == 1 || l.strides[k - 1] == acc) {
        acc *= l.shape[k - 1];
        k -= 1;
    }
    let repeated = l.strides[..k]
        .iter()
        .zip(&l.shape[..k])
        .all(|(&s, &d)| s == 0 || d == 1);
    (repeated && k > 0 && acc > 0).then_some(acc)
}

/// `f(a[i], block[i mod block.len()])` over the whole of `a`.
fn zip_repeated<T: Element>(a: &[T], block: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let inner = block.len();
    let mut out = vec![T::zero(); a.len()];
    let per_task = (PAR_CHUNK / inner).max(1) * inner;
    let body = |(o, a): (&mut [T], &[T])| {
        for (o, a) in o.chunks_mut(inner).zip(a.chunks(inner)) {
            pair_loop(o, a, block, &f);
        }
    };
    if a.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(per_task).zip(a.par_chunks(per_task)).for_each(body);
    } else {
        body((&mut out, a));
    }
    out
}

// The element loops, compiled per instruction set (see `simd`): the rules passed in
// are small closures, inlined into each copy.

#[inline(always)]
fn map_loop_plain<T: Element>(o: &mut [T], x: &[T], f: &impl Fn(T) -> T) {
    for (o, &x) in o.iter_mut().zip(x) {
        *o = f(x);
    }
}

#[inline(always)]
fn pair_loop_plain<T: Element>(o: &mut [T], a: &[T], b: &[T], f: &impl Fn(T, T) -> T) {
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

#[inline(always)]
fn triple_loop_plain<T: Element>(o: &mut [T], a: &[T], b: &[T], c: &[T], f: &impl Fn(T, T, T) -> T) {
    for (((o, &a), &b), &c) in o.iter_mut().zip(a).zip(b).zip(c) {
        *o = f(a, b, c);
    }
}

wide_fn! {
    fn map_loop<T>(o: &mut [T], x: &[T], f: &impl Fn(T) -> T) = map_loop_plain;
}
wide_fn! {
    fn pair_loop<T>(o: &mut [T], a: &[T], b: &[T], f: &impl Fn(T, T) -> T) = pair_loop_plain;
}
wide_fn! {
    fn triple_loop<T>(o: &mut [T], a: &[T], b: &[T], c: &[T], f: &impl Fn(T, T, T) -> T) = triple_loop_plain;
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
    fn repeated_blocks_on_either_side_agree_with_the_reference() {
        // [N, T, E] with a [T, E] block (a position embedding), around the threading threshold;
        // a [N, 1, E] block is not repeated row-major and takes the general walk.
        for &(n, t, e) in &[(2, 3, 4), (64, 28, 64), (3, 1, 5)] {
            let a: Vec<f64> = (0..n * t * e).map(|i| i as f64 * 0.5).collect();
            let block: Vec<f64> = (0..t * e + 1).map(|i| -(i as f64)).collect();
            let la = Layout::contiguous(&[n, t, e]);
            let lb = Layout {
                shape: vec![n, t, e],
                strides: vec![0, e, 1],
                offset: 1,
            };
            let f = |x: f64, y: f64| x * 10.0 + y;
            assert_eq!(zip(&a, &la, &block, &lb, f), reference(&a, &la, &block, &lb));
            assert_eq!(zip(&block, &lb, &a, &la, f), reference(&block, &lb, &a, &la));
            let per_step = Layout {
                shape: vec![n, t, e],
                strides: vec![e, 0, 1],
                offset: 0,
            };
            let rows: Vec<f64> = (0..n * e).map(|i| i as f64 - 3.0).collect();
            assert_eq!(zip(&a, &la, &rows, &per_step, f), reference(&a, &la, &rows, &per_step));
        }
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
