//! The setup a page sends: data, features, network, training. Every field has
//! a default (TensorFlow Playground's), unknown fields are refused, and
//! [`Config::validate`] enforces the caps that keep one page from exhausting
//! the server's memory or time.

use crate::error::{Error, Result};
use gradflow_nn::optim::OptimizerSpec;
use gradflow_nn::{Activation, DropoutSpec, Init, LayerSpec, LinearSpec, ModelSpec};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Most hidden layers a network may have.
pub const MAX_LAYERS: usize = 20;
/// Most neurons a hidden layer may have.
pub const MAX_NEURONS: usize = 32;
/// Most input features (all of [`Feature::ALL`]).
pub const MAX_FEATURES: usize = 7;
/// Most points in a data set (generated or uploaded), train and test together.
pub const MAX_POINTS: usize = 2000;
/// Fewest points in a generated data set.
pub const MIN_POINTS: usize = 20;
/// Largest CSV upload, in bytes.
pub const MAX_CSV_BYTES: usize = 1 << 20;
/// Most classes a CSV upload may have.
pub const MAX_CLASSES: usize = 8;
/// Half the side of the square the points live in: x1, x2 ∈ [-DOMAIN, DOMAIN].
pub const DOMAIN: f64 = 6.0;

/// A data set, generated server-side from the seed (or uploaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// Two classes: a disc inside a ring.
    Circle,
    /// Two classes by the sign of x1·x2.
    Xor,
    /// Two Gaussian blobs.
    Gauss,
    /// Two interleaved spirals.
    Spiral,
    /// Three interleaved spirals (a three-class problem: softmax + cross-entropy).
    Spiral3,
    /// Regression: a tilted plane, (x1 + x2) scaled to [-1, 1].
    Plane,
    /// Regression: six Gaussian bumps of alternating sign.
    Multigauss,
    /// The points of the last CSV upload.
    Csv,
}

impl DatasetKind {
    /// Every data set, in the page's order.
    pub const ALL: [DatasetKind; 8] = [
        DatasetKind::Circle,
        DatasetKind::Xor,
        DatasetKind::Gauss,
        DatasetKind::Spiral,
        DatasetKind::Spiral3,
        DatasetKind::Plane,
        DatasetKind::Multigauss,
        DatasetKind::Csv,
    ];

    /// How the page labels it.
    pub fn label(self) -> &'static str {
        match self {
            DatasetKind::Circle => "Circle",
            DatasetKind::Xor => "Exclusive or",
            DatasetKind::Gauss => "Gaussian",
            DatasetKind::Spiral => "Spiral",
            DatasetKind::Spiral3 => "3-class spiral",
            DatasetKind::Plane => "Plane",
            DatasetKind::Multigauss => "Multi Gaussian",
            DatasetKind::Csv => "Your CSV",
        }
    }

    /// The problem its labels pose; `None` for an upload, whose labels decide.
    pub fn problem(self) -> Option<Problem> {
        match self {
            DatasetKind::Csv => None,
            k if k.is_regression() => Some(Problem::Regression),
            _ => Some(Problem::Classification),
        }
    }

    /// True for the data sets whose labels are real values.
    pub fn is_regression(self) -> bool {
        matches!(self, DatasetKind::Plane | DatasetKind::Multigauss)
    }
}

/// Whether the network predicts a class or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// Classes: one logit with binary cross-entropy for two, softmax + cross-entropy for more.
    Classification,
    /// A real value with mean squared error.
    Regression,
}

impl Problem {
    /// Every problem type, in menu order.
    pub const ALL: [Problem; 2] = [Problem::Classification, Problem::Regression];

    /// The name the API takes.
    pub fn id(self) -> &'static str {
        match self {
            Problem::Classification => "classification",
            Problem::Regression => "regression",
        }
    }

    /// The name the page shows.
    pub fn label(self) -> &'static str {
        match self {
            Problem::Classification => "Classification",
            Problem::Regression => "Regression",
        }
    }

    /// What the head and loss become.
    pub fn description(self) -> &'static str {
        match self {
            Problem::Classification => "Predict a class: binary cross-entropy for two, softmax cross-entropy for more.",
            Problem::Regression => "Predict a value: mean squared error.",
        }
    }
}

/// An input feature computed from the point (x1, x2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Feature {
    /// x1.
    #[serde(rename = "x1")]
    X1,
    /// x2.
    #[serde(rename = "x2")]
    X2,
    /// x1².
    #[serde(rename = "x1sq")]
    X1Sq,
    /// x2².
    #[serde(rename = "x2sq")]
    X2Sq,
    /// x1·x2.
    #[serde(rename = "x1x2")]
    X1X2,
    /// sin x1.
    #[serde(rename = "sinx1")]
    SinX1,
    /// sin x2.
    #[serde(rename = "sinx2")]
    SinX2,
}

impl Feature {
    /// Every feature, in the page's order.
    pub const ALL: [Feature; 7] = [
        Feature::X1,
        Feature::X2,
        Feature::X1Sq,
        Feature::X2Sq,
        Feature::X1X2,
        Feature::SinX1,
        Feature::SinX2,
    ];

    /// The feature's value at a point.
    pub fn eval(self, x1: f64, x2: f64) -> f64 {
        match self {
            Feature::X1 => x1,
            Feature::X2 => x2,
            Feature::X1Sq => x1 * x1,
            Feature::X2Sq => x2 * x2,
            Feature::X1X2 => x1 * x2,
            Feature::SinX1 => x1.sin(),
            Feature::SinX2 => x2.sin(),
        }
    }

    /// How the page labels it.
    pub fn label(self) -> &'static str {
        match self {
            Feature::X1 => "x1",
            Feature::X2 => "x2",
            Feature::X1Sq => "x1²",
            Feature::X2Sq => "x2²",
            Feature::X1X2 => "x1·x2",
            Feature::SinX1 => "sin x1",
            Feature::SinX2 => "sin x2",
        }
    }
}

/// L1, L2 or no penalty on the weights of the Linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Regularization {
    /// No penalty.
    None,
    /// λ·Σ|w|, applied as a proximal step (soft-thresholding) after each update, so weights reach exactly 0.
    L1,
    /// λ·Σw², added to the loss.
    L2,
}

impl Regularization {
    /// Every choice, in menu order.
    pub const ALL: [Regularization; 3] = [Regularization::None, Regularization::L1, Regularization::L2];

    /// The name the API takes.
    pub fn id(self) -> &'static str {
        match self {
            Regularization::None => "none",
            Regularization::L1 => "l1",
            Regularization::L2 => "l2",
        }
    }

    /// The name the page shows.
    pub fn label(self) -> &'static str {
        match self {
            Regularization::None => "None",
            Regularization::L1 => "L1",
            Regularization::L2 => "L2",
        }
    }

    /// How the penalty is applied.
    pub fn description(self) -> &'static str {
        match self {
            Regularization::None => "No penalty on the weights.",
            Regularization::L1 => "λ·Σ|w|, as a proximal step after each update: small weights become exactly 0.",
            Regularization::L2 => "λ·Σw², added to the loss.",
        }
    }
}

/// One hidden layer: Linear → activation (→ Dropout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerConfig {
    /// Width, 1..=[`MAX_NEURONS`].
    pub neurons: usize,
    /// A declared activation's command-line name (`tanh`, `relu`…), or `linear` for none.
    pub activation: String,
    /// Dropout probability after the activation, in [0, 0.9].
    pub dropout: f64,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            neurons: 4,
            activation: "tanh".into(),
            dropout: 0.0,
        }
    }
}

/// Activation names the page offers (besides `linear`): every declared activation, by its command-line name.
pub fn activation_names() -> Vec<&'static str> {
    Activation::registry().iter().map(|a| a.cli_name).collect()
}

/// Initializers the page offers: every declared one but `zeros`, with which
/// the units of a layer could never learn different things.
pub fn init_names() -> Vec<&'static str> {
    Init::registry()
        .iter()
        .map(|d| d.name)
        .filter(|&n| n != Init::Zeros.name())
        .collect()
}

/// Training steps per frame the speed control offers; 0 trains for most of each frame interval.
pub const SPEEDS: [usize; 6] = [1, 3, 10, 30, 100, 0];

/// Parse an activation name; `Ok(None)` is `linear` (no activation).
pub fn parse_activation(name: &str) -> Result<Option<Activation>> {
    if name.eq_ignore_ascii_case("linear") || name.eq_ignore_ascii_case("identity") {
        return Ok(None);
    }
    Activation::parse(name)
        .map(Some)
        .ok_or_else(|| Error::UnknownActivation { name: name.to_string() })
}

/// The whole setup of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which data set.
    pub dataset: DatasetKind,
    /// Seed of the data, the split, the initial weights, the batches and dropout.
    pub seed: u64,
    /// Noise in percent, 0..=50.
    pub noise: f64,
    /// Share of the points used for training, in percent, 10..=90.
    pub train_ratio: f64,
    /// Number of generated points, [`MIN_POINTS`]..=[`MAX_POINTS`] (ignored for CSV data).
    pub points: usize,
    /// Samples per step, 1..=[`MAX_POINTS`].
    pub batch_size: usize,
    /// Input features, 1..=[`MAX_FEATURES`], without repeats.
    pub features: Vec<Feature>,
    /// Hidden layers, 0..=[`MAX_LAYERS`].
    pub layers: Vec<LayerConfig>,
    /// Learning rate, in (0, 10].
    pub learning_rate: f64,
    /// Optimizer name, one of the declared optimizers (PyTorch defaults otherwise).
    pub optimizer: String,
    /// Weight penalty.
    pub regularization: Regularization,
    /// λ of the penalty, in [0, 10].
    pub reg_rate: f64,
    /// Classification or regression.
    pub problem: Problem,
    /// Weight initializer: a declared one's name or alias (xavier, he, lecun_normal, pytorch…), not zeros.
    pub init: String,
    /// Optimizer steps per frame (the speed control), one of [`SPEEDS`]; 0 trains for most of each frame interval.
    pub steps_per_frame: usize,
}

impl Default for Config {
    /// TensorFlow Playground's opening setup: circle, x1 and x2, two tanh layers of 4 and 2, lr 0.03.
    fn default() -> Self {
        Config {
            dataset: DatasetKind::Circle,
            seed: 1,
            noise: 0.0,
            train_ratio: 50.0,
            points: 500,
            batch_size: 10,
            features: vec![Feature::X1, Feature::X2],
            layers: vec![
                LayerConfig::default(),
                LayerConfig {
                    neurons: 2,
                    ..LayerConfig::default()
                },
            ],
            learning_rate: 0.03,
            optimizer: "sgd".into(),
            regularization: Regularization::None,
            reg_rate: 0.0,
            problem: Problem::Classification,
            init: "xavier".into(),
            steps_per_frame: 0,
        }
    }
}

fn in_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            field: name.into(),
            lo,
            hi,
            value: v,
        })
    }
}

fn count_in_range(name: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Error::CountOutOfRange {
            field: name.into(),
            lo,
            hi,
            value: v,
        })
    }
}

impl Config {
    /// Check every field against the caps; the message names the first offending field.
    pub fn validate(&self) -> Result<()> {
        in_range("noise", self.noise, 0.0, 50.0)?;
        in_range("train_ratio", self.train_ratio, 10.0, 90.0)?;
        count_in_range("points", self.points, MIN_POINTS, MAX_POINTS)?;
        count_in_range("batch_size", self.batch_size, 1, MAX_POINTS)?;
        if self.features.is_empty() || self.features.len() > MAX_FEATURES {
            return Err(Error::FeatureCount(self.features.len()));
        }
        for (i, f) in self.features.iter().enumerate() {
            if self.features[..i].contains(f) {
                return Err(Error::RepeatedFeature(f.label()));
            }
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(Error::LayerCount(self.layers.len()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            count_in_range(&format!("layers[{i}].neurons"), l.neurons, 1, MAX_NEURONS)?;
            parse_activation(&l.activation).map_err(|e| Error::LayerActivation {
                layer: i,
                error: Box::new(e),
            })?;
            in_range(&format!("layers[{i}].dropout"), l.dropout, 0.0, 0.9)?;
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate <= 10.0) {
            return Err(Error::LearningRate(self.learning_rate));
        }
        self.optimizer_spec()?;
        in_range("reg_rate", self.reg_rate, 0.0, 10.0)?;
        if !SPEEDS.contains(&self.steps_per_frame) {
            return Err(Error::Speed {
                value: self.steps_per_frame,
            });
        }
        self.init_kind()?;
        Ok(())
    }

    /// The optimizer with PyTorch's defaults and this learning rate.
    pub fn optimizer_spec(&self) -> Result<OptimizerSpec> {
        OptimizerSpec::parse(&self.optimizer, self.learning_rate).map_err(Error::Optimizer)
    }

    /// The weight initializer.
    pub fn init_kind(&self) -> Result<Init> {
        match Init::parse(&self.init) {
            Ok(init) if init_names().contains(&init.name()) => Ok(init),
            _ => Err(Error::UnknownInit {
                name: self.init.to_ascii_lowercase(),
            }),
        }
    }

    /// λ₁ and λ₂.
    pub fn penalties(&self) -> (f64, f64) {
        match self.regularization {
            Regularization::None => (0.0, 0.0),
            Regularization::L1 => (self.reg_rate, 0.0),
            Regularization::L2 => (0.0, self.reg_rate),
        }
    }

    /// The network as a gradflow model file: `input = [features]`, then per hidden
    /// layer Linear → activation (→ Dropout), then the output Linear of `outputs` units.
    pub fn model_spec(&self, outputs: usize) -> Result<ModelSpec> {
        let init = self.init_kind()?;
        let linear = |out_features| {
            LayerSpec::from(LinearSpec {
                init: Some(init),
                ..LinearSpec::new(out_features)
            })
        };
        let mut layers = Vec::new();
        for l in &self.layers {
            layers.push(linear(l.neurons));
            if let Some(a) = parse_activation(&l.activation)? {
                layers.push(LayerSpec::Activation(a));
            }
            if l.dropout > 0.0 {
                layers.push(DropoutSpec { p: l.dropout }.into());
            }
        }
        layers.push(linear(outputs));
        Ok(ModelSpec {
            input: vec![self.features.len()],
            layers,
        })
    }

    /// True when going from `self` to `new` changes the data (so the data are regenerated and training restarts).
    pub fn data_changed(&self, new: &Config) -> bool {
        self.dataset != new.dataset
            || self.seed != new.seed
            || self.noise != new.noise
            || self.train_ratio != new.train_ratio
            || self.points != new.points
            || self.problem != new.problem
    }

    /// True when going from `self` to `new` changes the network (so it is rebuilt from fresh weights).
    pub fn network_changed(&self, new: &Config) -> bool {
        self.data_changed(new) || self.features != new.features || self.layers != new.layers || self.init != new.init
    }
}

/// The export panel's text: a model TOML that `gradflow` reads, and the commands that use it.
pub fn export_text(cfg: &Config, spec: &ModelSpec, sample_input: &[f64], sample_target: &[f64]) -> (String, String) {
    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# gradflow playground export: {} features, {} hidden layers",
        cfg.features.len(),
        cfg.layers.len()
    );
    let _ = writeln!(
        toml,
        "# inputs: {}",
        cfg.features.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ")
    );
    toml.push_str(&spec.to_toml());
    let (l1, l2) = cfg.penalties();
    let mut flags = format!(
        "--optimizer {} --lr {} --batch-size {} --seed {}",
        cfg.optimizer.to_ascii_lowercase(),
        cfg.learning_rate,
        cfg.batch_size,
        cfg.seed
    );
    if l1 > 0.0 {
        let _ = write!(flags, " --l1 {l1}");
    }
    if l2 > 0.0 {
        let _ = write!(flags, " --l2 {l2}");
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|v| format!("{}", (v * 1000.0).round() / 1000.0))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (input, target) = (list(sample_input), list(sample_target));
    let mut cli =
        String::from("# Save the model as playground.toml, then walk one example through it, forward and backward:\n");
    if cfg.layers.iter().any(|l| l.dropout > 0.0) {
        cli.push_str(
            "# (gradflow explain handles Linear and activation layers only: remove the Dropout layers first)\n",
        );
    }
    let _ = writeln!(
        cli,
        "gradflow explain --model playground.toml --input {input} --target {target} --seed {}",
        cfg.seed
    );
    let _ = writeln!(cli, "# The training settings, as gradflow train flags:\n# {flags}");
    (toml, cli)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let c = Config::default();
        c.validate().unwrap();
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&j).unwrap(), c);
    }

    #[test]
    fn caps_are_enforced() {
        let mut c = Config::default();
        c.layers = vec![LayerConfig::default(); MAX_LAYERS + 1];
        assert!(c.validate().unwrap_err().to_string().contains("at most 20"));
        let mut c = Config::default();
        c.layers[0].neurons = 33;
        assert!(c.validate().unwrap_err().to_string().contains("neurons"));
        let mut c = Config::default();
        c.points = 5000;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.features = vec![Feature::X1, Feature::X1];
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let mut c = Config::default();
        c.layers[0].activation = "swoosh".into();
        assert!(c.validate().unwrap_err().to_string().contains("unknown activation"));
        let mut c = Config::default();
        c.learning_rate = f64::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn model_spec_parses_back() {
        let mut c = Config::default();
        c.layers[0].dropout = 0.2;
        c.layers[1].activation = "linear".into();
        let spec = c.model_spec(3).unwrap();
        let again = ModelSpec::parse(&spec.to_toml(), "export").unwrap();
        assert_eq!(again, spec);
        assert_eq!(spec.output_shape().unwrap(), vec![3]);
    }
}
