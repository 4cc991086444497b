//! The dense layer's product `x·Wᵀ + b` (PyTorch's weight layout `[out, in]`),
//! shaped for the gemm crate: see [`linear_kernel`] for why it is computed transposed.

use super::gemm::{block_width, gemm_to, mat, MatRef, GEMM_PAR_THRESHOLD};
use super::SendPtr;
use crate::layout::Layout;
use crate::Element;
use rayon::prelude::*;

/// Layers with at most this many outputs take the direct path of [`linear_kernel`].
pub(crate) const SMALL_LINEAR_OUT: usize = 64;

/// `x·Wᵀ + b`, row-major `[nrows, nout]`.
///
/// The product is computed transposed, `Yᵀ = W·xᵀ`, into scratch memory: in that
/// orientation the gemm crate packs the (small) batch and streams W in place,
/// instead of repacking the whole weight matrix on one thread every call (which
/// also hits 4 KiB cache aliasing for power-of-two widths). The bias is added
/// while transposing back. With several threads, each computes and transposes
/// its own block of output features, so the packing is parallel too.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_kernel<T: Element>(
    x: &[T],
    lx: &Layout,
    w: &[T],
    lw: &Layout,
    b: Option<&[T]>,
    nrows: usize,
    nin: usize,
    nout: usize,
) -> Vec<T> {
    let len = nrows * nout;
    let mut out: Vec<T> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    if nout <= SMALL_LINEAR_OUT {
        // Few outputs (a classifier head): packing W's few rows costs less than the two
        // transposes below. The bias is written first and the product accumulated onto it.
        if let Some(b) = b {
            for row in out.spare_capacity_mut().chunks_mut(nout) {
                for (o, &v) in row.iter_mut().zip(b) {
                    o.write(v);
                }
            }
        }
        let wt = MatRef {
            ptr: w[lw.offset..].as_ptr(),
            rs: lw.strides[1] as isize,
            cs: lw.strides[0] as isize,
        };
        // SAFETY: the layouts describe valid regions of x and w; `out` has capacity
        // nrows×nout, filled with the bias when accumulating, written whole otherwise.
        unsafe {
            gemm_to(
                nrows,
                nout,
                nin,
                out.as_mut_ptr(),
                nout as isize,
                1,
                mat(x, lx.offset, lx),
                wt,
                b.is_some(),
                true,
            );
            out.set_len(len);
        }
        return out;
    }
    let threads = rayon::current_num_threads();
    let width = if threads > 1 && len * nin >= GEMM_PAR_THRESHOLD {
        block_width(nout, threads)
    } else {
        nout
    };
    let blocks = nout.div_ceil(width.max(1));
    let optr = SendPtr(out.as_mut_ptr());
    let optr = &optr;
    super::with_scratch(len + nrows * nin, |scratch: &mut [T]| {
        let (yt, xt) = scratch.split_at_mut(len);
        // xᵀ, so that the gemm crate reads the batch column by column instead of
        // repacking it on one thread (a strided pack that 4 KiB aliasing makes slow).
        super::transpose::transpose_into(x, lx, nrows, nin, xt);
        let xm = SendMat(MatRef {
            ptr: xt.as_ptr(),
            rs: 1,
            cs: nrows as isize,
        });
        let xm = &xm;
        let yptr = SendPtr(yt.as_mut_ptr());
        let yptr = &yptr;
        let block = |o0: usize| {
            let o1 = (o0 + width).min(nout);
            let cols = o1 - o0;
            // Wᵀ's columns o0..o1 as a strided view: element (i, j) is W[o0 + j, i].
            let wt = MatRef {
                ptr: w[lw.offset + o0 * lw.strides[0]..].as_ptr(),
                rs: lw.strides[1] as isize,
                cs: lw.strides[0] as isize,
            };
            // SAFETY: the layouts describe valid regions of x and w; block o0 writes
            // only scratch columns o0..o1 (a column-major nrows×cols block at o0·nrows).
            unsafe {
                gemm_to(
                    nrows,
                    cols,
                    nin,
                    yptr.0.add(o0 * nrows),
                    1,
                    nrows as isize,
                    xm.0,
                    wt,
                    false,
                    false,
                )
            };
            // SAFETY: block o0 writes only columns o0..o1 of `out`, which has capacity len.
            let yt = unsafe { std::slice::from_raw_parts(yptr.0.add(o0 * nrows), nrows * cols) };
            // Back to row-major, adding the bias: 8×8 tiles (8 contiguous reads, then 8
            // contiguous writes), then the ragged edges one element at a time.
            let (rows8, cols8) = (nrows / 8 * 8, cols / 8 * 8);
            // (Without a bias nothing is added, so that −0 stays −0.)
            let bias = |c: usize, v: T| b.map_or(v, |b| v + b[o0 + c]);
            let put = |r: usize, c: usize, v: T| {
                // SAFETY: row r < nrows, column o0 + c < nout: inside `out`'s capacity,
                // and only this block writes columns o0..o1.
                unsafe { optr.0.add(r * nout + o0 + c).write(v) }
            };
            for r0 in (0..rows8).step_by(8) {
                for c0 in (0..cols8).step_by(8) {
                    let mut t = [[T::zero(); 8]; 8];
                    for (j, t) in t.iter_mut().enumerate() {
                        t.copy_from_slice(&yt[(c0 + j) * nrows + r0..(c0 + j) * nrows + r0 + 8]);
                    }
                    let tt: [[T; 8]; 8] = std::array::from_fn(|i| std::array::from_fn(|j| t[j][i]));
                    for (i, tr) in tt.iter().enumerate() {
                        let row: [T; 8] = std::array::from_fn(|j| bias(c0 + j, tr[j]));
                        // SAFETY: as in `put`, for the 8 columns c0..c0 + 8 of row r0 + i.
                        unsafe {
                            std::ptr::copy_nonoverlapping(row.as_ptr(), optr.0.add((r0 + i) * nout + o0 + c0), 8)
                        };
                    }
                }
            }
            for c in 0..cols {
                let from = if c < cols8 { rows8 } else { 0 };
                for r in from..nrows {
                    put(r, c, bias(c, yt[c * nrows + r]));
                }
            }
        };
        if blocks == 1 {
            block(0);
        } else {
            (0..nout)
                .step_by(width)
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(block);
        }
    });
    // SAFETY: the blocks wrote every element of the nrows×nout result.
    unsafe { out.set_len(len) };
    out
}

struct SendMat<T>(MatRef<T>);
unsafe impl<T> Send for SendMat<T> {}
unsafe impl<T> Sync for SendMat<T> {}

#[cfg(test)]
mod tests {
    use super::{linear_kernel, SMALL_LINEAR_OUT};
    use crate::layout::Layout;

    /// The plain form: `y[r, o] = b[o] + Σ_i x[r, i]·W[o, i]`, element by element.
    fn plain(
        x: &[f64],
        lx: &Layout,
        w: &[f64],
        lw: &Layout,
        b: Option<&[f64]>,
        dims: (usize, usize, usize),
    ) -> Vec<f64> {
        let (nrows, nin, nout) = dims;
        let at = |l: &Layout, i: usize, j: usize| l.offset + i * l.strides[0] + j * l.strides[1];
        let mut y = vec![0.0; nrows * nout];
        for r in 0..nrows {
            for o in 0..nout {
                let dot: f64 = (0..nin).map(|i| x[at(lx, r, i)] * w[at(lw, o, i)]).sum();
                y[r * nout + o] = b.map_or(0.0, |b| b[o]) + dot;
            }
        }
        y
    }

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.618).sin()).collect()
    }

    fn layout(shape: [usize; 2], strides: [usize; 2]) -> Layout {
        Layout {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset: 1,
        }
    }

    #[test]
    fn matches_the_plain_product_on_both_paths() {
        // Narrow (at most SMALL_LINEAR_OUT outputs) and wide layers, ragged 8×8 tiles, one
        // large enough to be split over threads, with row-major and transposed operands.
        let wide = SMALL_LINEAR_OUT + 9;
        for (nrows, nin, nout) in [
            (1, 1, 1),
            (3, 0, 5),
            (0, 4, 70),
            (5, 7, SMALL_LINEAR_OUT),
            (13, 9, wide),
            (128, 512, 300),
        ] {
            let (x, w, b) = (
                values(nrows * nin + 1, 0.0),
                values(nout * nin + 1, 3.0),
                values(nout, 7.0),
            );
            let x_layouts = [layout([nrows, nin], [nin, 1]), layout([nrows, nin], [1, nrows])];
            let w_layouts = [layout([nout, nin], [nin, 1]), layout([nout, nin], [1, nout])];
            for (lx, lw) in x_layouts.iter().flat_map(|lx| w_layouts.iter().map(move |lw| (lx, lw))) {
                for bias in [None, Some(&b[..])] {
                    let got = linear_kernel(&x, lx, &w, lw, bias, nrows, nin, nout);
                    let want = plain(&x, lx, &w, lw, bias, (nrows, nin, nout));
                    assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                            "{nrows}x{nin}x{nout}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
