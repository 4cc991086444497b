//! `torch.optim.lr_scheduler.ReduceLROnPlateau`: lower the lr when the
//! validation metric stops improving.

use super::{check_kind, count, non_negative, scalar, simple_state, LrSchedule, ScheduleConfig, ScheduleState};
use gradflow::Result;
use serde::{Deserialize, Serialize};

/// Whether a smaller or a larger metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How [`PlateauConfig::threshold`] defines a significant improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMode {
    /// Better than `best·(1 ∓ threshold)`.
    Rel,
    /// Better than `best ∓ threshold`.
    Abs,
}

/// ReduceLROnPlateau's arguments; `Default` (and any omitted field) gives torch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlateauConfig {
    /// Min for a loss, Max for an accuracy (default Min).
    pub mode: PlateauMode,
    /// The lr is multiplied by this on a plateau (default 0.1).
    pub factor: f64,
    /// Epochs without improvement tolerated; the lr drops on the next one (default 10).
    pub patience: usize,
    /// Smallest improvement that counts (default 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (default Rel).
    pub threshold_mode: ThresholdMode,
    /// Epochs to wait after a reduction before counting bad epochs again (default 0).
    pub cooldown: usize,
    /// The lr never goes below this (default 0).
    pub min_lr: f64,
    /// Reductions smaller than this are skipped (default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        PlateauConfig {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// `torch.optim.lr_scheduler.ReduceLROnPlateau`: lower the lr when the
/// validation metric stops improving, for when no fixed timetable is known.
///
/// `step(Some(metric))` once per epoch: an epoch is bad unless the metric beats
/// the best by the threshold; after more than `patience` bad epochs in a row the
/// lr is multiplied by `factor` (not below `min_lr`) and `cooldown` epochs pass
/// before bad epochs count again. `step(None)` changes nothing (a per-batch
/// call, or an epoch without validation) and returns the current lr.
#[derive(Debug, Clone)]
pub struct ReduceLrOnPlateau {
    base_lr: f64,
    config: PlateauConfig,
    lr: f64,
    best: f64,
    num_bad_epochs: u64,
    cooldown_counter: u64,
    last_epoch: u64,
}

impl ReduceLrOnPlateau {
    /// A plateau schedule starting at `base_lr`.
    pub fn new(base_lr: f64, config: PlateauConfig) -> ReduceLrOnPlateau {
        ReduceLrOnPlateau {
            base_lr,
            config,
            lr: base_lr,
            best: Self::worst(config.mode),
            num_bad_epochs: 0,
            cooldown_counter: 0,
            last_epoch: 0,
        }
    }

    fn worst(mode: PlateauMode) -> f64 {
        match mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        }
    }

    /// The best metric seen so far (±∞ before the first).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Consecutive epochs without improvement so far.
    pub fn num_bad_epochs(&self) -> u64 {
        self.num_bad_epochs
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, t) = (self.best, self.config.threshold);
        match (self.config.mode, self.config.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }
}

impl LrSchedule for ReduceLrOnPlateau {
    fn name(&self) -> &'static str {
        "plateau"
    }
    fn base_lr(&self) -> f64 {
        self.base_lr
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn last_epoch(&self) -> u64 {
        self.last_epoch
    }
    fn step(&mut self, metric: Option<f64>) -> f64 {
        let Some(current) = metric else {
            return self.lr;
        };
        self.last_epoch += 1;
        if self.is_better(current) {
            self.best = current;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.config.patience as u64 {
            let new_lr = (self.lr * self.config.factor).max(self.config.min_lr);
            if self.lr - new_lr > self.config.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.config.cooldown as u64;
            self.num_bad_epochs = 0;
        }
        self.lr
    }
    fn needs_metric(&self) -> bool {
        true
    }
    fn state(&self) -> ScheduleState {
        let mut st = simple_state("plateau", self.last_epoch, self.base_lr);
        st.scalars.insert("lr".into(), self.lr);
        if self.best.is_finite() {
            st.scalars.insert("best".into(), self.best);
        }
        st.scalars.insert("num_bad_epochs".into(), self.num_bad_epochs as f64);
        st.scalars
            .insert("cooldown_counter".into(), self.cooldown_counter as f64);
        st
    }
    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        check_kind(state, "plateau")?;
        let base_lr = scalar(state, "base_lr")?;
        let lr = scalar(state, "lr")?;
        let best = match state.scalars.get("best") {
            None => Self::worst(self.config.mode),
            Some(_) => scalar(state, "best")?,
        };
        let num_bad_epochs = count(state, "num_bad_epochs")?;
        let cooldown_counter = count(state, "cooldown_counter")?;
        *self = ReduceLrOnPlateau {
            base_lr,
            config: self.config,
            lr,
            best,
            num_bad_epochs,
            cooldown_counter,
            last_epoch: state.last_epoch,
        };
        Ok(())
    }
}


impl ScheduleConfig for PlateauConfig {
    const NAME: &'static str = "plateau";
    const TORCH_NAME: &'static str = "ReduceLROnPlateau";
    const DESCRIPTION: &'static str = "Divide by 10 when the validation loss stalls for 10 epochs";
    fn for_run(_epochs: usize) -> Option<Self> {
        Some(PlateauConfig::default())
    }
    fn check(&self) -> crate::Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(crate::Error::Hyperparameter(format!(
                "invalid plateau factor: {} (must be in (0, 1))",
                self.factor
            )));
        }
        non_negative("threshold", self.threshold)?;
        non_negative("min_lr", self.min_lr)
    }
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        Box::new(ReduceLrOnPlateau::new(base_lr, *self))
    }
    fn needs_metric(&self) -> bool {
        true
    }
}
