//! Dense layer: y = x·Wᵀ + b, with PyTorch's weight layout `[out, in]`, over
//! the last dimension of its input (`[N, F]` or `[N, T, F]`).

use crate::init::{init_bias, init_weight, Init};
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use crate::spec::keys::write_weight_keys;
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{DType, Result, Tensor};
use rand::Rng;
use std::fmt::Write as _;

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

/// How to build a [`Linear`]: PyTorch's defaults (a bias, PyTorch's own
/// initializer, f32), changed by the builder methods, then drawn with
/// [`build`](Self::build).
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a config builds nothing until .build(&mut rng)"]
pub struct LinearConfig {
    in_features: usize,
    out_features: usize,
    bias: bool,
    init: Init,
    gain: f64,
    dtype: DType,
}

impl LinearConfig {
    /// Whether to learn a bias (default true).
    pub fn bias(self, bias: bool) -> Self {
        LinearConfig { bias, ..self }
    }
    /// The weight initializer (default PyTorch's own); with any other, the bias starts at 0.
    pub fn init(self, init: Init) -> Self {
        LinearConfig { init, ..self }
    }
    /// The gain of the activation that follows, for initializers that use one
    /// (default 1; e.g. [`Activation::gain`](crate::Activation::gain)).
    pub fn gain(self, gain: f64) -> Self {
        LinearConfig { gain, ..self }
    }
    /// The element type (default f32).
    pub fn dtype(self, dtype: DType) -> Self {
        LinearConfig { dtype, ..self }
    }
    /// Draw the weights (then the bias) from `rng`.
    pub fn build(self, rng: &mut impl Rng) -> Linear {
        let shape = [self.out_features, self.in_features];
        let weight = init_weight(&shape, self.init, self.gain, self.dtype, rng).requires_grad_(true);
        let bias = self.bias.then(|| {
            let b = if matches!(self.init, Init::PytorchDefault) {
                init_bias(self.out_features, &shape, self.dtype, rng)
            } else {
                Tensor::zeros(&[self.out_features], self.dtype)
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
}

impl Linear {
    /// `nn.Linear(in_features, out_features)`: options by the config's builder methods,
    /// e.g. `Linear::new(784, 800).init(Init::XavierUniform).build(&mut rng)`.
    #[allow(clippy::new_ret_no_self)] // PyTorch's spelling; weights are drawn by `.build(&mut rng)`.
    pub fn new(in_features: usize, out_features: usize) -> LinearConfig {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
            init: Init::PytorchDefault,
            gain: 1.0,
            dtype: DType::F32,
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
    /// Acts on the last dimension, as `nn.Linear` does: `[N, T, in]` → `[N, T, out]`.
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        if x.ndim() <= 2 {
            return x.linear(&self.weight, self.bias.as_ref());
        }
        let mut shape = x.shape().to_vec();
        let last = shape.pop().unwrap_or(0);
        let rows = shape.iter().product();
        let y = x.reshape(&[rows, last])?.linear(&self.weight, self.bias.as_ref())?;
        shape.push(self.out_features());
        y.reshape(&shape)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        // Per sample: features `[F]`, or a sequence `[T, F]` acted on step by step.
        // An image `[C, H, W]` would be acted on along its width, which is
        // almost never meant: it is refused with a hint to flatten it.
        match input {
            [.., n] if input.len() <= 2 && *n == self.in_features() => {
                let mut out = input.to_vec();
                out[input.len() - 1] = self.out_features();
                Ok(out)
            }
            [.., n] if input.len() <= 2 => {
                crate::error::bad_shape(format!("expects {} input features, gets {n}", self.in_features()))
            }
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

/// `nn.Linear` in a model file: `in_features` is inferred from the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSpec {
    /// Output width.
    pub out_features: usize,
    /// Whether to learn a bias.
    pub bias: bool,
    /// Per-layer λ₁.
    pub l1: Option<f64>,
    /// Per-layer λ₂.
    pub l2: Option<f64>,
    /// Per-layer initializer.
    pub init: Option<Init>,
}

impl LinearSpec {
    /// `out_features` wide, with PyTorch's defaults (a bias) and the model's penalties and initializer.
    pub fn new(out_features: usize) -> LinearSpec {
        LinearSpec {
            out_features,
            bias: true,
            l1: None,
            l2: None,
            init: None,
        }
    }
}

impl LayerDecl for LinearSpec {
    fn types() -> Vec<&'static str> {
        vec!["Linear"]
    }
    fn description() -> &'static str {
        "fully connected: y = x·Wᵀ + b over the last dimension"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<LinearSpec> {
        Ok(LinearSpec {
            out_features: k.usize("out_features", None)?,
            bias: k.bool("bias", true)?,
            l1: k.opt_float("l1")?,
            l2: k.opt_float("l2")?,
            init: k.init()?,
        })
    }
    fn kind(&self) -> &'static str {
        "Linear"
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(s, "out_features = {}", self.out_features);
        write_weight_keys(s, self.bias, self.l1, self.l2, self.init);
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("out_features", self.out_features)]
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        if shape.len() > 2 {
            return crate::error::bad_shape(format!(
                "expects a flat input, gets shape {shape:?} (add a Flatten layer before it)"
            ));
        }
        Ok(())
    }
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        shape[shape.len() - 1]
            .checked_mul(self.out_features)?
            .checked_add(if self.bias { self.out_features } else { 0 })
    }
    fn gain_before(&self) -> Option<f64> {
        Some(1.0)
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let (init, gain) = cx.weight_init(self.init);
        let config = Linear::new(shape[shape.len() - 1], self.out_features)
            .bias(self.bias)
            .init(init)
            .gain(gain)
            .dtype(cx.dtype());
        let mut linear = config.build(cx.rng());
        (linear.l1, linear.l2) = (self.l1, self.l2);
        Ok(Box::new(linear))
    }
}
