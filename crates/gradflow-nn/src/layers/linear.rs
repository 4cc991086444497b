//! Dense layer: y = x·Wᵀ + b, with PyTorch's weight layout `[out, in]`.

use crate::init::{init_bias, init_weight, Init};
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use gradflow::{DType, Result, Tensor};
use rand::Rng;

/// A fully connected layer.
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
    /// Per-layer λ₁ override.
    pub l1: Option<f64>,
    /// Per-layer λ₂ override.
    pub l2: Option<f64>,
}

impl Linear {
    /// A layer initialized with `init` (gain for the following activation); the bias follows PyTorch's default.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        init: Init,
        gain: f64,
        dtype: DType,
        rng: &mut impl Rng,
    ) -> Linear {
        let shape = [out_features, in_features];
        let weight = init_weight(&shape, init, gain, dtype, rng).requires_grad_(true);
        let bias = bias.then(|| {
            let b = if matches!(init, Init::PytorchDefault) {
                init_bias(out_features, &shape, dtype, rng)
            } else {
                Tensor::zeros(&[out_features], dtype)
            };
            b.requires_grad_(true)
        });
        Linear {
            weight,
            bias,
            l1: None,
            l2: None,
        }
    }
    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Linear {
    fn kind(&self) -> &'static str {
        "Linear"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        x.linear(&self.weight, self.bias.as_ref())
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        match input {
            [n] if *n == self.in_features() => Ok(vec![self.out_features()]),
            [n] => crate::error::bad_shape(format!("expects {} input features, gets {n}", self.in_features())),
            _ => crate::error::bad_shape(format!(
                "expects a flat input of {} features, gets shape {input:?} (add a Flatten layer before it)",
                self.in_features()
            )),
        }
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        let mut v = vec![NamedTensor {
            name: "weight".into(),
            tensor: self.weight.clone(),
        }];
        if let Some(b) = &self.bias {
            v.push(NamedTensor {
                name: "bias".into(),
                tensor: b.clone(),
            });
        }
        v
    }
    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        vec![PenaltyTarget {
            name: "weight".into(),
            tensor: self.weight.clone(),
            l1: self.l1,
            l2: self.l2,
        }]
    }
    fn describe(&self) -> String {
        format!(
            "Linear({} → {}{})",
            self.in_features(),
            self.out_features(),
            if self.bias.is_some() { "" } else { ", no bias" }
        )
    }
}
