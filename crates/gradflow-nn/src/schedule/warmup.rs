//! A linear warm-up, then another schedule.

use super::{check_kind, load_err, scalar, simple_state, LrSchedule, ScheduleConfig, ScheduleSpec, ScheduleState};
use gradflow::Result;
use serde::{Deserialize, Serialize};

fn start_factor_default() -> f64 {
    1.0 / 3.0
}

fn then_default() -> Box<ScheduleSpec> {
    Box::new(super::ConstantConfig {}.into())
}

/// A warm-up's arguments: from `start_factor·lr` up over `epochs`, then `then`
/// ([`LinearWarmup`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    /// Length of the warm-up.
    pub epochs: usize,
    /// Fraction of the base lr at epoch 0 (default 1/3, torch's LinearLR).
    #[serde(default = "start_factor_default")]
    pub start_factor: f64,
    /// The schedule after the warm-up (default constant), started at its epoch 0.
    #[serde(default = "then_default")]
    pub then: Box<ScheduleSpec>,
}

impl ScheduleConfig for WarmupConfig {
    const NAME: &'static str = "warmup";
    const TORCH_NAME: &'static str = "LinearLR";
    const DESCRIPTION: &'static str = "A linear warm-up, then another schedule";
    /// The command line asks for a warm-up with `--warmup-epochs`, not by name.
    fn for_run(_epochs: usize) -> Option<Self> {
        None
    }
    fn check(&self) -> crate::Result<()> {
        if !(self.start_factor > 0.0 && self.start_factor <= 1.0) {
            return Err(crate::Error::Hyperparameter(format!(
                "invalid warm-up start_factor: {} (must be in (0, 1])",
                self.start_factor
            )));
        }
        self.then.check()
    }
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        Box::new(LinearWarmup::new(base_lr, self.start_factor, 1.0, self.epochs).then(self.then.build(base_lr)))
    }
    fn needs_metric(&self) -> bool {
        self.then.needs_metric()
    }
}

/// `torch.optim.lr_scheduler.LinearLR`, optionally followed by another schedule
/// as `SequentialLR([LinearLR, then], milestones=[total_iters])` does: a linear
/// warm-up keeps the first updates of a freshly initialized network (and of
/// Adam's unreliable early moment estimates) small.
///
/// Epoch `e < total_iters` uses `base_lr · (start + (end − start)·e/total_iters)`.
/// Without a successor, later epochs use `base_lr · end`. With one, epoch
/// `total_iters` is the successor's epoch 0 and it is stepped from then on
/// (metrics passed to it); so the warm-up never quite reaches `end`, exactly as in torch.
pub struct LinearWarmup {
    base_lr: f64,
    start_factor: f64,
    end_factor: f64,
    total_iters: u64,
    last_epoch: u64,
    then: Option<Box<dyn LrSchedule>>,
}

impl LinearWarmup {
    /// Scale the lr linearly from `start_factor` to `end_factor` over `total_iters` epochs
    /// (torch's defaults: 1/3, 1.0, 5).
    pub fn new(base_lr: f64, start_factor: f64, end_factor: f64, total_iters: usize) -> LinearWarmup {
        LinearWarmup {
            base_lr,
            start_factor,
            end_factor,
            total_iters: total_iters as u64,
            last_epoch: 0,
            then: None,
        }
    }

    /// Hand over to `next` (built with the same base lr, at its epoch 0) once the warm-up ends.
    pub fn then(mut self, next: Box<dyn LrSchedule>) -> LinearWarmup {
        self.then = Some(next);
        self
    }

    /// The warm-up's own lr at an epoch, ignoring any successor (torch's LinearLR closed form).
    pub fn lr_at(&self, epoch: u64) -> f64 {
        if self.total_iters == 0 {
            return self.base_lr * self.end_factor;
        }
        let e = epoch.min(self.total_iters) as f64;
        self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * e / self.total_iters as f64)
    }
}

impl LrSchedule for LinearWarmup {
    fn name(&self) -> &'static str {
        "warmup"
    }
    fn base_lr(&self) -> f64 {
        self.base_lr
    }
    fn lr(&self) -> f64 {
        match &self.then {
            Some(then) if self.last_epoch >= self.total_iters => then.lr(),
            _ => self.lr_at(self.last_epoch),
        }
    }
    fn last_epoch(&self) -> u64 {
        self.last_epoch
    }
    fn step(&mut self, metric: Option<f64>) -> f64 {
        self.last_epoch += 1;
        if let Some(then) = &mut self.then {
            if self.last_epoch > self.total_iters {
                return then.step(metric);
            }
        }
        self.lr()
    }
    fn needs_metric(&self) -> bool {
        self.then.as_ref().is_some_and(|t| t.needs_metric())
    }
    fn state(&self) -> ScheduleState {
        let mut st = simple_state("warmup", self.last_epoch, self.base_lr);
        st.inner = self.then.as_ref().map(|t| Box::new(t.state()));
        st
    }
    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        check_kind(state, "warmup")?;
        let base_lr = scalar(state, "base_lr")?;
        match (&mut self.then, &state.inner) {
            (Some(then), Some(inner)) => then.load_state(inner)?,
            (None, None) => {}
            (Some(then), None) => {
                return Err(load_err(format!(
                    "warmup state has no inner state for the {} schedule that follows",
                    then.name()
                )))
            }
            (None, Some(inner)) => {
                return Err(load_err(format!(
                    "warmup state continues into a {} schedule, this warm-up into none",
                    inner.kind
                )))
            }
        }
        self.base_lr = base_lr;
        self.last_epoch = state.last_epoch;
        Ok(())
    }
}

