//! Matrix products through the `gemm` crate, which takes row and column
//! strides: a transposed operand is just swapped strides, never a copy.

use super::small_gemm::{small_product, SMALL_GEMM_MACS};
use super::SendPtr;
use crate::layout::{for_each_offset2, Layout};
use crate::Element;
use rayon::prelude::*;
use std::any::TypeId;

/// Below this many multiply-adds (about 20 µs on one core) a product runs on one
/// thread: splitting smaller ones costs more in hand-offs than it saves. Measured on
/// 2 quiet Zen 5 cores (`--step-profile` of gradflow-bench's models bench), against
/// the earlier 2^24: the vit preset's step (products of 1792×64×64 to 1792×128×64)
/// 9.0 → 7.1–8.0 ms, 784-128-10 at batch 64 (6.4 M) 0.170 → 0.145 ms, LeNet-5 and
/// 784-800-10 at batch 32 unchanged within noise, 784-1024-1024-10 unchanged (its
/// products are all far above either threshold). On a machine whose other core is
/// busy a split product waits for its slower half; there the two thresholds measured
/// the same.
pub const GEMM_PAR_THRESHOLD: usize = 1 << 21;

/// A strided matrix operand: element (i, j) is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct MatRef<T> {
    /// Pointer to element (0, 0).
    pub ptr: *const T,
    /// Row stride in elements.
    pub rs: isize,
    /// Column stride in elements.
    pub cs: isize,
}

/// `dst[m, n] (row-major, leading dimension n) = lhs·rhs (+ dst if accumulate)`.
///
/// # Safety
/// `lhs` must address an m×k matrix and `rhs` a k×n matrix inside live buffers.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    accumulate: bool,
    threaded: bool,
) {
    debug_assert!(dst.len() >= m * n);
    gemm_to(m, n, k, dst.as_mut_ptr(), n as isize, 1, lhs, rhs, accumulate, threaded)
}

/// Like [`gemm()`], into a strided destination: element (i, j) is written at
/// `dst + i * dst_rs + j * dst_cs`. A column-major destination (`dst_rs = 1`)
/// keeps `lhs` as the gemm crate's packed operand and reads `rhs` in place,
/// which is the cheap orientation when `rhs` is a transposed weight matrix.
///
/// # Safety
/// `lhs` must address an m×k matrix, `rhs` a k×n matrix and `dst` an m×n
/// matrix (with these strides) inside live buffers; `dst` must not overlap them.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_to<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    dst_cs: isize,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    accumulate: bool,
    threaded: bool,
) {
    debug_assert!(TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = T::zero();
                }
            }
        }
        return;
    }
    let threads = if ONE_THREAD.with(|c| c.get()) {
        1
    } else {
        rayon::current_num_threads()
    };
    // The gemm crate's own threading: its packing buffers are then allocated on the
    // calling thread, whose heap keeps them (allocating them on rayon's workers, one
    // block per task, made glibc hand pages back and fault them in again every call).
    let par = if threaded && m * n * k >= GEMM_PAR_THRESHOLD && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_one(m, n, k, dst, dst_rs, dst_cs, lhs, rhs, accumulate, par);
}

thread_local! {
    /// Set by [`on_one_thread`]: products on this thread run unsplit.
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with every product it makes on the calling thread alone: for two
/// independent products run side by side, one per thread (see `LinearBackward`).
pub(crate) fn on_one_thread<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the flag back even if `f` panics (rayon catches panics and reuses the thread).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ONE_THREAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ONE_THREAD.with(|c| c.replace(true)));
    f()
}

/// Width of the blocks a side of `side` rows or columns is cut into for `threads`
/// threads: a few blocks per thread for balance, none narrower than 64 (the gemm
/// microkernel's panel) nor needlessly narrower than 256; `side` itself means one block.
pub(crate) fn block_width(side: usize, threads: usize) -> usize {
    let blocks = (side / 256).clamp(threads, 3 * threads).min(side / 64);
    if blocks < 2 {
        return side;
    }
    side.div_ceil(blocks).next_multiple_of(16).min(side)
}

/// One call into the gemm crate (`dst = lhs·rhs (+ dst)`), destination strides as in [`gemm_to`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_one<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    dst_cs: isize,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    );
}

/// The last two dimensions of a layout, from `offset` into `data`, as a strided operand.
pub(crate) fn mat<T>(data: &[T], offset: usize, l: &Layout) -> MatRef<T> {
    let nd = l.shape.len();
    MatRef {
        ptr: data[offset..].as_ptr(),
        rs: l.strides[nd - 2] as isize,
        cs: l.strides[nd - 1] as isize,
    }
}

/// out[batch…, m, n] = a[batch…, m, k] · b[batch…, k, n], both already broadcast to the batch shape.
pub(crate) fn batched_kernel<T: Element>(
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
    let len = nb * m * n;
    // Every element is written by the products below (K = 0 writes zeros), so the
    // buffer is not zeroed first.
    let mut out: Vec<T> = Vec::with_capacity(len);
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
    if len > 0 {
        let optr = SendPtr(out.as_mut_ptr());
        let optr = &optr;
        // Stacks of tiny products (attention's heads) only: a lone small product keeps
        // the gemm crate's arithmetic (fused multiply-adds), and with it the recorded
        // results of the golden runs.
        let small = nb > 1 && m * n * k <= SMALL_GEMM_MACS;
        let one = |i: usize, oa: usize, ob: usize, threaded: bool| {
            // SAFETY: offsets and strides come from valid layouts of these buffers;
            // batch i writes its own disjoint m×n block of `out`'s capacity.
            unsafe {
                let (dst, lhs, rhs) = (optr.0.add(i * m * n), mat(a, oa, la), mat(b, ob, lb));
                if small {
                    small_product(m, n, k, dst, lhs, rhs)
                } else {
                    gemm_to(m, n, k, dst, n as isize, 1, lhs, rhs, false, threaded)
                }
            }
        };
        if nb == 1 {
            one(0, pairs[0].0, pairs[0].1, true);
        } else {
            // Tasks of at least SMALL_GEMM_MACS multiply-adds each.
            let per_task = (SMALL_GEMM_MACS / (m * n * k).max(1)).max(1);
            pairs
                .par_iter()
                .with_min_len(per_task)
                .enumerate()
                .for_each(|(i, &(oa, ob))| one(i, oa, ob, false));
        }
    }
    // SAFETY: every batch wrote its whole m×n block.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::{gemm, MatRef};

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        (ars, acs): (usize, usize),
        b: &[f64],
        (brs, bcs): (usize, usize),
    ) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a[i * ars + l * acs] * b[l * brs + j * bcs]).sum();
            }
        }
        out
    }

    #[test]
    fn strided_operands_and_accumulation() {
        let (m, n, k) = (5, 4, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        // a row-major [m, k]; b stored column-major, i.e. as [n, k].
        let want = naive(m, n, k, &a, (k, 1), &b, (1, k));
        let mut dst = vec![0.0; m * n];
        let lhs = MatRef {
            ptr: a.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        let rhs = MatRef {
            ptr: b.as_ptr(),
            rs: 1,
            cs: k as isize,
        };
        // SAFETY: the operands address m×k and k×n elements of live buffers.
        unsafe { gemm(m, n, k, &mut dst, lhs, rhs, false, true) };
        for (g, w) in dst.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12);
        }
        // accumulate = true adds onto what is there.
        let mut acc = vec![1.0; m * n];
        unsafe { gemm(m, n, k, &mut acc, lhs, rhs, true, false) };
        for (g, w) in acc.iter().zip(&want) {
            assert!((g - (w + 1.0)).abs() < 1e-12);
        }
        // K = 0: zeros, or dst untouched when accumulating.
        let mut z = vec![7.0; m * n];
        unsafe { gemm(m, n, 0, &mut z, lhs, rhs, true, false) };
        assert!(z.iter().all(|&v| v == 7.0));
        unsafe { gemm(m, n, 0, &mut z, lhs, rhs, false, false) };
        assert!(z.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn threaded_f32_product_matches_naive() {
        // Above GEMM_PAR_THRESHOLD so the rayon path is taken when threads exist.
        let (m, n, k) = (330, 320, 320);
        assert!(m * n * k >= super::GEMM_PAR_THRESHOLD);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        let mut dst = vec![0.0f32; m * n];
        let lhs = MatRef {
            ptr: a.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        let rhs = MatRef {
            ptr: b.as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        unsafe { gemm(m, n, k, &mut dst, lhs, rhs, false, true) };
        let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let want = naive(m, n, k, &a64, (k, 1), &b64, (n, 1));
        for (g, w) in dst.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
        }
    }
}
