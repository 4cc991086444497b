//! Activation layers: one enum covering every activation of the core.

use crate::module::{Ctx, Module};
use gradflow::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// An activation function as a layer, with PyTorch's parameters and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// max(0, x).
    ReLU,
    /// Leaky ReLU with `negative_slope` (default 0.01).
    LeakyReLU(f64),
    /// ELU with `alpha` (default 1).
    ELU(f64),
    /// SELU.
    SELU,
    /// GELU; `true` for the tanh approximation.
    GELU(bool),
    /// SiLU (swish).
    SiLU,
    /// Logistic sigmoid.
    Sigmoid,
    /// tanh.
    Tanh,
    /// Softplus with `beta`, `threshold` (defaults 1, 20).
    Softplus(f64, f64),
    /// x/(1+|x|).
    Softsign,
    /// Hardtanh on [min_val, max_val] (default [-1, 1]).
    Hardtanh(f64, f64),
}

impl Activation {
    /// Every activation's PyTorch class name.
    pub const NAMES: [&'static str; 11] = [
        "ReLU",
        "LeakyReLU",
        "ELU",
        "SELU",
        "GELU",
        "SiLU",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Softsign",
        "Hardtanh",
    ];

    /// By name (case-insensitive; `leaky_relu` and `leakyrelu` both work), with default parameters.
    pub fn parse(name: &str) -> Option<Activation> {
        Some(match name.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
            "relu" => Activation::ReLU,
            "leakyrelu" => Activation::LeakyReLU(0.01),
            "elu" => Activation::ELU(1.0),
            "selu" => Activation::SELU,
            "gelu" => Activation::GELU(false),
            "silu" | "swish" => Activation::SiLU,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softplus" => Activation::Softplus(1.0, 20.0),
            "softsign" => Activation::Softsign,
            "hardtanh" => Activation::Hardtanh(-1.0, 1.0),
            _ => return None,
        })
    }

    /// Apply to a tensor.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        use gradflow::ops::activation as a;
        match *self {
            Activation::ReLU => x.relu(),
            Activation::LeakyReLU(s) => x.leaky_relu(s),
            Activation::ELU(al) => x.elu(al),
            Activation::SELU => x.selu(),
            Activation::GELU(t) => x.apply_unary(a::Gelu { tanh_approx: t }),
            Activation::SiLU => x.silu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Tanh => x.tanh(),
            Activation::Softplus(beta, threshold) => x.apply_unary(a::Softplus { beta, threshold }),
            Activation::Softsign => x.softsign(),
            Activation::Hardtanh(min, max) => x.hardtanh(min, max),
        }
    }

    /// The PyTorch class name.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::ReLU => "ReLU",
            Activation::LeakyReLU(_) => "LeakyReLU",
            Activation::ELU(_) => "ELU",
            Activation::SELU => "SELU",
            Activation::GELU(_) => "GELU",
            Activation::SiLU => "SiLU",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Softplus(..) => "Softplus",
            Activation::Softsign => "Softsign",
            Activation::Hardtanh(..) => "Hardtanh",
        }
    }

    /// The negative slope for init gains (LeakyReLU only).
    pub fn negative_slope(&self) -> f64 {
        match self {
            Activation::LeakyReLU(s) => *s,
            _ => 0.0,
        }
    }
}

impl Module for Activation {
    fn kind(&self) -> &'static str {
        self.name()
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.apply(x))
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
}
