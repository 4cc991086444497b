//! Products too small for the `gemm` crate: attention's per-head products
//! (`[T, d]·[d, T]` and `[T, T]·[T, d]`, e.g. 28×16·16×28) come in hundreds per
//! step, and at that size the crate's per-call packing and dispatch cost more
//! than the arithmetic. Here the right operand is packed row-major (rows padded
//! to 16) once and four output rows at a time are accumulated as
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
/// `lhs` must address an m×k matrix, `rhs` a k×n matrix, and `dst` m·n writable
/// elements that overlap neither.
pub(crate) unsafe fn small_product<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
) {
    if n == 0 {
        return;
    }
    let np = n.next_multiple_of(PAD);
    let mut b = vec![T::zero(); k * np];
    for (p, row) in b.chunks_exact_mut(np).enumerate() {
        let src = rhs.ptr.offset(p as isize * rhs.rs);
        copy_strided(&mut row[..n], src, rhs.cs);
    }
    let dst = std::slice::from_raw_parts_mut(dst, m * n);
    let mut a = vec![T::zero(); ROWS * k];
    let mut acc = vec![T::zero(); ROWS * np];
    for (block, c) in dst.chunks_mut(ROWS * n).enumerate() {
        for (r, a) in a.chunks_exact_mut(k.max(1)).take(c.len() / n).enumerate() {
            let src = lhs.ptr.offset((block * ROWS + r) as isize * lhs.rs);
            copy_strided(a, src, lhs.cs);
        }
        match np {
            16 => rows_times_packed::<T, 16>(&mut acc, &a, &b, k),
            32 => rows_times_packed::<T, 32>(&mut acc, &a, &b, k),
            _ => rows_times_packed_any(&mut acc, &a, &b, np, k),
        }
        for (c, acc) in c.chunks_mut(n).zip(acc.chunks_exact(np)) {
            // An element loop: `copy_from_slice` calls memmove, slow for a few dozen elements.
            c.iter_mut().zip(acc).for_each(|(c, &v)| *c = v);
        }
    }
}

/// `dst[j] = src[j · stride]`, an element loop (short rows: see above).
///
/// # Safety
/// `src` must address `dst.len()` elements at that stride.
#[inline(always)]
unsafe fn copy_strided<T: Copy>(dst: &mut [T], src: *const T, stride: isize) {
    if stride == 1 {
        let src = std::slice::from_raw_parts(src, dst.len());
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
    } else {
        dst.iter_mut()
            .enumerate()
            .for_each(|(j, d)| *d = *src.offset(j as isize * stride));
    }
}

/// `acc[r, :] = Σ_p a[r, p] · b[p, :]` for the [`ROWS`] rows of `acc`, each `NP` long:
/// the accumulators (four rows of one or two registers) stay in registers over `p`.
/// Rows past the matrix's end compute garbage that is not copied out.
#[inline(always)]
fn rows_times_packed_plain<T: Element, const NP: usize>(acc: &mut [T], a: &[T], b: &[T], k: usize) {
    let mut c = [[T::zero(); NP]; ROWS];
    for (p, b) in b.chunks_exact(NP).enumerate() {
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

/// As [`rows_times_packed_plain`] for any padded width `np`, accumulating in memory.
#[inline(always)]
fn rows_times_packed_any_plain<T: Element>(acc: &mut [T], a: &[T], b: &[T], np: usize, k: usize) {
    acc.fill(T::zero());
    for (p, b) in b.chunks_exact(np).enumerate() {
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

/// [`rows_times_packed_plain`] for one width, compiled wide (a const generic cannot pass
/// through [`wide_fn!`], hence one wrapper per width).
#[inline(always)]
fn rows_times_packed<T: Element, const NP: usize>(acc: &mut [T], a: &[T], b: &[T], k: usize) {
    match NP {
        16 => width16(acc, a, b, k),
        _ => width32(acc, a, b, k),
    }
}

#[inline(always)]
fn width16_plain<T: Element>(acc: &mut [T], a: &[T], b: &[T], k: usize) {
    rows_times_packed_plain::<T, 16>(acc, a, b, k)
}

#[inline(always)]
fn width32_plain<T: Element>(acc: &mut [T], a: &[T], b: &[T], k: usize) {
    rows_times_packed_plain::<T, 32>(acc, a, b, k)
}

wide_fn! {
    fn width16<T>(acc: &mut [T], a: &[T], b: &[T], k: usize) = width16_plain;
}
wide_fn! {
    fn width32<T>(acc: &mut [T], a: &[T], b: &[T], k: usize) = width32_plain;
}
wide_fn! {
    fn rows_times_packed_any<T>(acc: &mut [T], a: &[T], b: &[T], np: usize, k: usize) = rows_times_packed_any_plain;
}

#[cfg(test)]
mod tests {
    use super::{small_product, MatRef};

    #[test]
    fn matches_the_naive_product_for_strided_operands() {
        for (m, n, k) in [
            (1, 1, 1),
            (5, 3, 2),
            (28, 28, 16),
            (28, 16, 28),
            (7, 9, 0),
            (3, 0, 4),
            (9, 13, 5),
        ] {
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
            // a as the transpose of a row-major [k, m]; b row-major [k, n].
            let want: Vec<f64> = (0..m * n)
                .map(|ij| (0..k).map(|p| a[p * m + ij / n] * b[p * n + ij % n]).sum())
                .collect();
            let mut dst = vec![f64::NAN; m * n];
            let lhs = MatRef {
                ptr: a.as_ptr(),
                rs: 1,
                cs: m as isize,
            };
            let rhs = MatRef {
                ptr: b.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            // SAFETY: the operands address m×k and k×n elements of live buffers.
            unsafe { small_product(m, n, k, dst.as_mut_ptr(), lhs, rhs) };
            for (g, w) in dst.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{m}x{n}x{k}: {g} vs {w}");
            }
        }
    }
}
