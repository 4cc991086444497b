//! Reductions over a set of axes. The output is indexed through a broadcast
//! view (stride 0 on reduced axes), so one walk over the input in its own
//! order accumulates every output element, whatever the axes.

use crate::layout::{contiguous_strides, for_each_offset2, Layout};
use crate::Element;
use rayon::prelude::*;

/// The sum of a slice in 16 interleaved partial sums, which the compiler keeps in
/// one vector register: a plain `iter().sum()` of floats must add in order, one
/// element at a time, and runs about 8× slower.
pub fn sum_slice<T: Element>(x: &[T]) -> T {
    let mut acc = [T::zero(); 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut total = rest.iter().fold(T::zero(), |s, &v| s + v);
    for a in acc {
        total += a;
    }
    total
}

/// The same sum accumulated in f64, whatever `T`: a whole-tensor sum (a loss
/// mean, an L1/L2 penalty) of many f32 values keeps its digits, as PyTorch's
/// `acc_type` does. For f64 input it adds in the same order as [`sum_slice`].
pub fn sum_slice_f64<T: Element>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v.f64();
        }
    }
    let mut total = rest.iter().fold(0.0, |s, &v| s + v.f64());
    for a in acc {
        total += a;
    }
    total
}

/// Output shape with reduced axes kept as size 1, and its strides as a view over the input shape.
pub fn reduced_shape(shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let mut strides = contiguous_strides(&kept);
    for &a in axes {
        strides[a] = 0;
    }
    (kept, strides)
}

/// Sum over `axes`; returns a buffer in the kept (size-1) shape.
pub fn sum<T: Element>(x: &[T], lx: &Layout, axes: &[usize]) -> Vec<T> {
    let (kept, ostrides) = reduced_shape(&lx.shape, axes);
    let n_out: usize = kept.iter().product();
    let nd = lx.shape.len();
    // Fast path: contiguous input reduced over trailing axes = independent row sums.
    // (An empty input takes the general path: its rows would have length 0.)
    if let Some(r) = lx.contiguous_range().filter(|r| !r.is_empty()) {
        let x = &x[r];
        let trailing = !axes.is_empty() && (0..axes.len()).all(|i| axes.contains(&(nd - 1 - i)));
        if trailing && n_out == 1 {
            return vec![T::of(sum_slice_f64(x))];
        }
        if trailing && n_out > 0 {
            let row = x.len() / n_out;
            let mut out = vec![T::zero(); n_out];
            if x.len() >= super::PAR_THRESHOLD && n_out > 1 {
                out.par_iter_mut()
                    .zip(x.par_chunks(row))
                    .for_each(|(o, r)| *o = sum_slice(r));
            } else {
                for (o, r) in out.iter_mut().zip(x.chunks(row)) {
                    *o = sum_slice(r);
                }
            }
            return out;
        }
        // Leading axes: add whole rows into the output (the bias gradient of a Linear layer).
        let leading = !axes.is_empty() && (0..axes.len()).all(|i| axes.contains(&i));
        if leading && n_out > 0 {
            let mut out = vec![T::zero(); n_out];
            let cols = n_out;
            if x.len() >= super::PAR_THRESHOLD && cols >= 64 {
                let chunk = cols.div_ceil(rayon::current_num_threads()).max(64);
                out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
                    let start = ci * chunk;
                    let len = o.len();
                    for rowv in x.chunks(cols) {
                        for (o, &v) in o.iter_mut().zip(&rowv[start..start + len]) {
                            *o += v;
                        }
                    }
                });
            } else {
                for rowv in x.chunks(cols) {
                    for (o, &v) in out.iter_mut().zip(rowv) {
                        *o += v;
                    }
                }
            }
            return out;
        }
    }
    let mut out = vec![T::zero(); n_out];
    for_each_offset2(&lx.shape, &lx.strides, lx.offset, &ostrides, 0, |ix, io| {
        out[io] += x[ix];
    });
    out
}

/// Max (or min, with `take_max = false`) over `axes`, with the row-major
/// position of the winner in the input. Ties go to the first occurrence; NaN wins.
pub fn extremum<T: Element>(x: &[T], lx: &Layout, axes: &[usize], take_max: bool) -> (Vec<T>, Vec<usize>) {
    let (kept, ostrides) = reduced_shape(&lx.shape, axes);
    let n_out: usize = kept.iter().product();
    let mut best = vec![T::nan(); n_out];
    let mut arg = vec![usize::MAX; n_out];
    let mut linear = 0usize;
    for_each_offset2(&lx.shape, &lx.strides, lx.offset, &ostrides, 0, |ix, io| {
        let v = x[ix];
        let better = if arg[io] == usize::MAX {
            true
        } else if best[io].is_nan() {
            false
        } else if v.is_nan() {
            true
        } else if take_max {
            v > best[io]
        } else {
            v < best[io]
        };
        if better {
            best[io] = v;
            arg[io] = linear;
        }
        linear += 1;
    });
    (best, arg)
}

/// Backward of max or min over `axes` when tied extrema share the gradient evenly (as in
/// PyTorch's `amax` and its `max` over all elements): each element of `x` equal to its
/// slot's extremum in `best` (or NaN, where the extremum is NaN) receives that slot's
/// `g` divided by the number of such elements. Row-major, in `x`'s shape.
pub fn tied_extremum_backward<T: Element>(x: &[T], lx: &Layout, axes: &[usize], best: &[T], g: &[T]) -> Vec<T> {
    let (_, ostrides) = reduced_shape(&lx.shape, axes);
    let ties = |v: T, b: T| v == b || (v.is_nan() && b.is_nan());
    let mut count = vec![0usize; best.len()];
    for_each_offset2(&lx.shape, &lx.strides, lx.offset, &ostrides, 0, |ix, io| {
        count[io] += usize::from(ties(x[ix], best[io]));
    });
    let share: Vec<T> = g.iter().zip(&count).map(|(&g, &n)| g / T::of(n as f64)).collect();
    let mut out = Vec::with_capacity(lx.shape.iter().product());
    for_each_offset2(&lx.shape, &lx.strides, lx.offset, &ostrides, 0, |ix, io| {
        out.push(if ties(x[ix], best[io]) { share[io] } else { T::zero() });
    });
    out
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor};

    /// 2^22 values of 1.1 in f32: summed in f32 lanes each lane reaches 2.9e5,
    /// where an f32 step is 0.03, and the total drifts by ~1e-4 relative.
    #[test]
    fn whole_f32_sums_accumulate_in_f64() {
        let n = 1usize << 22;
        let x = Tensor::full(&[n], 1.1, DType::F32);
        let want = n as f64 * (1.1f32 as f64);
        let got = x.sum_all().item().unwrap();
        assert!(((got - want) / want).abs() < 1e-7, "{got} vs {want}");
        let mean = x.reshape(&[1024, 4096]).unwrap().mean_all().item().unwrap();
        assert!((mean - 1.1f32 as f64).abs() < 1e-7, "{mean}");
    }
}
