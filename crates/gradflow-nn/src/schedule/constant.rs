//! The constant schedule: the "no schedule" choice, so that a trainer always has one.

use super::{ClosedForm, ClosedFormRule, LrSchedule, ScheduleConfig};
use serde::{Deserialize, Serialize};

/// The base lr throughout (no arguments).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantConfig {}

/// The running constant schedule.
pub type ConstantLr = ClosedForm<ConstantConfig>;

impl ClosedFormRule for ConstantConfig {
    const NAME: &'static str = "constant";
    /// `base_lr`.
    fn lr_at(&self, base_lr: f64, _epoch: u64) -> f64 {
        base_lr
    }
}

impl ScheduleConfig for ConstantConfig {
    const NAME: &'static str = "constant";
    const TORCH_NAME: &'static str = "ConstantLR";
    const DESCRIPTION: &'static str = "The base lr throughout";
    fn for_run(_epochs: usize) -> Option<Self> {
        Some(ConstantConfig {})
    }
    fn check(&self) -> crate::Result<()> {
        Ok(())
    }
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        Box::new(ConstantLr::new(base_lr, *self))
    }
}
