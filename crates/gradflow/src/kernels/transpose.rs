//! Out-of-place transposes of a strided 2-D view into contiguous memory, in 8×8
//! tiles: the linear kernel transposes its batch so that the product streams the
//! weights in place (see [`super::linear`]).

use crate::layout::Layout;
use crate::Element;
use rayon::prelude::*;

/// `dst` (column-major `rows×cols`, i.e. row-major `cols×rows`) = the 2-D view `x` (`rows×cols`);
/// large ones are split over threads by column ranges (contiguous in `dst`).
pub(crate) fn transpose_into<T: Element>(x: &[T], lx: &Layout, rows: usize, cols: usize, dst: &mut [T]) {
    let (rs, cs) = (lx.strides[0], lx.strides[1]);
    let x = &x[lx.offset.min(x.len())..];
    let dst = &mut dst[..rows * cols];
    let threads = rayon::current_num_threads();
    if threads > 1 && rows * cols >= 1 << 16 && rows > 0 {
        let width = cols.div_ceil(2 * threads).next_multiple_of(8);
        dst.par_chunks_mut(width * rows).enumerate().for_each(|(i, d)| {
            let c0 = i * width;
            transpose_cols(x, rs, cs, rows, c0, (c0 + width).min(cols), d)
        });
    } else {
        transpose_cols(x, rs, cs, rows, 0, cols, dst);
    }
}

/// Columns `c_lo..c_hi` of the `rows`-row view (`x[r·rs + c·cs]`) into `dst` (those columns, each contiguous).
fn transpose_cols<T: Element>(x: &[T], rs: usize, cs: usize, rows: usize, c_lo: usize, c_hi: usize, dst: &mut [T]) {
    let at = |c: usize, r: usize| (c - c_lo) * rows + r;
    let mut r0 = 0;
    let mut c_full = c_lo;
    if cs == 1 {
        // Row-major input: whole 8×8 tiles through a register-sized block.
        c_full = c_lo + (c_hi - c_lo) / 8 * 8;
        while r0 + 8 <= rows {
            for c0 in (c_lo..c_full).step_by(8) {
                let mut t = [[T::zero(); 8]; 8];
                for (i, t) in t.iter_mut().enumerate() {
                    t.copy_from_slice(&x[(r0 + i) * rs + c0..(r0 + i) * rs + c0 + 8]);
                }
                for j in 0..8 {
                    for (i, d) in dst[at(c0 + j, r0)..at(c0 + j, r0) + 8].iter_mut().enumerate() {
                        *d = t[i][j];
                    }
                }
            }
            r0 += 8;
        }
    }
    // The rest (all of a strided input): tiles of 8 rows, element by element.
    let mut scalar = |r_lo: usize, c_from: usize, c_to: usize| {
        for r in (r_lo..rows).step_by(8) {
            let r1 = (r + 8).min(rows);
            for c in c_from..c_to {
                for (i, d) in dst[at(c, r)..at(c, r1)].iter_mut().enumerate() {
                    *d = x[(r + i) * rs + c * cs];
                }
            }
        }
    };
    scalar(0, c_full, c_hi);
    scalar(r0, c_lo, c_full);
}

#[cfg(test)]
mod tests {
    use super::transpose_into;
    use crate::layout::Layout;

    /// The plain transpose: `dst[c·rows + r] = x[offset + r·rs + c·cs]`.
    fn plain(x: &[f64], l: &Layout, rows: usize, cols: usize) -> Vec<f64> {
        let mut dst = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                dst[c * rows + r] = x[l.offset + r * l.strides[0] + c * l.strides[1]];
            }
        }
        dst
    }

    fn layout(shape: [usize; 2], strides: [usize; 2], offset: usize) -> Layout {
        Layout {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        }
    }

    #[test]
    fn matches_the_plain_transpose_for_row_major_and_strided_views() {
        // Ragged and whole tiles; one large enough to be split over threads.
        for (rows, cols) in [
            (0, 5),
            (1, 1),
            (3, 7),
            (8, 8),
            (9, 17),
            (16, 24),
            (64, 1030),
            (130, 520),
        ] {
            let x: Vec<f64> = (0..(rows + 2) * (2 * cols + 3)).map(|i| i as f64 * 0.5 - 7.0).collect();
            for l in [
                layout([rows, cols], [cols, 1], 0),                // row-major
                layout([rows, cols], [cols + 3, 1], 2),            // padded rows, offset
                layout([rows, cols], [1, rows.max(1)], 1),         // column-major (a transposed view)
                layout([rows, cols], [2 * cols + 3, 2], cols + 1), // strided in both
            ] {
                let mut dst = vec![f64::NAN; rows * cols];
                transpose_into(&x, &l, rows, cols, &mut dst);
                assert_eq!(dst, plain(&x, &l, rows, cols), "{rows}x{cols}, strides {:?}", l.strides);
            }
        }
    }
}
