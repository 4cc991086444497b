//! Everything a training run is configured by. The CLI fills it from flags
//! (and an optional `--config run.toml`); it is saved in the checkpoint so a
//! resumed run continues under the same settings.

use crate::error::{Error, Result};
use gradflow_nn::optim::{OptimizerConfig, OptimizerSpec, SgdConfig};
use gradflow_nn::schedule::ScheduleSpec;
use serde::{Deserialize, Serialize};

/// A training run's settings, with the defaults of the README's main command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Preset name (`mlp`, `mlp3`, `lenet5`, `lstm`) or path to a model TOML.
    pub model: String,
    /// Epochs to train.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// An optimizer's short name (`OptimizerSpec::registry` lists them).
    pub optimizer: String,
    /// Momentum for SGD and RMSprop.
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    pub nesterov: bool,
    /// Optimizer weight decay (coupled in SGD/Adam, decoupled in AdamW).
    pub weight_decay: f64,
    /// λ₁ of the L1 penalty.
    pub l1: f64,
    /// λ₂ of the L2 penalty.
    pub l2: f64,
    /// Override every Dropout layer's p (or add dropout after each activation).
    pub dropout: Option<f64>,
    /// Replace every activation.
    pub activation: Option<String>,
    /// Initializer for Linear and Conv2d weights.
    pub init: Option<String>,
    /// A learning-rate schedule's name (`ScheduleSpec::registry` lists them).
    pub schedule: String,
    /// Epochs of linear warm-up before the schedule.
    pub warmup_epochs: usize,
    /// Stop after this many epochs without validation improvement, restoring the best weights.
    pub early_stopping: Option<usize>,
    /// Smallest improvement of validation loss that counts.
    pub min_delta: f64,
    /// Fraction of the training set held out for validation.
    pub val_split: f64,
    /// Max-norm constraint on each unit's incoming weights.
    pub max_norm: Option<f64>,
    /// Clip the global gradient norm to this value.
    pub clip_norm: Option<f64>,
    /// Clip each gradient element to ±this value.
    pub clip_value: Option<f64>,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Loss of a regression (`mse`, `l1`, `huber`; default `mse`); classification always uses cross-entropy.
    pub loss: Option<String>,
    /// Seed of weights, shuffling, split and dropout.
    pub seed: u64,
    /// Use only the first N training images (quick runs and tests).
    pub limit_train: Option<usize>,
    /// Use only the first N test images.
    pub limit_test: Option<usize>,
    /// Record per-layer diagnostics every N steps (0 = off).
    pub diagnostics_every: usize,
    /// Skip the last, smaller batch of each epoch (PyTorch's `DataLoader(drop_last=True)`).
    pub drop_last: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "mlp".into(),
            epochs: 5,
            batch_size: 128,
            lr: 1e-3,
            optimizer: "adam".into(),
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            l1: 0.0,
            l2: 0.0,
            dropout: None,
            activation: None,
            init: None,
            schedule: "cosine".into(),
            warmup_epochs: 0,
            early_stopping: None,
            min_delta: 0.0,
            val_split: 0.0,
            max_norm: None,
            clip_norm: None,
            clip_value: None,
            label_smoothing: 0.0,
            loss: None,
            seed: 0,
            limit_train: None,
            limit_test: None,
            diagnostics_every: 50,
            drop_last: false,
        }
    }
}

impl TrainConfig {
    /// Check every value a user can get wrong; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        self.validate_sizes()?;
        self.validate_rates()?;
        self.validate_fractions()?;
        self.optimizer_spec()?;
        self.schedule_spec()?;
        self.regression_loss()?;
        Ok(())
    }

    /// The loss a regression trains with: `loss`, else mean squared error.
    pub fn regression_loss(&self) -> Result<gradflow_nn::Loss> {
        use gradflow_nn::Loss;
        let Some(name) = &self.loss else {
            return Ok(Loss::Mse);
        };
        match Loss::parse(name) {
            Ok(l @ (Loss::Mse | Loss::L1 | Loss::Huber { .. })) => Ok(l),
            _ => Err(Error::Setting(format!(
                "--loss {name}: unknown regression loss (expected one of mse, l1, huber)"
            ))),
        }
    }

    /// Counts: epochs, batch size, patience, limits.
    fn validate_sizes(&self) -> Result<()> {
        let at_least_one = |flag: &str, v: Option<usize>| match v {
            Some(0) => Err(Error::Setting(format!("--{flag} must be at least 1"))),
            _ => Ok(()),
        };
        at_least_one("epochs", Some(self.epochs))?;
        at_least_one("batch-size", Some(self.batch_size))?;
        if self.early_stopping == Some(0) {
            return Err(Error::Setting("--early-stopping patience must be at least 1".into()));
        }
        at_least_one("limit-train", self.limit_train)
    }

    /// Learning rate, optimizer hyperparameters, penalties and clipping thresholds.
    fn validate_rates(&self) -> Result<()> {
        positive("lr", self.lr)?;
        if self.lr > 1e3 {
            return Err(Error::Setting(format!(
                "--lr {} is absurdly large (above 1000)",
                self.lr
            )));
        }
        for (flag, v) in [
            ("momentum", self.momentum),
            ("weight-decay", self.weight_decay),
            ("l1", self.l1),
            ("l2", self.l2),
            ("min-delta", self.min_delta),
            ("label-smoothing", self.label_smoothing),
        ] {
            non_negative(flag, v)?;
        }
        for (flag, v) in [
            ("max-norm", self.max_norm),
            ("clip-norm", self.clip_norm),
            ("clip-value", self.clip_value),
        ] {
            if let Some(v) = v {
                positive(flag, v)?;
            }
        }
        Ok(())
    }

    /// Label smoothing, dropout and the validation split.
    fn validate_fractions(&self) -> Result<()> {
        if self.label_smoothing > 1.0 {
            return Err(Error::Setting("--label-smoothing must be at most 1".into()));
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Setting(format!("--dropout must be in [0, 1), got {p}")));
            }
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(Error::Setting(format!(
                "--val-split must be in [0, 1), got {}",
                self.val_split
            )));
        }
        Ok(())
    }

    /// The optimizer these settings describe: the chosen optimizer's PyTorch
    /// defaults, with each shared flag set where that optimizer has it.
    pub fn optimizer_spec(&self) -> Result<OptimizerSpec> {
        let with_flags = || -> gradflow_nn::Result<OptimizerSpec> {
            let mut spec = OptimizerSpec::parse(&self.optimizer, self.lr)?;
            // An unset weight decay keeps the optimizer's own default (AdamW's 0.01).
            if self.weight_decay > 0.0 {
                spec.set("weight_decay", self.weight_decay)?;
            }
            if self.nesterov {
                spec.set("nesterov", true)?;
            }
            // The default --momentum 0.9 is meant for SGD; the others keep PyTorch's 0
            // unless the flag is given.
            if spec.name() == SgdConfig::NAME || self.momentum != TrainConfig::default().momentum {
                spec.set("momentum", self.momentum)?;
            }
            Ok(spec)
        };
        let spec = with_flags().map_err(|e| Error::Setting(e.to_string()))?;
        spec.validate()
            .map_err(|e| Error::Setting(format!("--optimizer {}: {e}", self.optimizer)))?;
        Ok(spec)
    }

    /// The learning-rate schedule these settings describe (with warm-up if asked).
    pub fn schedule_spec(&self) -> Result<ScheduleSpec> {
        let after = self.epochs.saturating_sub(self.warmup_epochs).max(1);
        let spec =
            ScheduleSpec::parse(&self.schedule, after).map_err(|e| Error::Setting(format!("--schedule: {e}")))?;
        let start_factor = 1.0 / (self.warmup_epochs as f64 + 1.0);
        Ok(spec.with_warmup(self.warmup_epochs, start_factor))
    }
}

fn positive(flag: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::Setting(format!("--{flag} must be a positive number, got {v}")))
    }
}

fn non_negative(flag: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::Setting(format!(
            "--{flag} must be a non-negative number, got {v}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Edit = fn(&mut TrainConfig);

    #[test]
    fn the_defaults_are_valid() {
        TrainConfig::default().validate().unwrap();
    }

    #[test]
    fn each_rule_names_its_flag() {
        let exact: [(Edit, &str); 18] = [
            (|c| c.epochs = 0, "--epochs must be at least 1"),
            (|c| c.batch_size = 0, "--batch-size must be at least 1"),
            (
                |c| c.early_stopping = Some(0),
                "--early-stopping patience must be at least 1",
            ),
            (|c| c.limit_train = Some(0), "--limit-train must be at least 1"),
            (|c| c.lr = 0.0, "--lr must be a positive number, got 0"),
            (|c| c.lr = f64::NAN, "--lr must be a positive number, got NaN"),
            (|c| c.lr = 1e4, "--lr 10000 is absurdly large (above 1000)"),
            (
                |c| c.momentum = -1.0,
                "--momentum must be a non-negative number, got -1",
            ),
            (
                |c| c.weight_decay = f64::INFINITY,
                "--weight-decay must be a non-negative number, got inf",
            ),
            (|c| c.l1 = -0.5, "--l1 must be a non-negative number, got -0.5"),
            (|c| c.l2 = f64::NAN, "--l2 must be a non-negative number, got NaN"),
            (
                |c| c.min_delta = -1.0,
                "--min-delta must be a non-negative number, got -1",
            ),
            (|c| c.label_smoothing = 1.5, "--label-smoothing must be at most 1"),
            (|c| c.dropout = Some(1.0), "--dropout must be in [0, 1), got 1"),
            (|c| c.val_split = -0.1, "--val-split must be in [0, 1), got -0.1"),
            (
                |c| c.max_norm = Some(0.0),
                "--max-norm must be a positive number, got 0",
            ),
            (
                |c| c.clip_norm = Some(-1.0),
                "--clip-norm must be a positive number, got -1",
            ),
            (
                |c| c.clip_value = Some(f64::NAN),
                "--clip-value must be a positive number, got NaN",
            ),
        ];
        for (edit, message) in exact {
            let mut c = TrainConfig::default();
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().to_string(), message);
        }
        let starts: [(Edit, &str); 3] = [
            (
                |c| c.label_smoothing = -0.1,
                "--label-smoothing must be a non-negative number",
            ),
            (|c| c.optimizer = "lbfgs".into(), "unknown optimizer 'lbfgs'"),
            (|c| c.schedule = "zigzag".into(), "--schedule: "),
        ];
        for (edit, prefix) in starts {
            let mut c = TrainConfig::default();
            edit(&mut c);
            let e = c.validate().unwrap_err();
            assert!(matches!(e, Error::Setting(_)));
            assert!(e.to_string().starts_with(prefix), "{e}");
        }
    }
}
