//! `torch.optim.lr_scheduler.StepLR`: the classic staircase (e.g. ÷10 every 30
//! epochs for ImageNet ResNets).

use super::{ClosedForm, ClosedFormRule, LrSchedule, ScheduleConfig};
use serde::{Deserialize, Serialize};
use super::positive;

fn gamma_default() -> f64 {
    0.1
}

/// StepLR's arguments: multiply the lr by `gamma` every `step_size` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Epochs between reductions (0 is taken as 1).
    pub step_size: usize,
    /// Factor per reduction (default 0.1).
    #[serde(default = "gamma_default")]
    pub gamma: f64,
}

/// The running StepLR.
pub type StepLr = ClosedForm<StepConfig>;

impl ClosedFormRule for StepConfig {
    const NAME: &'static str = "step";
    /// `base_lr · gamma^⌊epoch / step_size⌋`.
    fn lr_at(&self, base_lr: f64, epoch: u64) -> f64 {
        base_lr * self.gamma.powf((epoch / self.step_size.max(1) as u64) as f64)
    }
}

impl ScheduleConfig for StepConfig {
    const NAME: &'static str = "step";
    const TORCH_NAME: &'static str = "StepLR";
    const DESCRIPTION: &'static str = "Divide by 10 at each third of the run";
    fn for_run(epochs: usize) -> Option<Self> {
        Some(StepConfig {
            step_size: (epochs / 3).max(1),
            gamma: 0.1,
        })
    }
    fn check(&self) -> crate::Result<()> {
        if self.step_size == 0 {
            return Err(crate::Error::Hyperparameter("step schedule: step_size must be at least 1".into()));
        }
        positive("gamma", self.gamma)
    }
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        Box::new(StepLr::new(base_lr, *self))
    }
}
