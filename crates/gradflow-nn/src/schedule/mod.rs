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

pub(crate) fn load_err(msg: String) -> Error {
    Error::Argument { op: "load_state", msg }
}

pub(crate) fn scalar(state: &ScheduleState, key: &str) -> Result<f64> {
    match state.scalars.get(key) {
        Some(&v) if v.is_finite() => Ok(v),
        Some(&v) => Err(load_err(format!(
            "{} state: scalar {key} = {v} is not finite",
            state.kind
        ))),
        None => Err(load_err(format!("{} state: scalar {key} is missing", state.kind))),
    }
}

pub(crate) fn count(state: &ScheduleState, key: &str) -> Result<u64> {
    let v = scalar(state, key)?;
    if v < 0.0 || v.fract() != 0.0 {
        return Err(load_err(format!(
            "{} state: scalar {key} = {v} is not a count",
            state.kind
        )));
    }
    Ok(v as u64)
}

pub(crate) fn check_kind(state: &ScheduleState, kind: &str) -> Result<()> {
    if state.kind != kind {
        return Err(load_err(format!(
            "state of a {} schedule cannot be loaded into a {kind} schedule",
            state.kind
        )));
    }
    Ok(())
}

pub(crate) fn simple_state(kind: &str, last_epoch: u64, base_lr: f64) -> ScheduleState {
    ScheduleState {
        kind: kind.to_string(),
        last_epoch,
        scalars: BTreeMap::from([("base_lr".to_string(), base_lr)]),
        inner: None,
    }
}

/// A schedule whose lr is a closed form of the epoch, as its arguments declare it.
pub trait ClosedFormRule: Clone + Send + 'static {
    /// The short name, also the `kind` of its state.
    const NAME: &'static str;
    /// The lr at `epoch` for a schedule built with `base_lr`.
    fn lr_at(&self, base_lr: f64, epoch: u64) -> f64;
}

/// A running closed-form schedule: its arguments, the base lr and the epoch
/// count (torch's `_get_closed_form_lr`), so saving the count resumes it exactly.
#[derive(Debug, Clone)]
pub struct ClosedForm<C> {
    config: C,
    base_lr: f64,
    last_epoch: u64,
}

impl<C: ClosedFormRule> ClosedForm<C> {
    /// The schedule at epoch 0.
    pub fn new(base_lr: f64, config: C) -> ClosedForm<C> {
        ClosedForm {
            config,
            base_lr,
            last_epoch: 0,
        }
    }
    /// The lr at any epoch.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        self.config.lr_at(self.base_lr, epoch)
    }
}

impl<C: ClosedFormRule> LrSchedule for ClosedForm<C> {
    fn name(&self) -> &'static str {
        C::NAME
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
        simple_state(C::NAME, self.last_epoch, self.base_lr)
    }
    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        check_kind(state, C::NAME)?;
        self.base_lr = scalar(state, "base_lr")?;
        self.last_epoch = state.last_epoch;
        Ok(())
    }
}

/// What every schedule declares in its own file: its arguments (a serde
/// struct), its names, how the command line sizes it for a run, how to check
/// it and how to build it. [`ScheduleSpec`] and the lists derive from these.
pub trait ScheduleConfig: Serialize + Into<ScheduleSpec> {
    /// The short name (`cosine`): the `kind` of configs and saved states.
    const NAME: &'static str;
    /// PyTorch's class name.
    const TORCH_NAME: &'static str;
    /// One line on what it does with the lr, as [`for_run`](Self::for_run) sizes it.
    const DESCRIPTION: &'static str;
    /// The command line's choice for a run of `epochs` epochs, or `None` if the
    /// command line does not name this schedule.
    fn for_run(epochs: usize) -> Option<Self>
    where
        Self: Sized;
    /// Reject arguments that make no schedule; the `Error::Hyperparameter` says why.
    fn check(&self) -> crate::Result<()>;
    /// The schedule, at epoch 0 with `base_lr`.
    fn build(&self, base_lr: f64) -> Box<dyn LrSchedule>;
    /// Whether `step` reads the validation metric.
    fn needs_metric(&self) -> bool {
        false
    }
}

/// `Err(Error::Hyperparameter)` unless `v` is finite and positive.
pub(crate) fn positive(what: &str, v: f64) -> crate::Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(crate::Error::Hyperparameter(format!(
            "invalid {what}: {v} (must be finite and > 0)"
        )))
    }
}

/// `Err(Error::Hyperparameter)` unless `v` is finite and not negative.
pub(crate) fn non_negative(what: &str, v: f64) -> crate::Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(crate::Error::Hyperparameter(format!(
            "invalid {what}: {v} (must be finite and >= 0)"
        )))
    }
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

/// Registers each schedule: `Variant(module::Config)` adds it to [`ScheduleSpec`] and the lists.
macro_rules! schedules {
    ($($variant:ident($module:ident::$config:ident)),+ $(,)?) => {
        $(mod $module; pub use $module::*;)+

        /// Which schedule to build: what a config file or the command line chooses.
        /// Serialized with a `kind` tag (the schedule's [`ScheduleConfig::NAME`]);
        /// omitted optional fields take torch's defaults.
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum ScheduleSpec {
            $(#[doc = concat!("[`", stringify!($config), "`].")] $variant($config),)+
        }

        $(impl From<$config> for ScheduleSpec {
            fn from(c: $config) -> ScheduleSpec {
                ScheduleSpec::$variant(c)
            }
        })+

        impl ScheduleSpec {
            /// Every schedule the command line names, for lists (the CLI's help, the playground's menu).
            pub fn registry() -> Vec<ScheduleInfo> {
                let mut list = Vec::new();
                $(if $config::for_run(1).is_some() {
                    list.push(ScheduleInfo {
                        name: <$config as ScheduleConfig>::NAME,
                        torch_name: <$config as ScheduleConfig>::TORCH_NAME,
                        description: <$config as ScheduleConfig>::DESCRIPTION,
                    });
                })+
                list
            }

            /// The spec for a command-line name (case-insensitive), sized for a run of
            /// `epochs` epochs as each schedule's `for_run` says.
            pub fn parse(name: &str, epochs: usize) -> crate::Result<ScheduleSpec> {
                let lower = name.trim().to_ascii_lowercase();
                $(if lower == <$config as ScheduleConfig>::NAME {
                    if let Some(c) = $config::for_run(epochs) {
                        return Ok(c.into());
                    }
                })+
                Err(crate::Error::UnknownChoice {
                    what: "schedule",
                    name: name.to_string(),
                    expected: Self::registry().iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                })
            }

            fn check(&self) -> crate::Result<()> {
                match self {
                    $(ScheduleSpec::$variant(c) => c.check(),)+
                }
            }

            /// Build the schedule, starting from `base_lr` at epoch 0. It does not
            /// validate: call [`validate`](Self::validate) first for a message instead
            /// of a nonsensical schedule.
            pub fn build(&self, base_lr: f64) -> Box<dyn LrSchedule> {
                match self {
                    $(ScheduleSpec::$variant(c) => c.build(base_lr),)+
                }
            }

            /// Whether the built schedule reads a metric in `step`.
            pub fn needs_metric(&self) -> bool {
                match self {
                    $(ScheduleSpec::$variant(c) => c.needs_metric(),)+
                }
            }
        }
    };
}

schedules! {
    Constant(constant::ConstantConfig),
    Step(step::StepConfig),
    Exponential(exponential::ExponentialConfig),
    Cosine(cosine::CosineConfig),
    Plateau(plateau::PlateauConfig),
    Warmup(warmup::WarmupConfig),
}

impl ScheduleSpec {
    /// The same schedule preceded by a linear warm-up of `epochs` epochs from
    /// `start_factor·lr` (no warm-up if `epochs` is 0).
    pub fn with_warmup(self, epochs: usize, start_factor: f64) -> ScheduleSpec {
        if epochs == 0 {
            return self;
        }
        WarmupConfig {
            epochs,
            start_factor,
            then: Box::new(self),
        }
        .into()
    }

    /// Reject settings torch rejects or that make no schedule (a zero step
    /// size or period, a factor outside (0, 1), …), before training starts.
    pub fn validate(&self) -> crate::Result<()> {
        self.check()
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

    fn cosine(t_max: usize) -> ScheduleSpec {
        ScheduleSpec::Cosine(CosineConfig { t_max, eta_min: 0.0 })
    }

    #[test]
    fn constant() {
        assert_seq(&sequence(&mut ConstantLr::new(0.1, ConstantConfig {}), 3), &[0.1; 4]);
    }

    #[test]
    fn step_lr() {
        // torch StepLR(step_size=2, gamma=0.5) from 1.0
        assert_seq(
            &sequence(
                &mut StepLr::new(
                    1.0,
                    StepConfig {
                        step_size: 2,
                        gamma: 0.5,
                    },
                ),
                6,
            ),
            &[1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125],
        );
    }

    #[test]
    fn exponential_lr() {
        assert_seq(
            &sequence(&mut ExponentialLr::new(0.1, ExponentialConfig { gamma: 0.9 }), 3),
            &[0.1, 0.09, 0.081, 0.0729],
        );
    }

    #[test]
    fn cosine_lr() {
        // T_max = 4, eta_min = 0.1, base 1.1: 1.1, 0.1 + (1 ± √½)/2, 0.6, …, 0.1, then back up.
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert_seq(
            &sequence(
                &mut CosineAnnealingLr::new(1.1, CosineConfig { t_max: 4, eta_min: 0.1 }),
                5,
            ),
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
        let mut s = cosine(2).with_warmup(2, 0.5).build(1.0);
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
            ScheduleSpec::Plateau(PlateauConfig {
                factor: 0.5,
                patience: 1,
                cooldown: 1,
                ..Default::default()
            })
            .with_warmup(2, 0.1),
            ScheduleSpec::Constant(ConstantConfig {}),
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
        let st = StepLr::new(
            0.1,
            StepConfig {
                step_size: 3,
                gamma: 0.1,
            },
        )
        .state();
        let e = CosineAnnealingLr::new(0.1, CosineConfig { t_max: 3, eta_min: 0.0 })
            .load_state(&st)
            .unwrap_err();
        assert!(matches!(e, Error::Argument { op: "load_state", .. }));
        assert!(e.to_string().contains("step"), "{e}");
        let warm = cosine(3).with_warmup(2, 0.5);
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
        assert_eq!(ScheduleSpec::parse("Cosine", 20).unwrap(), cosine(20));
        assert_eq!(
            ScheduleSpec::parse("step", 30).unwrap(),
            ScheduleSpec::Step(StepConfig {
                step_size: 10,
                gamma: 0.1
            })
        );
        let e = ScheduleSpec::parse("onecycle", 3).unwrap_err().to_string();
        assert!(e.contains("constant, step, exponential, cosine, plateau"), "{e}");
        let spec: ScheduleSpec =
            toml::from_str("kind = \"warmup\"\nepochs = 3\n[then]\nkind = \"cosine\"\nt_max = 7\n").unwrap();
        assert_eq!(spec, cosine(7).with_warmup(3, 1.0 / 3.0));
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ScheduleSpec>(&json).unwrap(), spec);
        let p: ScheduleSpec = serde_json::from_str(r#"{"kind":"plateau","patience":3}"#).unwrap();
        assert_eq!(p.build(1.0).name(), "plateau");
    }

    #[test]
    fn validate_rejects_degenerate_schedules() {
        let step = ScheduleSpec::Step(StepConfig {
            step_size: 0,
            gamma: 0.1,
        });
        assert!(step.validate().is_err());
        assert!(cosine(0).validate().is_err());
        assert!(ScheduleSpec::Exponential(ExponentialConfig { gamma: f64::NAN })
            .validate()
            .is_err());
        let plateau = |factor| {
            ScheduleSpec::Plateau(PlateauConfig {
                factor,
                patience: 1,
                ..Default::default()
            })
        };
        assert!(plateau(1.0).validate().is_err());
        assert!(plateau(0.5).validate().is_ok());
        assert!(ScheduleSpec::Constant(ConstantConfig {})
            .with_warmup(3, 0.0)
            .validate()
            .is_err());
        for name in ScheduleSpec::registry().iter().map(|s| s.name) {
            assert!(ScheduleSpec::parse(name, 10).unwrap().validate().is_ok());
        }
    }
}
