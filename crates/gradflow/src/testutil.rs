//! Helpers for the gradient-check tests that sit beside each op.

use crate::{gradcheck, GradcheckOptions, Tensor};
use rand::{Rng, SeedableRng};

/// Uniform f64 values in [-2, 2) from a seed.
pub fn rand64(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.gen_range(-2.0..2.0)).collect::<Vec<f64>>(), shape).unwrap()
}

/// Positive f64 values in [0.5, 2.5), for log, sqrt, division.
pub fn rand_pos(shape: &[usize], seed: u64) -> Tensor {
    rand64(shape, seed).abs().add_scalar(0.5)
}

/// Gradcheck with PyTorch's tolerances; panics with the mismatch on failure.
pub fn check(f: impl Fn(&[Tensor]) -> crate::Result<Tensor>, inputs: &[Tensor]) {
    if let Err(e) = gradcheck(f, inputs, GradcheckOptions::default()) {
        panic!("{e}");
    }
}
