//! Learning-rate schedules, with the semantics of `torch.optim.lr_scheduler`.
//!
//! A schedule is built with the base lr and starts at epoch 0, where its
//! [`lr`](LrSchedule::lr) is the lr of the first epoch. After each epoch the
//! training loop calls [`step`](LrSchedule::step) (with the validation metric
//! for [`ReduceLrOnPlateau`]) and hands the returned lr to the optimizer:
//!
//! ```
//! # use gradflow_nn::schedule::{LrSchedule, ScheduleSpec};
//! let mut sched = ScheduleSpec::parse("cosine", 10).unwrap().build(0.1);
//! let mut lr = sched.lr(); // opt.set_lr(lr) before the first epoch
//! for _epoch in 0..10 {
//!     // ... train one epoch with `lr` ...
//!     lr = sched.step(None); // opt.set_lr(lr)
//! }
//! ```
//!
//! A schedule counts calls to `step`, nothing else: to warm up per batch, as is
//! common for transformers, call `step` once per batch and give the lengths
//! (`total_iters`, `t_max`, …) in batches. Closed-form schedules compute the lr
//! from the count alone (torch's `_get_closed_form_lr`), so saving
//! [`state`](LrSchedule::state) and restoring it resumes the sequence exactly.

use gradflow::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::f64::consts::PI;

/// A learning-rate schedule stepped once per epoch (or per batch, see the
/// module docs), like a `torch.optim.lr_scheduler` object.
pub trait LrSchedule: Send {
    /// Short name (`constant`, `step`, `exponential`, `cosine`, `plateau`, `warmup`), also the `kind` of its state.
    fn name(&self) -> &'static str;
    /// The lr the schedule was built with (torch's `base_lrs[0]`).
    fn base_lr(&self) -> f64;
    /// The lr for the current epoch (torch's `get_last_lr()[0]`).
    fn lr(&self) -> f64;
    /// How many times `step` has been called (torch's `last_epoch`).
    fn last_epoch(&self) -> u64;
    /// Advance one epoch and return the lr for the next one. `metric` (e.g. the
    /// validation loss) is read only by [`ReduceLrOnPlateau`]; the others ignore it.
    fn step(&mut self, metric: Option<f64>) -> f64;
    /// Whether `step` needs a metric, so that a trainer knows to run validation.
    fn needs_metric(&self) -> bool {
        false
    }
    /// Everything needed to resume the sequence where it stopped.
    fn state(&self) -> ScheduleState;
    /// Resume from a saved state. Errors (op `load_state`) if it belongs to
    /// another kind of schedule; the schedule is unchanged on error.
    fn load_state(&mut self, state: &ScheduleState) -> Result<()>;
}

/// A schedule's saved progress, plain and serde-serializable so it can sit in
/// a checkpoint's JSON next to the model's weights. Non-finite values are not
/// stored (JSON cannot hold them): an absent `best` means "no metric seen yet".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The schedule's [`LrSchedule::name`]; checked on load.
    pub kind: String,
    /// Number of `step` calls made.
    pub last_epoch: u64,
    /// `base_lr` and, for stateful schedules, their counters (`lr`, `best`, `num_bad_epochs`, …).
    #[serde(default)]
    pub scalars: BTreeMap<String, f64>,
    /// The state of the schedule a warm-up hands over to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<Box<ScheduleState>>,
}

fn load_err(msg: String) -> Error {
    Error::Argument { op: "load_state", msg }
}

fn scalar(state: &ScheduleState, key: &str) -> Result<f64> {
    match state.scalars.get(key) {
        Some(&v) if v.is_finite() => Ok(v),
        Some(&v) => Err(load_err(format!(
            "{} state: scalar {key} = {v} is not finite",
            state.kind
        ))),
        None => Err(load_err(format!("{} state: scalar {key} is missing", state.kind))),
    }
}

fn count(state: &ScheduleState, key: &str) -> Result<u64> {
    let v = scalar(state, key)?;
    if v < 0.0 || v.fract() != 0.0 {
        return Err(load_err(format!(
            "{} state: scalar {key} = {v} is not a count",
            state.kind
        )));
    }
    Ok(v as u64)
}

fn check_kind(state: &ScheduleState, kind: &str) -> Result<()> {
    if state.kind != kind {
        return Err(load_err(format!(
            "state of a {} schedule cannot be loaded into a {kind} schedule",
            state.kind
        )));
    }
    Ok(())
}

fn simple_state(kind: &str, last_epoch: u64, base_lr: f64) -> ScheduleState {
    ScheduleState {
        kind: kind.to_string(),
        last_epoch,
        scalars: BTreeMap::from([("base_lr".to_string(), base_lr)]),
        inner: None,
    }
}

/// Implements [`LrSchedule`] for a schedule whose lr is a closed form of the
/// epoch (`fn lr_at(&self, epoch: u64) -> f64`), with `base_lr` and `last_epoch` fields.
macro_rules! closed_form {
    ($ty:ty, $name:literal) => {
        impl LrSchedule for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn base_lr(&self) -> f64 {
                self.base_lr
            }
            fn lr(&self) -> f64 {
                self.lr_at(self.last_epoch)
            }
            fn last_epoch(&self) -> u64 {
                self.last_epoch
            }
            fn step(&mut self, _metric: Option<f64>) -> f64 {
                self.last_epoch += 1;
                self.lr()
            }
            fn state(&self) -> ScheduleState {
                simple_state($name, self.last_epoch, self.base_lr)
            }
            fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
                check_kind(state, $name)?;
                let base_lr = scalar(state, "base_lr")?;
                self.base_lr = base_lr;
                self.last_epoch = state.last_epoch;
                Ok(())
            }
        }
    };
}

/// The base lr throughout: the "no schedule" choice, so that a trainer always has one.
#[derive(Debug, Clone)]
pub struct ConstantLr {
    base_lr: f64,
    last_epoch: u64,
}

impl ConstantLr {
    /// A schedule that always returns `base_lr`.
    pub fn new(base_lr: f64) -> ConstantLr {
        ConstantLr { base_lr, last_epoch: 0 }
    }
    /// The lr at any epoch: `base_lr`.
    pub fn lr_at(&self, _epoch: u64) -> f64 {
        self.base_lr
    }
}
closed_form!(ConstantLr, "constant");

/// `torch.optim.lr_scheduler.StepLR`: the classic staircase (e.g. ÷10 every 30
/// epochs for ImageNet ResNets).
#[derive(Debug, Clone)]
pub struct StepLr {
    base_lr: f64,
    step_size: u64,
    gamma: f64,
    last_epoch: u64,
}

impl StepLr {
    /// Multiply the lr by `gamma` every `step_size` epochs (a `step_size` of 0 is taken as 1).
    pub fn new(base_lr: f64, step_size: usize, gamma: f64) -> StepLr {
        StepLr {
            base_lr,
            step_size: step_size.max(1) as u64,
            gamma,
            last_epoch: 0,
        }
    }
    /// `base_lr · gamma^⌊epoch / step_size⌋`.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        self.base_lr * self.gamma.powf((epoch / self.step_size) as f64)
    }
}
closed_form!(StepLr, "step");

/// `torch.optim.lr_scheduler.ExponentialLR`: a smooth geometric decay.
#[derive(Debug, Clone)]
pub struct ExponentialLr {
    base_lr: f64,
    gamma: f64,
    last_epoch: u64,
}

impl ExponentialLr {
    /// Multiply the lr by `gamma` every epoch.
    pub fn new(base_lr: f64, gamma: f64) -> ExponentialLr {
        ExponentialLr {
            base_lr,
            gamma,
            last_epoch: 0,
        }
    }
    /// `base_lr · gamma^epoch`.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        self.base_lr * self.gamma.powf(epoch as f64)
    }
}
closed_form!(ExponentialLr, "exponential");

/// `torch.optim.lr_scheduler.CosineAnnealingLR`: a half cosine from the base
/// lr down to `eta_min` over `t_max` epochs, which usually ends training at a
/// better point than a staircase. As in torch, past `t_max` the cosine goes on
/// (the lr rises again); set `t_max` to the number of epochs.
#[derive(Debug, Clone)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    t_max: u64,
    eta_min: f64,
    last_epoch: u64,
}

impl CosineAnnealingLr {
    /// Anneal from `base_lr` to `eta_min` over `t_max` epochs (a `t_max` of 0 is taken as 1).
    pub fn new(base_lr: f64, t_max: usize, eta_min: f64) -> CosineAnnealingLr {
        CosineAnnealingLr {
            base_lr,
            t_max: t_max.max(1) as u64,
            eta_min,
            last_epoch: 0,
        }
    }
    /// `eta_min + (base_lr − eta_min)·(1 + cos(π·epoch/t_max))/2`.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + (PI * epoch as f64 / self.t_max as f64).cos()) / 2.0
    }
}
closed_form!(CosineAnnealingLr, "cosine");

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

/// Settings of [`ReduceLrOnPlateau`]; `Default` gives torch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
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

// ------------------------------------------------------------------ spec

fn gamma_default() -> f64 {
    0.1
}
fn factor_default() -> f64 {
    0.1
}
fn patience_default() -> usize {
    10
}
fn threshold_default() -> f64 {
    1e-4
}
fn start_factor_default() -> f64 {
    1.0 / 3.0
}
fn then_default() -> Box<ScheduleSpec> {
    Box::new(ScheduleSpec::Constant)
}

/// Which schedule to build: what a config file or the command line chooses.
/// Serialized with a `kind` tag (`constant`, `step`, `exponential`, `cosine`,
/// `plateau`, `warmup`); omitted optional fields take torch's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// The base lr throughout ([`ConstantLr`]).
    Constant,
    /// Multiply by `gamma` every `step_size` epochs ([`StepLr`]).
    Step {
        /// Epochs between reductions.
        step_size: usize,
        /// Factor per reduction (default 0.1).
        #[serde(default = "gamma_default")]
        gamma: f64,
    },
    /// Multiply by `gamma` every epoch ([`ExponentialLr`]).
    Exponential {
        /// Factor per epoch.
        gamma: f64,
    },
    /// Half a cosine down to `eta_min` over `t_max` epochs ([`CosineAnnealingLr`]).
    Cosine {
        /// Length of the half cosine, usually the number of epochs.
        t_max: usize,
        /// The final lr (default 0).
        #[serde(default)]
        eta_min: f64,
    },
    /// Divide when the validation metric (lower is better) stalls ([`ReduceLrOnPlateau`]).
    Plateau {
        /// Factor per reduction (default 0.1).
        #[serde(default = "factor_default")]
        factor: f64,
        /// Bad epochs tolerated before a reduction (default 10).
        #[serde(default = "patience_default")]
        patience: usize,
        /// Relative improvement that counts (default 1e-4).
        #[serde(default = "threshold_default")]
        threshold: f64,
        /// Epochs to wait after a reduction (default 0).
        #[serde(default)]
        cooldown: usize,
        /// Lower bound of the lr (default 0).
        #[serde(default)]
        min_lr: f64,
    },
    /// Linear warm-up from `start_factor·lr` over `epochs`, then `then` ([`LinearWarmup`]).
    Warmup {
        /// Length of the warm-up.
        epochs: usize,
        /// Fraction of the base lr at epoch 0 (default 1/3, torch's LinearLR).
        #[serde(default = "start_factor_default")]
        start_factor: f64,
        /// The schedule after the warm-up (default constant), started at its epoch 0.
        #[serde(default = "then_default")]
        then: Box<ScheduleSpec>,
    },
}

/// One schedule as the command line chooses it (`--schedule`), for lists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScheduleInfo {
    /// The name [`ScheduleSpec::parse`] takes, also the `kind` of its state.
    pub name: &'static str,
    /// PyTorch's class name.
    pub torch_name: &'static str,
    /// One line on what it does with the lr, as `parse` sizes it.
    pub description: &'static str,
}

/// Every schedule a name can choose, declared once.
const DECLARED: &[ScheduleInfo] = &[
    ScheduleInfo {
        name: "constant",
        torch_name: "ConstantLR",
        description: "The base lr throughout",
    },
    ScheduleInfo {
        name: "step",
        torch_name: "StepLR",
        description: "Divide by 10 at each third of the run",
    },
    ScheduleInfo {
        name: "exponential",
        torch_name: "ExponentialLR",
        description: "Multiply by 0.95 every epoch",
    },
    ScheduleInfo {
        name: "cosine",
        torch_name: "CosineAnnealingLR",
        description: "Half a cosine down to 0 over the run",
    },
    ScheduleInfo {
        name: "plateau",
        torch_name: "ReduceLROnPlateau",
        description: "Divide by 10 when the validation loss stalls for 10 epochs",
    },
];

impl ScheduleSpec {
    /// Every schedule a name can choose, for lists (the CLI's help, the playground's menu).
    pub fn registry() -> &'static [ScheduleInfo] {
        DECLARED
    }

    /// The spec for a command-line name (case-insensitive), sized for a run of
    /// `epochs` epochs: `step` divides by 10 at each third of the run
    /// (step_size = max(epochs/3, 1)), `exponential` uses gamma 0.95, `cosine`
    /// anneals to 0 over the whole run, `plateau` takes torch's defaults.
    pub fn parse(name: &str, epochs: usize) -> crate::Result<ScheduleSpec> {
        match name.trim().to_ascii_lowercase().as_str() {
            "constant" => Ok(ScheduleSpec::Constant),
            "step" => Ok(ScheduleSpec::Step {
                step_size: (epochs / 3).max(1),
                gamma: 0.1,
            }),
            "exponential" => Ok(ScheduleSpec::Exponential { gamma: 0.95 }),
            "cosine" => Ok(ScheduleSpec::Cosine {
                t_max: epochs.max(1),
                eta_min: 0.0,
            }),
            "plateau" => Ok(ScheduleSpec::Plateau {
                factor: factor_default(),
                patience: patience_default(),
                threshold: threshold_default(),
                cooldown: 0,
                min_lr: 0.0,
            }),
            _ => Err(crate::Error::UnknownChoice {
                what: "schedule",
                name: name.to_string(),
                expected: DECLARED.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The same schedule preceded by a linear warm-up of `epochs` epochs from
    /// `start_factor·lr` (no warm-up if `epochs` is 0).
    pub fn with_warmup(self, epochs: usize, start_factor: f64) -> ScheduleSpec {
        if epochs == 0 {
            return self;
        }
        ScheduleSpec::Warmup {
            epochs,
            start_factor,
            then: Box::new(self),
        }
    }

    /// Reject settings torch rejects or that make no schedule (a zero step
    /// size or period, a factor outside (0, 1), …), before training starts.
    pub fn validate(&self) -> crate::Result<()> {
        self.check().map_err(crate::Error::Hyperparameter)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("invalid {what}: {v} (must be finite and > 0)"))
            }
        };
        let non_negative = |what: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("invalid {what}: {v} (must be finite and >= 0)"))
            }
        };
        match self {
            ScheduleSpec::Constant => Ok(()),
            ScheduleSpec::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err("step schedule: step_size must be at least 1".into());
                }
                positive("gamma", *gamma)
            }
            ScheduleSpec::Exponential { gamma } => positive("gamma", *gamma),
            ScheduleSpec::Cosine { t_max, eta_min } => {
                if *t_max == 0 {
                    return Err("cosine schedule: t_max must be at least 1".into());
                }
                non_negative("eta_min", *eta_min)
            }
            ScheduleSpec::Plateau {
                factor,
                threshold,
                min_lr,
                ..
            } => {
                if !(*factor > 0.0 && *factor < 1.0) {
                    return Err(format!("invalid plateau factor: {factor} (must be in (0, 1))"));
                }
                non_negative("threshold", *threshold)?;
                non_negative("min_lr", *min_lr)
            }
            ScheduleSpec::Warmup { start_factor, then, .. } => {
                if !(*start_factor > 0.0 && *start_factor <= 1.0) {
                    return Err(format!(
                        "invalid warm-up start_factor: {start_factor} (must be in (0, 1])"
                    ));
                }
                then.check()
            }
        }
    }

    /// Build the schedule, starting from `base_lr` at epoch 0. It does not
    /// validate: call [`validate`](Self::validate) first for a message instead
    /// of a nonsensical schedule.
    pub fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
        match self {
            ScheduleSpec::Constant => Box::new(ConstantLr::new(base_lr)),
            ScheduleSpec::Step { step_size, gamma } => Box::new(StepLr::new(base_lr, *step_size, *gamma)),
            ScheduleSpec::Exponential { gamma } => Box::new(ExponentialLr::new(base_lr, *gamma)),
            ScheduleSpec::Cosine { t_max, eta_min } => Box::new(CosineAnnealingLr::new(base_lr, *t_max, *eta_min)),
            ScheduleSpec::Plateau {
                factor,
                patience,
                threshold,
                cooldown,
                min_lr,
            } => Box::new(ReduceLrOnPlateau::new(
                base_lr,
                PlateauConfig {
                    factor: *factor,
                    patience: *patience,
                    threshold: *threshold,
                    cooldown: *cooldown,
                    min_lr: *min_lr,
                    ..PlateauConfig::default()
                },
            )),
            ScheduleSpec::Warmup {
                epochs,
                start_factor,
                then,
            } => Box::new(LinearWarmup::new(base_lr, *start_factor, 1.0, *epochs).then(then.build(base_lr))),
        }
    }

    /// Whether the built schedule reads a metric in `step`.
    pub fn needs_metric(&self) -> bool {
        match self {
            ScheduleSpec::Plateau { .. } => true,
            ScheduleSpec::Warmup { then, .. } => then.needs_metric(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lr at epoch 0, then after each of `n` steps.
    fn sequence(s: &mut dyn LrSchedule, n: usize) -> Vec<f64> {
        let mut v = vec![s.lr()];
        for _ in 0..n {
            v.push(s.step(None));
        }
        v
    }

    fn assert_seq(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn registry_matches_the_names_parse_takes() {
        let names: Vec<&str> = ScheduleSpec::registry().iter().map(|s| s.name).collect();
        assert_eq!(names, ["constant", "step", "exponential", "cosine", "plateau"]);
        for name in names {
            assert_eq!(ScheduleSpec::parse(name, 9).unwrap().build(0.1).name(), name);
        }
    }

    #[test]
    fn constant() {
        assert_seq(&sequence(&mut ConstantLr::new(0.1), 3), &[0.1; 4]);
    }

    #[test]
    fn step_lr() {
        // torch StepLR(step_size=2, gamma=0.5) from 1.0
        assert_seq(
            &sequence(&mut StepLr::new(1.0, 2, 0.5), 6),
            &[1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125],
        );
    }

    #[test]
    fn exponential_lr() {
        assert_seq(
            &sequence(&mut ExponentialLr::new(0.1, 0.9), 3),
            &[0.1, 0.09, 0.081, 0.0729],
        );
    }

    #[test]
    fn cosine_lr() {
        // T_max = 4, eta_min = 0.1, base 1.1: 1.1, 0.1 + (1 ± √½)/2, 0.6, …, 0.1, then back up.
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert_seq(
            &sequence(&mut CosineAnnealingLr::new(1.1, 4, 0.1), 5),
            &[
                1.1,
                0.1 + (1.0 + h) / 2.0,
                0.6,
                0.1 + (1.0 - h) / 2.0,
                0.1,
                0.1 + (1.0 - h) / 2.0,
            ],
        );
    }

    #[test]
    fn linear_warmup_alone_is_torchs_linear_lr() {
        // LinearLR(start_factor=0.25, end_factor=1, total_iters=3) from 0.8
        assert_seq(
            &sequence(&mut LinearWarmup::new(0.8, 0.25, 1.0, 3), 5),
            &[0.2, 0.4, 0.6, 0.8, 0.8, 0.8],
        );
    }

    #[test]
    fn warmup_then_cosine_is_torchs_sequential_lr() {
        // SequentialLR([LinearLR(0.5, total_iters=2), CosineAnnealingLR(T_max=2)], milestones=[2])
        let mut s = ScheduleSpec::Warmup {
            epochs: 2,
            start_factor: 0.5,
            then: Box::new(ScheduleSpec::Cosine { t_max: 2, eta_min: 0.0 }),
        }
        .build(1.0);
        assert_seq(&sequence(s.as_mut(), 4), &[0.5, 0.75, 1.0, 0.5, 0.0]);
        assert!(!s.needs_metric());
    }

    #[test]
    fn warmup_then_plateau_passes_metrics_after_the_warmup() {
        let spec = ScheduleSpec::parse("plateau", 10).unwrap().with_warmup(1, 0.5);
        assert!(spec.needs_metric());
        let mut s = spec.build(1.0);
        assert_eq!(s.lr(), 0.5);
        assert_eq!(s.step(Some(5.0)), 1.0); // warm-up over: plateau's epoch 0
        assert_eq!(s.step(Some(1.0)), 1.0);
        for _ in 0..10 {
            assert_eq!(s.step(Some(2.0)), 1.0);
        }
        assert!((s.step(Some(2.0)) - 0.1).abs() < 1e-15);
    }

    #[test]
    fn plateau_reduces_after_patience_bad_epochs() {
        let cfg = PlateauConfig {
            patience: 2,
            factor: 0.5,
            ..PlateauConfig::default()
        };
        let mut s = ReduceLrOnPlateau::new(1.0, cfg);
        // best 1.0; then 1.0 (not better), 0.99995 (within the 1e-4 threshold), 1.2 → 3 bad > 2.
        let lrs: Vec<f64> = [1.0, 1.0, 0.99995, 1.2, 0.5, 0.6, 0.6, 0.6]
            .iter()
            .map(|&m| s.step(Some(m)))
            .collect();
        assert_eq!(lrs, vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]);
        assert_eq!(s.best(), 0.5);
        // None is not an epoch.
        assert_eq!(s.step(None), 0.25);
        assert_eq!(s.last_epoch(), 8);
    }

    #[test]
    fn plateau_max_mode_cooldown_and_min_lr() {
        let cfg = PlateauConfig {
            mode: PlateauMode::Max,
            patience: 0,
            cooldown: 1,
            min_lr: 0.15,
            ..PlateauConfig::default()
        };
        let mut s = ReduceLrOnPlateau::new(1.0, cfg);
        // 0.9 best; 0.8 bad → reduce to 0.1 → clamp 0.15 (cooldown 1); 0.8 in cooldown;
        // 0.8 bad → 0.15·0.1 < min_lr → stays.
        let lrs: Vec<f64> = [0.9, 0.8, 0.8, 0.8].iter().map(|&m| s.step(Some(m))).collect();
        assert_eq!(lrs, vec![1.0, 0.15, 0.15, 0.15]);
        let mut s = ReduceLrOnPlateau::new(1.0, cfg);
        assert_eq!(s.step(Some(0.9)), 1.0);
        assert_eq!(s.step(Some(0.95)), 1.0); // higher is better
    }

    #[test]
    fn resume_continues_exactly() {
        let specs = [
            ScheduleSpec::parse("step", 9).unwrap(),
            ScheduleSpec::parse("exponential", 9).unwrap(),
            ScheduleSpec::parse("cosine", 9).unwrap(),
            ScheduleSpec::Plateau {
                factor: 0.5,
                patience: 1,
                threshold: 1e-4,
                cooldown: 1,
                min_lr: 0.0,
            }
            .with_warmup(2, 0.1),
            ScheduleSpec::Constant,
        ];
        let metric = |i: usize| [3.0, 2.0, 2.5, 2.5, 2.5, 1.0, 1.5, 1.5, 1.5, 1.5][i];
        for spec in specs {
            let mut a = spec.build(0.3);
            let full: Vec<f64> = (0..10).map(|i| a.step(Some(metric(i)))).collect();
            let mut b = spec.build(0.3);
            let mut resumed: Vec<f64> = (0..5).map(|i| b.step(Some(metric(i)))).collect();
            let json = serde_json::to_string(&b.state()).unwrap();
            let mut c = spec.build(0.3);
            c.load_state(&serde_json::from_str(&json).unwrap()).unwrap();
            assert_eq!(c.lr(), b.lr());
            resumed.extend((5..10).map(|i| c.step(Some(metric(i)))));
            assert_eq!(full, resumed, "{spec:?}");
        }
    }

    #[test]
    fn load_state_checks_the_kind() {
        let st = StepLr::new(0.1, 3, 0.1).state();
        let e = CosineAnnealingLr::new(0.1, 3, 0.0).load_state(&st).unwrap_err();
        assert!(matches!(e, Error::Argument { op: "load_state", .. }));
        assert!(e.to_string().contains("step"), "{e}");
        let warm = ScheduleSpec::Cosine { t_max: 3, eta_min: 0.0 }.with_warmup(2, 0.5);
        let e = warm.build(0.1).load_state(&LinearWarmup::new(0.1, 0.5, 1.0, 2).state());
        assert!(e.is_err());
        let mut plateau_state = ReduceLrOnPlateau::new(0.1, PlateauConfig::default()).state();
        assert!(!plateau_state.scalars.contains_key("best"));
        plateau_state.scalars.remove("lr");
        let e = ReduceLrOnPlateau::new(0.1, PlateauConfig::default())
            .load_state(&plateau_state)
            .unwrap_err();
        assert!(e.to_string().contains("lr"), "{e}");
    }

    #[test]
    fn parse_and_spec_serde() {
        assert_eq!(
            ScheduleSpec::parse("Cosine", 20).unwrap(),
            ScheduleSpec::Cosine {
                t_max: 20,
                eta_min: 0.0
            }
        );
        assert_eq!(
            ScheduleSpec::parse("step", 30).unwrap(),
            ScheduleSpec::Step {
                step_size: 10,
                gamma: 0.1
            }
        );
        let e = ScheduleSpec::parse("onecycle", 3).unwrap_err().to_string();
        assert!(e.contains("constant, step, exponential, cosine, plateau"), "{e}");
        let spec: ScheduleSpec =
            toml::from_str("kind = \"warmup\"\nepochs = 3\n[then]\nkind = \"cosine\"\nt_max = 7\n").unwrap();
        assert_eq!(
            spec,
            ScheduleSpec::Warmup {
                epochs: 3,
                start_factor: 1.0 / 3.0,
                then: Box::new(ScheduleSpec::Cosine { t_max: 7, eta_min: 0.0 })
            }
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ScheduleSpec>(&json).unwrap(), spec);
        let p: ScheduleSpec = serde_json::from_str(r#"{"kind":"plateau","patience":3}"#).unwrap();
        assert_eq!(p.build(1.0).name(), "plateau");
    }

    #[test]
    fn validate_rejects_degenerate_schedules() {
        assert!(ScheduleSpec::Step {
            step_size: 0,
            gamma: 0.1
        }
        .validate()
        .is_err());
        assert!(ScheduleSpec::Cosine { t_max: 0, eta_min: 0.0 }.validate().is_err());
        assert!(ScheduleSpec::Exponential { gamma: f64::NAN }.validate().is_err());
        let plateau = |factor| ScheduleSpec::Plateau {
            factor,
            patience: 1,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        };
        assert!(plateau(1.0).validate().is_err());
        assert!(plateau(0.5).validate().is_ok());
        assert!(ScheduleSpec::Constant.with_warmup(3, 0.0).validate().is_err());
        for name in ScheduleSpec::registry().iter().map(|s| s.name) {
            assert!(ScheduleSpec::parse(name, 10).unwrap().validate().is_ok());
        }
    }
}
