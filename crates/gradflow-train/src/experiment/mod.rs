//! Studies that make the seed article's points measurable.
//!
//! * `activations`: the same deep MLP with each activation and each of Xavier
//!   and He init. Saturating activations (sigmoid, tanh) shrink the gradient at
//!   every layer on its way back (σ' ≤ 1/4), so the first layers barely learn
//!   (Glorot & Bengio 2010); ReLU-family activations keep it alive when the
//!   init preserves variance (He et al. 2015).
//! * `regularization`: a large MLP on a small training set, where it overfits,
//!   with no regularization, L1, L2, both, dropout, weight decay and early
//!   stopping: the train/validation gap each one closes, and L1's sparsity.
//! * `depth`: plain and residual MLPs of one width at growing depth, with
//!   ReLU, ReLU + BatchNorm and sigmoid: the degradation problem of deep plain
//!   nets and the identity path that removes it (He et al. 2016).
//! * `memory` (`memory.rs`): the adding problem with a tanh RNN, an LSTM and a
//!   GRU over growing sequence lengths: where the RNN's gradient through time
//!   vanishes and the gated cells carry it.

mod depth;
pub mod memory;

pub use depth::{depth, DepthRow};
use depth::{DEPTH_EPOCHS, DEPTH_TRAIN_SIZE, DEPTH_WIDTH};

use crate::config::TrainConfig;
use crate::error::{Error, Result as Res};
use crate::metrics::batch_tensor;
use crate::trainer::{DataSource, Silent, Trainer};
use gradflow::DType;
use gradflow_data::{Dataset, Mnist, MNIST_MEAN, MNIST_STD};
use gradflow_nn::{
    regularize, Activation, Ctx, FlattenSpec, LayerSpec, LinearSpec, Loss, ModelSpec, Module, Sequential, Target,
};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Progress across the runs of an experiment.
pub trait Progress {
    /// Run `index` of `total` (`name`) begins.
    fn run_start(&mut self, _index: usize, _total: usize, _name: &str) {}
    /// It ended.
    fn run_end(&mut self, _index: usize, _summary: &str) {}
}

/// Settings shared by both experiments.
#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    /// MNIST directory.
    pub data_dir: PathBuf,
    /// Where CSV, JSON, markdown and PNG files go.
    pub out_dir: PathBuf,
    /// Small and fast (what CI runs).
    pub quick: bool,
    /// Hidden layers of the deep MLP (activations study).
    pub depth: usize,
    /// Hidden layers of each net of the depth study.
    pub depths: Vec<usize>,
    /// Width of each hidden layer.
    pub width: usize,
    /// Epochs per run.
    pub epochs: usize,
    /// Training images.
    pub train_size: usize,
    /// Seed of every run.
    pub seed: u64,
    /// Sequence lengths T (memory study).
    pub lengths: Vec<usize>,
}

/// Which study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Study {
    /// Vanishing gradients: a deep MLP with each activation, Xavier and He init.
    Activations,
    /// Overfitting: a large MLP on a small training set with each regularizer.
    Regularization,
    /// Degradation: plain and residual MLPs at growing depth.
    Depth,
    /// Memory through time: the adding problem with a tanh RNN, an LSTM and a GRU.
    Memory,
}

impl Study {
    /// Its name, which also names its files (`activations.md`) and default directory.
    pub fn name(self) -> &'static str {
        match self {
            Study::Activations => "activations",
            Study::Regularization => "regularization",
            Study::Depth => "depth",
            Study::Memory => "memory",
        }
    }

    /// Default options: the full study, or with `quick` a small version that runs in seconds.
    pub fn options(self, quick: bool, data_dir: PathBuf) -> ExperimentOptions {
        let (depth, width, epochs, train_size) = match (self, quick) {
            (Study::Activations, false) => (10, 256, 5, 10_000),
            (Study::Activations, true) => (4, 32, 2, 1000),
            (Study::Regularization, false) => (2, 1024, 60, 1000),
            (Study::Regularization, true) => (2, 256, 6, 500),
            (Study::Depth, false) => (64, DEPTH_WIDTH, DEPTH_EPOCHS, DEPTH_TRAIN_SIZE),
            (Study::Depth, true) => (4, 16, 2, 500),
            // depth: one recurrent layer; width: its hidden units; train_size: training sequences.
            (Study::Memory, false) => (1, 32, 8, 5000),
            (Study::Memory, true) => (1, 8, 2, 256),
        };
        let depths = match quick {
            false => vec![4, 16, 32, 64],
            true => vec![2, 4],
        };
        let lengths = match (self, quick) {
            (Study::Memory, false) => vec![10, 50, 100, 200],
            (Study::Memory, true) => vec![5, 10],
            _ => Vec::new(),
        };
        ExperimentOptions {
            data_dir,
            out_dir: PathBuf::from("runs").join(format!("experiment-{}", self.name())),
            quick,
            depth,
            depths,
            width,
            epochs,
            train_size,
            seed: 0,
            lengths,
        }
    }

    /// Run the study, write its files into `opts.out_dir` and return its markdown table.
    pub fn run(self, opts: &ExperimentOptions, progress: &mut dyn Progress) -> Res<String> {
        match self {
            Study::Activations => {
                activations(opts, progress)?;
            }
            Study::Regularization => {
                regularization(opts, progress)?;
            }
            Study::Depth => {
                depth(opts, progress)?;
            }
            Study::Memory => {
                memory::memory(opts, progress)?;
            }
        }
        let path = opts.out_dir.join(format!("{}.md", self.name()));
        std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))
    }
}

fn io_err(p: &Path, e: std::io::Error) -> Error {
    Error::io(p, "", e)
}

fn write(dir: &Path, name: &str, text: &str) -> Res<()> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| io_err(&p, e))
}

fn load_mnist(dir: &Path, train: usize, test: usize) -> Res<Mnist> {
    let mut m = Mnist::load_limited(dir, Some(train), Some(test))?;
    m.train.normalize(MNIST_MEAN, MNIST_STD);
    m.test.normalize(MNIST_MEAN, MNIST_STD);
    Ok(m)
}

/// `depth` hidden layers of `width` units with `act`, on flattened 28×28 inputs.
pub fn deep_mlp(depth: usize, width: usize, act: Activation) -> ModelSpec {
    let mut layers = vec![LayerSpec::from(FlattenSpec)];
    for _ in 0..depth {
        layers.push(LinearSpec::new(width).into());
        layers.push(act.into());
    }
    layers.push(LinearSpec::new(10).into());
    ModelSpec {
        input: vec![1, 28, 28],
        layers,
    }
}

/// Gradient L2 norm of each Linear/Conv2d weight, first layer first, on one batch.
pub fn layer_gradient_norms(model: &Sequential, ds: &Dataset, n: usize) -> Res<Vec<f64>> {
    gradient_norms(model, ds, n, &mut Ctx::eval())
}

/// [`layer_gradient_norms`] in the mode `ctx` sets (batch statistics when training).
fn gradient_norms(model: &Sequential, ds: &Dataset, n: usize, ctx: &mut Ctx) -> Res<Vec<f64>> {
    let idx: Vec<usize> = (0..n.min(ds.len())).collect();
    let x = batch_tensor(ds, &idx, DType::F32)?;
    let labels = ds.labels().ok_or_else(|| Error::Input("needs class labels".into()))?;
    let y: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
    let out = model.forward(&x, ctx)?;
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 }.compute(&out, Target::Classes(&y))?;
    let grads = loss.backward()?;
    Ok(model
        .named_penalty_targets()
        .iter()
        .map(|t| {
            grads
                .get(&t.tensor)
                .map(|g| g.square().sum_all().item().unwrap_or(0.0).sqrt())
                .unwrap_or(0.0)
        })
        .collect())
}

/// One row of the activations table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivationRow {
    /// Activation name.
    pub activation: String,
    /// Initializer name.
    pub init: String,
    /// ‖∇W₁‖ / ‖∇W_last‖ at initialization.
    pub grad_ratio_init: f64,
    /// The same ratio after training.
    pub grad_ratio_trained: f64,
    /// Test accuracy after the budget.
    pub test_accuracy: f64,
    /// First epoch whose validation accuracy reached 90%, if any.
    pub epochs_to_90: Option<usize>,
    /// Per-layer gradient norms at initialization, first layer first.
    pub grad_norms_init: Vec<f64>,
}

/// Train the deep MLP with every activation × {Xavier, He}; write the table and the plot.
pub fn activations(opts: &ExperimentOptions, progress: &mut dyn Progress) -> Res<Vec<ActivationRow>> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| io_err(&opts.out_dir, e))?;
    let acts: Vec<Activation> = if opts.quick {
        vec![Activation::Sigmoid, Activation::ReLU]
    } else {
        ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu"]
            .iter()
            .map(|n| Activation::parse(n).expect("known"))
            .collect()
    };
    let inits = ["xavier", "he"];
    let m = load_mnist(&opts.data_dir, opts.train_size, if opts.quick { 1000 } else { 10_000 })?;
    let total = acts.len() * inits.len();
    let mut rows = Vec::with_capacity(total);
    for act in &acts {
        for init in inits {
            progress.run_start(rows.len(), total, &format!("{} + {init}", act.name()));
            let row = activation_run(opts, &m, *act, init)?;
            progress.run_end(
                rows.len(),
                &format!(
                    "test accuracy {:.2}%, gradient ratio {:.1e}",
                    row.test_accuracy * 100.0,
                    row.grad_ratio_init
                ),
            );
            rows.push(row);
        }
    }
    write_activations(opts, &rows)?;
    Ok(rows)
}

/// One run of the activations study: gradient norms before and after training, and the accuracy reached.
fn activation_run(opts: &ExperimentOptions, m: &Mnist, act: Activation, init: &str) -> Res<ActivationRow> {
    let config = TrainConfig {
        model: format!("deep-mlp-{}", act.name()),
        epochs: opts.epochs,
        batch_size: 128,
        lr: 0.02,
        optimizer: "sgd".into(),
        momentum: 0.9,
        schedule: "constant".into(),
        init: Some(init.into()),
        val_split: 0.1,
        seed: opts.seed,
        diagnostics_every: 0,
        ..TrainConfig::default()
    };
    let spec = deep_mlp(opts.depth, opts.width, act);
    let run_dir = opts
        .out_dir
        .join("runs")
        .join(format!("{}-{init}", act.name().to_lowercase()));
    let data = DataSource::Datasets {
        train: m.train.clone(),
        val: None,
        test: m.test.clone(),
    };
    let mut t = Trainer::new(config, spec, data, &run_dir)?;
    let norms0 = layer_gradient_norms(&t.model, t.test_set(), 256)?;
    let summary = t.fit(&mut Silent, &AtomicBool::new(false))?;
    let norms1 = layer_gradient_norms(&t.model, t.test_set(), 256)?;
    let ratio = |v: &[f64]| v.first().copied().unwrap_or(0.0) / v.last().copied().unwrap_or(1.0).max(1e-30);
    let epochs_to_90 = t
        .history()
        .iter()
        .find(|m| m.val_accuracy.unwrap_or(0.0) >= 0.9)
        .map(|m| m.epoch);
    Ok(ActivationRow {
        activation: act.name().into(),
        init: init.into(),
        grad_ratio_init: ratio(&norms0),
        grad_ratio_trained: ratio(&norms1),
        test_accuracy: summary.test_accuracy,
        epochs_to_90,
        grad_norms_init: norms0,
    })
}

/// The activations table as CSV, markdown and JSON, and the plot of gradient norms by layer.
fn write_activations(opts: &ExperimentOptions, rows: &[ActivationRow]) -> Res<()> {
    let mut csv = String::from("activation,init,grad_ratio_init,grad_ratio_trained,test_accuracy,epochs_to_90\n");
    let mut md = format!(
        "Deep MLP: {} hidden layers of {} units, SGD (lr 0.02, momentum 0.9), {} epochs on {} images.\n\n| activation | init | ‖∇W₁‖/‖∇W_last‖ at init | after training | test accuracy | epochs to 90% |\n| --- | --- | --- | --- | --- | --- |\n",
        opts.depth, opts.width, opts.epochs, opts.train_size
    );
    for r in rows {
        let e90 = r.epochs_to_90.map(|e| e.to_string()).unwrap_or_else(|| "never".into());
        let _ = writeln!(
            csv,
            "{},{},{:e},{:e},{},{}",
            r.activation, r.init, r.grad_ratio_init, r.grad_ratio_trained, r.test_accuracy, e90
        );
        let _ = writeln!(
            md,
            "| {} | {} | {:.2e} | {:.2e} | {:.2}% | {e90} |",
            r.activation,
            r.init,
            r.grad_ratio_init,
            r.grad_ratio_trained,
            r.test_accuracy * 100.0
        );
    }
    write(&opts.out_dir, "activations.csv", &csv)?;
    write(&opts.out_dir, "activations.md", &md)?;
    write(
        &opts.out_dir,
        "activations.json",
        &serde_json::to_string_pretty(&rows).expect("serialize"),
    )?;
    let series: Vec<(String, Vec<f64>)> = rows
        .iter()
        .map(|r| (format!("{} + {}", r.activation, r.init), r.grad_norms_init.clone()))
        .collect();
    line_plot(
        &opts.out_dir.join("activations_grad_norms.png"),
        "Gradient norm by layer at initialization",
        "layer (input → output)",
        "‖∇W‖ (log)",
        &series,
        true,
    )
}

/// One row of the regularization table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegularizationRow {
    /// Which regularizer.
    pub name: String,
    /// Training accuracy (eval mode) at the end.
    pub train_accuracy: f64,
    /// Validation accuracy at the end.
    pub val_accuracy: f64,
    /// train − validation accuracy.
    pub gap: f64,
    /// Training data loss (eval mode) at the end.
    pub train_loss_final: f64,
    /// Validation loss at the end.
    pub val_loss_final: f64,
    /// validation − training loss: the overfitting gap on the loss curves.
    pub loss_gap: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Fraction of weights with |w| < 1e-3.
    pub sparsity: f64,
    /// L2 norm of all weights.
    pub weight_norm: f64,
    /// Validation loss per epoch.
    pub val_loss: Vec<f64>,
    /// Training data loss per epoch.
    pub train_loss: Vec<f64>,
}

/// Train the overfitting-prone MLP with each regularizer; write the table and curves.
pub fn regularization(opts: &ExperimentOptions, progress: &mut dyn Progress) -> Res<Vec<RegularizationRow>> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| io_err(&opts.out_dir, e))?;
    let val_size = if opts.quick { 1000 } else { 5000 };
    let m = load_mnist(
        &opts.data_dir,
        opts.train_size + val_size,
        if opts.quick { 1000 } else { 10_000 },
    )?;
    let all: Vec<usize> = (0..m.train.len()).collect();
    let split = Split {
        train: m.train.subset(&all[..opts.train_size.min(all.len())]),
        val: m.train.subset(&all[opts.train_size.min(all.len())..]),
        test: m.test,
    };
    let configs = regularizers(opts);
    let total = configs.len();
    let mut rows = Vec::with_capacity(total);
    let width = if opts.quick { 256 } else { opts.width.max(512) };
    for (name, config) in configs {
        progress.run_start(rows.len(), total, name);
        let row = regularization_run(opts, &split, name, config, width)?;
        progress.run_end(
            rows.len(),
            &format!(
                "gap {:.1} points, test {:.2}%, sparsity {:.1}%",
                row.gap * 100.0,
                row.test_accuracy * 100.0,
                row.sparsity * 100.0
            ),
        );
        rows.push(row);
    }
    write_regularization(opts, &rows, width, (split.train.len(), split.val.len()))?;
    Ok(rows)
}

/// The data of the regularization study: a small training set, and held-out training images for validation.
struct Split {
    train: Dataset,
    val: Dataset,
    test: Dataset,
}

/// Each regularizer of the study, by name, as a change to one base configuration.
fn regularizers(opts: &ExperimentOptions) -> Vec<(&'static str, TrainConfig)> {
    let base = TrainConfig {
        model: "reg-mlp".into(),
        epochs: opts.epochs,
        batch_size: 64,
        lr: 0.02,
        optimizer: "sgd".into(),
        momentum: 0.9,
        schedule: "constant".into(),
        seed: opts.seed,
        diagnostics_every: 0,
        ..TrainConfig::default()
    };
    let with = |f: &dyn Fn(&mut TrainConfig)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    vec![
        ("none", base.clone()),
        ("L1 (λ₁=1e-4)", with(&|c| c.l1 = 1e-4)),
        ("L2 (λ₂=1e-3)", with(&|c| c.l2 = 1e-3)),
        ("L1+L2", with(&|c| (c.l1, c.l2) = (1e-4, 1e-3))),
        ("dropout 0.5", with(&|c| c.dropout = Some(0.5))),
        ("weight decay 5e-3", with(&|c| c.weight_decay = 5e-3)),
        ("early stopping (5)", with(&|c| c.early_stopping = Some(5))),
    ]
}

/// One run of the regularization study, measured at its end in eval mode.
fn regularization_run(
    opts: &ExperimentOptions,
    split: &Split,
    name: &str,
    config: TrainConfig,
    width: usize,
) -> Res<RegularizationRow> {
    let spec = deep_mlp(2, width, Activation::ReLU);
    let spec = match config.dropout {
        Some(p) => spec.with_dropout(p),
        None => spec,
    };
    let run_dir = opts.out_dir.join("runs").join(
        name.split(' ')
            .next()
            .unwrap_or("run")
            .to_lowercase()
            .replace(['(', ')', '+'], "_"),
    );
    let data = DataSource::Datasets {
        train: split.train.clone(),
        val: Some(split.val.clone()),
        test: split.test.clone(),
    };
    let mut t = Trainer::new(config, spec, data, &run_dir)?;
    let summary = t.fit(&mut Silent, &AtomicBool::new(false))?;
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 };
    let tr = crate::metrics::evaluate(&t.model, &split.train, &loss, 1000, DType::F32)?;
    let va = crate::metrics::evaluate(&t.model, &split.val, &loss, 1000, DType::F32)?;
    let targets = t.model.named_penalty_targets();
    Ok(RegularizationRow {
        name: name.into(),
        train_accuracy: tr.accuracy,
        val_accuracy: va.accuracy,
        gap: tr.accuracy - va.accuracy,
        train_loss_final: tr.loss,
        val_loss_final: va.loss,
        loss_gap: va.loss - tr.loss,
        test_accuracy: summary.test_accuracy,
        sparsity: regularize::sparsity(&targets, 1e-3),
        weight_norm: targets
            .iter()
            .map(|t| t.tensor.square().sum_all().item().unwrap_or(0.0))
            .sum::<f64>()
            .sqrt(),
        val_loss: t.history().iter().map(|m| m.val_loss.unwrap_or(f64::NAN)).collect(),
        train_loss: t.history().iter().map(|m| m.train_data_loss).collect(),
    })
}

/// The regularization table as CSV, markdown and JSON, and the loss curves.
fn write_regularization(
    opts: &ExperimentOptions,
    rows: &[RegularizationRow],
    width: usize,
    (n_train, n_val): (usize, usize),
) -> Res<()> {
    let mut csv = String::from(
        "regularizer,train_accuracy,val_accuracy,gap,train_loss,val_loss,loss_gap,test_accuracy,sparsity,weight_norm\n",
    );
    let mut md = format!(
        "MLP 784-{width}-{width}-10 (ReLU), SGD (lr 0.02, momentum 0.9), {} epochs on {n_train} training images; validation on {n_val} held-out training images.\n\n| regularizer | train acc | val acc | acc gap (points) | train loss | val loss | loss gap | test acc | near-zero weights | weight norm |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        opts.epochs,
    );
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{}",
            r.name, r.train_accuracy, r.val_accuracy, r.gap, r.test_accuracy, r.sparsity, r.weight_norm
        );
        let _ = writeln!(
            md,
            "| {} | {:.2}% | {:.2}% | {:.2} | {:.4} | {:.4} | {:.4} | {:.2}% | {:.2}% | {:.1} |",
            r.name,
            r.train_accuracy * 100.0,
            r.val_accuracy * 100.0,
            r.gap * 100.0,
            r.train_loss_final,
            r.val_loss_final,
            r.loss_gap,
            r.test_accuracy * 100.0,
            r.sparsity * 100.0,
            r.weight_norm
        );
    }
    write(&opts.out_dir, "regularization.csv", &csv)?;
    write(&opts.out_dir, "regularization.md", &md)?;
    write(
        &opts.out_dir,
        "regularization.json",
        &serde_json::to_string_pretty(&rows).expect("serialize"),
    )?;
    plot_regularization(opts, rows)
}

/// Each regularizer's validation and training loss by epoch.
fn plot_regularization(opts: &ExperimentOptions, rows: &[RegularizationRow]) -> Res<()> {
    let curves = |f: fn(&RegularizationRow) -> &Vec<f64>| -> Vec<(String, Vec<f64>)> {
        rows.iter().map(|r| (r.name.clone(), f(r).clone())).collect()
    };
    line_plot(
        &opts.out_dir.join("regularization_val_loss.png"),
        "Validation loss by epoch",
        "epoch",
        "validation loss",
        &curves(|r| &r.val_loss),
        false,
    )?;
    line_plot(
        &opts.out_dir.join("regularization_train_loss.png"),
        "Training loss by epoch",
        "epoch",
        "training loss",
        &curves(|r| &r.train_loss),
        true,
    )
}

/// Colours of the study plots' curves, cycled.
const PALETTE: [RGBColor; 8] = [
    RED,
    BLUE,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

/// A line plot of several series against their index (1-based), optionally on a log y axis.
pub fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<f64>)],
    log_y: bool,
) -> Res<()> {
    let panel = Panel {
        title,
        xlabel,
        ylabel,
        series: series
            .iter()
            .map(|(name, v)| {
                (
                    name.clone(),
                    v.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect(),
                )
            })
            .collect(),
        log_y,
    };
    panels_plot(path, (900, 560), 1, &[panel], false)
}

/// One chart of curves through (x, y) points.
pub struct Panel<'a> {
    /// Caption.
    pub title: &'a str,
    /// X axis label.
    pub xlabel: &'a str,
    /// Y axis label.
    pub ylabel: &'a str,
    /// Named curves.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Log-scaled y axis (non-positive values are left out).
    pub log_y: bool,
}

/// `panels` in a grid of `cols` columns, each `size` pixels, in one PNG; with
/// `share_y` every panel gets the same y range, so that heights compare across panels.
pub fn panels_plot(path: &Path, size: (u32, u32), cols: usize, panels: &[Panel], share_y: bool) -> Res<()> {
    let err = |e: &dyn std::fmt::Display| Error::Output(format!("{}: cannot draw plot: {e}", path.display()));
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (size.0 * cols as u32, size.1 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let shared = share_y.then(|| {
        y_range(
            panels.iter().flat_map(|p| p.series.iter()),
            panels.iter().any(|p| p.log_y),
        )
    });
    for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let range = shared.unwrap_or_else(|| y_range(panel.series.iter(), panel.log_y));
        draw_panel(area, panel, range).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The y values that can be placed on an axis (positive ones only on a log axis).
fn plottable(v: f64, log_y: bool) -> bool {
    v.is_finite() && (!log_y || v > 0.0)
}

/// The smallest and largest plottable y of `series`, never an empty range.
fn y_range<'a>(series: impl Iterator<Item = &'a (String, Vec<(f64, f64)>)>, log_y: bool) -> (f64, f64) {
    let (mut lo, mut hi) = series
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .filter(|&v| plottable(v, log_y))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (1e-3, 1.0);
    }
    if hi <= lo {
        hi = lo * 2.0 + 1e-12;
    }
    (lo, hi)
}

/// One panel of [`panels_plot`] on its part of the image, y between `lo` and `hi`.
fn draw_panel(area: &DrawingArea<BitMapBackend, Shift>, p: &Panel, (lo, hi): (f64, f64)) -> Result<(), String> {
    let (x0, x1) = p
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|q| q.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (1.0, 2.0)
    };
    let mut b = ChartBuilder::on(area);
    b.caption(p.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let log_y = p.log_y;
    let curves = Curves {
        xlabel: p.xlabel,
        ylabel: p.ylabel,
        series: &p.series,
        finite: &move |v: &f64| plottable(*v, log_y),
        log_y,
    };
    let e = |e: &dyn std::fmt::Display| e.to_string();
    if log_y {
        let chart = b
            .build_cartesian_2d(x0..x1, (lo * 0.8..hi * 1.25).log_scale())
            .map_err(|x| e(&x))?;
        curves.draw(chart).map_err(|x| e(&x))
    } else {
        let pad = (hi - lo) * 0.05;
        let chart = b.build_cartesian_2d(x0..x1, lo - pad..hi + pad).map_err(|x| e(&x))?;
        curves.draw(chart).map_err(|x| e(&x))
    }
}

/// What [`draw_panel`] draws on its chart, whichever the y axis.
struct Curves<'a> {
    xlabel: &'a str,
    ylabel: &'a str,
    series: &'a [(String, Vec<(f64, f64)>)],
    /// Which values can be placed on the axis.
    finite: &'a dyn Fn(&f64) -> bool,
    /// The y axis is log-scaled.
    log_y: bool,
}

impl Curves<'_> {
    fn draw<'b, Y>(
        &self,
        mut chart: ChartContext<'b, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    ) -> Result<(), Box<dyn std::error::Error + 'b>>
    where
        Y: plotters::coord::ranged1d::Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.xlabel).y_desc(self.ylabel);
        // A log axis spans decades: 1e-7 reads better than 1.0000000000000001e-7.
        let decade = |v: &f64| format!("{v:.0e}");
        if self.log_y {
            mesh.y_label_formatter(&decade);
        }
        mesh.draw()?;
        for (i, (name, v)) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = ShapeStyle::from(color).stroke_width(if i % 2 == 0 { 2 } else { 1 });
            let pts: Vec<(f64, f64)> = v.iter().copied().filter(|(_, y)| (self.finite)(y)).collect();
            chart
                .draw_series(LineSeries::new(pts, style))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}
