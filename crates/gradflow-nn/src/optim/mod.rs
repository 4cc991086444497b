//! Optimizers: the rules that turn gradients into parameter updates.
//!
//! Every optimizer follows PyTorch's update rule and defaults exactly (the
//! single-tensor CPU path of `torch.optim`), so that a run here and the same run
//! in torch can be compared step for step. Parameters are updated in place
//! through [`Tensor::with_slice_mut`], in one fused pass per parameter: a step
//! allocates no tensor.
//!
//! State (momentum, moment estimates, …) is keyed by parameter *name*, not by
//! tensor identity, so that [`Optimizer::state`] saved with a checkpoint can be
//! restored with [`Optimizer::load_state`] into a freshly built model. Buffers
//! are created lazily on a parameter's first update, in the parameter's dtype.
//!
//! Step counts are kept per parameter (`step/<name>` in
//! [`OptimizerState::scalars`]) by the optimizers that use them (Adam, AdamW,
//! RMSprop, Adagrad), exactly as torch does: a parameter that received no
//! gradient on some step does not advance its bias correction.

use gradflow::{CpuStorage, DType, Element, Error, GradStore, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A trainable tensor with the name PyTorch's `state_dict` would give it
/// (`0.weight`, `encoder.fc1.bias`, …); the name is what optimizer state and
/// checkpoints are keyed by.
#[derive(Debug, Clone)]
pub struct Param {
    /// The `state_dict` name; must be unique among the parameters given to one optimizer.
    pub name: String,
    /// The parameter itself, updated in place (it must be contiguous).
    pub tensor: Tensor,
}

impl Param {
    /// Pair a tensor with its name.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Param {
        Param {
            name: name.into(),
            tensor,
        }
    }
}

/// One optimizer behind a trait object, so that a training loop can be written
/// once and the optimizer chosen from a config or the command line.
pub trait Optimizer: Send {
    /// Update every parameter that has a gradient in `grads`; parameters without
    /// one are skipped and keep their state untouched (like `p.grad is None`).
    ///
    /// All arguments are checked before any parameter changes, so an error
    /// (a gradient of the wrong shape, state of another model) leaves every
    /// parameter as it was.
    fn step(&mut self, params: &[Param], grads: &GradStore) -> Result<()>;
    /// The learning rate the next step will use.
    fn lr(&self) -> f64;
    /// Change the learning rate; this is how an [`LrSchedule`](crate::schedule::LrSchedule) drives the optimizer.
    fn set_lr(&mut self, lr: f64);
    /// Short name (`sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`), also the `kind` of its state.
    fn name(&self) -> &'static str;
    /// A deep copy of everything needed to resume: buffers, step counts and the current lr.
    fn state(&self) -> OptimizerState;
    /// Replace the state with a saved one (a deep copy is taken). The current lr
    /// is restored too, as torch's `load_state_dict` does. Errors, naming the
    /// offending buffer, if the state belongs to another optimizer kind or is
    /// inconsistent; the optimizer is unchanged on error.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Everything an optimizer needs to resume where it stopped, as plain maps so a
/// checkpoint writer can store the buffers as tensors (e.g. safetensors) and the
/// scalars as JSON.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// The optimizer's [`Optimizer::name`]; checked on load.
    pub kind: String,
    /// Number of `step` calls made, whatever parameters they touched.
    pub step: u64,
    /// `lr` and, for optimizers that count them, per-parameter steps as `step/<name>`.
    pub scalars: BTreeMap<String, f64>,
    /// State tensors named `<buffer>/<param name>`, e.g. `exp_avg/0.weight`, `momentum_buffer/0.weight`.
    pub buffers: BTreeMap<String, Tensor>,
}

impl OptimizerState {
    /// An empty state of the given kind (what a fresh optimizer reports).
    pub fn new(kind: &str) -> OptimizerState {
        OptimizerState {
            kind: kind.to_string(),
            step: 0,
            scalars: BTreeMap::new(),
            buffers: BTreeMap::new(),
        }
    }

    /// Check that every buffer belongs to one of `params` and has its shape.
    /// `load_state` cannot see the model, so a checkpoint loader calls this to
    /// report a mismatched model at load time rather than at the first step.
    pub fn validate_against(&self, params: &[Param]) -> Result<()> {
        let shapes: HashMap<&str, &[usize]> = params.iter().map(|p| (p.name.as_str(), p.tensor.shape())).collect();
        for (key, t) in &self.buffers {
            let Some((_, name)) = key.split_once('/') else {
                return Err(state_err(format!("buffer {key}: expected <buffer>/<parameter name>")));
            };
            match shapes.get(name) {
                None => {
                    return Err(state_err(format!(
                        "buffer {key}: the model has no parameter named {name}"
                    )))
                }
                Some(&shape) if shape != t.shape() => {
                    return Err(state_err(format!(
                        "buffer {key} has shape {:?} but parameter {name} has shape {:?}",
                        t.shape(),
                        shape
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ registry

/// What every optimizer declares in its own file: its hyperparameters (the
/// fields of a serde struct whose `Default` is PyTorch's), its names, how to
/// check them and how to build the optimizer. [`OptimizerSpec`], the command
/// line's and the playground's lists and the checkpoint's state all derive
/// from these declarations.
pub trait OptimizerConfig: Default + Serialize + Into<OptimizerSpec> {
    /// The short name (`adam`): the `kind` of configs and saved states.
    const NAME: &'static str;
    /// PyTorch's class name (`Adam`).
    const TORCH_NAME: &'static str;
    /// One line on what it does.
    const DESCRIPTION: &'static str;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// The learning rate, to change.
    fn lr_mut(&mut self) -> &mut f64;
    /// Reject hyperparameters PyTorch's constructor rejects.
    fn validate(&self) -> crate::Result<()>;
    /// The optimizer, at step 0.
    fn build(&self) -> Box<dyn Optimizer>;
}

/// One optimizer's declaration as the playground and the CLI list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizerInfo {
    /// The short name (`adam`).
    pub name: &'static str,
    /// PyTorch's class name (`Adam`).
    pub torch_name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Every hyperparameter with PyTorch's default.
    pub defaults: serde_json::Value,
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

/// Registers each optimizer: `Variant(module::Config)` adds it to
/// [`OptimizerSpec`] and to every list.
macro_rules! optimizers {
    ($($variant:ident($module:ident::$config:ident)),+ $(,)?) => {
        $(mod $module; pub use $module::*;)+

        /// Which optimizer to build, with its hyperparameters: what a config file or
        /// the command line chooses. Serialized with a `kind` tag (the optimizer's
        /// [`OptimizerConfig::NAME`]); omitted fields take PyTorch's defaults.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum OptimizerSpec {
            $(#[doc = concat!("[`", stringify!($config), "`].")] $variant($config),)+
        }

        $(impl From<$config> for OptimizerSpec {
            fn from(c: $config) -> OptimizerSpec {
                OptimizerSpec::$variant(c)
            }
        })+

        /// Names accepted by [`OptimizerSpec::parse`], for error messages and help texts.
        pub const OPTIMIZER_NAMES: &[&str] = &[$(<$config as OptimizerConfig>::NAME),+];

        impl OptimizerSpec {
            /// Every optimizer's declaration, for lists (the CLI's help, the playground's menu).
            pub fn registry() -> Vec<OptimizerInfo> {
                vec![$(OptimizerInfo {
                    name: <$config as OptimizerConfig>::NAME,
                    torch_name: <$config as OptimizerConfig>::TORCH_NAME,
                    description: <$config as OptimizerConfig>::DESCRIPTION,
                    defaults: serde_json::to_value($config::default()).expect("configs serialize"),
                }),+]
            }

            /// The spec for a command-line name (case-insensitive) with PyTorch's defaults and this lr.
            pub fn parse(name: &str, lr: f64) -> crate::Result<OptimizerSpec> {
                let lower = name.trim().to_ascii_lowercase();
                $(if lower == <$config as OptimizerConfig>::NAME {
                    let mut c = $config::default();
                    *c.lr_mut() = lr;
                    return Ok(c.into());
                })+
                Err(crate::Error::UnknownChoice {
                    what: "optimizer",
                    name: name.to_string(),
                    expected: OPTIMIZER_NAMES.join(", "),
                })
            }

            /// The short name, as accepted by [`parse`](Self::parse) and reported by [`Optimizer::name`].
            pub fn name(&self) -> &'static str {
                match self {
                    $(OptimizerSpec::$variant(_) => <$config as OptimizerConfig>::NAME,)+
                }
            }

            /// The initial learning rate (the base lr a schedule starts from).
            pub fn lr(&self) -> f64 {
                match self {
                    $(OptimizerSpec::$variant(c) => c.lr(),)+
                }
            }

            /// The same spec with another learning rate (a command-line `--lr` over a config file).
            pub fn with_lr(mut self, new_lr: f64) -> OptimizerSpec {
                match &mut self {
                    $(OptimizerSpec::$variant(c) => *c.lr_mut() = new_lr,)+
                }
                self
            }

            /// Reject hyperparameters torch's constructors reject (negative or NaN lr,
            /// betas outside [0, 1), Nesterov without momentum or with dampening, …),
            /// so that a bad config fails before training starts.
            pub fn validate(&self) -> crate::Result<()> {
                non_negative("learning rate", self.lr())?;
                match self {
                    $(OptimizerSpec::$variant(c) => c.validate(),)+
                }
            }

            fn build_unchecked(&self) -> Box<dyn Optimizer> {
                match self {
                    $(OptimizerSpec::$variant(c) => c.build(),)+
                }
            }
        }
    };
}

optimizers! {
    Sgd(sgd::SgdConfig),
    Adam(adam::AdamConfig),
    AdamW(adamw::AdamWConfig),
    RmsProp(rmsprop::RmsPropConfig),
    Adagrad(adagrad::AdagradConfig),
}

impl OptimizerSpec {
    /// Plain SGD with torch's defaults (no momentum, no decay).
    pub fn sgd(lr: f64) -> OptimizerSpec {
        SgdConfig {
            lr,
            ..Default::default()
        }
        .into()
    }
    /// Adam with torch's defaults: betas (0.9, 0.999), eps 1e-8, no decay.
    pub fn adam(lr: f64) -> OptimizerSpec {
        AdamConfig {
            lr,
            ..Default::default()
        }
        .into()
    }
    /// AdamW with torch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn adamw(lr: f64) -> OptimizerSpec {
        AdamWConfig {
            lr,
            ..Default::default()
        }
        .into()
    }

    /// Set one hyperparameter by name, if this optimizer has it; returns whether
    /// it does. This is how a command line's shared flags (`--momentum`,
    /// `--weight-decay`) reach whichever optimizer was chosen.
    pub fn set(&mut self, key: &str, value: impl Serialize) -> crate::Result<bool> {
        let bad = |e: serde_json::Error| crate::Error::Hyperparameter(format!("{key}: {e}"));
        let mut fields = serde_json::to_value(&*self).map_err(bad)?;
        let Some(slot) = fields.get_mut(key) else {
            return Ok(false);
        };
        *slot = serde_json::to_value(value).map_err(bad)?;
        *self = serde_json::from_value(fields).map_err(bad)?;
        Ok(true)
    }
}

/// Build the optimizer a spec describes. It does not validate: call
/// [`OptimizerSpec::validate`] first (or use [`try_build`]) to reject bad
/// hyperparameters with a message instead of training with them.
pub fn build(spec: &OptimizerSpec) -> Box<dyn Optimizer> {
    spec.build_unchecked()
}

/// [`OptimizerSpec::validate`] then [`build`]: the one call a CLI needs.
pub fn try_build(spec: &OptimizerSpec) -> crate::Result<Box<dyn Optimizer>> {
    spec.validate()?;
    Ok(build(spec))
}

// ------------------------------------------------------------------ gradient clipping

/// Rescale all gradients together so that their global L2 norm is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` does: this bounds the step
/// size after an exploding batch without changing the step's direction.
///
/// Returns the norm before clipping. Gradients are multiplied by
/// `max_norm / (norm + 1e-6)` when that factor is below 1. A non-finite norm is
/// returned as is and nothing is scaled (torch would multiply by NaN or 0), so
/// the caller can skip the step. Each gradient is replaced by a new tensor
/// (gradients in a store may share storage); parameters listed twice count once.
/// The norm is accumulated in f64.
pub fn clip_grad_norm(params: &[Param], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::Argument {
            op: "clip_grad_norm",
            msg: format!("max_norm must be >= 0, got {max_norm}"),
        });
    }
    let mut seen = HashSet::new();
    let mut sum_sq = 0.0f64;
    for p in params {
        if !seen.insert(p.tensor.id()) {
            continue;
        }
        if let Some(g) = grads.get(&p.tensor) {
            sum_sq += match g.dtype() {
                DType::F32 => g.with_slice(|s: &[f32]| s.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())?,
                DType::F64 => g.with_slice(|s: &[f64]| s.iter().map(|&x| x * x).sum::<f64>())?,
            };
        }
    }
    let norm = sum_sq.sqrt();
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let _guard = gradflow::no_grad();
        let mut done = HashSet::new();
        for p in params {
            if !done.insert(p.tensor.id()) {
                continue;
            }
            if let Some(g) = grads.get(&p.tensor) {
                let scaled = g.mul_scalar(coef);
                grads.insert(&p.tensor, scaled);
            }
        }
    }
    Ok(norm)
}

/// Clamp every gradient element into `[-clip, clip]`, as
/// `torch.nn.utils.clip_grad_value_` does: a cruder guard than
/// [`clip_grad_norm`] that also changes the step's direction. Gradients are
/// replaced by new tensors, never modified in place.
pub fn clip_grad_value(params: &[Param], grads: &mut GradStore, clip: f64) -> Result<()> {
    if clip.is_nan() || clip < 0.0 {
        return Err(Error::Argument {
            op: "clip_grad_value",
            msg: format!("clip value must be >= 0, got {clip}"),
        });
    }
    let _guard = gradflow::no_grad();
    let mut done = HashSet::new();
    for p in params {
        if !done.insert(p.tensor.id()) {
            continue;
        }
        if let Some(g) = grads.get(&p.tensor) {
            let clamped = g.clamp(-clip, clip);
            grads.insert(&p.tensor, clamped);
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ shared machinery

pub(crate) fn state_err(msg: String) -> Error {
    Error::Argument { op: "load_state", msg }
}

fn step_err(msg: String) -> Error {
    Error::Argument {
        op: "optimizer step",
        msg,
    }
}

/// One parameter's state: its own step count and up to `N` buffers (which ones
/// an optimizer keeps is its business; `None` until created).
pub(crate) struct Entry<const N: usize> {
    pub(crate) step: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) bufs: [Option<CpuStorage>; N],
}

/// The state of all parameters, keyed by name, with the buffer kinds' names.
pub(crate) struct Slots<const N: usize> {
    kinds: [&'static str; N],
    map: HashMap<String, Entry<N>>,
}

fn filled(dtype: DType, n: usize, value: f64) -> CpuStorage {
    match dtype {
        DType::F32 => CpuStorage::F32(vec![value as f32; n]),
        DType::F64 => CpuStorage::F64(vec![value; n]),
    }
}

fn convert(s: &CpuStorage, dtype: DType) -> CpuStorage {
    match (s, dtype) {
        (CpuStorage::F32(v), DType::F64) => CpuStorage::F64(v.iter().map(|&x| x as f64).collect()),
        (CpuStorage::F64(v), DType::F32) => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
        _ => s.clone(),
    }
}

fn storage_of(t: &Tensor) -> Result<CpuStorage> {
    Ok(match t.dtype() {
        DType::F32 => CpuStorage::F32(t.to_vec::<f32>()?),
        DType::F64 => CpuStorage::F64(t.to_vec::<f64>()?),
    })
}

fn tensor_of(s: &CpuStorage, shape: &[usize]) -> Tensor {
    let t = match s {
        CpuStorage::F32(v) => Tensor::from_vec(v.clone(), shape),
        CpuStorage::F64(v) => Tensor::from_vec(v.clone(), shape),
    };
    t.expect("optimizer buffers always hold prod(shape) elements")
}

/// Borrow a buffer that [`Slots::entry`] created in the parameter's dtype.
pub(crate) fn buf<T: Element>(b: &mut Option<CpuStorage>) -> &mut [T] {
    T::slice_mut(b.as_mut().expect("buffer created by Slots::entry")).expect("buffer converted to the parameter dtype")
}

/// Borrow a buffer if this optimizer keeps it.
pub(crate) fn opt_buf<T: Element>(b: &mut Option<CpuStorage>) -> Option<&mut [T]> {
    b.as_mut()
        .map(|s| T::slice_mut(s).expect("buffer converted to the parameter dtype"))
}

/// `torch.lerp(a, b, w)` with torch's branch, so moving averages round as torch's do.
#[inline(always)]
pub(crate) fn lerp<T: Element>(a: T, b: T, w: T) -> T {
    if w.abs() < T::of(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (T::one() - w)
    }
}

/// Run `f` on the parameter's elements (mutably, in place) and the gradient's.
pub(crate) fn with_param_grad<T: Element>(param: &Tensor, grad: &Tensor, f: impl FnOnce(&mut [T], &[T])) -> Result<()> {
    if grad.same_storage(param) {
        // Reading the gradient while holding the parameter's write lock would deadlock.
        let g = grad.to_vec::<T>()?;
        return param.with_slice_mut(|p: &mut [T]| f(p, &g));
    }
    grad.with_slice(|g: &[T]| param.with_slice_mut(|p: &mut [T]| f(p, g)))?
}

impl<const N: usize> Slots<N> {
    pub(crate) fn new(kinds: [&'static str; N]) -> Self {
        Slots {
            kinds,
            map: HashMap::new(),
        }
    }

    /// Check the whole step's arguments before anything changes; returns the
    /// parameters to update with their gradients.
    pub(crate) fn prepare<'a>(
        &self,
        params: &'a [Param],
        grads: &'a GradStore,
    ) -> Result<Vec<(&'a Param, &'a Tensor)>> {
        let mut names = HashSet::with_capacity(params.len());
        let mut work = Vec::with_capacity(params.len());
        for p in params {
            if !names.insert(p.name.as_str()) {
                return Err(step_err(format!(
                    "parameter name {} appears twice; optimizer state is keyed by name",
                    p.name
                )));
            }
            let Some(g) = grads.get(&p.tensor) else {
                continue;
            };
            if g.shape() != p.tensor.shape() {
                return Err(step_err(format!(
                    "gradient of {} has shape {:?}, parameter has {:?}",
                    p.name,
                    g.shape(),
                    p.tensor.shape()
                )));
            }
            if g.dtype() != p.tensor.dtype() {
                return Err(step_err(format!(
                    "gradient of {} is {}, parameter is {}",
                    p.name,
                    g.dtype(),
                    p.tensor.dtype()
                )));
            }
            if !p.tensor.is_contiguous() {
                return Err(step_err(format!(
                    "parameter {} is a strided view; optimizers update contiguous tensors in place",
                    p.name
                )));
            }
            if let Some(e) = self.map.get(&p.name) {
                if e.shape != p.tensor.shape() {
                    let k = e.bufs.iter().position(Option::is_some).unwrap_or(0);
                    return Err(step_err(format!(
                        "state buffer {}/{} has shape {:?} but the parameter has shape {:?} (state of another model?)",
                        self.kinds[k],
                        p.name,
                        e.shape,
                        p.tensor.shape()
                    )));
                }
            }
            work.push((p, g));
        }
        Ok(work)
    }

    /// The parameter's state, created on first use. `init[k] = Some(v)` makes
    /// buffer `k` exist (filled with `v`) if it does not; buffers are converted
    /// to the parameter's dtype (a state loaded from another precision).
    pub(crate) fn entry(&mut self, p: &Param, init: [Option<f64>; N]) -> &mut Entry<N> {
        let dtype = p.tensor.dtype();
        let n = p.tensor.numel();
        if !self.map.contains_key(&p.name) {
            let e = Entry {
                step: 0,
                shape: p.tensor.shape().to_vec(),
                bufs: std::array::from_fn(|_| None),
            };
            self.map.insert(p.name.clone(), e);
        }
        let e = self.map.get_mut(&p.name).expect("inserted above");
        for (b, init) in e.bufs.iter_mut().zip(init) {
            match b {
                Some(s) if s.dtype() != dtype => *s = convert(s, dtype),
                Some(_) => {}
                None => *b = init.map(|v| filled(dtype, n, v)),
            }
        }
        e
    }

    /// Whether buffer `k` of the named parameter exists.
    pub(crate) fn has(&self, name: &str, k: usize) -> bool {
        self.map.get(name).is_some_and(|e| e.bufs[k].is_some())
    }

    /// Deep-copy the state into `st` (buffers and, if counted, `step/<name>`).
    pub(crate) fn export(&self, st: &mut OptimizerState, per_param_step: bool) {
        for (name, e) in &self.map {
            if per_param_step {
                st.scalars.insert(format!("step/{name}"), e.step as f64);
            }
            for (kind, b) in self.kinds.iter().zip(&e.bufs) {
                if let Some(b) = b {
                    st.buffers.insert(format!("{kind}/{name}"), tensor_of(b, &e.shape));
                }
            }
        }
    }

    /// Replace the state with a deep copy of `st`'s, after checking it:
    /// every buffer kind known, one shape per parameter, `required` buffers and
    /// (if counted) step counts present. Unchanged on error.
    pub(crate) fn import(&mut self, st: &OptimizerState, required: [bool; N], per_param_step: bool) -> Result<()> {
        let mut map: HashMap<String, Entry<N>> = HashMap::new();
        for (key, t) in &st.buffers {
            let Some((kind, name)) = key.split_once('/') else {
                return Err(state_err(format!("buffer {key}: expected <buffer>/<parameter name>")));
            };
            let Some(k) = self.kinds.iter().position(|&x| x == kind) else {
                return Err(state_err(format!(
                    "buffer {key}: {kind} is not a buffer of {} (expected one of {})",
                    st.kind,
                    self.kinds.join(", ")
                )));
            };
            let e = map.entry(name.to_string()).or_insert_with(|| Entry {
                step: 0,
                shape: t.shape().to_vec(),
                bufs: std::array::from_fn(|_| None),
            });
            if e.shape != t.shape() {
                return Err(state_err(format!(
                    "buffer {key} has shape {:?} but the other buffers of {name} have shape {:?}",
                    t.shape(),
                    e.shape
                )));
            }
            e.bufs[k] = Some(storage_of(t)?);
        }
        for (name, e) in map.iter_mut() {
            for ((kind, b), req) in self.kinds.iter().zip(&e.bufs).zip(required) {
                if req && b.is_none() {
                    return Err(state_err(format!("buffer {kind}/{name} is missing")));
                }
            }
            if per_param_step {
                let key = format!("step/{name}");
                let Some(&s) = st.scalars.get(&key) else {
                    return Err(state_err(format!("scalar {key} is missing")));
                };
                if !(s >= 0.0 && s.fract() == 0.0 && s < 9.0e15) {
                    return Err(state_err(format!("scalar {key} = {s} is not a step count")));
                }
                e.step = s as u64;
            }
        }
        if per_param_step {
            for key in st.scalars.keys() {
                if let Some(name) = key.strip_prefix("step/") {
                    if !map.contains_key(name) {
                        return Err(state_err(format!("scalar {key} has no buffers for parameter {name}")));
                    }
                }
            }
        }
        self.map = map;
        Ok(())
    }
}

/// The parts of `load_state` every optimizer shares: check the kind and read `lr`.
/// Returns the lr to restore, if the state has one.
pub(crate) fn check_header(st: &OptimizerState, kind: &str) -> Result<Option<f64>> {
    if st.kind != kind {
        return Err(state_err(format!(
            "state of a {} optimizer cannot be loaded into {kind}",
            st.kind
        )));
    }
    match st.scalars.get("lr") {
        Some(&lr) if !(lr.is_finite() && lr >= 0.0) => {
            Err(state_err(format!("scalar lr = {lr} is not a learning rate")))
        }
        other => Ok(other.copied()),
    }
}

/// The parts of `state` every optimizer shares.
pub(crate) fn header(kind: &str, step: u64, lr: f64) -> OptimizerState {
    let mut st = OptimizerState::new(kind);
    st.step = step;
    st.scalars.insert("lr".into(), lr);
    st
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// One named parameter holding `v`.
    pub(crate) fn param<T: Element>(name: &str, v: &[T]) -> Param {
        Param::new(name, Tensor::from_slice(v, &[v.len()]).unwrap().requires_grad_(true))
    }

    /// A gradient store holding `g` for `p`.
    pub(crate) fn grads_for<T: Element>(p: &Param, g: &[T]) -> GradStore {
        let mut gs = GradStore::default();
        gs.insert(&p.tensor, Tensor::from_slice(g, p.tensor.shape()).unwrap());
        gs
    }

    /// Values of a parameter as f64.
    pub(crate) fn vals(p: &Param) -> Vec<f64> {
        p.tensor.to_vec_f64()
    }

    pub(crate) fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?} (tol {tol})");
        }
    }

    /// Minimize f(w) = Σ (w − 3)² from w = [0, 1, 5, −2] with real autograd;
    /// returns the final weights.
    pub(crate) fn minimize_quadratic(opt: &mut dyn Optimizer, steps: usize) -> Vec<f64> {
        let p = param::<f32>("w", &[0.0, 1.0, 5.0, -2.0]);
        let params = [p.clone()];
        for _ in 0..steps {
            let loss = p.tensor.sub_scalar(3.0).square().sum_all();
            let g = loss.backward().unwrap();
            opt.step(&params, &g).unwrap();
        }
        vals(&p)
    }

    /// Run `steps` steps of `make()` on a 2-parameter problem with varying
    /// gradients, saving and restoring state into a fresh optimizer halfway;
    /// asserts the result is bit-identical to an uninterrupted run.
    pub(crate) fn check_resume(make: impl Fn() -> Box<dyn Optimizer>) {
        fn run(opt: &mut dyn Optimizer, params: &[Param], from: usize, to: usize) {
            for i in from..to {
                let mut gs = GradStore::default();
                for (j, p) in params.iter().enumerate() {
                    // The second parameter only gets a gradient on even steps.
                    if j == 1 && i % 2 == 1 {
                        continue;
                    }
                    let v = vals(p);
                    let g: Vec<f64> = v
                        .iter()
                        .enumerate()
                        .map(|(k, x)| x - 1.0 + 0.3 * ((i + k + j) as f64).sin())
                        .collect();
                    gs.insert(&p.tensor, Tensor::from_vec(g, p.tensor.shape()).unwrap());
                }
                opt.step(params, &gs).unwrap();
            }
        }
        let fresh = || {
            vec![
                param::<f64>("0.weight", &[0.5, -1.0, 2.0]),
                param::<f64>("0.bias", &[0.1]),
            ]
        };
        let a = fresh();
        let mut oa = make();
        run(oa.as_mut(), &a, 0, 10);

        let b = fresh();
        let mut ob = make();
        run(ob.as_mut(), &b, 0, 5);
        let saved = ob.state();
        saved.validate_against(&b).unwrap();
        let weights: Vec<Vec<f64>> = b.iter().map(vals).collect();
        // Training on after the snapshot must not change the snapshot.
        run(ob.as_mut(), &b, 5, 7);
        // A freshly built model with the checkpointed weights.
        let c = fresh();
        for (p, w) in c.iter().zip(&weights) {
            p.tensor
                .assign(&Tensor::from_vec(w.clone(), p.tensor.shape()).unwrap())
                .unwrap();
        }
        let mut oc = make();
        oc.set_lr(123.0); // restored from the state
        oc.load_state(&saved).unwrap();
        assert_eq!(oc.lr(), oa.lr());
        assert_eq!(oc.state().step, 5);
        run(oc.as_mut(), &c, 5, 10);
        for (x, y) in a.iter().zip(&c) {
            assert_eq!(vals(x), vals(y), "{}", x.name);
        }
        let (sa, sc) = (oa.state(), oc.state());
        assert_eq!(sa.scalars, sc.scalars);
        assert_eq!(
            sa.buffers.keys().collect::<Vec<_>>(),
            sc.buffers.keys().collect::<Vec<_>>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn parse_names_case_insensitively_and_lists_valid_ones() {
        assert_eq!(OptimizerSpec::parse("AdamW", 0.1).unwrap(), OptimizerSpec::adamw(0.1));
        assert_eq!(OptimizerSpec::parse("sgd", 0.5).unwrap().lr(), 0.5);
        assert_eq!(OptimizerSpec::parse("RMSprop", 0.5).unwrap().name(), "rmsprop");
        let e = OptimizerSpec::parse("lbfgs", 0.1).unwrap_err().to_string();
        assert!(
            e.contains("lbfgs") && e.contains("sgd, adam, adamw, rmsprop, adagrad"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_torchs() {
        let OptimizerSpec::AdamW(c) = OptimizerSpec::adamw(1e-3) else {
            unreachable!()
        };
        assert_eq!((c.betas, c.eps, c.weight_decay), ((0.9, 0.999), 1e-8, 0.01));
        let OptimizerSpec::Adagrad(c) = OptimizerSpec::parse("adagrad", 1e-2).unwrap() else {
            unreachable!()
        };
        assert_eq!(c.eps, 1e-10);
        // Omitted fields in a config take the same defaults.
        let s: OptimizerSpec = serde_json::from_str(r#"{"kind":"adamw","lr":0.003}"#).unwrap();
        assert_eq!(s, OptimizerSpec::adamw(0.003));
        let s: OptimizerSpec = toml::from_str("kind = \"rmsprop\"").unwrap();
        assert_eq!(s, OptimizerSpec::parse("rmsprop", 1e-2).unwrap());
        assert!(serde_json::from_str::<OptimizerSpec>(r#"{"kind":"sgd","lr":0.1,"momentun":0.9}"#).is_err());
        let spec = OptimizerSpec::Sgd(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 5e-4,
        });
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<OptimizerSpec>(&json).unwrap(), spec);
        assert_eq!(spec.clone().with_lr(0.2).lr(), 0.2);
    }

    #[test]
    fn validate_rejects_what_torch_rejects() {
        assert!(OptimizerSpec::sgd(-0.1).validate().is_err());
        assert!(OptimizerSpec::adam(f64::NAN).validate().is_err());
        assert!(OptimizerSpec::adam(0.0).validate().is_ok());
        let bad_beta = OptimizerSpec::Adam(AdamConfig {
            betas: (0.9, 1.0),
            ..Default::default()
        });
        assert!(bad_beta.validate().unwrap_err().to_string().contains("index 1"));
        let nesterov = |momentum, dampening| {
            OptimizerSpec::Sgd(SgdConfig {
                lr: 0.1,
                momentum,
                dampening,
                nesterov: true,
                weight_decay: 0.0,
            })
        };
        assert!(nesterov(0.0, 0.0).validate().is_err());
        assert!(nesterov(0.9, 0.1).validate().is_err());
        assert!(nesterov(0.9, 0.0).validate().is_ok());
        let neg_wd = OptimizerSpec::Adagrad(AdagradConfig {
            lr: 0.1,
            weight_decay: -1.0,
            ..Default::default()
        });
        assert!(neg_wd.validate().is_err());
        assert!(try_build(&OptimizerSpec::sgd(-1.0)).is_err());
        assert_eq!(
            try_build(&OptimizerSpec::parse("rmsprop", 0.1).unwrap())
                .unwrap()
                .name(),
            "rmsprop"
        );
    }

    #[test]
    fn set_reaches_only_the_optimizers_that_have_the_hyperparameter() {
        let mut sgd = OptimizerSpec::sgd(0.1);
        assert!(sgd.set("momentum", 0.9).unwrap());
        assert!(sgd.set("nesterov", true).unwrap());
        assert_eq!(
            sgd,
            OptimizerSpec::Sgd(SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                ..Default::default()
            })
        );
        let mut adam = OptimizerSpec::adam(0.1);
        assert!(!adam.set("momentum", 0.9).unwrap());
        assert_eq!(adam, OptimizerSpec::adam(0.1));
        assert!(adam.set("weight_decay", "x").is_err());
    }

    #[test]
    fn registry_lists_every_optimizer_with_its_defaults() {
        let reg = OptimizerSpec::registry();
        assert_eq!(reg.iter().map(|i| i.name).collect::<Vec<_>>(), OPTIMIZER_NAMES);
        let adamw = reg.iter().find(|i| i.name == "adamw").unwrap();
        assert_eq!(adamw.torch_name, "AdamW");
        assert_eq!(adamw.defaults["weight_decay"], serde_json::json!(0.01));
    }

    #[test]
    fn build_gives_each_kind_with_its_lr() {
        for name in OPTIMIZER_NAMES {
            let opt = build(&OptimizerSpec::parse(name, 0.25).unwrap());
            assert_eq!(opt.name(), *name);
            assert_eq!(opt.lr(), 0.25);
            assert_eq!(opt.state().kind, *name);
        }
    }

    #[test]
    fn clip_grad_norm_scales_to_max_norm() {
        let a = param::<f32>("a", &[0.0, 0.0]);
        let b = param::<f64>("b", &[0.0]);
        let mut gs = GradStore::default();
        gs.insert(&a.tensor, Tensor::from_vec(vec![3.0f32, 0.0], &[2]).unwrap());
        gs.insert(&b.tensor, Tensor::from_vec(vec![4.0f64], &[1]).unwrap());
        let old_a = gs.get(&a.tensor).unwrap().clone();
        let params = [a.clone(), b.clone()];
        let norm = clip_grad_norm(&params, &mut gs, 1.0).unwrap();
        assert_eq!(norm, 5.0);
        let coef = 1.0 / (5.0 + 1e-6);
        assert_close(&gs.get(&a.tensor).unwrap().to_vec_f64(), &[3.0 * coef, 0.0], 1e-7);
        assert_close(&gs.get(&b.tensor).unwrap().to_vec_f64(), &[4.0 * coef], 1e-15);
        // The old gradient tensor was replaced, not modified.
        assert_eq!(old_a.to_vec::<f32>().unwrap(), vec![3.0, 0.0]);
        // Now below the bound: the norm is reported and nothing changes.
        let norm2 = clip_grad_norm(&params, &mut gs, 10.0).unwrap();
        assert!((norm2 - 5.0 * coef).abs() < 1e-6);
        assert_close(&gs.get(&b.tensor).unwrap().to_vec_f64(), &[4.0 * coef], 1e-15);
    }

    #[test]
    fn clip_grad_norm_leaves_non_finite_and_missing_grads_alone() {
        let a = param::<f32>("a", &[0.0, 0.0]);
        let b = param::<f32>("b", &[0.0]);
        let mut gs = grads_for(&a, &[f32::INFINITY, 1.0]);
        let n = clip_grad_norm(&[a.clone(), b.clone()], &mut gs, 1.0).unwrap();
        assert!(n.is_infinite());
        assert_eq!(
            gs.get(&a.tensor).unwrap().to_vec::<f32>().unwrap(),
            vec![f32::INFINITY, 1.0]
        );
        assert!(gs.get(&b.tensor).is_none());
        let mut empty = GradStore::default();
        assert_eq!(clip_grad_norm(std::slice::from_ref(&a), &mut empty, 1.0).unwrap(), 0.0);
        assert!(clip_grad_norm(&[a], &mut gs, -1.0).is_err());
    }

    #[test]
    fn clip_grad_value_clamps() {
        let a = param::<f32>("a", &[0.0, 0.0, 0.0]);
        let mut gs = grads_for(&a, &[-3.0f32, 0.25, 2.0]);
        clip_grad_value(std::slice::from_ref(&a), &mut gs, 0.5).unwrap();
        assert_eq!(
            gs.get(&a.tensor).unwrap().to_vec::<f32>().unwrap(),
            vec![-0.5, 0.25, 0.5]
        );
        assert!(clip_grad_value(&[a], &mut gs, f64::NAN).is_err());
    }

    #[test]
    fn step_checks_everything_before_touching_parameters() {
        let mut opt = Adam::new(AdamConfig {
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        });
        let a = param::<f32>("a", &[1.0, 2.0]);
        let b = param::<f32>("b", &[1.0]);
        let mut gs = grads_for(&a, &[1.0f32, 1.0]);
        gs.insert(&b.tensor, Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
        let e = opt.step(&[a.clone(), b.clone()], &gs).unwrap_err();
        assert!(e.to_string().contains("gradient of b"), "{e}");
        assert_eq!(vals(&a), vec![1.0, 2.0]);
        let twice = [a.clone(), Param::new("a", b.tensor.clone())];
        assert!(opt.step(&twice, &gs).unwrap_err().to_string().contains("twice"));
        assert_eq!(opt.state().step, 0);
    }

    #[test]
    fn state_of_another_model_is_rejected_by_name() {
        let mut opt = Adam::new(AdamConfig {
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        });
        let a = param::<f32>("0.weight", &[1.0, 2.0]);
        opt.step(std::slice::from_ref(&a), &grads_for(&a, &[1.0f32, 1.0]))
            .unwrap();
        let st = opt.state();
        let other = param::<f32>("0.weight", &[1.0, 2.0, 3.0]);
        let e = st.validate_against(std::slice::from_ref(&other)).unwrap_err();
        assert!(e.to_string().contains("exp_avg"), "{e}");
        let mut fresh = Adam::new(AdamConfig {
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        });
        fresh.load_state(&st).unwrap();
        let e = fresh
            .step(std::slice::from_ref(&other), &grads_for(&other, &[1.0f32, 1.0, 1.0]))
            .unwrap_err();
        assert!(e.to_string().contains("/0.weight"), "{e}");
        // Wrong kind, inconsistent shapes, unknown and missing buffers.
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        });
        assert!(sgd.load_state(&st).unwrap_err().to_string().contains("adam"));
        let mut bad = st.clone();
        bad.buffers
            .insert("exp_avg_sq/0.weight".into(), Tensor::zeros(&[3], DType::F32));
        let e = fresh.load_state(&bad).unwrap_err();
        assert!(matches!(e, Error::Argument { op: "load_state", .. }));
        assert!(e.to_string().contains("exp_avg_sq/0.weight"), "{e}");
        let mut bad = st.clone();
        bad.buffers
            .insert("velocity/0.weight".into(), Tensor::zeros(&[2], DType::F32));
        assert!(fresh.load_state(&bad).unwrap_err().to_string().contains("velocity"));
        let mut bad = st.clone();
        bad.buffers.remove("exp_avg_sq/0.weight");
        assert!(fresh
            .load_state(&bad)
            .unwrap_err()
            .to_string()
            .contains("exp_avg_sq/0.weight is missing"));
        let mut bad = st.clone();
        bad.scalars.remove("step/0.weight");
        assert!(fresh
            .load_state(&bad)
            .unwrap_err()
            .to_string()
            .contains("step/0.weight"));
    }

    #[test]
    fn state_loaded_in_f64_continues_an_f32_model() {
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        });
        let a = param::<f32>("w", &[1.0]);
        opt.step(std::slice::from_ref(&a), &grads_for(&a, &[1.0f32])).unwrap();
        let mut st = opt.state();
        let b = st.buffers["momentum_buffer/w"].to_dtype(DType::F64);
        st.buffers.insert("momentum_buffer/w".into(), b);
        let mut opt2 = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        });
        opt2.load_state(&st).unwrap();
        opt2.step(std::slice::from_ref(&a), &grads_for(&a, &[1.0f32])).unwrap();
        // buf = 0.9·1 + 1 = 1.9; w = 0.9 − 0.19
        assert_close(&vals(&a), &[0.71], 1e-6);
        assert_eq!(opt2.state().buffers["momentum_buffer/w"].dtype(), DType::F32);
    }
}
