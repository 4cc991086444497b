//! Model files: TOML that a person writes by hand, naming PyTorch's layer
//! classes and constructor arguments. Input sizes (`in_features`,
//! `in_channels`, `num_features`) are inferred, and the whole model is
//! shape-checked before anything trains.
//!
//! ```toml
//! input = [1, 28, 28]
//! [[layer]]
//! type = "Flatten"
//! [[layer]]
//! type = "Linear"
//! out_features = 800
//! [[layer]]
//! type = "ReLU"
//! [[layer]]
//! type = "Linear"
//! out_features = 10
//! ```

use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::transformer::ENCODER_ACTIVATIONS;
use crate::layers::{
    Activation, AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, MultiheadAttention,
    RecurrentConfig, RecurrentOutput, Residual, Sequential, TransformerEncoderLayer,
};
use crate::module::Module;
use gradflow::{Cell, Conv2dParams, DType, Pool2dParams};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;

/// One layer of a model file, with its constructor arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// `nn.Linear(in, out_features, bias)`.
    Linear {
        /// Output width.
        out_features: usize,
        /// Whether to learn a bias.
        bias: bool,
        /// Per-layer λ₁.
        l1: Option<f64>,
        /// Per-layer λ₂.
        l2: Option<f64>,
        /// Per-layer initializer.
        init: Option<Init>,
    },
    /// `nn.Conv2d(in, out_channels, kernel_size, stride, padding, dilation, groups, bias)`.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel (rows, cols).
        kernel_size: (usize, usize),
        /// Stride, padding, dilation, groups.
        params: Conv2dParams,
        /// Whether to learn a bias.
        bias: bool,
        /// Per-layer λ₁.
        l1: Option<f64>,
        /// Per-layer λ₂.
        l2: Option<f64>,
        /// Per-layer initializer.
        init: Option<Init>,
    },
    /// `nn.MaxPool2d`.
    MaxPool2d(Pool2dParams),
    /// `nn.AvgPool2d`.
    AvgPool2d(Pool2dParams),
    /// `nn.Flatten()`.
    Flatten,
    /// `nn.Dropout(p)`.
    Dropout(f64),
    /// `nn.BatchNorm1d(eps, momentum)`.
    BatchNorm1d {
        /// ε.
        eps: f64,
        /// Running-statistics momentum.
        momentum: f64,
    },
    /// `nn.BatchNorm2d(eps, momentum)`.
    BatchNorm2d {
        /// ε.
        eps: f64,
        /// Running-statistics momentum.
        momentum: f64,
    },
    /// `nn.LayerNorm(normalized_shape, eps, elementwise_affine)`.
    LayerNorm {
        /// The trailing dimensions normalized over; `None` for the last one of the input.
        normalized_shape: Option<Vec<usize>>,
        /// ε.
        eps: f64,
        /// Whether to learn γ and β.
        elementwise_affine: bool,
    },
    /// `y = x + body(x)`, or `shortcut(x) + body(x)`: nested `[[layer.body]]`
    /// and `[[layer.shortcut]]` lists.
    Residual {
        /// The main path.
        body: Vec<LayerSpec>,
        /// The skip path; `None` for the identity.
        shortcut: Option<Vec<LayerSpec>>,
    },
    /// Any activation.
    Activation(Activation),
    /// `nn.RNN`, `nn.LSTM` or `nn.GRU` with `batch_first=True` (the input size is inferred).
    Recurrent(RecurrentSpec),
    /// `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first=True)` as
    /// self-attention (`embed_dim` is the input's last dimension), with a causal mask if asked.
    MultiheadAttention {
        /// Heads; they must divide embed_dim.
        num_heads: usize,
        /// Dropout on the attention weights.
        dropout: f64,
        /// Whether the projections learn biases.
        bias: bool,
        /// Step i attends to steps 0..=i only.
        causal: bool,
    },
    /// `nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
    /// layer_norm_eps, batch_first=True, norm_first)` (`d_model` is the input's last dimension).
    TransformerEncoderLayer(EncoderSpec),
}

/// The constructor arguments of a transformer encoder layer in a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    /// Attention heads; they must divide d_model.
    pub nhead: usize,
    /// Width of the feed-forward network.
    pub dim_feedforward: usize,
    /// Dropout everywhere in the block.
    pub dropout: f64,
    /// `relu` or `gelu`.
    pub activation: String,
    /// The LayerNorms' ε.
    pub layer_norm_eps: f64,
    /// Pre-norm instead of post-norm.
    pub norm_first: bool,
}

/// The constructor arguments of a recurrent layer in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentSpec {
    /// The cell: RNN (tanh or relu), LSTM or GRU.
    pub cell: Cell,
    /// Hidden units per direction.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Whether to learn biases.
    pub bias: bool,
    /// Whether to add a reverse direction.
    pub bidirectional: bool,
    /// Dropout between layers.
    pub dropout: f64,
    /// `sequence` or `last`.
    pub output: RecurrentOutput,
}

/// A whole model file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Shape of one sample, e.g. `[1, 28, 28]`.
    pub input: Vec<usize>,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

/// Options for turning a spec into a network.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Initializer for every Linear/Conv2d without its own `init`.
    pub init: Init,
    /// Element type of the parameters.
    pub dtype: DType,
    /// Seed of the initial weights.
    pub seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            init: Init::PytorchDefault,
            dtype: DType::F32,
            seed: 0,
        }
    }
}

/// The built-in presets, by name.
pub const PRESETS: [(&str, &str); 4] = [
    ("mlp", include_str!("presets/mlp.toml")),
    ("mlp3", include_str!("presets/mlp3.toml")),
    ("lenet5", include_str!("presets/lenet5.toml")),
    ("lstm", include_str!("presets/lstm.toml")),
];

/// Largest value any single size in a model file may take (an `input`
/// dimension, `out_features`, `out_channels`, a kernel, stride, padding,
/// dilation or group count). Far above any real model, low enough that shape
/// arithmetic on such values cannot overflow.
pub const MAX_DIM: usize = 1 << 24;

/// Largest number of values one sample may have at the input or output of
/// any layer (2^28, 1 GiB of f32 per sample).
pub const MAX_SAMPLE_ELEMENTS: usize = 1 << 28;

/// Largest number of parameters and buffers [`ModelSpec::build`] allocates
/// (2^28 values, 1 GiB of f32): a model file asking for more is an error, not
/// an out-of-memory abort.
pub const MAX_PARAMETERS: usize = 1 << 28;

type Table = toml::map::Map<String, toml::Value>;

struct Keys<'a> {
    table: &'a Table,
    ctx: String,
    used: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T> {
        Err(Error::Spec(format!("{}: {msg}", self.ctx)))
    }
    fn get(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.used.push(key);
        self.table.get(key)
    }
    fn usize(&mut self, key: &'static str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.map_or_else(|| self.err(format!("missing key '{key}'")), Ok),
            Some(toml::Value::Integer(i)) if *i > MAX_DIM as i64 => self.err(too_large(key, *i)),
            Some(toml::Value::Integer(i)) if *i > 0 || (*i == 0 && default == Some(0)) => Ok(*i as usize),
            Some(v) => self.err(format!("'{key}' must be a positive integer, got {v}")),
        }
    }
    fn pair(&mut self, key: &'static str, default: Option<(usize, usize)>, allow_zero: bool) -> Result<(usize, usize)> {
        let ok = |i: i64| i > 0 || (allow_zero && i == 0);
        let value = self.get(key);
        let huge = match value {
            Some(toml::Value::Integer(i)) => Some(*i),
            Some(toml::Value::Array(a)) => a.iter().filter_map(toml::Value::as_integer).max(),
            _ => None,
        }
        .filter(|&i| i > MAX_DIM as i64);
        if let Some(i) = huge {
            return self.err(too_large(key, i));
        }
        match value {
            None => default.map_or_else(|| self.err(format!("missing key '{key}'")), Ok),
            Some(toml::Value::Integer(i)) if ok(*i) => Ok((*i as usize, *i as usize)),
            Some(toml::Value::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
                (toml::Value::Integer(x), toml::Value::Integer(y)) if ok(*x) && ok(*y) => {
                    Ok((*x as usize, *y as usize))
                }
                _ => self.err(format!("'{key}' must be an integer or a pair of integers")),
            },
            Some(v) => self.err(format!(
                "'{key}' must be a {}integer or a pair of integers, got {v}",
                if allow_zero { "non-negative " } else { "positive " }
            )),
        }
    }
    fn float(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Float(f)) if f.is_finite() => Ok(*f),
            Some(toml::Value::Integer(i)) => Ok(*i as f64),
            Some(v) => self.err(format!("'{key}' must be a number, got {v}")),
        }
    }
    fn opt_float(&mut self, key: &'static str) -> Result<Option<f64>> {
        if self.table.contains_key(key) {
            let v = self.float(key, 0.0)?;
            if v < 0.0 {
                return self.err(format!("'{key}' must not be negative"));
            }
            Ok(Some(v))
        } else {
            self.used.push(key);
            Ok(None)
        }
    }
    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => self.err(format!("'{key}' must be true or false, got {v}")),
        }
    }
    fn init(&mut self) -> Result<Option<Init>> {
        match self.get("init") {
            None => Ok(None),
            Some(toml::Value::String(s)) => Init::parse(s).map(Some).or_else(|e| self.err(e)),
            Some(v) => self.err(format!("'init' must be a string, got {v}")),
        }
    }
    fn finish(self) -> Result<()> {
        for k in self.table.keys() {
            if k != "type" && k != "inplace" && !self.used.contains(&k.as_str()) {
                return self.err(format!("unknown key '{k}' (known: {})", self.used.join(", ")));
            }
        }
        Ok(())
    }
}

fn too_large(key: &str, value: i64) -> String {
    format!("'{key}' = {value} is too large (at most {MAX_DIM})")
}

/// Values per sample of `shape`, or `None` if that overflows `usize`.
fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Every size of one layer, checked against [`MAX_DIM`] before any shape
/// arithmetic uses it (specs built in code skip the parser's checks).
fn check_layer_sizes(l: &LayerSpec) -> std::result::Result<(), String> {
    let sizes: Vec<(&str, usize)> = match l {
        LayerSpec::Linear { out_features, .. } => vec![("out_features", *out_features)],
        LayerSpec::Conv2d {
            out_channels,
            kernel_size,
            params,
            ..
        } => vec![
            ("out_channels", *out_channels),
            ("kernel_size", kernel_size.0),
            ("kernel_size", kernel_size.1),
            ("stride", params.stride.0),
            ("stride", params.stride.1),
            ("padding", params.padding.0),
            ("padding", params.padding.1),
            ("dilation", params.dilation.0),
            ("dilation", params.dilation.1),
            ("groups", params.groups),
        ],
        LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => vec![
            ("kernel_size", p.kernel.0),
            ("kernel_size", p.kernel.1),
            ("stride", p.stride.0),
            ("stride", p.stride.1),
            ("padding", p.padding.0),
            ("padding", p.padding.1),
        ],
        LayerSpec::LayerNorm {
            normalized_shape: Some(dims),
            ..
        } => dims.iter().map(|&d| ("normalized_shape", d)).collect(),
        LayerSpec::Recurrent(r) => vec![("hidden_size", r.hidden_size), ("num_layers", r.num_layers)],
        LayerSpec::MultiheadAttention { num_heads, .. } => vec![("num_heads", *num_heads)],
        LayerSpec::TransformerEncoderLayer(t) => vec![("nhead", t.nhead), ("dim_feedforward", t.dim_feedforward)],
        _ => Vec::new(),
    };
    match sizes.iter().find(|(_, v)| *v > MAX_DIM) {
        Some((key, v)) => Err(format!("'{key}' = {v} is too large (at most {MAX_DIM})")),
        None => Ok(()),
    }
}

/// Checks the per-sample input shape: every dimension positive and at most
/// [`MAX_DIM`], and at most [`MAX_SAMPLE_ELEMENTS`] values in all.
fn check_input(input: &[usize]) -> std::result::Result<(), String> {
    if input.is_empty() || input.iter().any(|&d| d == 0 || d > MAX_DIM) {
        return Err(format!(
            "'input' must be a non-empty list of positive integers of at most {MAX_DIM}, got {input:?}"
        ));
    }
    match elements(input) {
        Some(n) if n <= MAX_SAMPLE_ELEMENTS => Ok(()),
        _ => Err(format!(
            "'input' {input:?} has more than {MAX_SAMPLE_ELEMENTS} values per sample"
        )),
    }
}

/// Parameters and buffers a layer will allocate on an input of `shape`
/// (already checked to have the rank the layer needs), or `None` on overflow.
fn layer_allocation(l: &LayerSpec, shape: &[usize]) -> Option<usize> {
    match l {
        LayerSpec::Linear { out_features, bias, .. } => shape[shape.len() - 1]
            .checked_mul(*out_features)?
            .checked_add(if *bias { *out_features } else { 0 }),
        LayerSpec::Conv2d {
            out_channels,
            kernel_size,
            params,
            bias,
            ..
        } => (shape[0] / params.groups.max(1))
            .checked_mul(*out_channels)?
            .checked_mul(kernel_size.0)?
            .checked_mul(kernel_size.1)?
            .checked_add(if *bias { *out_channels } else { 0 }),
        // weight, bias, running mean and variance, and the step counter.
        LayerSpec::BatchNorm1d { .. } | LayerSpec::BatchNorm2d { .. } => shape[0].checked_mul(4)?.checked_add(1),
        LayerSpec::LayerNorm {
            elementwise_affine: true,
            ..
        } => elements(&l.layernorm_shape(shape))?.checked_mul(2),
        LayerSpec::Recurrent(r) => recurrent_allocation(r, shape[1]),
        LayerSpec::MultiheadAttention { bias, .. } => attention_allocation(shape[1], *bias),
        LayerSpec::TransformerEncoderLayer(t) => {
            // Attention, linear1 and linear2 with biases, two LayerNorms.
            let (e, f) = (shape[1], t.dim_feedforward);
            let ff = e.checked_mul(f)?.checked_mul(2)?.checked_add(f)?.checked_add(e)?;
            attention_allocation(e, true)?
                .checked_add(ff)?
                .checked_add(e.checked_mul(4)?)
        }
        _ => Some(0),
    }
}

/// Parameters of self-attention over `e` features (four `[e, e]` projections), or `None` on overflow.
fn attention_allocation(e: usize, bias: bool) -> Option<usize> {
    e.checked_add(usize::from(bias))?.checked_mul(e)?.checked_mul(4)
}

/// Parameters of a recurrent layer on `input_size` features, or `None` on overflow.
fn recurrent_allocation(r: &RecurrentSpec, input_size: usize) -> Option<usize> {
    let (h, dirs) = (r.hidden_size, 1 + usize::from(r.bidirectional));
    let gh = r.cell.gates().checked_mul(h)?;
    let first = gh.checked_mul(input_size.checked_add(h)?.checked_add(if r.bias { 2 } else { 0 })?)?;
    let upper = gh.checked_mul(h.checked_mul(dirs + 1)?.checked_add(if r.bias { 2 } else { 0 })?)?;
    first
        .checked_add(upper.checked_mul(r.num_layers - 1)?)?
        .checked_mul(dirs)
}

/// The readers of each layer's keys, with the defaults and checks of PyTorch's constructors.
impl Keys<'_> {
    fn linear(&mut self) -> Result<LayerSpec> {
        Ok(LayerSpec::Linear {
            out_features: self.usize("out_features", None)?,
            bias: self.bool("bias", true)?,
            l1: self.opt_float("l1")?,
            l2: self.opt_float("l2")?,
            init: self.init()?,
        })
    }
    fn conv2d(&mut self) -> Result<LayerSpec> {
        Ok(LayerSpec::Conv2d {
            out_channels: self.usize("out_channels", None)?,
            kernel_size: self.pair("kernel_size", None, false)?,
            params: Conv2dParams {
                stride: self.pair("stride", Some((1, 1)), false)?,
                padding: self.pair("padding", Some((0, 0)), true)?,
                dilation: self.pair("dilation", Some((1, 1)), false)?,
                groups: self.usize("groups", Some(1))?,
            },
            bias: self.bool("bias", true)?,
            l1: self.opt_float("l1")?,
            l2: self.opt_float("l2")?,
            init: self.init()?,
        })
    }
    fn pool(&mut self) -> Result<Pool2dParams> {
        let kernel = self.pair("kernel_size", None, false)?;
        let stride = self.pair("stride", Some(kernel), false)?;
        let padding = self.pair("padding", Some((0, 0)), true)?;
        Ok(Pool2dParams {
            kernel,
            stride,
            padding,
        })
    }
    fn dropout(&mut self) -> Result<LayerSpec> {
        let p = self.float("p", 0.5)?;
        if !(0.0..1.0).contains(&p) {
            return self.err(format!("'p' must be in [0, 1), got {p}"));
        }
        Ok(LayerSpec::Dropout(p))
    }
    /// `kind` is "rnn", "lstm" or "gru".
    fn recurrent(&mut self, kind: &str) -> Result<LayerSpec> {
        let cell = match kind {
            "lstm" => Cell::Lstm,
            "gru" => Cell::Gru,
            _ => match self.get("nonlinearity") {
                None => Cell::RnnTanh,
                Some(toml::Value::String(s)) if s == "tanh" => Cell::RnnTanh,
                Some(toml::Value::String(s)) if s == "relu" => Cell::RnnRelu,
                Some(v) => return self.err(format!("'nonlinearity' must be \"tanh\" or \"relu\", got {v}")),
            },
        };
        let output = match self.get("output") {
            None => RecurrentOutput::Sequence,
            Some(toml::Value::String(s)) if s == "sequence" => RecurrentOutput::Sequence,
            Some(toml::Value::String(s)) if s == "last" => RecurrentOutput::Last,
            Some(v) => return self.err(format!("'output' must be \"sequence\" or \"last\", got {v}")),
        };
        let spec = RecurrentSpec {
            cell,
            hidden_size: self.usize("hidden_size", None)?,
            num_layers: self.usize("num_layers", Some(1))?,
            bias: self.bool("bias", true)?,
            bidirectional: self.bool("bidirectional", false)?,
            dropout: self.float("dropout", 0.0)?,
            output,
        };
        if !(0.0..1.0).contains(&spec.dropout) {
            return self.err(format!("'dropout' must be in [0, 1), got {}", spec.dropout));
        }
        Ok(LayerSpec::Recurrent(spec))
    }
    fn batchnorm(&mut self, spatial: bool) -> Result<LayerSpec> {
        let eps = self.float("eps", 1e-5)?;
        let momentum = self.float("momentum", 0.1)?;
        if eps <= 0.0 || !(0.0..=1.0).contains(&momentum) {
            return self.err("'eps' must be positive and 'momentum' in [0, 1]");
        }
        Ok(if spatial {
            LayerSpec::BatchNorm2d { eps, momentum }
        } else {
            LayerSpec::BatchNorm1d { eps, momentum }
        })
    }
    fn residual(&mut self) -> Result<LayerSpec> {
        let body = self.stack("body")?;
        if body.is_empty() {
            return self.err("needs a non-empty body: [[layer.body]] tables");
        }
        let shortcut = Some(self.stack("shortcut")?).filter(|s| !s.is_empty());
        Ok(LayerSpec::Residual { body, shortcut })
    }
    /// A nested list of layers, `[[layer.KEY]]` (empty when absent).
    fn stack(&mut self, key: &'static str) -> Result<Vec<LayerSpec>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(j, v)| match v {
                    toml::Value::Table(t) => {
                        let base = self.ctx.rsplit_once(" (").map_or(self.ctx.as_str(), |(b, _)| b);
                        parse_layer(t, format!("{base}.{key}.{j}"))
                    }
                    _ => self.err(format!("'{key}' must be a list of [[layer.{key}]] tables")),
                })
                .collect(),
            Some(v) => self.err(format!("'{key}' must be a list of [[layer.{key}]] tables, got {v}")),
        }
    }
    /// A probability key in [0, 1) (PyTorch's dropout arguments).
    fn probability(&mut self, key: &'static str, default: f64) -> Result<f64> {
        let p = self.float(key, default)?;
        if !(0.0..1.0).contains(&p) {
            return self.err(format!("'{key}' must be in [0, 1), got {p}"));
        }
        Ok(p)
    }
    fn attention(&mut self) -> Result<LayerSpec> {
        Ok(LayerSpec::MultiheadAttention {
            num_heads: self.usize("num_heads", None)?,
            dropout: self.probability("dropout", 0.0)?,
            bias: self.bool("bias", true)?,
            causal: self.bool("causal", false)?,
        })
    }
    fn encoder(&mut self) -> Result<LayerSpec> {
        let activation = match self.get("activation") {
            None => "relu".to_string(),
            Some(toml::Value::String(s)) if ENCODER_ACTIVATIONS.contains(&s.as_str()) => s.clone(),
            Some(v) => return self.err(format!("'activation' must be \"relu\" or \"gelu\", got {v}")),
        };
        let spec = EncoderSpec {
            nhead: self.usize("nhead", None)?,
            dim_feedforward: self.usize("dim_feedforward", Some(2048))?,
            dropout: self.probability("dropout", 0.1)?,
            activation,
            layer_norm_eps: self.float("layer_norm_eps", 1e-5)?,
            norm_first: self.bool("norm_first", false)?,
        };
        if spec.layer_norm_eps <= 0.0 {
            return self.err("'layer_norm_eps' must be positive");
        }
        Ok(LayerSpec::TransformerEncoderLayer(spec))
    }
    fn layernorm(&mut self) -> Result<LayerSpec> {
        let normalized_shape = match self.get("normalized_shape") {
            None => None,
            Some(toml::Value::Integer(_)) => Some(vec![self.usize("normalized_shape", None)?]),
            Some(toml::Value::Array(a)) if !a.is_empty() => Some(
                a.iter()
                    .map(|v| match v.as_integer() {
                        Some(i) if i > MAX_DIM as i64 => self.err(too_large("normalized_shape", i)),
                        Some(i) if i > 0 => Ok(i as usize),
                        _ => self.err("'normalized_shape' must be a positive integer or a list of them"),
                    })
                    .collect::<Result<Vec<usize>>>()?,
            ),
            Some(v) => {
                return self.err(format!(
                    "'normalized_shape' must be a positive integer or a list of them, got {v}"
                ))
            }
        };
        let eps = self.float("eps", 1e-5)?;
        if eps <= 0.0 {
            return self.err("'eps' must be positive");
        }
        Ok(LayerSpec::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine: self.bool("elementwise_affine", true)?,
        })
    }
}

/// Reads one layer type's keys from its model-file table.
type ReadLayer = fn(&mut Keys<'_>) -> Result<LayerSpec>;

/// Every model-file layer type besides the activations (which the
/// `activations!` table declares), under PyTorch's class names: the one list
/// the reader dispatches on and its "unknown layer type" message names.
const LAYER_TYPES: &[(&str, ReadLayer)] = &[
    ("Linear", |k| k.linear()),
    ("Conv2d", |k| k.conv2d()),
    ("MaxPool2d", |k| Ok(LayerSpec::MaxPool2d(k.pool()?))),
    ("AvgPool2d", |k| Ok(LayerSpec::AvgPool2d(k.pool()?))),
    ("Flatten", |_| Ok(LayerSpec::Flatten)),
    ("Dropout", |k| k.dropout()),
    ("BatchNorm1d", |k| k.batchnorm(false)),
    ("BatchNorm2d", |k| k.batchnorm(true)),
    ("LayerNorm", |k| k.layernorm()),
    ("Residual", |k| k.residual()),
    ("RNN", |k| k.recurrent("rnn")),
    ("LSTM", |k| k.recurrent("lstm")),
    ("GRU", |k| k.recurrent("gru")),
    ("MultiheadAttention", |k| k.attention()),
    ("TransformerEncoderLayer", |k| k.encoder()),
];

fn parse_layer(table: &Table, ctx: String) -> Result<LayerSpec> {
    let Some(toml::Value::String(ty)) = table.get("type") else {
        return Err(Error::Spec(format!("{ctx}: missing string key 'type'")));
    };
    let mut k = Keys {
        table,
        ctx: format!("{ctx} ({ty})"),
        used: Vec::new(),
    };
    let spec = match LAYER_TYPES.iter().find(|(name, _)| name.eq_ignore_ascii_case(ty)) {
        Some((_, read)) => read(&mut k)?,
        None => match Activation::ALL.iter().find(|a| a.name().eq_ignore_ascii_case(ty)) {
            Some(a) => LayerSpec::Activation(a.read_args(|key| k.get(key)).or_else(|e| k.err(e))?),
            None => {
                let known: Vec<&str> = LAYER_TYPES.iter().map(|(name, _)| *name).collect();
                return Err(Error::Spec(format!(
                    "{ctx}: unknown layer type '{ty}' (known: {}, {})",
                    known.join(", "),
                    Activation::names()
                )));
            }
        },
    };
    k.finish()?;
    Ok(spec)
}

/// A TOML error as ``FILE:LINE:COLUMN: [label: ]`the line`: what is wrong``, so that
/// the message shows the offending key (serde's own message says only what it
/// expected). `label` is a kind of error such as "invalid TOML".
pub fn toml_error(source: &str, text: &str, e: &toml::de::Error, label: Option<&str>) -> String {
    let mut parts = vec![source.to_string()];
    if let Some(span) = e.span() {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_no = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        parts[0] = format!("{source}:{line_no}:{column}");
        parts.extend(label.map(str::to_string));
        let line = text[line_start..line_end].trim();
        if !line.is_empty() {
            parts.push(format!("`{line}`"));
        }
    } else {
        parts.extend(label.map(str::to_string));
    }
    parts.push(e.message().trim().replace('\n', "; "));
    parts.join(": ")
}

impl ModelSpec {
    /// Parse model TOML; `source` names the file in error messages.
    pub fn parse(text: &str, source: &str) -> Result<ModelSpec> {
        let doc: Table =
            toml::from_str(text).map_err(|e| Error::Spec(toml_error(source, text, &e, Some("invalid TOML"))))?;
        for key in doc.keys() {
            if key != "input" && key != "layer" {
                return Err(Error::Spec(format!(
                    "{source}: unknown top-level key '{key}' (expected 'input' and [[layer]] tables)"
                )));
            }
        }
        let input = match doc.get("input") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(i) if *i > 0 => Ok(*i as usize),
                    _ => Err(Error::Spec(format!(
                        "{source}: 'input' must be a list of positive integers"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(Error::Spec(format!(
                    "{source}: missing 'input', the shape of one sample (e.g. input = [1, 28, 28])"
                )))
            }
        };
        check_input(&input).map_err(|e| Error::Spec(format!("{source}: {e}")))?;
        let layers = match doc.get("layer") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    toml::Value::Table(t) => parse_layer(t, format!("{source}: layer {i}")),
                    _ => Err(Error::Spec(format!("{source}: layer {i} is not a table"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(Error::Spec(format!("{source}: no [[layer]] tables"))),
        };
        Ok(ModelSpec { input, layers })
    }

    /// A built-in preset (`mlp`, `mlp3`, `lenet5`).
    pub fn preset(name: &str) -> Option<ModelSpec> {
        PRESETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, text)| ModelSpec::parse(text, &format!("preset {n}")).expect("presets parse"))
    }

    /// Replace every activation layer with `act` (the CLI's `--activation`).
    pub fn with_activation(mut self, act: Activation) -> ModelSpec {
        for l in &mut self.layers {
            if let LayerSpec::Activation(a) = l {
                *a = act;
            }
        }
        self
    }

    /// Set every Dropout layer's probability (the CLI's `--dropout`); with no Dropout layer,
    /// insert one after each hidden activation.
    pub fn with_dropout(mut self, p: f64) -> ModelSpec {
        if self.layers.iter().any(|l| matches!(l, LayerSpec::Dropout(_))) {
            for l in &mut self.layers {
                if let LayerSpec::Dropout(q) = l {
                    *q = p;
                }
            }
            return self;
        }
        let mut out = Vec::with_capacity(self.layers.len() * 2);
        for l in self.layers {
            let act = matches!(l, LayerSpec::Activation(_));
            out.push(l);
            if act {
                out.push(LayerSpec::Dropout(p));
            }
        }
        self.layers = out;
        self
    }

    /// Build the network, checking every layer's input shape first. Models
    /// with more than [`MAX_PARAMETERS`] parameters and buffers are refused.
    pub fn build(&self, opts: BuildOptions) -> Result<Sequential> {
        self.build_with_limit(opts, MAX_PARAMETERS)
    }

    /// Like [`build`](Self::build) but refusing models with more than
    /// `max_parameters` parameters and buffers. Every layer's sizes are
    /// checked *before* its tensors are allocated, so a hostile file costs an
    /// error message, not memory.
    pub fn build_with_limit(&self, opts: BuildOptions, max_parameters: usize) -> Result<Sequential> {
        check_input(&self.input).map_err(Error::Spec)?;
        let mut b = Builder {
            rng: gradflow::seeded_rng(opts.seed),
            allocated: 0,
            limit: max_parameters,
            opts,
        };
        Ok(b.stack(&self.layers, &self.input, "")?.0)
    }
}

/// The state of one [`ModelSpec::build`]: weights drawn in layer order, nested
/// lists included, and the parameters allocated so far.
struct Builder {
    rng: ChaCha8Rng,
    allocated: usize,
    limit: usize,
    opts: BuildOptions,
}

impl Builder {
    /// The layers on a per-sample `input`, and their output shape; errors name
    /// the layer by its path (`layer 2`, `layer 2.body.0`).
    fn stack(&mut self, layers: &[LayerSpec], input: &[usize], path: &str) -> Result<(Sequential, Vec<usize>)> {
        let mut shape = input.to_vec();
        let mut net = Sequential::new();
        for (i, l) in layers.iter().enumerate() {
            let ctx = |msg: String| Error::Spec(format!("layer {path}{i} ({}): {msg}", l.kind()));
            check_layer_sizes(l).map_err(ctx)?;
            check_input_rank(l, &shape).map_err(ctx)?;
            self.allocated = budget(l, &shape, self.allocated, self.limit).map_err(ctx)?;
            let layer = match l {
                LayerSpec::Residual { body, shortcut } => {
                    let (body, _) = self.stack(body, &shape, &format!("{path}{i}.body."))?;
                    let mut block = Residual::new(body);
                    if let Some(s) = shortcut {
                        block = block.with_shortcut(self.stack(s, &shape, &format!("{path}{i}.shortcut."))?.0);
                    }
                    Box::new(block)
                }
                _ => l.instantiate(&shape, gain_after(layers, i), self.opts, &mut self.rng),
            };
            shape = layer.output_shape(&shape).map_err(|e| ctx(e.to_string()))?;
            if elements(&shape).is_none_or(|n| n > MAX_SAMPLE_ELEMENTS) {
                return Err(ctx(format!(
                    "output shape {shape:?} has more than {MAX_SAMPLE_ELEMENTS} values per sample"
                )));
            }
            net.layers.push(layer);
        }
        Ok((net, shape))
    }
}

/// The init gain for layer `i` of `layers`: that of the activation that
/// follows it (1 when another weighted layer or nothing comes first).
fn gain_after(layers: &[LayerSpec], i: usize) -> f64 {
    layers[i + 1..]
        .iter()
        .find_map(|n| match n {
            LayerSpec::Activation(a) => Some(a.gain()),
            LayerSpec::Linear { .. }
            | LayerSpec::Conv2d { .. }
            | LayerSpec::Recurrent(_)
            | LayerSpec::MultiheadAttention { .. }
            | LayerSpec::TransformerEncoderLayer(_) => Some(1.0),
            _ => None,
        })
        .unwrap_or(1.0)
}

impl ModelSpec {
    /// The per-sample output shape, or the first layer that does not fit.
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        let net = self.build(BuildOptions {
            init: Init::Zeros,
            ..Default::default()
        })?;
        net.infer_shapes(&self.input).map(|mut s| s.pop().unwrap_or_default())
    }

    /// The model as TOML in the same format it was read from (for `RUN_DIR/model.toml`).
    pub fn to_toml(&self) -> String {
        let mut s = format!("input = {:?}\n", self.input);
        write_stack(&mut s, "layer", &self.layers);
        s
    }
}

/// `layers` as `[[PATH]]` tables, nested lists as `[[PATH.body]]` after their block.
fn write_stack(s: &mut String, path: &str, layers: &[LayerSpec]) {
    for l in layers {
        let _ = writeln!(s, "\n[[{path}]]\ntype = \"{}\"", l.kind());
        l.write_keys(s);
        if let LayerSpec::Residual { body, shortcut } = l {
            write_stack(s, &format!("{path}.body"), body);
            write_stack(s, &format!("{path}.shortcut"), shortcut.as_deref().unwrap_or_default());
        }
    }
}

/// A size as a model file writes it: `5`, or `[5, 3]` when the two differ.
fn pair_text((a, b): (usize, usize)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("[{a}, {b}]")
    }
}

/// Checks that a weighted layer gets an input of the rank it needs (and, for
/// a convolution, channels its groups divide; for attention, a width its heads
/// divide), before any size arithmetic.
fn check_input_rank(l: &LayerSpec, shape: &[usize]) -> std::result::Result<(), String> {
    match l {
        LayerSpec::Linear { .. } if shape.len() > 2 => Err(format!(
            "expects a flat input, gets shape {shape:?} (add a Flatten layer before it)"
        )),
        LayerSpec::Recurrent(_) | LayerSpec::MultiheadAttention { .. } | LayerSpec::TransformerEncoderLayer(_)
            if shape.len() != 2 =>
        {
            Err(format!(
                "expects a sequence [steps, features], gets shape {shape:?} (declare input = [T, F])"
            ))
        }
        LayerSpec::MultiheadAttention { num_heads: h, .. }
        | LayerSpec::TransformerEncoderLayer(EncoderSpec { nhead: h, .. })
            if !shape[1].is_multiple_of(*h) =>
        {
            Err(format!(
                "the embedding width {} (the input's last dimension) is not divisible by {} heads",
                shape[1], h
            ))
        }
        // Specs built in code skip the parser: the constructors' other refusals, as messages.
        LayerSpec::MultiheadAttention { dropout: p, .. }
        | LayerSpec::TransformerEncoderLayer(EncoderSpec { dropout: p, .. })
            if !(0.0..1.0).contains(p) =>
        {
            Err(format!("'dropout' must be in [0, 1), got {p}"))
        }
        LayerSpec::TransformerEncoderLayer(t) if !ENCODER_ACTIVATIONS.contains(&t.activation.as_str()) => Err(format!(
            "'activation' must be \"relu\" or \"gelu\", got \"{}\"",
            t.activation
        )),
        LayerSpec::Conv2d { .. } if shape.len() != 3 => {
            Err(format!("expects [channels, height, width] input, gets shape {shape:?}"))
        }
        LayerSpec::Conv2d {
            out_channels, params, ..
        } if !shape[0].is_multiple_of(params.groups) || !out_channels.is_multiple_of(params.groups) => Err(format!(
            "{} input and {out_channels} output channels are not divisible by groups = {}",
            shape[0], params.groups
        )),
        LayerSpec::LayerNorm {
            normalized_shape: Some(dims),
            ..
        } if !shape.ends_with(dims) => Err(format!(
            "normalized_shape {dims:?} is not the trailing part of input shape {shape:?}"
        )),
        _ => Ok(()),
    }
}

/// Adds layer `l`'s allocation on input `shape` to `allocated`, or explains
/// why that would exceed `limit`.
fn budget(l: &LayerSpec, shape: &[usize], allocated: usize, limit: usize) -> std::result::Result<usize, String> {
    match layer_allocation(l, shape).and_then(|n| Some((n, allocated.checked_add(n)?))) {
        Some((_, total)) if total <= limit => Ok(total),
        Some((n, _)) => Err(format!(
            "{n} parameters on input {shape:?} would make the model larger than the limit of {limit}"
        )),
        None => Err(format!(
            "its parameter count on input {shape:?} overflows (the limit is {limit})"
        )),
    }
}

fn write_extras(s: &mut String, bias: bool, l1: Option<f64>, l2: Option<f64>, init: Option<Init>) {
    if !bias {
        s.push_str("bias = false\n");
    }
    if let Some(v) = l1 {
        let _ = writeln!(s, "l1 = {v:?}");
    }
    if let Some(v) = l2 {
        let _ = writeln!(s, "l2 = {v:?}");
    }
    if let Some(i) = init {
        let _ = writeln!(s, "init = \"{}\"", i.name());
    }
}

fn write_layernorm(s: &mut String, dims: Option<&[usize]>, eps: f64, affine: bool) -> std::fmt::Result {
    if let Some(dims) = dims {
        writeln!(s, "normalized_shape = {dims:?}")?;
    }
    writeln!(s, "eps = {eps:?}\nelementwise_affine = {affine}")
}

impl RecurrentSpec {
    /// The layer's constructor arguments on `input_size` features per step.
    pub fn config(&self, input_size: usize) -> RecurrentConfig {
        RecurrentConfig {
            cell: self.cell,
            input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bias: self.bias,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
            output: self.output,
        }
    }
}

fn write_recurrent(s: &mut String, r: &RecurrentSpec) -> std::fmt::Result {
    if r.cell == Cell::RnnRelu {
        s.push_str("nonlinearity = \"relu\"\n");
    }
    writeln!(
        s,
        "hidden_size = {}\nnum_layers = {}\nbias = {}\nbidirectional = {}\ndropout = {:?}\noutput = \"{}\"",
        r.hidden_size,
        r.num_layers,
        r.bias,
        r.bidirectional,
        r.dropout,
        r.output.name()
    )
}

/// The keys of the attention layers; a Residual has none (`write_stack` writes its lists).
fn write_attention(s: &mut String, l: &LayerSpec) -> std::fmt::Result {
    match l {
        LayerSpec::MultiheadAttention {
            num_heads,
            dropout,
            bias,
            causal,
        } => writeln!(
            s,
            "num_heads = {num_heads}\ndropout = {dropout:?}\nbias = {bias}\ncausal = {causal}"
        ),
        LayerSpec::TransformerEncoderLayer(t) => writeln!(
            s,
            "nhead = {}\ndim_feedforward = {}\ndropout = {:?}\nactivation = \"{}\"\nlayer_norm_eps = {:?}\nnorm_first = {}",
            t.nhead, t.dim_feedforward, t.dropout, t.activation, t.layer_norm_eps, t.norm_first
        ),
        LayerSpec::Residual { .. } => Ok(()),
        _ => unreachable!("write_keys writes the other layers"),
    }
}

impl LayerSpec {
    /// This layer's keys as a model file writes them (the reader takes them back).
    fn write_keys(&self, s: &mut String) {
        let _ = match self {
            LayerSpec::Linear {
                out_features,
                bias,
                l1,
                l2,
                init,
            } => {
                let _ = writeln!(s, "out_features = {out_features}");
                write_extras(s, *bias, *l1, *l2, *init);
                Ok(())
            }
            LayerSpec::Conv2d {
                out_channels,
                kernel_size,
                params: p,
                bias,
                l1,
                l2,
                init,
            } => {
                let _ = writeln!(
                    s,
                    "out_channels = {out_channels}\nkernel_size = {}\nstride = {}\npadding = {}\ndilation = {}\ngroups = {}",
                    pair_text(*kernel_size),
                    pair_text(p.stride),
                    pair_text(p.padding),
                    pair_text(p.dilation),
                    p.groups
                );
                write_extras(s, *bias, *l1, *l2, *init);
                Ok(())
            }
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => writeln!(
                s,
                "kernel_size = {}\nstride = {}\npadding = {}",
                pair_text(p.kernel),
                pair_text(p.stride),
                pair_text(p.padding)
            ),
            LayerSpec::Flatten => Ok(()),
            LayerSpec::Dropout(p) => writeln!(s, "p = {p:?}"),
            LayerSpec::BatchNorm1d { eps, momentum } | LayerSpec::BatchNorm2d { eps, momentum } => {
                writeln!(s, "eps = {eps:?}\nmomentum = {momentum:?}")
            }
            LayerSpec::LayerNorm {
                normalized_shape,
                eps,
                elementwise_affine,
            } => write_layernorm(s, normalized_shape.as_deref(), *eps, *elementwise_affine),
            LayerSpec::Activation(a) => a
                .args()
                .into_iter()
                .filter_map(|(key, value)| Some((key, value.to_toml()?)))
                .try_for_each(|(key, text)| writeln!(s, "{key} = {text}")),
            LayerSpec::Recurrent(r) => write_recurrent(s, r),
            other => write_attention(s, other),
        };
    }

    /// The layer, on a per-sample input of `shape` (already checked to fit),
    /// drawing its weights from `rng` for an activation of gain `gain` after it.
    fn instantiate(&self, shape: &[usize], gain: f64, opts: BuildOptions, rng: &mut ChaCha8Rng) -> Box<dyn Module> {
        let weight_init = |init: &Option<Init>| {
            let init = init.unwrap_or(opts.init);
            (init, crate::init::gain_for(init, gain))
        };
        match self {
            LayerSpec::Linear {
                out_features,
                bias,
                l1,
                l2,
                init,
            } => {
                let (init, gain) = weight_init(init);
                let linear = Linear::new(shape[shape.len() - 1], *out_features)
                    .bias(*bias)
                    .init(init)
                    .gain(gain);
                let mut linear = linear.dtype(opts.dtype).build(rng);
                (linear.l1, linear.l2) = (*l1, *l2);
                Box::new(linear)
            }
            LayerSpec::Conv2d {
                out_channels,
                kernel_size,
                params,
                bias,
                l1,
                l2,
                init,
            } => {
                let (init, gain) = weight_init(init);
                let conv = Conv2d::new(shape[0], *out_channels, *kernel_size).params(*params);
                let mut conv = conv.bias(*bias).init(init).gain(gain).dtype(opts.dtype).build(rng);
                (conv.l1, conv.l2) = (*l1, *l2);
                Box::new(conv)
            }
            LayerSpec::MaxPool2d(p) => Box::new(MaxPool2d(*p)),
            LayerSpec::AvgPool2d(p) => Box::new(AvgPool2d(*p)),
            LayerSpec::Flatten => Box::new(Flatten),
            LayerSpec::Dropout(p) => Box::new(Dropout(*p)),
            LayerSpec::BatchNorm1d { .. } | LayerSpec::BatchNorm2d { .. } | LayerSpec::LayerNorm { .. } => {
                self.instantiate_norm(shape, opts.dtype)
            }
            LayerSpec::Activation(a) => Box::new(*a),
            LayerSpec::Recurrent(r) => Box::new(r.config(shape[1]).build(opts.dtype, rng)),
            LayerSpec::MultiheadAttention { .. } | LayerSpec::TransformerEncoderLayer(_) => {
                self.instantiate_attention(shape[1], opts.dtype, rng)
            }
            LayerSpec::Residual { .. } => unreachable!("Residual blocks are built by Builder::stack"),
        }
    }

    /// Attention or an encoder block on `e` features per step, heads already checked to divide `e`.
    fn instantiate_attention(&self, e: usize, dtype: DType, rng: &mut ChaCha8Rng) -> Box<dyn Module> {
        let checked = "check_input_rank checks the heads and the parser the rest";
        match self {
            LayerSpec::MultiheadAttention {
                num_heads,
                dropout,
                bias,
                causal,
            } => Box::new(
                MultiheadAttention::new(e, *num_heads)
                    .dropout(*dropout)
                    .bias(*bias)
                    .causal(*causal)
                    .dtype(dtype)
                    .build(rng)
                    .expect(checked),
            ),
            LayerSpec::TransformerEncoderLayer(t) => Box::new(
                TransformerEncoderLayer::new(e, t.nhead)
                    .dim_feedforward(t.dim_feedforward)
                    .dropout(t.dropout)
                    .activation(&t.activation)
                    .layer_norm_eps(t.layer_norm_eps)
                    .norm_first(t.norm_first)
                    .dtype(dtype)
                    .build(rng)
                    .expect(checked),
            ),
            _ => unreachable!("only attention layers"),
        }
    }

    /// A normalization layer on a per-sample input of `shape`.
    fn instantiate_norm(&self, shape: &[usize], dtype: DType) -> Box<dyn Module> {
        match self {
            LayerSpec::BatchNorm1d { eps, momentum } => {
                Box::new(BatchNorm::new_1d(shape[0]).eps(*eps).momentum(*momentum).dtype(dtype))
            }
            LayerSpec::BatchNorm2d { eps, momentum } => {
                Box::new(BatchNorm::new_2d(shape[0]).eps(*eps).momentum(*momentum).dtype(dtype))
            }
            LayerSpec::LayerNorm {
                eps,
                elementwise_affine,
                ..
            } => Box::new(
                LayerNorm::new(&self.layernorm_shape(shape))
                    .eps(*eps)
                    .elementwise_affine(*elementwise_affine)
                    .dtype(dtype),
            ),
            _ => unreachable!("only normalization layers"),
        }
    }

    /// A LayerNorm's normalized shape on input `shape`: its own, or the last dimension.
    fn layernorm_shape(&self, shape: &[usize]) -> Vec<usize> {
        match self {
            LayerSpec::LayerNorm {
                normalized_shape: Some(dims),
                ..
            } => dims.clone(),
            _ => shape[shape.len() - 1..].to_vec(),
        }
    }

    /// The PyTorch class name.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Linear { .. } => "Linear",
            LayerSpec::Conv2d { .. } => "Conv2d",
            LayerSpec::MaxPool2d(_) => "MaxPool2d",
            LayerSpec::AvgPool2d(_) => "AvgPool2d",
            LayerSpec::Flatten => "Flatten",
            LayerSpec::Dropout(_) => "Dropout",
            LayerSpec::BatchNorm1d { .. } => "BatchNorm1d",
            LayerSpec::BatchNorm2d { .. } => "BatchNorm2d",
            LayerSpec::LayerNorm { .. } => "LayerNorm",
            LayerSpec::Residual { .. } => "Residual",
            LayerSpec::Activation(a) => a.name(),
            LayerSpec::Recurrent(r) => match r.cell {
                Cell::RnnTanh | Cell::RnnRelu => "RNN",
                Cell::Lstm => "LSTM",
                Cell::Gru => "GRU",
            },
            LayerSpec::MultiheadAttention { .. } => "MultiheadAttention",
            LayerSpec::TransformerEncoderLayer(_) => "TransformerEncoderLayer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Approximate;
    use crate::module::Module;

    #[test]
    fn presets_build_with_pytorch_names() {
        let net = ModelSpec::preset("lenet5")
            .unwrap()
            .build(BuildOptions::default())
            .unwrap();
        let names: Vec<String> = net.parameters().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names[..4], ["0.weight", "0.bias", "3.weight", "3.bias"]);
        assert_eq!(net.parameters()[0].tensor.shape(), &[6, 1, 5, 5]);
        let mlp = ModelSpec::preset("mlp")
            .unwrap()
            .build(BuildOptions::default())
            .unwrap();
        assert_eq!(mlp.num_parameters(), 784 * 800 + 800 + 800 * 10 + 10);
        assert_eq!(ModelSpec::preset("MLP3").unwrap().output_shape().unwrap(), vec![10]);
    }

    #[test]
    fn shape_mismatch_names_layer_and_shapes() {
        let text = "input = [1, 28, 28]\n[[layer]]\ntype = \"Linear\"\nout_features = 10\n";
        let e = ModelSpec::parse(text, "m.toml")
            .unwrap()
            .build(BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "layer 0 (Linear): expects a flat input, gets shape [1, 28, 28] (add a Flatten layer before it)"
        );
        let text = "input = [1, 4, 4]\n[[layer]]\ntype = \"Conv2d\"\nout_channels = 2\nkernel_size = 5\n";
        let e = ModelSpec::parse(text, "m.toml")
            .unwrap()
            .build(BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("layer 0 (Conv2d): kernel 5x5 does not fit input [1, 4, 4]"),
            "{e}"
        );
    }

    #[test]
    fn parse_errors_are_specific() {
        let bad = [
            (
                "input = [1]\n[[layer]]\ntype = \"Dense\"\n",
                "m.toml: layer 0: unknown layer type 'Dense'",
            ),
            (
                "input = [1]\n[[layer]]\ntype = \"Linear\"\n",
                "m.toml: layer 0 (Linear): missing key 'out_features'",
            ),
            (
                "input = [1]\n[[layer]]\ntype = \"Linear\"\nout_features = 2\nunits = 3\n",
                "m.toml: layer 0 (Linear): unknown key 'units'",
            ),
            ("[[layer]]\ntype = \"ReLU\"\n", "m.toml: missing 'input'"),
            (
                "input = [1]\n[[layer]]\ntype = \"Dropout\"\np = 1.5\n",
                "m.toml: layer 0 (Dropout): 'p' must be in [0, 1)",
            ),
            ("input = [", "m.toml:1:10: invalid TOML: "),
            (
                "input = [1]\nlayer = 3 3\n",
                "m.toml:2:11: invalid TOML: `layer = 3 3`: ",
            ),
        ];
        for (text, want) in bad {
            let e = ModelSpec::parse(text, "m.toml").unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
    }

    /// The writer's text is the model file format runs have always saved: a
    /// change here would show in every run directory's `model.toml`.
    #[test]
    fn toml_text_is_unchanged() {
        let text = r#"input = [1, 28, 28]

[[layer]]
type = "Conv2d"
out_channels = 6
kernel_size = [5, 3]
stride = 1
padding = [2, 1]
dilation = 1
groups = 1
bias = false
l1 = 1e-5
init = "he"

[[layer]]
type = "MaxPool2d"
kernel_size = 2
stride = 2
padding = 0

[[layer]]
type = "Flatten"

[[layer]]
type = "Linear"
out_features = 10
l2 = 0.01

[[layer]]
type = "BatchNorm1d"
eps = 1e-5
momentum = 0.1

[[layer]]
type = "LeakyReLU"
negative_slope = 0.2

[[layer]]
type = "GELU"
approximate = "tanh"

[[layer]]
type = "GELU"

[[layer]]
type = "Dropout"
p = 0.5

[[layer]]
type = "Hardtanh"
min_val = -2.0
max_val = 2.0
"#;
        let spec = ModelSpec::parse(text, "m.toml").unwrap();
        assert_eq!(
            spec.layers[6],
            LayerSpec::Activation(Activation::GELU(Approximate::Tanh))
        );
        assert_eq!(spec.to_toml(), text);
    }

    #[test]
    fn layernorm_and_sequence_inputs() {
        let text = "input = [4, 6]\n[[layer]]\ntype = \"Linear\"\nout_features = 8\n[[layer]]\ntype = \"LayerNorm\"\n[[layer]]\ntype = \"LayerNorm\"\nnormalized_shape = [4, 8]\neps = 1e-3\nelementwise_affine = false\n";
        let spec = ModelSpec::parse(text, "m.toml").unwrap();
        assert_eq!(spec.output_shape().unwrap(), vec![4, 8]);
        let net = spec.build(BuildOptions::default()).unwrap();
        let names: Vec<(String, Vec<usize>)> = net
            .parameters()
            .iter()
            .map(|p| (p.name.clone(), p.tensor.shape().to_vec()))
            .collect();
        assert_eq!(names[2], ("1.weight".to_string(), vec![8]));
        assert_eq!(names.len(), 4);
        assert_eq!(ModelSpec::parse(&spec.to_toml(), "again").unwrap(), spec);
        let bad = [
            (
                "normalized_shape = [4, 6]",
                "layer 1 (LayerNorm): normalized_shape [4, 6] is not the trailing part of input shape [4, 8]",
            ),
            (
                "normalized_shape = 0",
                "m.toml: layer 1 (LayerNorm): 'normalized_shape' must be a positive integer",
            ),
            (
                "normalized_shape = []",
                "m.toml: layer 1 (LayerNorm): 'normalized_shape' must be a positive integer or a list",
            ),
            ("eps = 0", "m.toml: layer 1 (LayerNorm): 'eps' must be positive"),
            (
                "elementwise_affine = 1",
                "m.toml: layer 1 (LayerNorm): 'elementwise_affine' must be true or false",
            ),
        ];
        for (line, want) in bad {
            let text = format!("input = [4, 6]\n[[layer]]\ntype = \"Linear\"\nout_features = 8\n[[layer]]\ntype = \"LayerNorm\"\n{line}\n");
            let e = ModelSpec::parse(&text, "m.toml")
                .and_then(|s| s.build(BuildOptions::default()))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
        let text = "input = [4, 6]\n[[layer]]\ntype = \"Linear\"\nout_features = 8\n[[layer]]\ntype = \"Linear\"\nout_features = 2\n";
        let spec = ModelSpec::parse(text, "m.toml").unwrap();
        assert_eq!(spec.output_shape().unwrap(), vec![4, 2]);
        let text = "input = [4, 6]\n[[layer]]\ntype = \"Linear\"\nout_features = 8\n[[layer]]\ntype = \"Linear\"\nin_features = 2\nout_features = 2\n";
        assert!(ModelSpec::parse(text, "m.toml").is_err());
    }

    const RES: &str = "input = [12]\n[[layer]]\ntype = \"Residual\"\n[[layer.body]]\ntype = \"Linear\"\nout_features = 12\n[[layer.body]]\ntype = \"ReLU\"\n";

    #[test]
    fn residual_names_round_trip_and_errors() {
        let text = format!("{RES}[[layer]]\ntype = \"Residual\"\n[[layer.body]]\ntype = \"Linear\"\nout_features = 4\n[[layer.body]]\ntype = \"Residual\"\n[[layer.body.body]]\ntype = \"Tanh\"\n[[layer.shortcut]]\ntype = \"Linear\"\nout_features = 4\nbias = false\n");
        let spec = ModelSpec::parse(&text, "m.toml").unwrap();
        assert_eq!(ModelSpec::parse(&spec.to_toml(), "again").unwrap(), spec);
        assert_eq!(spec.output_shape().unwrap(), vec![4]);
        let net = spec.build(BuildOptions::default()).unwrap();
        let names: Vec<String> = net.parameters().iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            names,
            [
                "0.body.0.weight",
                "0.body.0.bias",
                "1.body.0.weight",
                "1.body.0.bias",
                "1.shortcut.0.weight"
            ]
        );
        let bad = [
            (RES.replace("12\n[[layer.body]]", "5\n[[layer.body]]"), "layer 0 (Residual): the body maps [12] to [5], so x + body(x) does not fit: keep the shape, or add a [[layer.shortcut]]"),
            (format!("{RES}[[layer.shortcut]]\ntype = \"Linear\"\nout_features = 3\n"), "layer 0 (Residual): the body maps [12] to [12] but the shortcut to [3]"),
            (RES.replace("out_features = 12", "out_features = 12\nunits = 1"), "m.toml: layer 0.body.0 (Linear): unknown key 'units'"),
            (RES.replace("type = \"ReLU\"", "type = \"Dense\""), "m.toml: layer 0.body.1: unknown layer type 'Dense'"),
            (RES.replace("Linear\"\nout_features = 12", "Linear\"\nout_features = 12\n[[layer.body]]\ntype = \"Flatten\"\n[[layer.body]]\ntype = \"Conv2d\"\nout_channels = 1\nkernel_size = 1"), "layer 0.body.2 (Conv2d): expects [channels, height, width] input"),
            ("input = [2]\n[[layer]]\ntype = \"Residual\"\n".to_string(), "m.toml: layer 0 (Residual): needs a non-empty body"),
            ("input = [2]\n[[layer]]\ntype = \"Residual\"\nbody = 3\n".to_string(), "m.toml: layer 0 (Residual): 'body' must be a list of [[layer.body]] tables"),
        ];
        for (text, want) in bad {
            let e = ModelSpec::parse(&text, "m.toml")
                .and_then(|s| s.build(BuildOptions::default()))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
    }

    /// Every model file in the README parses and builds.
    #[test]
    fn readme_model_files_build() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("[[layer]]") && b.starts_with("input"))
            .collect();
        assert!(blocks.iter().any(|b| b.contains("Residual")));
        for b in blocks {
            let spec = ModelSpec::parse(b, "README.md").unwrap();
            spec.build(BuildOptions::default()).unwrap();
        }
    }

    #[test]
    fn recurrent_layers_parse_build_and_round_trip() {
        let text = "input = [6, 3]\n[[layer]]\ntype = \"GRU\"\nhidden_size = 4\nnum_layers = 2\nbidirectional = true\ndropout = 0.2\n\
                    [[layer]]\ntype = \"RNN\"\nnonlinearity = \"relu\"\nhidden_size = 5\nbias = false\noutput = \"last\"\n\
                    [[layer]]\ntype = \"Linear\"\nout_features = 2\n";
        let spec = ModelSpec::parse(text, "m.toml").unwrap();
        assert_eq!(spec, ModelSpec::parse(&spec.to_toml(), "again").unwrap());
        assert_eq!(spec.output_shape().unwrap(), vec![2]);
        let net = spec.build(BuildOptions::default()).unwrap();
        assert_eq!(net.parameters()[0].name, "0.weight_ih_l0");
        assert_eq!(net.parameters()[0].tensor.shape(), &[12, 3]);
        assert_eq!(net.parameters()[8].tensor.shape(), &[12, 8]);
        assert_eq!(net.parameters()[16].name, "1.weight_ih_l0");
        let lstm = ModelSpec::preset("lstm").unwrap();
        assert_eq!(lstm.output_shape().unwrap(), vec![10]);
        let n = lstm.build(BuildOptions::default()).unwrap().num_parameters();
        assert_eq!(n, 4 * 128 * (28 + 128 + 2) + 128 * 10 + 10);
    }

    #[test]
    fn attention_layers_parse_build_and_round_trip() {
        let text = "input = [5, 6]\n[[layer]]\ntype = \"Linear\"\nout_features = 8\n\
                    [[layer]]\ntype = \"MultiheadAttention\"\nnum_heads = 2\ncausal = true\n\
                    [[layer]]\ntype = \"TransformerEncoderLayer\"\nnhead = 4\ndim_feedforward = 16\nactivation = \"gelu\"\nnorm_first = true\n\
                    [[layer]]\ntype = \"Flatten\"\n[[layer]]\ntype = \"Linear\"\nout_features = 3\n";
        let spec = ModelSpec::parse(text, "m.toml").unwrap();
        assert_eq!(spec, ModelSpec::parse(&spec.to_toml(), "again").unwrap());
        assert_eq!(spec.output_shape().unwrap(), vec![3]);
        let LayerSpec::TransformerEncoderLayer(t) = &spec.layers[2] else {
            panic!()
        };
        assert_eq!(
            (t.dropout, t.layer_norm_eps, t.activation.as_str()),
            (0.1, 1e-5, "gelu")
        );
        let net = spec.build(BuildOptions::default()).unwrap();
        let names: Vec<String> = net.parameters().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names[2..6],
            [
                "1.in_proj_weight",
                "1.in_proj_bias",
                "1.out_proj.weight",
                "1.out_proj.bias"
            ]
        );
        assert_eq!(names[6], "2.self_attn.in_proj_weight");
        assert_eq!(names[17], "2.norm2.bias");
        // 6·8+8, attention 4·8·8+4·8, encoder: attention, 2·8·16+16+8, two LayerNorms, 40·3+3.
        let attention = 4 * 8 * 8 + 4 * 8;
        let want = 56 + attention + attention + 2 * 8 * 16 + 16 + 8 + 4 * 8 + 123;
        assert_eq!(net.num_parameters(), want);
    }

    #[test]
    fn attention_errors_name_the_layer_and_cause() {
        let head = "input = [4, 6]\n[[layer]]\ntype = \"TransformerEncoderLayer\"\n";
        let bad = [
            ("", "m.toml: layer 0 (TransformerEncoderLayer): missing key 'nhead'"),
            (
                "nhead = 2\nactivation = \"tanh\"\n",
                "m.toml: layer 0 (TransformerEncoderLayer): 'activation' must be \"relu\" or \"gelu\", got \"tanh\"",
            ),
            (
                "nhead = 2\ndropout = 1.0\n",
                "m.toml: layer 0 (TransformerEncoderLayer): 'dropout' must be in [0, 1)",
            ),
            (
                "nhead = 2\nlayer_norm_eps = 0\n",
                "m.toml: layer 0 (TransformerEncoderLayer): 'layer_norm_eps' must be positive",
            ),
            (
                "nhead = 2\nd_model = 6\n",
                "m.toml: layer 0 (TransformerEncoderLayer): unknown key 'd_model'",
            ),
        ];
        for (rest, want) in bad {
            let e = ModelSpec::parse(&format!("{head}{rest}"), "m.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
        let e = ModelSpec::parse(
            "input = [4, 6]\n[[layer]]\ntype = \"MultiheadAttention\"\nnum_heads = 4\n",
            "m.toml",
        )
        .unwrap()
        .build(BuildOptions::default())
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "layer 0 (MultiheadAttention): the embedding width 6 (the input's last dimension) is not divisible by 4 heads"
        );
        let e = ModelSpec::parse(
            "input = [24]\n[[layer]]\ntype = \"MultiheadAttention\"\nnum_heads = 2\n",
            "m.toml",
        )
        .unwrap()
        .build(BuildOptions::default())
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("layer 0 (MultiheadAttention): expects a sequence [steps, features], gets shape [24]"),
            "{e}"
        );
        // A spec built in code with a bad activation is refused, not a panic.
        let mut spec = ModelSpec::parse(&format!("{head}nhead = 2\n"), "m.toml").unwrap();
        if let LayerSpec::TransformerEncoderLayer(t) = &mut spec.layers[0] {
            t.activation = "swish".into();
        }
        let e = spec.build(BuildOptions::default()).unwrap_err().to_string();
        assert_eq!(
            e,
            "layer 0 (TransformerEncoderLayer): 'activation' must be \"relu\" or \"gelu\", got \"swish\""
        );
    }

    #[test]
    fn recurrent_errors_name_the_layer_and_cause() {
        let head = "input = [6, 3]\n[[layer]]\ntype = \"LSTM\"\n";
        let bad = [
            ("", "m.toml: layer 0 (LSTM): missing key 'hidden_size'"),
            (
                "hidden_size = 4\noutput = \"all\"\n",
                "m.toml: layer 0 (LSTM): 'output' must be \"sequence\" or \"last\"",
            ),
            (
                "hidden_size = 4\ndropout = 1.0\n",
                "m.toml: layer 0 (LSTM): 'dropout' must be in [0, 1)",
            ),
            (
                "hidden_size = 4\nnonlinearity = \"relu\"\n",
                "m.toml: layer 0 (LSTM): unknown key 'nonlinearity'",
            ),
        ];
        for (rest, want) in bad {
            let e = ModelSpec::parse(&format!("{head}{rest}"), "m.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
        let e = ModelSpec::parse(
            "input = [3]\n[[layer]]\ntype = \"RNN\"\nhidden_size = 2\nnonlinearity = \"sigmoid\"\n",
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'nonlinearity' must be \"tanh\" or \"relu\""), "{e}");
        let e = ModelSpec::parse(
            "input = [1, 28, 28]\n[[layer]]\ntype = \"GRU\"\nhidden_size = 2\n",
            "m.toml",
        )
        .unwrap()
        .build(BuildOptions::default())
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("layer 0 (GRU): expects a sequence [steps, features]"),
            "{e}"
        );
    }

    #[test]
    fn toml_round_trip() {
        for (name, _) in PRESETS {
            let spec = ModelSpec::preset(name).unwrap();
            let again = ModelSpec::parse(&spec.to_toml(), "round trip").unwrap();
            assert_eq!(spec, again);
        }
        let spec = ModelSpec::preset("mlp")
            .unwrap()
            .with_activation(Activation::Tanh)
            .with_dropout(0.3);
        assert!(spec.layers.contains(&LayerSpec::Activation(Activation::Tanh)));
        assert!(spec.layers.contains(&LayerSpec::Dropout(0.3)));
    }
}
