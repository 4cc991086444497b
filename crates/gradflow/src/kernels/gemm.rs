//! Matrix products through the `gemm` crate, which takes row and column
//! strides: a transposed operand is just swapped strides, never a copy.

use crate::Element;
use std::any::TypeId;

/// Below this many multiply-adds a product runs on one thread.
const GEMM_PAR_THRESHOLD: usize = 48 * 48 * 48;

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

/// `dst[m, n] (row-major, leading dimension n) = beta·lhs·rhs (+ dst if accumulate)`.
///
/// # Safety
/// `lhs` must address an m×k matrix and `rhs` a k×n matrix inside live buffers.
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
    debug_assert!(TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    let par = if threaded && m * n * k >= GEMM_PAR_THRESHOLD && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        n as isize,
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
