//! The dense layer's product `x·Wᵀ + b` (PyTorch's weight layout `[out, in]`),
//! shaped for the gemm crate: see [`linear_kernel`] for why it is computed transposed.

use super::gemm::{block_width, gemm_to, mat, MatRef, GEMM_PAR_THRESHOLD};
use super::SendPtr;
use crate::layout::Layout;
use crate::Element;
use rayon::prelude::*;

/// Layers with at most this many outputs take the direct path of [`linear_kernel`].
pub(crate) const SMALL_LINEAR_OUT: usize = 64;

/// Products with at least this many times more rows than outputs take the direct path
/// of [`linear_kernel`] too: with many rows (a sequence model's N·T) the weight matrix is
/// the small operand, which the gemm crate packs cheaply, and the transposes of the
/// other path would move the large one twice.
pub(crate) const TALL_RATIO: usize = 2;

/// A dense layer's operands: `x [nrows, nin]` and `W [nout, nin]` as strided 2-D
/// views of their buffers, and the bias `[nout]`.
#[derive(Clone, Copy)]
pub(crate) struct Dense<'a, T> {
    pub(crate) x: &'a [T],
    pub(crate) lx: &'a Layout,
    pub(crate) w: &'a [T],
    pub(crate) lw: &'a Layout,
    pub(crate) b: Option<&'a [T]>,
    pub(crate) nrows: usize,
    pub(crate) nin: usize,
    pub(crate) nout: usize,
}

impl<T> Dense<'_, T> {
    /// Wᵀ's columns `o0..`, as a strided view: element (i, j) is W[o0 + j, i].
    fn weight_t(&self, o0: usize) -> MatRef<T> {
        MatRef {
            ptr: self.w[self.lw.offset + o0 * self.lw.strides[0]..].as_ptr(),
            rs: self.lw.strides[1] as isize,
            cs: self.lw.strides[0] as isize,
        }
    }
}

/// `x·Wᵀ + b`, row-major `[nrows, nout]`.
///
/// The product is computed transposed, `Yᵀ = W·xᵀ`, into scratch memory: in that
/// orientation the gemm crate packs the (small) batch and streams W in place,
/// instead of repacking the whole weight matrix on one thread every call (which
/// also hits 4 KiB cache aliasing for power-of-two widths). The bias is added
/// while transposing back. With several threads, each computes and transposes
/// its own block of output features, so the packing is parallel too.
pub(crate) fn linear_kernel<T: Element>(d: Dense<T>) -> Vec<T> {
    let len = d.nrows * d.nout;
    let mut out: Vec<T> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    if d.nout <= SMALL_LINEAR_OUT || d.nrows >= TALL_RATIO * d.nout {
        narrow(&d, &mut out);
    } else {
        wide(&d, SendPtr(out.as_mut_ptr()));
    }
    // SAFETY: both paths wrote every element of the nrows×nout result.
    unsafe { out.set_len(len) };
    out
}

/// Few outputs (a classifier head): packing W's few rows costs less than the two
/// transposes of [`wide`]. The bias is written first and the product accumulated onto it.
fn narrow<T: Element>(d: &Dense<T>, out: &mut Vec<T>) {
    if let Some(b) = d.b {
        for row in out.spare_capacity_mut().chunks_mut(d.nout) {
            for (o, &v) in row.iter_mut().zip(b) {
                o.write(v);
            }
        }
    }
    // SAFETY: the layouts describe valid regions of x and w; `out` has capacity
    // nrows×nout, filled with the bias when accumulating, written whole otherwise.
    unsafe {
        gemm_to(
            d.nrows,
            d.nout,
            d.nin,
            out.as_mut_ptr(),
            d.nout as isize,
            1,
            mat(d.x, d.lx.offset, d.lx),
            d.weight_t(0),
            d.b.is_some(),
            true,
        );
    }
}

/// The transposed product into scratch memory, block of output features by block
/// (one block per task when the product is large enough to split), each block
/// transposed back into `out` (capacity nrows×nout) as soon as it is computed.
fn wide<T: Element>(d: &Dense<T>, out: SendPtr<T>) {
    let (nrows, nout) = (d.nrows, d.nout);
    let len = nrows * nout;
    let threads = rayon::current_num_threads();
    let width = if threads > 1 && len * d.nin >= GEMM_PAR_THRESHOLD {
        block_width(nout, threads)
    } else {
        nout
    };
    super::with_scratch(len + nrows * d.nin, |scratch: &mut [T]| {
        let (yt, xt) = scratch.split_at_mut(len);
        // xᵀ, so that the gemm crate reads the batch column by column instead of
        // repacking it on one thread (a strided pack that 4 KiB aliasing makes slow).
        super::transpose::transpose_into(d.x, d.lx, nrows, d.nin, xt);
        let xm = SendMat(MatRef {
            ptr: xt.as_ptr(),
            rs: 1,
            cs: nrows as isize,
        });
        let yt = &SendPtr(yt.as_mut_ptr());
        let block = |o0: usize| {
            let cols = (o0 + width).min(nout) - o0;
            // SAFETY: block o0 writes only scratch columns o0..o0 + cols (a column-major
            // nrows×cols block at o0·nrows), and then only columns o0..o0 + cols of `out`.
            unsafe {
                let yt = block_product(d, &xm, yt.0.add(o0 * nrows), o0, cols);
                untranspose_block(yt, nrows, cols, &out, nout, o0, d.b);
            }
        };
        if nout.div_ceil(width.max(1)) == 1 {
            block(0);
        } else {
            (0..nout)
                .step_by(width)
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(block);
        }
    });
}

/// `Yᵀ`'s columns `o0..o0 + cols` (column-major `nrows×cols` at `yt`) = `xᵀ`-times-W's rows `o0..`.
///
/// # Safety
/// `yt` must hold nrows×cols elements that no other thread touches.
unsafe fn block_product<'a, T: Element>(d: &Dense<T>, xt: &SendMat<T>, yt: *mut T, o0: usize, cols: usize) -> &'a [T] {
    let nrows = d.nrows;
    gemm_to(
        nrows,
        cols,
        d.nin,
        yt,
        1,
        nrows as isize,
        xt.0,
        d.weight_t(o0),
        false,
        false,
    );
    std::slice::from_raw_parts(yt, nrows * cols)
}

/// Back to row-major, adding the bias: columns `o0..o0 + cols` of `out` (row-major
/// `[nrows, nout]`) from `yt` (column-major `nrows×cols`), in 8×8 tiles (8 contiguous
/// reads, then 8 contiguous writes), then the ragged edges one element at a time.
///
/// # Safety
/// `out` must have capacity nrows×nout, and no other thread may write those columns.
unsafe fn untranspose_block<T: Element>(
    yt: &[T],
    nrows: usize,
    cols: usize,
    out: &SendPtr<T>,
    nout: usize,
    o0: usize,
    b: Option<&[T]>,
) {
    let (rows8, cols8) = (nrows / 8 * 8, cols / 8 * 8);
    // (Without a bias nothing is added, so that −0 stays −0.)
    let bias = |c: usize, v: T| b.map_or(v, |b| v + b[o0 + c]);
    for r0 in (0..rows8).step_by(8) {
        for c0 in (0..cols8).step_by(8) {
            let mut t = [[T::zero(); 8]; 8];
            for (j, t) in t.iter_mut().enumerate() {
                t.copy_from_slice(&yt[(c0 + j) * nrows + r0..(c0 + j) * nrows + r0 + 8]);
            }
            let tt: [[T; 8]; 8] = std::array::from_fn(|i| std::array::from_fn(|j| t[j][i]));
            for (i, tr) in tt.iter().enumerate() {
                let row: [T; 8] = std::array::from_fn(|j| bias(c0 + j, tr[j]));
                // The 8 columns c0..c0 + 8 of row r0 + i: inside `out`, in this block.
                std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add((r0 + i) * nout + o0 + c0), 8);
            }
        }
    }
    for c in 0..cols {
        let from = if c < cols8 { rows8 } else { 0 };
        for r in from..nrows {
            // Row r < nrows, column o0 + c < nout: inside `out`, in this block.
            out.0.add(r * nout + o0 + c).write(bias(c, yt[c * nrows + r]));
        }
    }
}

struct SendMat<T>(MatRef<T>);
unsafe impl<T> Send for SendMat<T> {}
unsafe impl<T> Sync for SendMat<T> {}

#[cfg(test)]
mod tests {
    use super::{linear_kernel, Dense, SMALL_LINEAR_OUT};
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
                    let (x, w, b) = (&x[..], &w[..], bias);
                    let got = linear_kernel(Dense {
                        x,
                        lx,
                        w,
                        lw,
                        b,
                        nrows,
                        nin,
                        nout,
                    });
                    let want = plain(x, lx, w, lw, bias, (nrows, nin, nout));
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
