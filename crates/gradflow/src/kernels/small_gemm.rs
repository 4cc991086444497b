//! Products too small for the `gemm` crate: attention's per-head products
//! (`[T, d]·[d, T]` and `[T, T]·[T, d]`, e.g. 28×16·16×28) come in hundreds per
//! step, and at that size the crate's per-call packing and dispatch cost more
//! than the arithmetic. Here the right operand is read in place when its rows are
//! contiguous and 16 or 32 long (a head's), packed row-major with rows padded to
//! 16 otherwise, and four output rows at a time are accumulated as
//! `c[i, :] += a[i, p] · b[p, :]`, loops over contiguous memory that the compiler
//! vectorizes; [`wide_fn!`] compiles them for AVX-512 or AVX2 where the CPU has them.

use super::gemm::MatRef;
use super::simd::wide_fn;
use crate::Element;

/// Products of at most this many multiply-adds take [`small_product`].
pub(crate) const SMALL_GEMM_MACS: usize = 1 << 15;

/// Output rows computed together, so that each packed row of the right operand is
/// loaded once for all of them (four rows of two AVX-512 registers: 8 accumulators).
const ROWS: usize = 4;
/// The packed rows are padded to a multiple of this many elements (one AVX-512
/// register of f32), so the inner loop has no scalar remainder.
const PAD: usize = 16;

/// `dst[m, n] (row-major, leading dimension n) = lhs·rhs`.
///
/// # Safety
/// `lhs` must address an m×k matrix, `rhs` a k×n matrix (both with non-negative
/// strides), and `dst` m·n writable elements that overlap neither.
pub(crate) unsafe fn small_product<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        std::slice::from_raw_parts_mut(dst, m * n).fill(T::zero());
        return;
    }
    // The elements each operand spans, from its first to its last.
    let span = |r: MatRef<T>, rows: usize, cols: usize| (rows - 1) * r.rs as usize + (cols - 1) * r.cs as usize + 1;
    let a = Strided {
        data: std::slice::from_raw_parts(lhs.ptr, span(lhs, m, k)),
        rs: lhs.rs as usize,
        cs: lhs.cs as usize,
    };
    let b = Strided {
        data: std::slice::from_raw_parts(rhs.ptr, span(rhs, k, n)),
        rs: rhs.rs as usize,
        cs: rhs.cs as usize,
    };
    let np = n.next_multiple_of(PAD);
    // The packed right operand (unless read in place), a block of left rows, the
    // accumulators: this thread's scratch memory, not three allocations per product.
    let scratch = k * np + ROWS * k + ROWS * np;
    super::with_scratch(scratch, |s: &mut [T]| {
        product(std::slice::from_raw_parts_mut(dst, m * n), n, k, a, b, s)
    })
}

/// A matrix operand as the elements it spans and its strides.
#[derive(Clone, Copy)]
struct Strided<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

/// `dst [·, n] = a [·, k] · b [k, n]`: `b` is read in place when its rows are contiguous
/// and a multiple of [`PAD`] long (a head of 16 or 32), packed otherwise.
#[inline(always)]
fn product_plain<T: Element>(dst: &mut [T], n: usize, k: usize, a: Strided<T>, b: Strided<T>, scratch: &mut [T]) {
    let np = n.next_multiple_of(PAD);
    let (packed, rest) = scratch.split_at_mut(k * np);
    let (ablock, acc) = rest.split_at_mut(ROWS * k);
    let (b, bs) = if b.cs == 1 && n == np {
        (b.data, b.rs)
    } else {
        // The padding columns are zeroed: whatever the scratch held (a denormal, say)
        // must not slow the lanes whose results are dropped.
        packed.chunks_exact_mut(np).for_each(|row| row[n..].fill(T::zero()));
        pack(packed, np, k, n, b);
        (&packed[..], np)
    };
    for (block, c) in dst.chunks_mut(ROWS * n).enumerate() {
        let rows = Strided {
            data: &a.data[block * ROWS * a.rs..],
            ..a
        };
        let valid = c.len() / n;
        ablock[valid * k..].fill(T::zero());
        pack(ablock, k, valid, k, rows);
        match np {
            16 => width16(acc, ablock, b, bs, k),
            32 => width32(acc, ablock, b, bs, k),
            _ => any_width(acc, ablock, b, bs, np, k),
        }
        for (c, acc) in c.chunks_mut(n).zip(acc.chunks_exact(np)) {
            c.iter_mut().zip(acc).for_each(|(c, &v)| *c = v);
        }
    }
}

/// `dst[i·ld + j] = m[i, j]` for the `rows × cols` top-left block of `m`, reading
/// along whichever of `m`'s axes is contiguous.
#[inline(always)]
fn pack<T: Element>(dst: &mut [T], ld: usize, rows: usize, cols: usize, m: Strided<T>) {
    if m.cs == 1 || m.rs != 1 {
        for (i, d) in dst.chunks_mut(ld).take(rows).enumerate() {
            let at = i * m.rs;
            if m.cs == 1 {
                d[..cols]
                    .iter_mut()
                    .zip(&m.data[at..at + cols])
                    .for_each(|(d, &v)| *d = v);
            } else {
                // (Any stride, 0 included: an expanded operand.)
                d[..cols]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, d)| *d = m.data[at + j * m.cs]);
            }
        }
    } else {
        // Columns are contiguous: read each whole, write it down the rows.
        for j in 0..cols {
            let src = &m.data[j * m.cs..][..rows];
            for (i, &v) in src.iter().enumerate() {
                dst[i * ld + j] = v;
            }
        }
    }
}

wide_fn! {
    fn product<T>(dst: &mut [T], n: usize, k: usize, a: Strided<T>, b: Strided<T>, scratch: &mut [T]) = product_plain;
}

/// `acc[r, :] = Σ_p a[r, p] · b[p, :]` for the [`ROWS`] rows of `acc`, each `NP` long:
/// the accumulators (four rows of one or two registers) stay in registers over `p`.
/// Rows past the matrix's end compute garbage that is not copied out.
#[inline(always)]
fn rows_times_packed<T: Element, const NP: usize>(acc: &mut [T], a: &[T], b: &[T], bs: usize, k: usize) {
    let mut c = [[T::zero(); NP]; ROWS];
    for p in 0..k {
        let b = &b[p * bs..][..NP];
        for (r, c) in c.iter_mut().enumerate() {
            let ar = a[r * k + p];
            for j in 0..NP {
                c[j] += ar * b[j];
            }
        }
    }
    for (dst, c) in acc.chunks_exact_mut(NP).zip(&c) {
        dst.copy_from_slice(c);
    }
}

/// As [`rows_times_packed`] for any padded width `np`, accumulating in memory.
#[inline(always)]
fn rows_times_any<T: Element>(acc: &mut [T], a: &[T], b: &[T], bs: usize, np: usize, k: usize) {
    acc.fill(T::zero());
    for p in 0..k {
        let b = &b[p * bs..][..np];
        for (r, c) in acc.chunks_exact_mut(np).enumerate() {
            let ar = a[r * k + p];
            for (c, b) in c.chunks_exact_mut(PAD).zip(b.chunks_exact(PAD)) {
                for j in 0..PAD {
                    c[j] += ar * b[j];
                }
            }
        }
    }
}

// The register-blocked loops as functions of their own (inlined into the packing
// code above, LLVM no longer vectorized them), one per width: a const generic cannot
// pass through `wide_fn!`.

#[inline(always)]
fn width16_plain<T: Element>(acc: &mut [T], a: &[T], b: &[T], bs: usize, k: usize) {
    rows_times_packed::<T, 16>(acc, a, b, bs, k)
}

#[inline(always)]
fn width32_plain<T: Element>(acc: &mut [T], a: &[T], b: &[T], bs: usize, k: usize) {
    rows_times_packed::<T, 32>(acc, a, b, bs, k)
}

wide_fn! {
    fn width16<T>(acc: &mut [T], a: &[T], b: &[T], bs: usize, k: usize) = width16_plain;
}
wide_fn! {
    fn width32<T>(acc: &mut [T], a: &[T], b: &[T], bs: usize, k: usize) = width32_plain;
}
wide_fn! {
    fn any_width<T>(acc: &mut [T], a: &[T], b: &[T], bs: usize, np: usize, k: usize) = rows_times_any;
}

#[cfg(test)]
mod tests {
    use super::{small_product, MatRef};

    #[test]
    fn matches_the_naive_product_for_strided_operands() {
        let shapes = [
            (1, 1, 1),
            (5, 3, 2),
            (28, 28, 16),
            (28, 16, 28),
            (7, 9, 0),
            (3, 0, 4),
            (9, 13, 5),
            (6, 32, 3),
        ];
        for (m, n, k) in shapes {
            // a as the transpose of a row-major [k, m]; b as rows of n inside rows of n + 5
            // (read in place when n is 16 or 32), or as a transposed [n, k] (packed).
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
            let wide: Vec<f64> = (0..k * (n + 5)).map(|i| (i as f64 * 0.11).cos()).collect();
            let b = |p: usize, j: usize| wide[p * (n + 5) + j];
            let want: Vec<f64> = (0..m * n)
                .map(|ij| (0..k).map(|p| a[p * m + ij / n] * b(p, ij % n)).sum())
                .collect();
            let bt: Vec<f64> = (0..n * k).map(|i| b(i % k, i / k)).collect();
            let lhs = MatRef {
                ptr: a.as_ptr(),
                rs: 1,
                cs: m as isize,
            };
            let rows = MatRef {
                ptr: wide.as_ptr(),
                rs: n as isize + 5,
                cs: 1,
            };
            let cols = MatRef {
                ptr: bt.as_ptr(),
                rs: 1,
                cs: k as isize,
            };
            for rhs in [rows, cols] {
                check(m, n, k, lhs, rhs, &want);
            }
            // The same left operand read row by row.
            let a_rows: Vec<f64> = (0..m * k).map(|i| a[(i % k) * m + i / k]).collect();
            let lhs_rows = MatRef {
                ptr: a_rows.as_ptr(),
                rs: k as isize,
                cs: 1,
            };
            check(m, n, k, lhs_rows, rows, &want);
        }
        // An expanded right operand (column stride 0): every column is b's one column.
        let (m, n, k) = (3, 5, 4);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 - 2.5).collect();
        let b: Vec<f64> = (0..k).map(|i| i as f64 * 0.5).collect();
        let want: Vec<f64> = (0..m * n)
            .map(|ij| (0..k).map(|p| a[(ij / n) * k + p] * b[p]).sum())
            .collect();
        let lhs = MatRef {
            ptr: a.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        let rhs = MatRef {
            ptr: b.as_ptr(),
            rs: 1,
            cs: 0,
        };
        check(m, n, k, lhs, rhs, &want);
    }

    fn check(m: usize, n: usize, k: usize, lhs: MatRef<f64>, rhs: MatRef<f64>, want: &[f64]) {
        let mut dst = vec![f64::NAN; m * n];
        // SAFETY: the operands address m×k and k×n elements of live buffers.
        unsafe { small_product(m, n, k, dst.as_mut_ptr(), lhs, rhs) };
        for (g, w) in dst.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{m}x{n}x{k}: {g} vs {w}");
        }
    }
}
