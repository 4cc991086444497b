//! Gradient checking: compare backprop's analytic gradients with central
//! finite differences, in f64, with PyTorch's default tolerances.
//!
//! A non-scalar output is reduced with fixed random weights, L = Σ rᵢ·yᵢ, so a
//! single backward pass checks a random vector-Jacobian product, which catches
//! an error in any row of the Jacobian with probability one.

use crate::{no_grad, DType, Error, Tensor};
use rand::{Rng, SeedableRng};
use std::fmt;

/// Tolerances and step of a gradient check (PyTorch's defaults).
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numeric gradient).
    pub rtol: f64,
    /// Seed of the random output weights.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            seed: 0,
        }
    }
}

/// One element whose analytic and numeric gradients disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Which input (position in the slice given to [`gradcheck`]).
    pub input: usize,
    /// Multi-index of the element within that input.
    pub index: Vec<usize>,
    /// Gradient from backprop.
    pub analytic: f64,
    /// Gradient from central differences.
    pub numeric: f64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "input {} element {:?}: analytic {:.6e} vs numeric {:.6e} (difference {:.3e})",
            self.input,
            self.index,
            self.analytic,
            self.numeric,
            (self.analytic - self.numeric).abs()
        )
    }
}

/// What a passing check measured.
#[derive(Debug, Clone, Default)]
pub struct GradcheckReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest |analytic − numeric| seen.
    pub max_abs_error: f64,
}

/// Why a gradient check failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GradcheckError {
    /// The function or its backward returned an error.
    #[error("gradcheck: {0}")]
    Op(#[from] Error),
    /// Inputs must be f64 for finite differences to be meaningful.
    #[error("gradcheck: input {0} is {1}; finite differences need f64")]
    NotF64(usize, DType),
    /// Some elements disagree; the first few are listed.
    #[error("gradcheck: {} of {checked} elements disagree; first: {}", mismatches.len(), mismatches[0])]
    Mismatch {
        /// Elements compared.
        checked: usize,
        /// The disagreeing elements (at most 10 kept).
        mismatches: Vec<Mismatch>,
    },
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}

/// Check the gradients of `f` at `inputs` (f64 tensors) against central differences.
///
/// ```
/// use gradflow::{gradcheck, GradcheckOptions, Tensor};
/// let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0], &[3]).unwrap();
/// gradcheck(|t| Ok(t[0].tanh().mul(&t[0])?), &[x], GradcheckOptions::default()).unwrap();
/// ```
pub fn gradcheck<F>(f: F, inputs: &[Tensor], opts: GradcheckOptions) -> Result<GradcheckReport, GradcheckError>
where
    F: Fn(&[Tensor]) -> crate::Result<Tensor>,
{
    let leaves = f64_leaves(inputs)?;
    let y = f(&leaves)?;
    let r = output_weights(y.shape(), opts.seed)?;
    let objective = |y: &Tensor| -> crate::Result<f64> { y.to_dtype(DType::F64).mul(&r)?.sum_all().item() };

    let loss = y.to_dtype(DType::F64).mul(&r)?.sum_all();
    let grads = if loss.requires_grad() {
        Some(loss.backward()?)
    } else {
        None
    };

    let _guard = no_grad();
    let mut tally = Tally::default();
    for (i, leaf) in leaves.iter().enumerate() {
        let values = leaf.to_vec::<f64>()?;
        let analytic = match grads.as_ref().and_then(|g| g.get(leaf)) {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; values.len()],
        };
        for (e, &a) in analytic.iter().enumerate() {
            let eval = |delta: f64| -> crate::Result<f64> {
                let mut args: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
                let mut v = values.clone();
                v[e] += delta;
                args[i] = Tensor::from_vec(v, leaf.shape())?;
                objective(&f(&args)?)
            };
            let numeric = (eval(opts.eps)? - eval(-opts.eps)?) / (2.0 * opts.eps);
            tally.compare(&opts, (i, e, leaf.shape()), a, numeric);
        }
    }
    tally.finish()
}

/// Fresh f64 leaves that require grad, with the inputs' values.
fn f64_leaves(inputs: &[Tensor]) -> Result<Vec<Tensor>, GradcheckError> {
    let mut leaves = Vec::with_capacity(inputs.len());
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype() != DType::F64 {
            return Err(GradcheckError::NotF64(i, t.dtype()));
        }
        leaves.push(Tensor::from_vec(t.to_vec::<f64>()?, t.shape())?.requires_grad_(true));
    }
    Ok(leaves)
}

/// The fixed random weights r of L = Σ rᵢ·yᵢ: magnitudes in [0.5, 1.5), either sign.
fn output_weights(shape: &[usize], seed: u64) -> crate::Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let weights: Vec<f64> = (0..n)
        .map(|_| rng.gen_range(0.5..1.5) * if rng.gen::<bool>() { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_vec(weights, shape)
}

/// The comparisons so far: the report, and the first few disagreeing elements.
#[derive(Default)]
struct Tally {
    report: GradcheckReport,
    mismatches: Vec<Mismatch>,
}

impl Tally {
    /// Compare element `e` of input `input` (of shape `shape`).
    fn compare(
        &mut self,
        opts: &GradcheckOptions,
        (input, e, shape): (usize, usize, &[usize]),
        analytic: f64,
        numeric: f64,
    ) {
        let err = (analytic - numeric).abs();
        self.report.checked += 1;
        if err.is_finite() {
            self.report.max_abs_error = self.report.max_abs_error.max(err);
        }
        let within = err <= opts.atol + opts.rtol * numeric.abs();
        if !within && self.mismatches.len() < 10 {
            self.mismatches.push(Mismatch {
                input,
                index: unravel(e, shape),
                analytic,
                numeric,
            });
        }
    }

    fn finish(self) -> Result<GradcheckReport, GradcheckError> {
        if self.mismatches.is_empty() {
            Ok(self.report)
        } else {
            Err(GradcheckError::Mismatch {
                checked: self.report.checked,
                mismatches: self.mismatches,
            })
        }
    }
}
