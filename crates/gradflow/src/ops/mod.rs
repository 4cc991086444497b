//! Every differentiable op: its forward computation and, right beside it, its
//! backward rule (the vector-Jacobian product). Adding an op touches one file.

pub mod activation;
pub mod attention;
pub mod binary;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod index;
pub mod layer_norm;
pub mod loss;
pub mod matmul;
pub mod normalize;
pub mod pool;
pub mod recurrent;
pub mod reduce;
pub mod shape;
pub mod softmax;
pub mod unary;

/// Dispatch on a storage's dtype: binds the typed slice to `$v` in `$body`.
macro_rules! with_typed {
    ($storage:expr, $v:ident => $body:expr) => {
        match $storage {
            $crate::storage::CpuStorage::F32($v) => $body,
            $crate::storage::CpuStorage::F64($v) => $body,
        }
    };
}
pub(crate) use with_typed;
