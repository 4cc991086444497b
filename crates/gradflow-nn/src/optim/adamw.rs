//! AdamW, following `torch.optim.AdamW`: the Adam rule with decoupled weight
//! decay (Loshchilov & Hutter), run by [`Adam`].

use super::adam::validate_adam;
use super::{Adam, AdamConfig, Optimizer, OptimizerConfig};
use serde::{Deserialize, Serialize};

/// `torch.optim.AdamW`'s hyperparameters, with its defaults (those of Adam,
/// but a weight decay of 0.01).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate (torch default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled decay: each step multiplies weights by `1 − lr·weight_decay` (default 0.01).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            weight_decay: 1e-2,
            ..AdamWConfig::from(AdamConfig::default())
        }
    }
}

impl From<AdamConfig> for AdamWConfig {
    fn from(c: AdamConfig) -> AdamWConfig {
        AdamWConfig {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
        }
    }
}

impl AdamWConfig {
    /// The same hyperparameters for the shared Adam rule.
    fn as_adam(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
        }
    }
}

impl OptimizerConfig for AdamWConfig {
    const NAME: &'static str = "adamw";
    const TORCH_NAME: &'static str = "AdamW";
    const DESCRIPTION: &'static str = "Adam with decoupled weight decay (Loshchilov & Hutter)";
    fn lr(&self) -> f64 {
        self.lr
    }
    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }
    fn validate(&self) -> crate::Result<()> {
        validate_adam(&self.as_adam())
    }
    fn build(&self) -> Box<dyn Optimizer> {
        Box::new(Adam::decoupled(self.as_adam()))
    }
}
