//! One session's network, data and optimizer, trained with the gradflow engine
//! (real forward, `backward`, optimizer step), and the compact views the page
//! draws: the decision-boundary heatmap, a small heatmap per neuron, weights,
//! losses, and the gradient-flow diagnostics (gradient norm per layer,
//! saturation, dead units).

use crate::config::{export_text, parse_activation, Config, DatasetKind, Feature, Problem, Regularization, DOMAIN};
use crate::data::{self, CsvData, Point};
use crate::error::{Error, Result};
use base64::Engine as _;
use gradflow::{no_grad, DType, Tensor};
use gradflow_nn::layers::activation::Saturation;
use gradflow_nn::optim::{self, Optimizer, Param};
use gradflow_nn::{
    regularize, Activation, BuildOptions, Ctx, LayerSpec, Loss, ModelSpec, Module, Penalty, PenaltyTarget, Sequential,
    Target,
};
use gradflow_train::{train_step, Objective, StepOutcome, Update};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Side of the output heatmap grid (cells per axis).
pub const GRID: usize = 40;
/// Most points kept in the loss history; older ones are thinned out.
pub const MAX_HISTORY: usize = 1000;

/// What the last layer predicts and which loss trains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// One logit, binary cross-entropy (sigmoid); labels 0 and 1.
    Binary,
    /// One logit per class, softmax cross-entropy.
    Multi(usize),
    /// One value, mean squared error.
    Regression,
}

impl Head {
    fn outputs(self) -> usize {
        match self {
            Head::Multi(k) => k,
            _ => 1,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Head::Binary => "binary",
            Head::Multi(_) => "multiclass",
            Head::Regression => "regression",
        }
    }
}

/// The state a page needs to draw a session: the data, the setup and its export.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    /// Bumped whenever training restarts; frames carry it so a page can drop stale ones.
    pub version: u64,
    /// The setup.
    pub config: Config,
    /// `binary`, `multiclass` or `regression`.
    pub head: &'static str,
    /// Number of classes (0 for regression).
    pub classes: usize,
    /// Training points as `[x1, x2, label]`.
    pub train: Vec<[f64; 3]>,
    /// Test points as `[x1, x2, label]`.
    pub test: Vec<[f64; 3]>,
    /// True when uploaded points were moved and scaled to fit the square.
    pub rescaled: bool,
    /// Epochs trained so far.
    pub epoch: u64,
    /// `[epoch, train loss, test loss]` so far.
    pub history: Vec<[f64; 3]>,
    /// The network as a gradflow model TOML.
    pub toml: String,
    /// Commands that use the exported model.
    pub cli: String,
}

/// One frame of the live view, sent about 30 times a second while training runs.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// The session version this frame belongs to.
    pub version: u64,
    /// Epochs trained.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Whether training is running.
    pub playing: bool,
    /// Mean loss on the training points (without the penalty).
    pub train_loss: f64,
    /// Mean loss on the test points.
    pub test_loss: f64,
    /// Accuracy on the training points (classification only).
    pub train_acc: Option<f64>,
    /// Accuracy on the test points (classification only).
    pub test_acc: Option<f64>,
    /// Side of the output grid.
    pub grid: usize,
    /// Values per grid cell: 1 (binary: 2σ−1; regression: the value), or one probability per class.
    pub channels: usize,
    /// Output grid, row-major from the top-left (x1 = -6, x2 = 6), one byte per value
    /// mapping [-1, 1] (or [0, 1] for probabilities) to 0..=255, base64.
    pub out: String,
    /// Side of each neuron's grid.
    pub ngrid: usize,
    /// Per hidden layer, per neuron: its activation over the grid, scaled by max(1, max |a|) into 0..=255, base64.
    pub neurons: Vec<Vec<String>>,
    /// Per Linear layer: the weight `[out, in]`, row-major, to 4 significant digits.
    pub w: Vec<Vec<f64>>,
    /// Per Linear layer: the bias.
    pub b: Vec<Vec<f64>>,
    /// Per Linear layer: ‖∂L/∂W‖, averaged over the steps since the last frame.
    pub grad_norm: Vec<f64>,
    /// Per hidden layer: the share of (point, unit) pairs where the activation is flat, by
    /// its declared rule, the diagnostics' one (sigmoid outside [0.01, 0.99], |tanh| > 0.99, ReLU ≤ 0).
    pub saturation: Vec<f64>,
    /// Per hidden layer: units flat on every training point (dead: no gradient passes them).
    pub dead: Vec<usize>,
    /// Share of Linear weights that are exactly zero.
    pub sparsity: f64,
    /// Number of Linear weights that are exactly zero.
    pub zero_weights: usize,
    /// Number of Linear weights.
    pub total_weights: usize,
    /// True once a loss went non-finite (training stops).
    pub diverged: bool,
}

/// One example's forward values and backward gradients, layer by layer.
#[derive(Debug, Clone, Serialize)]
pub struct Walk {
    /// The point.
    pub x1: f64,
    /// The point.
    pub x2: f64,
    /// The input features' names.
    pub features: Vec<&'static str>,
    /// The input features' values.
    pub input: Vec<f64>,
    /// The label the loss compares against.
    pub label: f64,
    /// Per hidden layer.
    pub layers: Vec<WalkLayer>,
    /// The output layer's pre-activation (logits or value).
    pub out_z: Vec<f64>,
    /// ∂L/∂(output).
    pub out_dz: Vec<f64>,
    /// The prediction: probability of class 1 (binary), class probabilities, or the value.
    pub prediction: Vec<f64>,
    /// This example's loss.
    pub loss: f64,
}

/// One hidden layer of a [`Walk`].
#[derive(Debug, Clone, Serialize)]
pub struct WalkLayer {
    /// The activation's name (`linear` for none).
    pub activation: String,
    /// Pre-activations z = W·a_prev + b.
    pub z: Vec<f64>,
    /// Activations a = f(z) (after dropout, which is off here).
    pub a: Vec<f64>,
    /// ∂L/∂z.
    pub dz: Vec<f64>,
    /// ∂L/∂a.
    pub da: Vec<f64>,
}

struct Hidden {
    /// Index in `net.layers` of the Linear.
    pre: usize,
    /// Index whose output is the layer's activation (the activation layer, or the Linear for `linear`).
    post: usize,
    act: Option<Activation>,
    name: String,
}

/// Labels as a loss takes them, owned so a [`Target`] can borrow them.
enum Labels {
    Classes(Vec<usize>),
    Values(Tensor),
}

impl Labels {
    fn target(&self) -> Target<'_> {
        match self {
            Labels::Classes(c) => Target::Classes(c),
            Labels::Values(t) => Target::Values(t),
        }
    }
}

/// A session's trainer.
pub struct Engine {
    cfg: Config,
    version: u64,
    csv: Option<CsvData>,
    head: Head,
    train: Vec<Point>,
    test: Vec<Point>,
    x_train: Vec<f64>,
    x_test: Vec<f64>,
    spec: ModelSpec,
    net: Sequential,
    hidden: Vec<Hidden>,
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    params: Vec<Param>,
    targets: Vec<PenaltyTarget>,
    opt: Box<dyn Optimizer>,
    ctx: Ctx,
    shuffle: ChaCha8Rng,
    order: Vec<usize>,
    cursor: usize,
    epoch: u64,
    steps: u64,
    grad_acc: Vec<f64>,
    grad_n: u64,
    last_grad: Vec<f64>,
    history: Vec<[f64; 3]>,
    history_steps: u64,
    diverged: bool,
    grid_x: Vec<f64>,
    ngrid: usize,
    ngrid_x: Vec<f64>,
}

fn features_of(features: &[Feature], pts: &[Point]) -> Vec<f64> {
    let mut v = Vec::with_capacity(pts.len() * features.len());
    for q in pts {
        v.extend(features.iter().map(|f| f.eval(q.x1, q.x2)));
    }
    v
}

fn grid_points(side: usize) -> Vec<Point> {
    let cell = 2.0 * DOMAIN / side as f64;
    let mut v = Vec::with_capacity(side * side);
    for j in 0..side {
        for i in 0..side {
            v.push(Point {
                x1: -DOMAIN + (i as f64 + 0.5) * cell,
                x2: DOMAIN - (j as f64 + 0.5) * cell,
                label: 0.0,
            });
        }
    }
    v
}

fn round4(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return if x.is_finite() { 0.0 } else { x };
    }
    let m = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * m).round() / m
}

fn byte(v: f64) -> u8 {
    (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8
}

/// The outputs where `act`'s derivative vanishes, by its declared rule (the
/// diagnostics' rule too); `None` for no activation or one that never flattens.
fn flat_rule(act: Option<Activation>) -> Option<fn(f64) -> bool> {
    match act?.saturation() {
        Saturation::Saturates(flat) | Saturation::Dies(flat) => Some(flat),
        Saturation::Never => None,
    }
}

/// Element type of the networks: f32, like PyTorch's default (and twice as fast as f64 here).
const DTYPE: DType = DType::F32;

/// A tensor of [`DTYPE`] from f64 values.
fn tensor(v: &[f64], shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        v.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
        shape,
    )?)
}

/// The points of `cfg`'s data set (generated, or the upload) and how many classes they have.
fn raw_points(cfg: &Config, csv: Option<&CsvData>, rng: &mut ChaCha8Rng) -> Result<(Vec<Point>, Option<usize>)> {
    Ok(match cfg.dataset {
        DatasetKind::Csv => {
            let c = csv.ok_or(Error::NoUpload)?;
            (c.points.clone(), c.classes)
        }
        k => (
            data::generate(k, cfg.points, cfg.noise / 100.0, rng),
            match k {
                _ if k.is_regression() => None,
                DatasetKind::Spiral3 => Some(3),
                _ => Some(2),
            },
        ),
    })
}

/// The head the problem asks for, with the labels it trains on.
fn head_and_labels(problem: Problem, classes: Option<usize>, raw: Vec<Point>) -> (Head, Vec<Point>) {
    let relabel = |raw: Vec<Point>, f: &dyn Fn(f64) -> f64| -> Vec<Point> {
        raw.into_iter().map(|q| Point { label: f(q.label), ..q }).collect()
    };
    match (problem, classes) {
        (Problem::Classification, Some(2)) => (Head::Binary, raw),
        (Problem::Classification, Some(k)) => (Head::Multi(k), raw),
        // Real values asked as classes: the sign decides.
        (Problem::Classification, None) => (Head::Binary, relabel(raw, &|l| if l > 0.0 { 1.0 } else { 0.0 })),
        (Problem::Regression, Some(k)) => (Head::Regression, relabel(raw, &|l| l / (k - 1) as f64 * 2.0 - 1.0)),
        (Problem::Regression, None) => (Head::Regression, raw),
    }
}

/// The network of `cfg` and the handles the engine keeps into it.
struct Network {
    spec: ModelSpec,
    net: Sequential,
    hidden: Vec<Hidden>,
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    params: Vec<Param>,
    targets: Vec<PenaltyTarget>,
}

impl Network {
    fn build(cfg: &Config, head: Head) -> Result<Network> {
        let spec = cfg.model_spec(head.outputs())?;
        let net = spec.build(BuildOptions {
            init: cfg.init_kind()?,
            dtype: DTYPE,
            seed: cfg.seed,
        })?;
        let mut hidden = Vec::new();
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for (li, layer_spec) in spec.layers.iter().enumerate() {
            if let LayerSpec::Linear(_) = layer_spec {
                let ps = net.layers[li].parameters();
                weights.push(ps[0].tensor.clone());
                biases.push(ps[1].tensor.clone());
                if let Some(l) = cfg.layers.get(weights.len() - 1) {
                    let act = parse_activation(&l.activation)?;
                    hidden.push(Hidden {
                        pre: li,
                        post: if act.is_some() { li + 1 } else { li },
                        act,
                        name: act.map(|a| a.name().to_string()).unwrap_or_else(|| "linear".into()),
                    });
                }
            }
        }
        let params: Vec<Param> = net
            .parameters()
            .into_iter()
            .map(|p| Param::new(p.name, p.tensor))
            .collect();
        let targets = net.named_penalty_targets();
        Ok(Network {
            spec,
            net,
            hidden,
            weights,
            biases,
            params,
            targets,
        })
    }
}

/// Side of the neuron heatmaps: smaller for bigger networks, so a frame stays cheap.
fn neuron_grid(cfg: &Config) -> usize {
    match cfg.layers.iter().map(|l| l.neurons).sum::<usize>() {
        0..=64 => 20,
        65..=256 => 12,
        _ => 8,
    }
}

/// Each neuron's activation over the grid, scaled by max(1, max |a|) into bytes, base64.
fn neuron_maps(t: &Tensor) -> Vec<String> {
    let width = t.shape()[1];
    let v = t.to_vec_f64();
    let rows = v.len() / width.max(1);
    (0..width)
        .map(|j| {
            let col: Vec<f64> = (0..rows).map(|r| v[r * width + j]).collect();
            let scale = col.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            let bytes: Vec<u8> = col.iter().map(|x| byte(x / scale)).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        })
        .collect()
}

/// Each tensor's values to 4 significant digits.
fn rounded(ts: &[Tensor]) -> Vec<Vec<f64>> {
    ts.iter()
        .map(|t| t.to_vec_f64().into_iter().map(round4).collect())
        .collect()
}

impl Engine {
    /// Build the data, the network and the optimizer for `cfg` (validated here).
    /// `csv` is the last upload, used when `cfg.dataset` is `csv`.
    pub fn new(cfg: Config, csv: Option<CsvData>, version: u64) -> Result<Engine> {
        cfg.validate()?;
        let mut rng = gradflow::seeded_rng(cfg.seed);
        let (raw, classes) = raw_points(&cfg, csv.as_ref(), &mut rng)?;
        let (head, raw) = head_and_labels(cfg.problem, classes, raw);
        let (train, test) = data::split(raw, cfg.train_ratio, &mut rng);
        if train.is_empty() {
            return Err(Error::NoTrainingPoints);
        }
        let Network {
            spec,
            net,
            hidden,
            weights,
            biases,
            params,
            targets,
        } = Network::build(&cfg, head)?;
        let opt = optim::try_build(&cfg.optimizer_spec()?)?;
        let ngrid = neuron_grid(&cfg);
        let n_lin = weights.len();
        Ok(Engine {
            x_train: features_of(&cfg.features, &train),
            x_test: features_of(&cfg.features, &test),
            grid_x: features_of(&cfg.features, &grid_points(GRID)),
            ngrid_x: features_of(&cfg.features, &grid_points(ngrid)),
            ngrid,
            order: (0..train.len()).collect(),
            ctx: Ctx::train(cfg.seed ^ 0x5eed_d50f),
            shuffle: gradflow::seeded_rng(cfg.seed.wrapping_add(1)),
            cursor: 0,
            epoch: 0,
            steps: 0,
            grad_acc: vec![0.0; n_lin],
            grad_n: 0,
            last_grad: vec![0.0; n_lin],
            history: Vec::new(),
            history_steps: u64::MAX,
            diverged: false,
            cfg,
            version,
            csv,
            head,
            train,
            test,
            spec,
            net,
            hidden,
            weights,
            biases,
            params,
            targets,
            opt,
        })
    }

    /// The setup.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The version (bumped by every restart).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Epochs trained.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True once a loss went non-finite.
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// Change the setup. Returns true when training restarted (new data or a new
    /// network); a change of learning rate, penalty, batch size or optimizer keeps the weights.
    /// On error nothing changes.
    pub fn apply(&mut self, cfg: Config) -> Result<bool> {
        cfg.validate()?;
        if cfg.network_changed(&self.cfg) {
            *self = Engine::new(cfg, self.csv.clone(), self.version + 1)?;
            return Ok(true);
        }
        if !cfg.optimizer.eq_ignore_ascii_case(&self.cfg.optimizer) {
            self.opt = optim::try_build(&cfg.optimizer_spec()?)?;
        } else {
            self.opt.set_lr(cfg.learning_rate);
        }
        self.cfg = cfg;
        Ok(false)
    }

    /// Start again from fresh weights (same data, same seed).
    pub fn reset(&mut self) -> Result<()> {
        *self = Engine::new(self.cfg.clone(), self.csv.clone(), self.version + 1)?;
        Ok(())
    }

    /// Replace the data with an upload and restart on it (`dataset` becomes `csv`;
    /// the problem follows the labels: classes when they are class indices, else regression).
    pub fn upload(&mut self, csv: CsvData) -> Result<()> {
        let mut cfg = self.cfg.clone();
        cfg.dataset = DatasetKind::Csv;
        cfg.problem = if csv.classes.is_some() {
            Problem::Classification
        } else {
            Problem::Regression
        };
        *self = Engine::new(cfg, Some(csv), self.version + 1)?;
        Ok(())
    }

    fn batch(&self, xs: &[f64], pts: &[Point], idx: &[usize]) -> Result<(Tensor, Vec<f64>)> {
        let f = self.cfg.features.len();
        let mut x = Vec::with_capacity(idx.len() * f);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(&xs[i * f..(i + 1) * f]);
            y.push(pts[i].label);
        }
        Ok((tensor(&x, &[idx.len(), f])?, y))
    }

    /// The head's loss: softmax cross-entropy, binary cross-entropy on the logit, or squared error.
    fn loss(&self) -> Loss {
        match self.head {
            Head::Multi(_) => Loss::CrossEntropy { label_smoothing: 0.0 },
            Head::Binary => Loss::BceWithLogits,
            Head::Regression => Loss::Mse,
        }
    }

    /// The labels `y` as the loss takes them.
    fn labels(&self, y: &[f64]) -> Result<Labels> {
        Ok(match self.head {
            Head::Multi(_) => Labels::Classes(y.iter().map(|&l| l as usize).collect()),
            Head::Binary | Head::Regression => Labels::Values(tensor(y, &[y.len(), 1])?),
        })
    }

    fn data_loss(&self, out: &Tensor, y: &[f64]) -> Result<Tensor> {
        Ok(self.loss().compute(out, self.labels(y)?.target())?)
    }

    /// One optimizer step on the training points `idx`, by the trainer's own
    /// step; L1 comes after it as a proximal step, so it is not in the objective.
    fn step_on(&mut self, idx: &[usize]) -> Result<()> {
        let (x, y) = self.batch(&self.x_train, &self.train, idx)?;
        let labels = self.labels(&y)?;
        let loss = self.loss();
        let (l1, l2) = self.cfg.penalties();
        let objective = Objective {
            loss: &loss,
            penalty: Penalty { l1: 0.0, l2 },
            penalty_targets: &self.targets,
        };
        let mut update = Update {
            optimizer: self.opt.as_mut(),
            params: &self.params,
            clip_norm: None,
            clip_value: None,
            max_norm: None,
            // Small networks: checking every step costs nothing.
            check_parameters: true,
        };
        let step = match train_step(&self.net, &x, labels.target(), &objective, &mut update, &mut self.ctx)? {
            StepOutcome::Updated(step) => step,
            StepOutcome::NonFiniteLoss { .. }
            | StepOutcome::NonFiniteGradient { .. }
            | StepOutcome::NonFiniteParameter { .. } => {
                self.diverged = true;
                return Ok(());
            }
        };
        for (k, w) in self.weights.iter().enumerate() {
            if let Some(g) = step.grads.get(w) {
                self.grad_acc[k] += g.to_vec_f64().iter().map(|v| v * v).sum::<f64>().sqrt();
            }
        }
        self.grad_n += 1;
        if l1 > 0.0 && self.cfg.regularization == Regularization::L1 {
            regularize::l1_proximal_step(&self.targets, l1, self.opt.lr())?;
        }
        self.steps += 1;
        Ok(())
    }

    /// Train until the current epoch ends or `deadline` passes, whichever is first
    /// (an epoch cut short resumes on the next call). Returns true when an epoch ended.
    pub fn train_until(&mut self, deadline: Instant) -> Result<bool> {
        self.train_steps(deadline, None)
    }

    /// One frame's training: as [`train_until`](Self::train_until), stopping
    /// also after the speed control's steps per frame when it sets a number.
    pub fn train_frame(&mut self, deadline: Instant) -> Result<bool> {
        let limit = (self.cfg.steps_per_frame > 0).then_some(self.cfg.steps_per_frame);
        self.train_steps(deadline, limit)
    }

    fn train_steps(&mut self, deadline: Instant, limit: Option<usize>) -> Result<bool> {
        if self.diverged {
            return Ok(false);
        }
        let mut taken = 0usize;
        let n = self.train.len();
        let bs = self.cfg.batch_size.min(n).max(1);
        loop {
            if self.cursor == 0 {
                self.order.shuffle(&mut self.shuffle);
            }
            let end = (self.cursor + bs).min(n);
            let idx: Vec<usize> = self.order[self.cursor..end].to_vec();
            self.step_on(&idx)?;
            taken += 1;
            if self.diverged {
                return Ok(false);
            }
            self.cursor = if end >= n { 0 } else { end };
            if self.cursor == 0 {
                self.epoch += 1;
                return Ok(true);
            }
            if Instant::now() >= deadline || limit.is_some_and(|l| taken >= l) {
                return Ok(false);
            }
        }
    }

    /// Forward `x` ([n, features]) in eval mode, keeping every layer's output.
    fn forward_all(&self, x: &[f64], n: usize) -> Result<(Tensor, Vec<Tensor>)> {
        let _g = no_grad();
        let mut ctx = Ctx::eval();
        ctx.record_outputs = true;
        let t = tensor(x, &[n, self.cfg.features.len()])?;
        let out = self.net.forward(&t, &mut ctx)?;
        Ok((out, ctx.outputs))
    }

    /// Mean loss and accuracy on a point set, and each layer's outputs.
    fn evaluate(&self, xs: &[f64], pts: &[Point]) -> Result<(f64, Option<f64>, Vec<Tensor>)> {
        if pts.is_empty() {
            return Ok((0.0, None, Vec::new()));
        }
        let (out, outputs) = self.forward_all(xs, pts.len())?;
        let y: Vec<f64> = pts.iter().map(|q| q.label).collect();
        let loss = {
            let _g = no_grad();
            self.data_loss(&out, &y)?.item()?
        };
        let acc = match self.head {
            Head::Regression => None,
            Head::Binary => {
                let o = out.to_vec_f64();
                let ok = o.iter().zip(&y).filter(|(o, y)| (**o > 0.0) == (**y > 0.5)).count();
                Some(ok as f64 / y.len() as f64)
            }
            Head::Multi(_) => {
                let am = out.argmax(1)?;
                let ok = am.iter().zip(&y).filter(|(a, y)| **a == **y as usize).count();
                Some(ok as f64 / y.len() as f64)
            }
        };
        Ok((loss, acc, outputs))
    }

    /// The current frame.
    pub fn frame(&mut self, playing: bool) -> Result<Frame> {
        let (train_loss, train_acc, outs) = self.evaluate(&self.x_train, &self.train)?;
        let (test_loss, test_acc, _) = self.evaluate(&self.x_test, &self.test)?;
        self.record_history(train_loss, test_loss);
        let (saturation, dead) = self.flat_units(&outs);
        let (channels, out) = self.output_map()?;
        let (_, nouts) = self.forward_all(&self.ngrid_x, self.ngrid * self.ngrid)?;
        let neurons = self.hidden.iter().map(|h| neuron_maps(&nouts[h.post])).collect();
        let w = rounded(&self.weights);
        let total_weights: usize = w.iter().map(|l| l.len()).sum();
        let zero_weights = self
            .weights
            .iter()
            .map(|t| t.to_vec_f64().iter().filter(|v| **v == 0.0).count())
            .sum::<usize>();
        if self.grad_n > 0 {
            self.last_grad = self.grad_acc.iter().map(|g| round4(g / self.grad_n as f64)).collect();
            self.grad_acc.iter_mut().for_each(|g| *g = 0.0);
            self.grad_n = 0;
        }
        Ok(Frame {
            version: self.version,
            epoch: self.epoch,
            steps: self.steps,
            playing,
            train_loss: round4(train_loss),
            test_loss: round4(test_loss),
            train_acc: train_acc.map(round4),
            test_acc: test_acc.map(round4),
            grid: GRID,
            channels,
            out,
            ngrid: self.ngrid,
            neurons,
            w,
            b: rounded(&self.biases),
            grad_norm: self.last_grad.clone(),
            saturation,
            dead,
            sparsity: round4(zero_weights as f64 / total_weights.max(1) as f64),
            zero_weights,
            total_weights,
            diverged: self.diverged,
        })
    }

    /// Add a point to the loss history when steps were taken since the last one,
    /// thinning it out when it grows past [`MAX_HISTORY`].
    fn record_history(&mut self, train_loss: f64, test_loss: f64) {
        if self.history_steps == self.steps {
            return;
        }
        self.history_steps = self.steps;
        self.history
            .push([self.epoch as f64, round4(train_loss), round4(test_loss)]);
        if self.history.len() > MAX_HISTORY {
            self.history = self.history.iter().step_by(2).copied().collect();
        }
    }

    /// Per hidden layer, over the training points: the share of flat (point,
    /// unit) outputs and the units flat on every point (dead: no gradient passes them).
    fn flat_units(&self, outs: &[Tensor]) -> (Vec<f64>, Vec<usize>) {
        self.hidden
            .iter()
            .map(|h| {
                let Some(flat) = flat_rule(h.act) else { return (0.0, 0) };
                let a = outs[h.post].to_vec_f64();
                let width = outs[h.post].shape()[1];
                let mut flat_count = 0usize;
                let mut always = vec![true; width];
                for (i, &v) in a.iter().enumerate() {
                    if flat(v) {
                        flat_count += 1;
                    } else {
                        always[i % width] = false;
                    }
                }
                (
                    round4(flat_count as f64 / a.len().max(1) as f64),
                    always.iter().filter(|&&d| d).count(),
                )
            })
            .unzip()
    }

    /// The output heatmap over the grid: its channels and its bytes, base64.
    fn output_map(&self) -> Result<(usize, String)> {
        let (gout, _) = self.forward_all(&self.grid_x, GRID * GRID)?;
        let gv = gout.to_vec_f64();
        let (channels, bytes): (usize, Vec<u8>) = match self.head {
            Head::Binary => (
                1,
                gv.iter()
                    .map(|&l| byte(2.0 * gradflow::ops::activation::stable_sigmoid(l) - 1.0))
                    .collect(),
            ),
            Head::Regression => (1, gv.iter().map(|&v| byte(v)).collect()),
            Head::Multi(k) => {
                let p = {
                    let _g = no_grad();
                    gout.softmax(1)?.to_vec_f64()
                };
                (k, p.iter().map(|&v| byte(2.0 * v - 1.0)).collect())
            }
        };
        Ok((channels, base64::engine::general_purpose::STANDARD.encode(bytes)))
    }

    /// Everything the page needs to draw this session besides the frames.
    pub fn state(&self) -> StateView {
        let pts = |v: &[Point]| {
            v.iter()
                .map(|q| [round4(q.x1), round4(q.x2), round4(q.label)])
                .collect::<Vec<_>>()
        };
        let f = self.cfg.features.len();
        let sample = &self.x_train[..f];
        let target = match self.head {
            Head::Multi(k) => (0..k)
                .map(|c| if c == self.train[0].label as usize { 1.0 } else { 0.0 })
                .collect(),
            _ => vec![self.train[0].label],
        };
        let (toml, cli) = export_text(&self.cfg, &self.spec, sample, &target);
        StateView {
            version: self.version,
            config: self.cfg.clone(),
            head: self.head.name(),
            classes: match self.head {
                Head::Binary => 2,
                Head::Multi(k) => k,
                Head::Regression => 0,
            },
            train: pts(&self.train),
            test: pts(&self.test),
            rescaled: self.cfg.dataset == DatasetKind::Csv && self.csv.as_ref().is_some_and(|c| c.rescaled),
            epoch: self.epoch,
            history: self.history.clone(),
            toml,
            cli,
        }
    }

    /// Walk one example (x1, x2) with `label` forward and backward through the network (dropout off).
    pub fn walk(&self, x1: f64, x2: f64, label: f64) -> Result<Walk> {
        if !(x1.is_finite() && x2.is_finite() && label.is_finite()) {
            return Err(Error::NonFiniteExample);
        }
        match self.head {
            Head::Multi(k) if label < 0.0 || label.fract() != 0.0 || label as usize >= k => {
                return Err(Error::ClassLabel { classes: k, label })
            }
            Head::Binary if label != 0.0 && label != 1.0 => return Err(Error::BinaryLabel(label)),
            _ => {}
        }
        let input: Vec<f64> = self.cfg.features.iter().map(|f| f.eval(x1, x2)).collect();
        let mut ctx = Ctx::eval();
        ctx.record_outputs = true;
        let x = tensor(&input, &[1, input.len()])?;
        let out = self.net.forward(&x, &mut ctx)?;
        let loss = self.data_loss(&out, &[label])?;
        let grads = loss.backward_retain_all()?;
        let vals = |t: &Tensor| t.to_vec_f64().into_iter().map(round4).collect::<Vec<_>>();
        let grad = |t: &Tensor| grads.get(t).map(&vals).unwrap_or_else(|| vec![0.0; t.numel()]);
        let layers = self
            .hidden
            .iter()
            .map(|h| WalkLayer {
                activation: h.name.clone(),
                z: vals(&ctx.outputs[h.pre]),
                a: vals(&ctx.outputs[h.post]),
                dz: grad(&ctx.outputs[h.pre]),
                da: grad(&ctx.outputs[h.post]),
            })
            .collect();
        let prediction = {
            let _g = no_grad();
            match self.head {
                Head::Binary => out.sigmoid().to_vec_f64(),
                Head::Multi(_) => out.softmax(1)?.to_vec_f64(),
                Head::Regression => out.to_vec_f64(),
            }
        };
        Ok(Walk {
            x1,
            x2,
            features: self.cfg.features.iter().map(|f| f.label()).collect(),
            input: input.into_iter().map(round4).collect(),
            label,
            layers,
            out_z: vals(&out),
            out_dz: grad(&out),
            prediction: prediction.into_iter().map(round4).collect(),
            loss: round4(loss.item()?),
        })
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::config::LayerConfig;
    use std::time::Duration;

    fn train_epochs(e: &mut Engine, n: usize) {
        for _ in 0..n {
            while !e.train_until(Instant::now() + Duration::from_secs(10)).unwrap() {
                assert!(!e.diverged());
            }
        }
    }

    #[test]
    fn circle_is_learned() {
        let mut c = Config::default();
        c.learning_rate = 0.1;
        c.optimizer = "adam".into();
        let mut e = Engine::new(c, None, 1).unwrap();
        let f0 = e.frame(false).unwrap();
        train_epochs(&mut e, 40);
        let f = e.frame(false).unwrap();
        assert!(f.test_loss < f0.test_loss * 0.5, "{} → {}", f0.test_loss, f.test_loss);
        assert!(f.test_acc.unwrap() > 0.9, "{:?}", f.test_acc);
        assert_eq!(f.epoch, 40);
        assert_eq!(f.neurons.len(), 2);
        assert_eq!(f.neurons[0].len(), 4);
        assert_eq!(f.w.len(), 3);
        assert!(f.grad_norm.iter().all(|g| *g > 0.0));
        assert_eq!(e.state().history.len(), 2);
    }

    #[test]
    fn three_spirals_use_softmax() {
        let mut c = Config::default();
        c.dataset = DatasetKind::Spiral3;
        let mut e = Engine::new(c, None, 1).unwrap();
        assert_eq!(e.state().classes, 3);
        let f = e.frame(false).unwrap();
        assert_eq!(f.channels, 3);
        let bytes = base64::engine::general_purpose::STANDARD.decode(&f.out).unwrap();
        assert_eq!(bytes.len(), GRID * GRID * 3);
        train_epochs(&mut e, 1);
        let w = e.walk(1.0, -2.0, 2.0).unwrap();
        assert_eq!(w.prediction.len(), 3);
        assert!((w.prediction.iter().sum::<f64>() - 1.0).abs() < 1e-3);
        assert!(e.walk(1.0, 1.0, 3.0).is_err());
    }

    #[test]
    fn l1_makes_exact_zeros() {
        let mut c = Config::default();
        c.regularization = Regularization::L1;
        c.reg_rate = 0.05;
        c.learning_rate = 0.1;
        let mut e = Engine::new(c, None, 1).unwrap();
        train_epochs(&mut e, 20);
        let f = e.frame(false).unwrap();
        assert!(f.zero_weights > 0, "sparsity {}", f.sparsity);
    }

    #[test]
    fn deep_sigmoid_gradients_vanish() {
        let mut c = Config::default();
        c.layers = vec![
            LayerConfig {
                neurons: 8,
                activation: "sigmoid".into(),
                dropout: 0.0
            };
            12
        ];
        c.init = "pytorch".into();
        let mut e = Engine::new(c, None, 1).unwrap();
        train_epochs(&mut e, 1);
        let f = e.frame(false).unwrap();
        let (first, last) = (f.grad_norm[0], f.grad_norm[f.grad_norm.len() - 1]);
        assert!(first < last * 1e-3, "first {first}, last {last}");
    }

    #[test]
    fn walk_gradients_match_the_chain_rule() {
        let c = Config::default();
        let e = Engine::new(c, None, 1).unwrap();
        let w = e.walk(1.0, 2.0, 1.0).unwrap();
        // Output of the binary head: dL/dz = σ(z) − y.
        let p = w.prediction[0];
        assert!((w.out_dz[0] - (p - 1.0)).abs() < 1e-3);
        // tanh: dL/dz = dL/da · (1 − a²).
        for l in &w.layers {
            for j in 0..l.z.len() {
                let expect = l.da[j] * (1.0 - l.a[j] * l.a[j]);
                assert!((l.dz[j] - expect).abs() < 1e-3 * (1.0 + expect.abs()));
            }
        }
    }

    #[test]
    fn light_changes_keep_the_weights() {
        let mut e = Engine::new(Config::default(), None, 1).unwrap();
        train_epochs(&mut e, 2);
        let mut c = e.config().clone();
        c.learning_rate = 0.3;
        c.regularization = Regularization::L2;
        c.reg_rate = 0.001;
        assert!(!e.apply(c.clone()).unwrap());
        assert_eq!(e.epoch(), 2);
        c.layers.push(LayerConfig::default());
        assert!(e.apply(c).unwrap());
        assert_eq!(e.epoch(), 0);
        assert_eq!(e.version(), 2);
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod timing {
    use super::*;
    use crate::config::LayerConfig;
    use std::time::Duration;

    /// `cargo test -p gradflow-playground --release timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn frame_cost_of_the_largest_network() {
        let mut c = Config::default();
        c.dataset = DatasetKind::Spiral;
        c.points = 2000;
        c.features = Feature::ALL.to_vec();
        c.layers = vec![
            LayerConfig {
                neurons: 32,
                activation: "tanh".into(),
                dropout: 0.0
            };
            20
        ];
        let mut e = Engine::new(c, None, 1).unwrap();
        for _ in 0..5 {
            let t = Instant::now();
            let steps = e.steps;
            e.train_until(Instant::now() + Duration::from_millis(30)).unwrap();
            let t1 = t.elapsed();
            let s = e.steps - steps;
            let t = Instant::now();
            let (a, _, _) = e.evaluate(&e.x_train, &e.train).unwrap();
            let t2 = t.elapsed();
            let t = Instant::now();
            let f = e.frame(true).unwrap();
            let t3 = t.elapsed();
            let t = Instant::now();
            let j = serde_json::to_string(&f).unwrap();
            eprintln!(
                "train {t1:?} ({s} steps), eval {t2:?}, frame {t3:?}, json {:?} ({} bytes) {a}",
                t.elapsed(),
                j.len()
            );
        }
    }
}
