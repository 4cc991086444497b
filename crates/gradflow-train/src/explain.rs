//! Backpropagation on paper: one forward and one backward pass through a
//! small network on one example, written out the way a textbook writes the
//! chain rule, so a learner can check each number by hand and then see that
//! the finite differences agree.
//!
//! Every number comes from gradflow itself (the model is built from a
//! [`ModelSpec`] in f64, layer outputs are recorded by the forward pass, and
//! intermediate gradients are kept by [`Tensor::backward_retain_all`]): this is
//! an explanation of what the library computes, not a second implementation
//! that could silently disagree with it.
//!
//! The default network is Matt Mazur's well-known worked example ("A Step by
//! Step Backpropagation Example", 2015) reduced to its first output: inputs
//! 0.05 and 0.10, weights 0.15 … 0.45, biases 0.35 and 0.60, target 0.01, so
//! a reader can lay the output beside that article.

use gradflow::{no_grad, DType, GradStore, Tensor};
use gradflow_nn::{Activation, BuildOptions, Ctx, Init, LayerSpec, ModelSpec, Module, Sequential};
use rand::Rng;
use serde::Serialize;
use std::fmt::Write as _;

/// Why an explanation could not be made, as one line for the user (bad model
/// file, wrong number of inputs...), never a panic.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The model file could not be read or parsed.
    #[error(transparent)]
    Spec(#[from] gradflow_nn::Error),
    /// The model parsed but could not be built.
    #[error("model: {0}")]
    Build(gradflow_nn::Error),
    /// The input is not a vector.
    #[error("explain needs a flat input (input = [n]), the model has input = {0:?}")]
    NotFlat(Vec<usize>),
    /// Two activations in a row, or an activation before the first Linear.
    #[error("layer {layer} ({name}): explain expects Linear layers, each followed by at most one activation")]
    LoneActivation {
        /// Index in the Sequential.
        layer: usize,
        /// The activation's name.
        name: &'static str,
    },
    /// Conv2d, Dropout, BatchNorm...: layers the chain rule below does not write out.
    #[error("layer {layer} ({kind}): explain handles only Linear and activation layers")]
    Unsupported {
        /// Index in the Sequential.
        layer: usize,
        /// The layer's class.
        kind: &'static str,
    },
    /// Nothing to differentiate.
    #[error("the model has no Linear layer")]
    NoLinear,
    /// Too many parameters to print one line each.
    #[error("the model has {0} parameters; explain prints every one, so it takes at most {MAX_PARAMETERS}")]
    TooManyParameters(usize),
    /// A value of `--input` or `--target` is not a finite number.
    #[error("{flag}: '{text}' is not a finite number")]
    NotANumber {
        /// The flag.
        flag: String,
        /// The value as given.
        text: String,
    },
    /// `--input` or `--target` has the wrong length.
    #[error("{flag} has {given} value{} but the model has {expected} {what}{}", plural(*.given), plural(*.expected))]
    WrongCount {
        /// The flag.
        flag: &'static str,
        /// Values given.
        given: usize,
        /// Values the model takes.
        expected: usize,
        /// `input` or `output`.
        what: &'static str,
    },
    /// The forward pass overflowed.
    #[error("the loss is {0}: the input or weights overflow")]
    NonFiniteLoss(f64),
    /// An engine error (shapes, dtypes).
    #[error(transparent)]
    Engine(#[from] gradflow::Error),
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

type EResult<T> = Result<T, ExplainError>;

/// The most parameters `explain` accepts: it prints a chain-rule line and a
/// finite-difference check for every one, which stops being readable long
/// before it stops being computable.
pub const MAX_PARAMETERS: usize = 200;

/// Step of the central finite difference. In f64 the truncation error (∝ h²)
/// and the rounding error (∝ ε/h) balance near 1e-5 … 1e-6.
pub const FD_STEP: f64 = 1e-6;

/// Width the text output keeps to, counted in bytes (so also in columns,
/// whatever the terminal or `awk` thinks a multi-byte character is).
pub const TEXT_WIDTH: usize = 80;

/// The default network: 2 inputs, 2 sigmoid hidden units, 1 sigmoid output.
pub const DEFAULT_MODEL: &str = r#"input = [2]
[[layer]]
type = "Linear"
out_features = 2
[[layer]]
type = "Sigmoid"
[[layer]]
type = "Linear"
out_features = 1
[[layer]]
type = "Sigmoid"
"#;

/// Mazur's weights for [`DEFAULT_MODEL`], by state-dict name.
const MAZUR_WEIGHTS: [(&str, &[f64]); 4] = [
    ("0.weight", &[0.15, 0.20, 0.25, 0.30]),
    ("0.bias", &[0.35, 0.35]),
    ("2.weight", &[0.40, 0.45]),
    ("2.bias", &[0.60]),
];
const MAZUR_INPUT: [f64; 2] = [0.05, 0.10];
const MAZUR_TARGET: [f64; 1] = [0.01];

/// What to explain. Every field is optional so the bare command shows the textbook example.
#[derive(Debug, Clone, Default)]
pub struct ExplainOptions {
    /// The model (Linear and activation layers, 1-D input); `None` for [`DEFAULT_MODEL`].
    pub model: Option<ModelSpec>,
    /// Seed of the weights (PyTorch's default init) and of a default input/target.
    /// `None` with the default model means Mazur's fixed weights.
    pub seed: Option<u64>,
    /// The example; defaults to Mazur's (default model) or seeded values in [-1, 1].
    pub input: Option<Vec<f64>>,
    /// The target; defaults to Mazur's 0.01 (default model) or seeded values in [0, 1].
    pub target: Option<Vec<f64>>,
}

/// One trainable scalar, with its gradient by backprop and by finite differences.
#[derive(Debug, Clone, Serialize)]
pub struct Parameter {
    /// Textbook name: w₁, w₂, … numbered row by row across layers, then b₁, b₂, …
    pub name: String,
    /// State-dict tensor it lives in (`0.weight`), so it can be found in PyTorch.
    pub tensor: String,
    /// Index inside that tensor (`[out, in]` for weights).
    pub index: Vec<usize>,
    /// Layer index in the Sequential.
    pub layer: usize,
    /// The node it multiplies (None for a bias).
    pub from: Option<String>,
    /// The pre-activation it feeds.
    pub to: String,
    /// Its value.
    pub value: f64,
    /// ∂L/∂parameter by backprop.
    pub grad: f64,
    /// ∂L/∂parameter by central finite difference.
    pub finite_difference: f64,
    /// |grad − finite_difference|.
    pub difference: f64,
}

/// One scalar of the computation: an input, a pre-activation z or an activation a.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Textbook name: x₁, z¹₁, a¹₁, …
    pub name: String,
    /// Layer that produced it (None for inputs).
    pub layer: Option<usize>,
    /// "input", "pre-activation" or "activation".
    pub kind: String,
    /// Its value in the forward pass.
    pub value: f64,
    /// ∂L/∂node, kept by the backward pass.
    pub grad: f64,
    /// ∂a/∂z for activations: the activation's local derivative at this unit.
    pub local_derivative: Option<f64>,
}

/// One line of working: `lhs = symbolic = numeric = value`.
#[derive(Debug, Clone, Serialize)]
pub struct Equation {
    /// What is computed (`∂L/∂w₅`).
    pub lhs: String,
    /// The rule in symbols (`∂L/∂a²₁ · ∂a²₁/∂z²₁ · ∂z²₁/∂w₅`); empty when none helps.
    pub symbolic: String,
    /// The same with numbers (`0.741365 × 0.186816 × 0.59327`); empty when too long to help.
    pub numeric: String,
    /// The result, as gradflow computed it.
    pub value: f64,
    /// Why, when the rule has cases (`z²₁ = 0.53 > 0` for ReLU); empty otherwise.
    pub note: String,
}

/// The working of one layer (or of the loss).
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// `Layer 2: Linear(2 → 1)`.
    pub title: String,
    /// The rule the equations apply (`local derivative ∂a/∂z = a(1 - a)`).
    pub rule: String,
    /// The working.
    pub equations: Vec<Equation>,
}

/// A whole explanation; [`to_text`](Explanation::to_text) prints it, serde gives the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// One entry per layer (`Linear(2 → 2)`, `Sigmoid`).
    pub network: Vec<String>,
    /// Where the weights came from.
    pub weights: String,
    /// The loss in symbols.
    pub loss: String,
    /// The example's input.
    pub input: Vec<f64>,
    /// The example's target.
    pub target: Vec<f64>,
    /// Every parameter, in state-dict order.
    pub parameters: Vec<Parameter>,
    /// Every node, inputs first, then layer by layer.
    pub nodes: Vec<Node>,
    /// The loss value.
    pub loss_value: f64,
    /// The forward pass, layer by layer, then the loss.
    pub forward: Vec<Section>,
    /// The backward pass, from the loss back to the input.
    pub backward: Vec<Section>,
    /// h of the finite differences.
    pub finite_difference_step: f64,
    /// The largest |backprop − finite difference| over all parameters.
    pub max_difference: f64,
}

// ---------------------------------------------------------------- notation

fn script(n: usize, digits: &[char; 10]) -> String {
    n.to_string()
        .chars()
        .map(|c| digits[c as usize - '0' as usize])
        .collect()
}

fn sub(n: usize) -> String {
    script(n, &['₀', '₁', '₂', '₃', '₄', '₅', '₆', '₇', '₈', '₉'])
}

fn sup(n: usize) -> String {
    script(n, &['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'])
}

/// Six significant digits, trailing zeros dropped: as many as a hand check needs, and no more.
fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if (1e-4..1e6).contains(&a) {
        let decimals = (5 - a.log10().floor() as i32).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    } else {
        let s = format!("{v:.5e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{e}", trim(m.to_string()))
    }
}

/// A factor after the first: negatives in parentheses, as on paper.
fn factor(v: f64) -> String {
    if v < 0.0 {
        format!("({})", num(v))
    } else {
        num(v)
    }
}

fn partial(of: &str, by: &str) -> String {
    format!("∂{of}/∂{by}")
}

/// Expansions longer than this many terms are summarized: nobody checks 64 products by hand.
const MAX_TERMS: usize = 3;

/// How an activation is written: forward rule, derivative rule, and the derivative of one unit.
struct ActNotation {
    rule: String,
    deriv_rule: String,
}

fn fname(a: &Activation) -> &'static str {
    match a {
        Activation::Sigmoid => "σ",
        Activation::Tanh => "tanh",
        _ => a.name(),
    }
}

fn act_notation(a: &Activation) -> ActNotation {
    let (rule, deriv_rule) = match a {
        Activation::Sigmoid => ("a = σ(z) = 1 / (1 + e^-z)".to_string(), "∂a/∂z = a(1 - a)".to_string()),
        Activation::Tanh => ("a = tanh(z)".into(), "∂a/∂z = 1 - a²".into()),
        Activation::ReLU => ("a = ReLU(z) = max(0, z)".into(), "∂a/∂z = 1 if z > 0, else 0".into()),
        Activation::LeakyReLU(s) => (
            format!("a = LeakyReLU(z) = z if z > 0, else {}·z", num(*s)),
            format!("∂a/∂z = 1 if z > 0, else {}", num(*s)),
        ),
        other => (
            format!("a = {}(z)", other.name()),
            format!("∂a/∂z = {}'(z)", other.name()),
        ),
    };
    ActNotation { rule, deriv_rule }
}

/// One unit's local-derivative equation (value from gradflow).
fn deriv_equation(act: &Activation, a_name: &str, z_name: &str, a: f64, z: f64, d: f64) -> Equation {
    let (symbolic, numeric, note) = match act {
        Activation::Sigmoid => (
            format!("{a_name}(1 - {a_name})"),
            format!("{} × (1 - {})", num(a), num(a)),
            String::new(),
        ),
        Activation::Tanh => (format!("1 - ({a_name})²"), format!("1 - {}²", factor(a)), String::new()),
        // Piecewise: the case that applies is the explanation.
        Activation::ReLU | Activation::LeakyReLU(_) => (
            String::new(),
            String::new(),
            format!("since {z_name} = {} {} 0", num(z), if z > 0.0 { ">" } else { "≤" }),
        ),
        other => (
            format!("{}'({z_name})", other.name()),
            format!("{}'({})", other.name(), num(z)),
            String::new(),
        ),
    };
    Equation {
        lhs: partial(a_name, z_name),
        symbolic,
        numeric,
        value: d,
        note,
    }
}

// ---------------------------------------------------------------- the model

/// What each layer's output is called: `z` after Linear layer l, `a` after its activation.
struct Layout {
    /// Per layer: unit names of its output.
    names: Vec<Vec<String>>,
    /// Per layer: the Linear number l (1-based) it belongs to.
    level: Vec<usize>,
}

fn check_structure(spec: &ModelSpec) -> EResult<Layout> {
    let [_] = spec.input[..] else {
        return Err(ExplainError::NotFlat(spec.input.clone()));
    };
    let mut names = Vec::new();
    let mut level = Vec::new();
    let mut l = 0usize;
    let mut prev_linear = false;
    let mut width = spec.input[0];
    for (i, layer) in spec.layers.iter().enumerate() {
        match layer {
            LayerSpec::Linear(linear) => {
                l += 1;
                width = linear.out_features;
                names.push((1..=width).map(|j| format!("z{}{}", sup(l), sub(j))).collect());
                prev_linear = true;
            }
            LayerSpec::Activation(_) if prev_linear => {
                names.push((1..=width).map(|j| format!("a{}{}", sup(l), sub(j))).collect());
                prev_linear = false;
            }
            LayerSpec::Activation(a) => {
                return Err(ExplainError::LoneActivation {
                    layer: i,
                    name: a.name(),
                })
            }
            other => {
                return Err(ExplainError::Unsupported {
                    layer: i,
                    kind: other.kind(),
                })
            }
        }
        level.push(l);
    }
    if l == 0 {
        return Err(ExplainError::NoLinear);
    }
    Ok(Layout { names, level })
}

fn parse_model(text: &str, source: &str) -> EResult<ModelSpec> {
    Ok(ModelSpec::parse(text, source)?)
}

/// Parse a comma-separated list of numbers (`--input 0.05,0.1`), naming the flag in errors.
pub fn parse_values(text: &str, flag: &str) -> crate::Result<Vec<f64>> {
    text.split(',')
        .map(|s| {
            let s = s.trim();
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(ExplainError::NotANumber {
                    flag: flag.into(),
                    text: s.into(),
                }
                .into()),
            }
        })
        .collect()
}

fn forward_loss(net: &Sequential, x: &Tensor, t: &Tensor, record: bool) -> EResult<(Tensor, Vec<Tensor>)> {
    let mut ctx = Ctx::eval();
    ctx.record_outputs = record;
    let out = net.forward(x, &mut ctx)?;
    // L = ½ Σ (out − t)²: the textbook loss, whose derivative is simply out − t.
    let loss = out.sub(t)?.square().sum_all().mul_scalar(0.5);
    Ok((loss, ctx.outputs))
}

/// The given values (checked against the model's width), else the textbook
/// defaults, else seeded two-decimal numbers a reader can multiply by hand.
fn values_or_default(
    given: &Option<Vec<f64>>,
    default: Option<Vec<f64>>,
    n: usize,
    (what, flag): (&'static str, &'static str),
    rng: &mut impl Rng,
    range: (f64, f64),
) -> EResult<Vec<f64>> {
    match (given, default) {
        (Some(v), _) if v.len() == n => Ok(v.clone()),
        (Some(v), _) => Err(ExplainError::WrongCount {
            flag,
            given: v.len(),
            expected: n,
            what,
        }),
        (None, Some(d)) => Ok(d),
        (None, None) => Ok((0..n)
            .map(|_| (rng.gen_range(range.0..range.1) * 100.0).round() / 100.0)
            .collect()),
    }
}

/// The network in f64 with PyTorch's init, refused when it has too many parameters to print.
fn build_network(spec: &ModelSpec, seed: Option<u64>) -> EResult<Sequential> {
    let net = spec
        .build(BuildOptions {
            init: Init::PytorchDefault,
            dtype: DType::F64,
            seed: seed.unwrap_or(0),
        })
        .map_err(ExplainError::Build)?;
    let n_params = net.num_parameters();
    if n_params > MAX_PARAMETERS {
        return Err(ExplainError::TooManyParameters(n_params));
    }
    Ok(net)
}

/// Put Mazur's weights into the default model when no seed asks for random
/// ones; returns where the weights came from, for the header.
fn set_weights(net: &Sequential, textbook: bool, seed: Option<u64>) -> EResult<String> {
    if !textbook {
        return Ok(format!("PyTorch's default init, seed {}", seed.unwrap_or(0)));
    }
    for p in net.parameters() {
        let (_, v) = MAZUR_WEIGHTS
            .iter()
            .find(|(n, _)| *n == p.name)
            .expect("Mazur weights cover the default model");
        p.tensor.assign(&Tensor::from_vec(v.to_vec(), p.tensor.shape())?)?;
    }
    Ok("Matt Mazur's worked example (2015), first output only".to_string())
}

/// The example's input and target: given, textbook or seeded (input first, from the same stream).
fn example(opts: &ExplainOptions, default_model: bool, n_in: usize, n_out: usize) -> EResult<(Vec<f64>, Vec<f64>)> {
    let mut rng = gradflow::seeded_rng(opts.seed.unwrap_or(0) ^ 0xe8b1_a1e5);
    let input = values_or_default(
        &opts.input,
        default_model.then(|| MAZUR_INPUT.to_vec()),
        n_in,
        ("input", "--input"),
        &mut rng,
        (-1.0, 1.0),
    )?;
    let target = values_or_default(
        &opts.target,
        default_model.then(|| MAZUR_TARGET.to_vec()),
        n_out,
        ("output", "--target"),
        &mut rng,
        (0.0, 1.0),
    )?;
    Ok((input, target))
}

/// Run the forward and backward pass and collect every number of the working.
pub fn explain(opts: &ExplainOptions) -> crate::Result<Explanation> {
    let default_model = opts.model.is_none();
    let spec = match &opts.model {
        Some(s) => s.clone(),
        None => parse_model(DEFAULT_MODEL, "default model")?,
    };
    let lay = check_structure(&spec)?;
    let net = build_network(&spec, opts.seed)?;
    let weights = set_weights(&net, default_model && opts.seed.is_none(), opts.seed)?;
    let n_out = lay.names.last().map(|v| v.len()).unwrap_or(0);
    let (input, target) = example(opts, default_model, spec.input[0], n_out)?;
    let w = Working::run(&spec, &lay, &net, input, target)?;
    let forward = w.forward_sections();
    let backward = w.backward_sections();
    let parameters = w.checked_parameters()?;
    let max_difference = parameters.iter().map(|p| p.difference).fold(0.0, f64::max);
    let n_in = w.input.len();
    let mut network = vec![format!("{n_in} input{}", plural(n_in))];
    network.extend(w.descr.iter().cloned());
    Ok(Explanation {
        network,
        weights,
        loss: w.loss_symbol(),
        nodes: w.nodes(),
        input: w.input,
        target: w.target,
        parameters,
        loss_value: w.loss_value,
        forward,
        backward,
        finite_difference_step: FD_STEP,
        max_difference,
    })
}

/// One trainable scalar with its textbook name and where it lives.
struct Scalar {
    name: String,
    tensor: Tensor,
    state: String,
    layer: usize,
    row: usize,
    /// Column for a weight, `None` for a bias.
    col: Option<usize>,
}

impl Scalar {
    /// Offset in the tensor's row-major data.
    fn flat(&self) -> usize {
        self.row * self.col.map(|_| self.tensor.shape()[1]).unwrap_or(1) + self.col.unwrap_or(0)
    }

    fn value(&self) -> f64 {
        self.tensor.to_vec_f64()[self.flat()]
    }
}

/// Every parameter scalar, textbook-numbered row by row across layers: w₁, w₂, … then b₁, b₂, … per layer.
fn number_parameters(spec: &ModelSpec, net: &Sequential) -> Vec<Scalar> {
    let mut params = Vec::new();
    let (mut wn, mut bn) = (0usize, 0usize);
    let sd = net.parameters();
    for (i, l) in spec.layers.iter().enumerate() {
        if !matches!(l, LayerSpec::Linear(_)) {
            continue;
        }
        let find = |n: &str| {
            sd.iter()
                .find(|p| p.name == format!("{i}.{n}"))
                .map(|p| p.tensor.clone())
        };
        let w = find("weight").expect("Linear has a weight");
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        for row in 0..rows {
            for c in 0..cols {
                wn += 1;
                params.push(Scalar {
                    name: format!("w{}", sub(wn)),
                    tensor: w.clone(),
                    state: format!("{i}.weight"),
                    layer: i,
                    row,
                    col: Some(c),
                });
            }
        }
        if let Some(b) = find("bias") {
            for row in 0..rows {
                bn += 1;
                params.push(Scalar {
                    name: format!("b{}", sub(bn)),
                    tensor: b.clone(),
                    state: format!("{i}.bias"),
                    layer: i,
                    row,
                    col: None,
                });
            }
        }
    }
    params
}

/// The numbers of one forward and backward pass, from which the working is written.
struct Working<'a> {
    spec: &'a ModelSpec,
    lay: &'a Layout,
    net: &'a Sequential,
    input: Vec<f64>,
    target: Vec<f64>,
    x: Tensor,
    t: Tensor,
    loss_value: f64,
    grads: GradStore,
    /// Per layer: its output values.
    vals: Vec<Vec<f64>>,
    /// Per layer: ∂L/∂output.
    out_grads: Vec<Vec<f64>>,
    x_grad: Vec<f64>,
    in_names: Vec<String>,
    t_names: Vec<String>,
    /// Per activation layer: ∂a/∂z of each unit.
    local: Vec<Option<Vec<f64>>>,
    params: Vec<Scalar>,
    /// Per layer: its description (`Linear(2 → 2)`).
    descr: Vec<String>,
}

impl<'a> Working<'a> {
    fn run(
        spec: &'a ModelSpec,
        lay: &'a Layout,
        net: &'a Sequential,
        input: Vec<f64>,
        target: Vec<f64>,
    ) -> EResult<Working<'a>> {
        let (n_in, n_out) = (input.len(), target.len());
        let x = Tensor::from_vec(input.clone(), &[1, n_in])?.requires_grad_(true);
        let t = Tensor::from_vec(target.clone(), &[1, n_out])?;
        let (loss, outputs) = forward_loss(net, &x, &t, true)?;
        let loss_value = loss.item()?;
        if !loss_value.is_finite() {
            return Err(ExplainError::NonFiniteLoss(loss_value));
        }
        let grads = loss.backward_retain_all()?;
        let grad_of = |t: &Tensor| -> Vec<f64> {
            grads
                .get(t)
                .map(|g| g.to_vec_f64())
                .unwrap_or_else(|| vec![0.0; t.numel()])
        };
        let vals: Vec<Vec<f64>> = outputs.iter().map(|o| o.to_vec_f64()).collect();
        let out_grads: Vec<Vec<f64>> = outputs.iter().map(grad_of).collect();
        let x_grad = grad_of(&x);
        let local = local_derivatives(spec, net, &vals)?;
        Ok(Working {
            spec,
            lay,
            net,
            x,
            t,
            loss_value,
            vals,
            out_grads,
            x_grad,
            in_names: (1..=n_in).map(|k| format!("x{}", sub(k))).collect(),
            t_names: (1..=n_out).map(|k| format!("t{}", sub(k))).collect(),
            local,
            params: number_parameters(spec, net),
            descr: net.layers.iter().map(|l| l.describe()).collect(),
            grads,
            input,
            target,
        })
    }

    /// Names, values and gradients of layer `i`'s input.
    fn input_of(&self, i: usize) -> (&Vec<String>, &Vec<f64>, &Vec<f64>) {
        if i == 0 {
            (&self.in_names, &self.input, &self.x_grad)
        } else {
            (&self.lay.names[i - 1], &self.vals[i - 1], &self.out_grads[i - 1])
        }
    }

    fn grad(&self, p: &Scalar) -> f64 {
        self.grads
            .get(&p.tensor)
            .map(|g| g.to_vec_f64()[p.flat()])
            .unwrap_or(0.0)
    }

    fn weight(&self, layer: usize, row: usize, col: usize) -> &Scalar {
        self.params
            .iter()
            .find(|p| p.layer == layer && p.row == row && p.col == Some(col))
            .expect("every weight is numbered")
    }

    fn bias(&self, layer: usize, row: usize) -> Option<&Scalar> {
        self.params
            .iter()
            .find(|p| p.layer == layer && p.row == row && p.col.is_none())
    }

    fn last(&self) -> usize {
        self.spec.layers.len() - 1
    }

    fn section(&self, i: usize, rule: String, equations: Vec<Equation>) -> Section {
        Section {
            title: format!("Layer {i}: {}", self.descr[i]),
            rule,
            equations,
        }
    }

    // ------------------------------------------------------------ forward

    fn forward_sections(&self) -> Vec<Section> {
        let mut forward: Vec<Section> = self
            .spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match l {
                LayerSpec::Linear(_) => self.section(
                    i,
                    "z = Σ w·input + b: a weighted sum plus a bias".to_string(),
                    self.linear_forward(i),
                ),
                LayerSpec::Activation(a) => self.section(i, act_notation(a).rule, self.activation_forward(i, a)),
                _ => unreachable!("checked by check_structure"),
            })
            .collect();
        forward.push(self.loss_section());
        forward
    }

    fn linear_forward(&self, i: usize) -> Vec<Equation> {
        let (inn, inv, _) = self.input_of(i);
        let mut eqs = Vec::new();
        for (j, zname) in self.lay.names[i].iter().enumerate() {
            let terms: Vec<(String, String)> = (0..inn.len())
                .map(|k| {
                    let p = self.weight(i, j, k);
                    let w = if k == 0 { num(p.value()) } else { factor(p.value()) };
                    (format!("{}·{}", p.name, inn[k]), format!("{w} × {}", factor(inv[k])))
                })
                .collect();
            let (mut sym, mut numeric): (Vec<String>, Vec<String>) = if terms.len() <= MAX_TERMS {
                terms.iter().cloned().unzip()
            } else {
                (
                    vec![terms[0].0.clone(), "…".into(), terms[terms.len() - 1].0.clone()],
                    Vec::new(),
                )
            };
            if let Some(b) = self.bias(i, j) {
                sym.push(b.name.clone());
                if !numeric.is_empty() {
                    numeric.push(factor(b.value()));
                }
            }
            eqs.push(Equation {
                lhs: zname.clone(),
                symbolic: sym.join(" + "),
                numeric: numeric.join(" + "),
                value: self.vals[i][j],
                note: String::new(),
            });
        }
        eqs
    }

    fn activation_forward(&self, i: usize, a: &Activation) -> Vec<Equation> {
        let (inn, inv, _) = self.input_of(i);
        self.lay.names[i]
            .iter()
            .enumerate()
            .map(|(j, aname)| Equation {
                lhs: aname.clone(),
                symbolic: format!("{}({})", fname(a), inn[j]),
                numeric: format!("{}({})", fname(a), num(inv[j])),
                value: self.vals[i][j],
                note: String::new(),
            })
            .collect()
    }

    fn out_names(&self) -> &Vec<String> {
        &self.lay.names[self.last()]
    }

    fn loss_symbol(&self) -> String {
        format!(
            "L = ½ Σⱼ ({}ⱼ - tⱼ)²",
            self.out_names()[0].trim_end_matches(|c: char| "₀₁₂₃₄₅₆₇₈₉".contains(c))
        )
    }

    fn loss_section(&self) -> Section {
        let (last, n_out, out_names) = (self.last(), self.target.len(), self.out_names());
        let (lsym, lnum) = if n_out <= MAX_TERMS {
            (
                (0..n_out)
                    .map(|j| format!("½({} - {})²", out_names[j], self.t_names[j]))
                    .collect::<Vec<_>>()
                    .join(" + "),
                (0..n_out)
                    .map(|j| format!("½({} - {})²", num(self.vals[last][j]), factor(self.target[j])))
                    .collect::<Vec<_>>()
                    .join(" + "),
            )
        } else {
            (String::new(), String::new())
        };
        Section {
            title: "Loss".into(),
            rule: format!("{}: squared error", self.loss_symbol()),
            equations: vec![Equation {
                lhs: "L".into(),
                symbolic: lsym,
                numeric: lnum,
                value: self.loss_value,
                note: String::new(),
            }],
        }
    }

    // ------------------------------------------------------------ backward

    fn backward_sections(&self) -> Vec<Section> {
        let (last, out_names) = (self.last(), self.out_names());
        let mut backward = vec![Section {
            title: "Loss".into(),
            rule: "∂L/∂out = out - t".into(),
            equations: (0..self.target.len())
                .map(|j| Equation {
                    lhs: partial("L", &out_names[j]),
                    symbolic: format!("{} - {}", out_names[j], self.t_names[j]),
                    numeric: format!("{} - {}", num(self.vals[last][j]), factor(self.target[j])),
                    value: self.out_grads[last][j],
                    note: String::new(),
                })
                .collect(),
        }];
        for (i, l) in self.spec.layers.iter().enumerate().rev() {
            backward.push(match l {
                LayerSpec::Activation(a) => self.section(
                    i,
                    format!("local derivative {}", act_notation(a).deriv_rule),
                    self.activation_backward(i, a),
                ),
                LayerSpec::Linear(_) => {
                    let mut eqs = self.parameter_gradients(i);
                    eqs.extend(self.input_gradients(i));
                    self.section(
                        i,
                        "local derivatives ∂z/∂w = input, ∂z/∂b = 1, ∂z/∂input = w".into(),
                        eqs,
                    )
                }
                _ => unreachable!("checked by check_structure"),
            });
        }
        backward
    }

    fn activation_backward(&self, i: usize, a: &Activation) -> Vec<Equation> {
        let (inn, inv, ing) = self.input_of(i);
        let d = self.local[i].as_ref().expect("computed for every activation");
        let mut eqs = Vec::new();
        for j in 0..self.lay.names[i].len() {
            let (an, zn) = (&self.lay.names[i][j], &inn[j]);
            eqs.push(deriv_equation(a, an, zn, self.vals[i][j], inv[j], d[j]));
            eqs.push(Equation {
                lhs: partial("L", zn),
                symbolic: format!("{} · {}", partial("L", an), partial(an, zn)),
                numeric: format!("{} × {}", num(self.out_grads[i][j]), factor(d[j])),
                value: ing[j],
                note: String::new(),
            });
        }
        eqs
    }

    /// ∂L/∂w and ∂L/∂b of Linear layer `i`, through the activation that
    /// follows when there is one: the textbook's three factors.
    fn parameter_gradients(&self, i: usize) -> Vec<Equation> {
        let (_, inv, _) = self.input_of(i);
        let via = match self.spec.layers.get(i + 1) {
            Some(LayerSpec::Activation(_)) => Some(i + 1),
            _ => None,
        };
        let mut eqs = Vec::new();
        for (j, zn) in self.lay.names[i].iter().enumerate() {
            let (up_sym, up_num) = match via {
                Some(v) => {
                    let an = &self.lay.names[v][j];
                    let d = self.local[v].as_ref().expect("computed for every activation")[j];
                    (
                        format!("{} · {}", partial("L", an), partial(an, zn)),
                        format!("{} × {}", num(self.out_grads[v][j]), factor(d)),
                    )
                }
                None => (partial("L", zn), num(self.out_grads[i][j])),
            };
            for (k, &input_k) in inv.iter().enumerate() {
                let p = self.weight(i, j, k);
                eqs.push(Equation {
                    lhs: partial("L", &p.name),
                    symbolic: format!("{up_sym} · {}", partial(zn, &p.name)),
                    numeric: format!("{up_num} × {}", factor(input_k)),
                    value: self.grad(p),
                    note: String::new(),
                });
            }
            if let Some(b) = self.bias(i, j) {
                eqs.push(Equation {
                    lhs: partial("L", &b.name),
                    symbolic: format!("{up_sym} · {}", partial(zn, &b.name)),
                    numeric: format!("{up_num} × 1"),
                    value: self.grad(b),
                    note: String::new(),
                });
            }
        }
        eqs
    }

    /// The gradient passed down to Linear layer `i`'s input: a sum over the units it feeds.
    fn input_gradients(&self, i: usize) -> Vec<Equation> {
        let (inn, _, ing) = self.input_of(i);
        let units = self.lay.names[i].len();
        (0..inn.len())
            .map(|k| {
                let (symbolic, numeric) = if units <= MAX_TERMS {
                    let (s, n): (Vec<String>, Vec<String>) =
                        (0..units).map(|j| self.input_gradient_term(i, j, k)).unzip();
                    (s.join(" + "), n.join(" + "))
                } else {
                    (
                        format!("Σⱼ {} · w", partial("L", &format!("z{}ⱼ", sup(self.lay.level[i])))),
                        String::new(),
                    )
                };
                Equation {
                    lhs: partial("L", &inn[k]),
                    symbolic,
                    numeric,
                    value: ing[k],
                    note: String::new(),
                }
            })
            .collect()
    }

    /// Unit `j`'s share of ∂L/∂input k, in symbols and in numbers.
    fn input_gradient_term(&self, i: usize, j: usize, k: usize) -> (String, String) {
        let p = self.weight(i, j, k);
        let g = self.out_grads[i][j];
        (
            format!("{} · {}", partial("L", &self.lay.names[i][j]), p.name),
            format!("{} × {}", if j == 0 { num(g) } else { factor(g) }, factor(p.value())),
        )
    }

    // ------------------------------------------------------------ check and nodes

    /// Every parameter with its central finite difference, in f64, through the same model.
    fn checked_parameters(&self) -> EResult<Vec<Parameter>> {
        let loss_at = || -> EResult<f64> {
            let _g = no_grad();
            Ok(forward_loss(self.net, &self.x.detach(), &self.t, false)?.0.item()?)
        };
        let mut parameters = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let e = p.flat();
            let v0 = p.value();
            let set = |v: f64| p.tensor.with_slice_mut::<f64, _>(|s| s[e] = v);
            set(v0 + FD_STEP)?;
            let up = loss_at();
            set(v0 - FD_STEP)?;
            let down = loss_at();
            set(v0)?;
            let fd = (up? - down?) / (2.0 * FD_STEP);
            let grad = self.grad(p);
            parameters.push(Parameter {
                name: p.name.clone(),
                tensor: p.state.clone(),
                index: match p.col {
                    Some(c) => vec![p.row, c],
                    None => vec![p.row],
                },
                layer: p.layer,
                from: p.col.map(|c| self.input_of(p.layer).0[c].clone()),
                to: self.lay.names[p.layer][p.row].clone(),
                value: v0,
                grad,
                finite_difference: fd,
                difference: (grad - fd).abs(),
            });
        }
        Ok(parameters)
    }

    /// Inputs first, then every layer's units.
    fn nodes(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = (0..self.input.len())
            .map(|k| Node {
                name: self.in_names[k].clone(),
                layer: None,
                kind: "input".into(),
                value: self.input[k],
                grad: self.x_grad[k],
                local_derivative: None,
            })
            .collect();
        for (i, l) in self.spec.layers.iter().enumerate() {
            let kind = if matches!(l, LayerSpec::Linear(_)) {
                "pre-activation"
            } else {
                "activation"
            };
            for (j, name) in self.lay.names[i].iter().enumerate() {
                nodes.push(Node {
                    name: name.clone(),
                    layer: Some(i),
                    kind: kind.into(),
                    value: self.vals[i][j],
                    grad: self.out_grads[i][j],
                    local_derivative: self.local[i].as_ref().map(|d| d[j]),
                });
            }
        }
        nodes
    }
}

/// Local derivatives ∂a/∂z, by running each activation alone through gradflow's backward.
fn local_derivatives(spec: &ModelSpec, net: &Sequential, vals: &[Vec<f64>]) -> EResult<Vec<Option<Vec<f64>>>> {
    let mut local: Vec<Option<Vec<f64>>> = vec![None; spec.layers.len()];
    for (i, l) in spec.layers.iter().enumerate() {
        if let LayerSpec::Activation(_) = l {
            let z = Tensor::from_vec(vals[i - 1].clone(), &[1, vals[i - 1].len()])?.requires_grad_(true);
            let a = net.layers[i].forward(&z, &mut Ctx::eval())?;
            let g = a.backward_with(&a.ones_like())?;
            local[i] = Some(g.get(&z).map(|g| g.to_vec_f64()).unwrap_or_default());
        }
    }
    Ok(local)
}

// ---------------------------------------------------------------- text

/// Break points, loosest-binding first.
const BREAKS: [&str; 5] = [" = ", " + ", " → ", " · ", " × "];

/// Break a line at operators so it fits [`TEXT_WIDTH`] bytes; continuation lines start with the operator.
fn wrap(line: &str, indent: usize, out: &mut String) {
    let mut rest = line.to_string();
    loop {
        if rest.len() <= TEXT_WIDTH {
            out.push_str(&rest);
            out.push('\n');
            return;
        }
        // Prefer the loosest-binding operator, so a product is not split from its own factors.
        let cuts = |ops: &[&str], min: usize| {
            ops.iter()
                .flat_map(|b| rest.match_indices(b).map(|(i, _)| i).collect::<Vec<_>>())
                .filter(|&i| i <= TEXT_WIDTH && i > min)
                .max()
        };
        let min = indent + 2;
        let cut = BREAKS
            .iter()
            .find_map(|b| cuts(&[b], min.max(TEXT_WIDTH / 2)))
            .or_else(|| cuts(&BREAKS, min));
        let Some(cut) = cut else {
            out.push_str(&rest);
            out.push('\n');
            return;
        };
        out.push_str(rest[..cut].trim_end());
        out.push('\n');
        rest = format!("{}{}", " ".repeat(indent), rest[cut..].trim_start());
    }
}

fn equation_text(e: &Equation, out: &mut String) {
    let head = if e.symbolic.is_empty() {
        format!("  {}", e.lhs)
    } else {
        format!("  {} = {}", e.lhs, e.symbolic)
    };
    let mut tail: Vec<String> = Vec::new();
    if !e.numeric.is_empty() {
        tail.push(e.numeric.clone());
    }
    tail.push(num(e.value));
    let mut tail = tail.join(" = ");
    if !e.note.is_empty() {
        tail = format!("{tail}  ({})", e.note);
    }
    let one = format!("{head} = {tail}");
    let indent = 2 + e.lhs.chars().count() + 1;
    if one.len() <= TEXT_WIDTH {
        out.push_str(&one);
        out.push('\n');
    } else {
        wrap(&head, indent + 2, out);
        wrap(&format!("{}= {tail}", " ".repeat(indent)), indent + 2, out);
    }
}

/// Items joined by `sep`, packed greedily into lines, never breaking inside an item.
fn pack(prefix: &str, items: &[String], sep: &str, indent: usize, out: &mut String) {
    let mut line = prefix.to_string();
    for (i, it) in items.iter().enumerate() {
        let piece = if i == 0 { it.clone() } else { format!("{sep}{it}") };
        if i > 0 && line.len() + piece.len() > TEXT_WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = format!("{}{}", " ".repeat(indent), piece.trim_start());
        } else {
            line.push_str(&piece);
        }
    }
    out.push_str(&line);
    out.push('\n');
}

fn sections_text(secs: &[Section], out: &mut String) {
    for s in secs {
        let one = format!("{}    {}", s.title, s.rule);
        if one.len() <= TEXT_WIDTH {
            out.push_str(&one);
            out.push('\n');
        } else {
            out.push_str(&s.title);
            out.push('\n');
            wrap(&format!("    {}", s.rule), 6, out);
        }
        for e in &s.equations {
            equation_text(e, out);
        }
    }
}

impl Explanation {
    /// The working as a person reads it: forward pass, loss, backward pass
    /// layer by layer from the output back, then the gradient check; every line
    /// fits 80 columns.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        o.push_str("gradflow explain: one example, one forward and one backward pass\n\n");
        self.header_text(&mut o);
        o.push_str("\nPARAMETERS  (weights numbered row by row, as PyTorch stores them)\n");
        self.parameters_text(&mut o);
        o.push_str("\nFORWARD PASS\n");
        sections_text(&self.forward, &mut o);
        o.push_str("\nBACKWARD PASS  (the chain rule, from the loss back to the input)\n");
        sections_text(&self.backward, &mut o);
        self.check_text(&mut o);
        o
    }

    /// Network, weights, loss, input and target.
    fn header_text(&self, o: &mut String) {
        // Each Linear with its activation, so the common case fits one line.
        let mut groups: Vec<String> = Vec::new();
        for (i, l) in self.network.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if i > 1 && !l.starts_with("Linear") => {
                    g.push_str(", ");
                    g.push_str(l);
                }
                _ => groups.push(l.clone()),
            }
        }
        pack("Network: ", &groups, " → ", 4, o);
        wrap(&format!("Weights: {}", self.weights), 4, o);
        wrap(&format!("Loss: {}  (squared error)", self.loss), 4, o);
        let xs: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.kind == "input")
            .map(|n| format!("{} = {}", n.name, num(n.value)))
            .collect();
        pack("Input: ", &xs, ", ", 4, o);
        let ts: Vec<String> = self
            .target
            .iter()
            .enumerate()
            .map(|(j, v)| format!("t{} = {}", sub(j + 1), num(*v)))
            .collect();
        pack("Target: ", &ts, ", ", 4, o);
    }

    /// Width of the widest parameter name, for aligned columns.
    fn name_width(&self) -> usize {
        self.parameters
            .iter()
            .map(|p| p.name.chars().count())
            .max()
            .unwrap_or(2)
    }

    /// One aligned line per parameter: value, the link it weights, where PyTorch keeps it.
    fn parameters_text(&self, o: &mut String) {
        let namew = self.name_width();
        let valw = self.parameters.iter().map(|p| num(p.value).len()).max().unwrap_or(1);
        let linkw = self
            .parameters
            .iter()
            .map(|p| p.from.as_ref().map(|f| f.chars().count() + 3).unwrap_or(0) + p.to.chars().count())
            .max()
            .unwrap_or(1);
        for p in &self.parameters {
            let link = match &p.from {
                Some(f) => format!("{f} → {}", p.to),
                None => format!("→ {}", p.to),
            };
            let idx: Vec<String> = p.index.iter().map(|i| i.to_string()).collect();
            let name_pad = namew - p.name.chars().count();
            let link_pad = linkw.saturating_sub(link.chars().count());
            let _ = writeln!(
                o,
                "  {}{} = {:<valw$}   {}{}   {}[{}]",
                p.name,
                " ".repeat(name_pad),
                num(p.value),
                " ".repeat(link_pad),
                link,
                p.tensor,
                idx.join(",")
            );
        }
    }

    /// Backprop beside the finite differences, and the verdict.
    fn check_text(&self, o: &mut String) {
        let namew = self.name_width();
        let _ = writeln!(
            o,
            "\nGRADIENT CHECK  (central difference, h = {:e}, in f64)\n  ∂L/∂θ ≈ (L(θ + h) - L(θ - h)) / 2h",
            self.finite_difference_step
        );
        let _ = writeln!(
            o,
            "  {:<namew$}  {:>16}  {:>16}  {:>10}",
            "θ", "backprop", "finite diff", "|diff|"
        );
        for p in &self.parameters {
            let pad = namew - p.name.chars().count();
            let _ = writeln!(
                o,
                "  {}{}  {:>16.10}  {:>16.10}  {:>10.1e}",
                p.name,
                " ".repeat(pad),
                p.grad,
                p.finite_difference,
                p.difference
            );
        }
        let verdict = if self.max_difference < 1e-6 {
            "backprop and finite differences agree"
        } else {
            "LARGER THAN EXPECTED: backprop and finite differences disagree"
        };
        let _ = writeln!(o, "  largest difference {:.1e}: {verdict}", self.max_difference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mazur_numbers() {
        let e = explain(&ExplainOptions::default()).unwrap();
        assert!((e.loss_value - 0.274811083).abs() < 1e-8, "{}", e.loss_value);
        let w5 = e.parameters.iter().find(|p| p.name == "w₅").unwrap();
        assert!((w5.grad - 0.082167041).abs() < 1e-8, "{}", w5.grad);
        assert!(e.max_difference < 1e-6);
        let text = e.to_text();
        assert!(text.contains("∂L/∂w₅ = ∂L/∂a²₁ · ∂a²₁/∂z²₁ · ∂z²₁/∂w₅"), "{text}");
        for l in text.lines() {
            assert!(l.len() <= TEXT_WIDTH, "{} bytes: {l}", l.len());
        }
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(0.593269992), "0.59327");
        assert_eq!(num(0.0821670407), "0.082167");
        assert_eq!(num(0.15), "0.15");
        assert_eq!(num(-2.5e-7), "-2.5e-7");
        assert_eq!(num(12.0), "12");
        assert_eq!(sup(12), "¹²");
        assert_eq!(sub(10), "₁₀");
    }
}
