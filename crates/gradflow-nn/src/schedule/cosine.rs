//! `torch.optim.lr_scheduler.CosineAnnealingLR`: a half cosine from the base
//! lr down to `eta_min` over `t_max` epochs, which usually ends training at a
//! better point than a staircase. As in torch, past `t_max` the cosine goes on
//! (the lr rises again); set `t_max` to the number of epochs.

use super::{ClosedForm, ClosedFormRule, LrSchedule, ScheduleConfig};
use serde::{Deserialize, Serialize};
use super::non_negative;
use std::f64::consts::PI;

/// CosineAnnealingLR's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineConfig {
    /// Length of the half cosine, usually the number of epochs (0 is taken as 1).
    pub t_max: usize,
    /// The final lr (default 0).
    #[serde(default)]
    pub eta_min: f64,
}

/// The running CosineAnnealingLR.
pub type CosineAnnealingLr = ClosedForm<CosineConfig>;

impl ClosedFormRule for CosineConfig {
    const NAME: &'static str = "cosine";
    /// `eta_min + (base_lr − eta_min)·(1 + cos(π·epoch/t_max))/2`.
    fn lr_at(&self, base_lr: f64, epoch: u64) -> f64 {
        let t_max = self.t_max.max(1) as u64;
        self.eta_min + (base_lr - self.eta_min) * (1.0 + (PI * epoch as f64 / t_max as f64).cos()) / 2.0
    }
}

impl ScheduleConfig for CosineConfig {
    const NAME: &'static str = "cosine";
    const TORCH_NAME: &'static str = "CosineAnnealingLR";
    const DESCRIPTION: &'static str = "Half a cosine down to 0 over the run";
    fn for_run(epochs: usize) -> Option<Self> {
        Some(CosineConfig {
            t_max: epochs.max(1),
            eta_min: 0.0,
        })
    }
    fn check(&self) -> crate::Result<()> {
        if self.t_max == 0 {
            return Err(crate::Error::Hyperparameter("cosine schedule: t_max must be at least 1".into()));
        }
        non_negative("eta_min", self.eta_min)
    }
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        Box::new(CosineAnnealingLr::new(base_lr, *self))
    }
}
