//! # gradflow
//!
//! Tensors on the CPU, reverse-mode automatic differentiation (backpropagation)
//! and a gradient checker.
//!
//! Ops run eagerly, as in PyTorch, and record a graph when an input requires a
//! gradient. [`Tensor::backward`] walks that graph from the loss back to every
//! parameter, applying each op's local derivative: the chain rule, layer by layer.
//!
//! ```
//! use gradflow::Tensor;
//! # fn main() -> gradflow::Result<()> {
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?.requires_grad_(true);
//! let w = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], &[3])?.requires_grad_(true);
//! let y = x.mul(&w)?.relu().sum_all(); // relu(x·w) summed
//! let grads = y.backward()?;
//! assert_eq!(grads.get(&w).unwrap().to_vec::<f32>()?, vec![1.0, 0.0, 3.0]);
//! # Ok(()) }
//! ```
//!
//! **API errors.** Ops return [`Result`]: a shape or dtype mismatch is an
//! [`Error`] naming the op and the shapes, never a panic. Ops that cannot fail
//! (elementwise maps of one tensor) return the tensor directly.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::cloned_ref_to_slice_refs, clippy::type_complexity))]

pub mod autograd;
pub mod device;
pub mod dtype;
pub mod error;
pub mod gradcheck;
pub mod kernels;
pub mod layout;
pub mod ops;
pub mod storage;
pub mod tensor;
#[cfg(test)]
pub(crate) mod testutil;

pub use autograd::{is_grad_enabled, no_grad, no_grad_scope, GradFn, GradStore, NoGradGuard};
pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, GradcheckError, GradcheckOptions, GradcheckReport, Mismatch};
pub use kernels::{
    keep_freed_memory, keep_threads_awake, num_threads, set_num_threads, set_num_threads_on_this_thread, AwakeThreads,
};
pub use layout::Layout;
pub use ops::conv::Conv2dParams;
pub use ops::pool::Pool2dParams;
pub use ops::recurrent::{Cell, HiddenGradNorms};
pub use storage::{CpuStorage, Storage};
pub use tensor::{Tensor, TensorId};

/// A seeded generator (ChaCha8): every random choice in gradflow draws from one of these.
pub fn seeded_rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}
