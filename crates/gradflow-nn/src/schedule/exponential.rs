//! `torch.optim.lr_scheduler.ExponentialLR`: a smooth geometric decay.

use super::{ClosedForm, ClosedFormRule, LrSchedule, ScheduleConfig};
use serde::{Deserialize, Serialize};
use super::positive;

/// ExponentialLR's argument: multiply the lr by `gamma` every epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExponentialConfig {
    /// Factor per epoch.
    pub gamma: f64,
}

/// The running ExponentialLR.
pub type ExponentialLr = ClosedForm<ExponentialConfig>;

impl ClosedFormRule for ExponentialConfig {
    const NAME: &'static str = "exponential";
    /// `base_lr · gamma^epoch`.
    fn lr_at(&self, base_lr: f64, epoch: u64) -> f64 {
        base_lr * self.gamma.powf(epoch as f64)
    }
}

impl ScheduleConfig for ExponentialConfig {
    const NAME: &'static str = "exponential";
    const TORCH_NAME: &'static str = "ExponentialLR";
    const DESCRIPTION: &'static str = "Multiply by 0.95 every epoch";
    fn for_run(_epochs: usize) -> Option<Self> {
        Some(ExponentialConfig { gamma: 0.95 })
    }
    fn check(&self) -> crate::Result<()> {
        positive("gamma", self.gamma)
    }
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        Box::new(ExponentialLr::new(base_lr, *self))
    }
}
