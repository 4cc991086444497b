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
//!
//! Each layer type is declared once, in its layer's file (see [`LayerDecl`]),
//! and registered by one line in the `layer_specs!` list below.

mod decl;
pub mod keys;

pub use decl::{BuildContext, LayerDecl, LayerInfo};
pub use keys::Keys;

use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::batchnorm::BatchNormSpec;
use crate::layers::conv::Conv2dSpec;
use crate::layers::layernorm::LayerNormSpec;
use crate::layers::linear::LinearSpec;
use crate::layers::recurrent::RecurrentSpec;
use crate::layers::residual::ResidualSpec;
use crate::layers::simple::{AvgPool2dSpec, DropoutSpec, FlattenSpec, MaxPool2dSpec};
use crate::layers::{Activation, Sequential};
use keys::Table;
use std::fmt::Write as _;

decl::layer_specs! {
    /// `nn.Linear(in, out_features, bias)`.
    Linear(LinearSpec),
    /// `nn.Conv2d(in, out_channels, kernel_size, stride, padding, dilation, groups, bias)`.
    Conv2d(Conv2dSpec),
    /// `nn.MaxPool2d(kernel_size, stride, padding)`.
    MaxPool2d(MaxPool2dSpec),
    /// `nn.AvgPool2d(kernel_size, stride, padding)`.
    AvgPool2d(AvgPool2dSpec),
    /// `nn.Flatten()`.
    Flatten(FlattenSpec),
    /// `nn.Dropout(p)`.
    Dropout(DropoutSpec),
    /// `nn.BatchNorm1d` or `nn.BatchNorm2d` (eps, momentum).
    BatchNorm(BatchNormSpec),
    /// `nn.LayerNorm(normalized_shape, eps, elementwise_affine)`.
    LayerNorm(LayerNormSpec),
    /// `y = x + body(x)`, or `shortcut(x) + body(x)`.
    Residual(ResidualSpec),
    /// `nn.RNN`, `nn.LSTM` or `nn.GRU` with `batch_first=True`.
    Recurrent(RecurrentSpec),
    /// Any activation (declared by the `activations!` table).
    Activation(Activation),
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
    pub dtype: gradflow::DType,
    /// Seed of the initial weights.
    pub seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            init: Init::PytorchDefault,
            dtype: gradflow::DType::F32,
            seed: 0,
        }
    }
}

/// The built-in presets, by name.
pub const PRESETS: [(&str, &str); 4] = [
    ("mlp", include_str!("../presets/mlp.toml")),
    ("mlp3", include_str!("../presets/mlp3.toml")),
    ("lenet5", include_str!("../presets/lenet5.toml")),
    ("lstm", include_str!("../presets/lstm.toml")),
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

/// Values per sample of `shape`, or `None` if that overflows `usize`.
pub fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Checks the per-sample input shape: every dimension positive and at most
/// [`MAX_DIM`], and at most [`MAX_SAMPLE_ELEMENTS`] values in all.
fn check_input(input: &[usize]) -> Result<()> {
    if input.is_empty() || input.iter().any(|&d| d == 0 || d > MAX_DIM) {
        return Err(Error::Spec(format!(
            "'input' must be a non-empty list of positive integers of at most {MAX_DIM}, got {input:?}"
        )));
    }
    match elements(input) {
        Some(n) if n <= MAX_SAMPLE_ELEMENTS => Ok(()),
        _ => Err(Error::Spec(format!(
            "'input' {input:?} has more than {MAX_SAMPLE_ELEMENTS} values per sample"
        ))),
    }
}

/// Reads one `[[layer]]` table; `ctx` names it in errors.
pub(crate) fn parse_layer(table: &Table, ctx: String) -> Result<LayerSpec> {
    LayerSpec::parse(table, ctx)
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
                if let LayerSpec::Dropout(d) = l {
                    d.p = p;
                }
            }
            return self;
        }
        let mut out = Vec::with_capacity(self.layers.len() * 2);
        for l in self.layers {
            let act = matches!(l, LayerSpec::Activation(_));
            out.push(l);
            if act {
                out.push(LayerSpec::Dropout(DropoutSpec { p }));
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
        check_input(&self.input)?;
        let mut cx = BuildContext::new(opts, max_parameters);
        Ok(cx.stack(&self.layers, &self.input, "")?.0)
    }
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

/// `layers` as `[[PATH]]` tables, nested lists as `[[PATH.KEY]]` after their block.
fn write_stack(s: &mut String, path: &str, layers: &[LayerSpec]) {
    for l in layers {
        let _ = writeln!(s, "\n[[{path}]]\ntype = \"{}\"", l.kind());
        l.decl().write(s);
        for (key, nested) in l.decl().nested() {
            write_stack(s, &format!("{path}.{key}"), nested);
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
        let readme = include_str!("../../../../README.md");
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
        assert!(spec.layers.contains(&LayerSpec::Dropout(DropoutSpec { p: 0.3 })));
    }
}
