//! Element types. Training runs in f32; gradient checking needs f64 so that
//! finite differences are not drowned in rounding error.

use crate::storage::CpuStorage;
use std::fmt;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float, the default for training.
    F32,
    /// 64-bit float, used by gradient checking and for parity tests.
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
    /// The name PyTorch and safetensors use ("F32", "F64").
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scalar type that kernels are generic over; implemented for `f32` and `f64`.
pub trait Element:
    num_traits::Float
    + num_traits::FromPrimitive
    + num_traits::NumAssign
    + Default
    + Send
    + Sync
    + fmt::Debug
    + fmt::Display
    + std::iter::Sum
    + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Borrow the storage's buffer if it holds this type.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// Mutably borrow the storage's buffer if it holds this type.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    /// Wrap a buffer of this type into storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Lossy conversion from f64 (constants in kernels are written in f64).
    fn of(x: f64) -> Self;
    /// Widening conversion to f64.
    fn f64(self) -> f64;
    /// The error function, needed by exact GELU.
    fn erf(self) -> Self;
    /// The logistic function as the fused recurrent kernels compute it: f32 by
    /// a branch-free approximation that vectorizes (`kernels/approx.rs`, within
    /// 1.5e-7), f64 exactly.
    fn cell_sigmoid(self) -> Self;
    /// tanh as the fused recurrent kernels compute it (see [`Element::cell_sigmoid`]).
    fn cell_tanh(self) -> Self;
    /// e^x as the fused kernels compute it (attention's softmax): f32 by the same
    /// vectorizing approximation as [`Element::cell_sigmoid`], f64 exactly.
    fn kernel_exp(self) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn slice(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    #[inline(always)]
    fn of(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn erf(self) -> f32 {
        libm::erff(self)
    }
    #[inline(always)]
    fn cell_sigmoid(self) -> f32 {
        crate::kernels::approx::sigmoid_f32(self)
    }
    #[inline(always)]
    fn cell_tanh(self) -> f32 {
        crate::kernels::approx::tanh_f32(self)
    }
    #[inline(always)]
    fn kernel_exp(self) -> f32 {
        crate::kernels::approx::exp_f32(self)
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn slice(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<f64>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    #[inline(always)]
    fn of(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn erf(self) -> f64 {
        libm::erf(self)
    }
    #[inline(always)]
    fn cell_sigmoid(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }
    #[inline(always)]
    fn cell_tanh(self) -> f64 {
        self.tanh()
    }
    #[inline(always)]
    fn kernel_exp(self) -> f64 {
        self.exp()
    }
}
