//! The depth study: plain and residual MLPs of one width at growing depth.
//!
//! He et al. (2016) found that a deeper plain net, even with batch
//! normalization, reaches a *higher training error* than a shallower one (the
//! degradation problem), while the same net with identity shortcuts keeps
//! improving with depth. Every net here has `depth` hidden Linear layers of
//! `width` units and the same parameter count whether plain or residual: the
//! first hidden layer maps the image to `width` units, and each of the others
//! is either stacked (plain) or wrapped as `x + body(x)` (residual).
//!
//! The residual blocks are pre-activation ones (He et al. 2016b, "Identity
//! Mappings in Deep Residual Networks"): `body = [BatchNorm1d, activation,
//! Linear]`, so nothing but additions lies on the path from the first hidden
//! layer to the head, and a branch's output has zero mean. A post-activation
//! body `[Linear, BatchNorm1d, ReLU]` adds a positive term at every block, and
//! the head then sees features whose scale grows with depth.

use super::{gradient_norms, io_err, load_mnist, panels_plot, write, ExperimentOptions, Panel, Progress};
use crate::config::TrainConfig;
use crate::error::Result as Res;
use crate::trainer::{DataSource, Silent, Trainer};
use gradflow::DType;
use gradflow_data::{Dataset, Mnist};
use gradflow_nn::{Ctx, Loss, ModelSpec, Module, Sequential};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;

/// Hidden width of the full study: wide enough to learn MNIST, narrow enough
/// that 24 nets up to 64 layers deep train in minutes on 2 cores.
pub(super) const DEPTH_WIDTH: usize = 128;
/// Epochs of each run of the full study.
pub(super) const DEPTH_EPOCHS: usize = 5;
/// Training images of the full study.
pub(super) const DEPTH_TRAIN_SIZE: usize = 10_000;
/// SGD's learning rate, the same for every net (momentum 0.9, batch 128).
const LR: f64 = 0.02;

/// One architecture of the study, built at any depth.
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// `x + body(x)` blocks after the first hidden layer, or a plain stack.
    residual: bool,
    /// The activation's class name in model files.
    activation: &'static str,
    /// BatchNorm1d between each Linear and its activation.
    batch_norm: bool,
}

/// The study's nets: ReLU with and without BatchNorm, and sigmoid, each plain and residual.
const VARIANTS: [Variant; 6] = [
    Variant::new(false, "ReLU", false),
    Variant::new(true, "ReLU", false),
    Variant::new(false, "ReLU", true),
    Variant::new(true, "ReLU", true),
    Variant::new(false, "Sigmoid", false),
    Variant::new(true, "Sigmoid", false),
];

impl Variant {
    const fn new(residual: bool, activation: &'static str, batch_norm: bool) -> Variant {
        Variant {
            residual,
            activation,
            batch_norm,
        }
    }

    /// "plain ReLU", "residual ReLU + BN", ...
    fn name(self) -> String {
        format!(
            "{} {}{}",
            if self.residual { "residual" } else { "plain" },
            self.activation,
            if self.batch_norm { " + BN" } else { "" }
        )
    }

    /// The name as a directory name.
    fn slug(self) -> String {
        self.name().to_lowercase().replace(" + ", "-").replace(' ', "-")
    }

    /// `[[TABLE]]` entries: a Linear of `width` units.
    fn linear(width: usize, table: &str) -> String {
        format!("[[{table}]]\ntype = \"Linear\"\nout_features = {width}\n")
    }

    /// `[[TABLE]]` entries: BatchNorm1d (if the variant has it), then the activation.
    fn norm_act(self, table: &str) -> String {
        let mut s = String::new();
        if self.batch_norm {
            let _ = writeln!(s, "[[{table}]]\ntype = \"BatchNorm1d\"");
        }
        let _ = writeln!(s, "[[{table}]]\ntype = \"{}\"", self.activation);
        s
    }

    /// The model file of the net with `depth` hidden layers of `width` units:
    /// plain, `depth` × [Linear, (BatchNorm1d), act]; residual, a Linear, then
    /// `depth − 1` × Residual{body: [(BatchNorm1d), act, Linear]}, then (BatchNorm1d), act.
    fn model_toml(self, depth: usize, width: usize) -> String {
        let mut s = String::from("input = [1, 28, 28]\n[[layer]]\ntype = \"Flatten\"\n");
        s += &Variant::linear(width, "layer");
        for _ in 1..depth {
            if self.residual {
                s += "[[layer]]\ntype = \"Residual\"\n";
                s += &self.norm_act("layer.body");
                s += &Variant::linear(width, "layer.body");
            } else {
                s += &self.norm_act("layer");
                s += &Variant::linear(width, "layer");
            }
        }
        s += &self.norm_act("layer");
        s + &Variant::linear(10, "layer")
    }
}

/// One row of the depth table: one variant at one depth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepthRow {
    /// "plain ReLU", "residual ReLU + BN", ...
    pub variant: String,
    /// Identity shortcuts around every hidden Linear after the first.
    pub residual: bool,
    /// Activation class name.
    pub activation: String,
    /// BatchNorm1d in every hidden layer.
    pub batch_norm: bool,
    /// Hidden Linear layers.
    pub depth: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// ‖∇W₁‖ / ‖∇W_last‖ at initialization (first hidden layer over the output layer).
    pub grad_ratio_init: f64,
    /// The same ratio after training.
    pub grad_ratio_trained: f64,
    /// Loss on the training images at the end, in eval mode (NaN after divergence).
    pub train_loss_final: f64,
    /// Accuracy on the training images at the end, in eval mode.
    pub train_accuracy: f64,
    /// Test accuracy at the end.
    pub test_accuracy: f64,
    /// Why training ended ("completed", or how it diverged).
    pub stopped: String,
    /// Mean training loss of each epoch (on the fly).
    pub train_loss: Vec<f64>,
    /// Per-layer gradient norms at initialization, first layer first.
    pub grad_norms_init: Vec<f64>,
    /// Seconds of training.
    pub seconds: f64,
}

/// Train every variant at every depth of `opts.depths`; write the tables and plots.
pub fn depth(opts: &ExperimentOptions, progress: &mut dyn Progress) -> Res<Vec<DepthRow>> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| io_err(&opts.out_dir, e))?;
    let m = load_mnist(&opts.data_dir, opts.train_size, if opts.quick { 500 } else { 10_000 })?;
    let total = VARIANTS.len() * opts.depths.len();
    let mut rows = Vec::with_capacity(total);
    for v in VARIANTS {
        for &d in &opts.depths {
            progress.run_start(rows.len(), total, &format!("{} × {d}", v.name()));
            let row = depth_run(opts, &m, v, d)?;
            progress.run_end(
                rows.len(),
                &format!(
                    "train loss {:.3}, test accuracy {:.2}%, gradient ratio {:.1e}",
                    row.train_loss_final,
                    row.test_accuracy * 100.0,
                    row.grad_ratio_init
                ),
            );
            rows.push(row);
        }
    }
    write_depth(opts, &rows)?;
    Ok(rows)
}

/// One net trained with the study's budget, measured before and after.
fn depth_run(opts: &ExperimentOptions, m: &Mnist, v: Variant, depth: usize) -> Res<DepthRow> {
    let config = TrainConfig {
        model: format!("depth-{}-{depth}", v.slug()),
        epochs: opts.epochs,
        batch_size: 128,
        lr: LR,
        optimizer: "sgd".into(),
        momentum: 0.9,
        schedule: "constant".into(),
        init: Some("he".into()),
        seed: opts.seed,
        diagnostics_every: 0,
        ..TrainConfig::default()
    };
    let spec = ModelSpec::parse(&v.model_toml(depth, opts.width), &format!("{} × {depth}", v.name()))?;
    let run_dir = opts.out_dir.join("runs").join(format!("{}-{depth}", v.slug()));
    let data = DataSource::Datasets {
        train: m.train.clone(),
        val: None,
        test: m.test.clone(),
    };
    let mut t = Trainer::new(config, spec, data, &run_dir)?;
    let norms0 = training_gradient_norms(&t.model, &m.train, opts.seed)?;
    let summary = t.fit(&mut Silent, &AtomicBool::new(false))?;
    let norms1 = training_gradient_norms(&t.model, &m.train, opts.seed)?;
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 };
    let train = crate::metrics::evaluate(&t.model, &m.train, &loss, 1000, DType::F32)?;
    let ratio = |v: &[f64]| v.first().copied().unwrap_or(0.0) / v.last().copied().unwrap_or(1.0).max(1e-30);
    Ok(DepthRow {
        variant: v.name(),
        residual: v.residual,
        activation: v.activation.into(),
        batch_norm: v.batch_norm,
        depth,
        parameters: summary.parameters,
        grad_ratio_init: ratio(&norms0),
        grad_ratio_trained: ratio(&norms1),
        train_loss_final: train.loss,
        train_accuracy: train.accuracy,
        test_accuracy: summary.test_accuracy,
        stopped: summary.stopped.as_str().into(),
        train_loss: t.history().iter().map(|e| e.train_data_loss).collect(),
        grad_norms_init: norms0,
        seconds: summary.train_seconds,
    })
}

/// Gradient norms by layer on 256 training images as training sees them (batch
/// statistics in BatchNorm), leaving the running statistics as they were.
fn training_gradient_norms(model: &Sequential, ds: &Dataset, seed: u64) -> Res<Vec<f64>> {
    let buffers = model.buffers();
    let saved: Vec<_> = buffers.iter().map(|b| b.tensor.copy()).collect();
    let norms = gradient_norms(model, ds, 256, &mut Ctx::train(seed));
    for (b, s) in buffers.iter().zip(&saved) {
        b.tensor.assign(s)?;
    }
    norms
}

/// The depth table as CSV, markdown and JSON, and the study's three plots.
fn write_depth(opts: &ExperimentOptions, rows: &[DepthRow]) -> Res<()> {
    let mut csv = String::from(
        "variant,depth,parameters,grad_ratio_init,grad_ratio_trained,train_loss,train_accuracy,test_accuracy,stopped\n",
    );
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{:e},{:e},{},{},{},{}",
            r.variant,
            r.depth,
            r.parameters,
            r.grad_ratio_init,
            r.grad_ratio_trained,
            r.train_loss_final,
            r.train_accuracy,
            r.test_accuracy,
            r.stopped
        );
    }
    write(&opts.out_dir, "depth.csv", &csv)?;
    write(&opts.out_dir, "depth.md", &depth_markdown(opts, rows))?;
    write(
        &opts.out_dir,
        "depth.json",
        &serde_json::to_string_pretty(&rows).expect("serialize"),
    )?;
    plot_depth(opts, rows)
}

/// What every net shares, in words (the markdown's first line).
fn setup(opts: &ExperimentOptions) -> String {
    format!(
        "MLPs on MNIST with {} hidden layers of {} units, He init (with the gain of the activation after each Linear: \
         √2 for ReLU, 1 for sigmoid and for a Linear that ends a residual body), \
         SGD (lr {LR}, momentum 0.9, batch 128), {} epochs on {} training images. \
         Plain: Flatten, then `depth` × [Linear, (BatchNorm1d), activation], then Linear(10). \
         Residual (pre-activation): Flatten, Linear, then `depth − 1` × Residual{{body: [(BatchNorm1d), activation, Linear]}} \
         (y = x + body(x)), then (BatchNorm1d), activation, Linear(10): the same layers and parameters as the plain net.",
        opts.depths.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        opts.width,
        opts.epochs,
        opts.train_size
    )
}

/// The mean training loss of the last epoch, as the optimizer saw it (BatchNorm
/// on batch statistics); NaN when training diverged before finishing its epochs.
fn last_epoch_loss(r: &DepthRow) -> f64 {
    match r.stopped.as_str() {
        "completed" => r.train_loss.last().copied().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// `f(v)`, or "diverged" when `v` is not finite.
fn or_diverged(v: f64, f: impl Fn(f64) -> String) -> String {
    if v.is_finite() {
        f(v)
    } else {
        "diverged".into()
    }
}

/// The full table (one row per variant and depth), then training loss and test accuracy by depth.
fn depth_markdown(opts: &ExperimentOptions, rows: &[DepthRow]) -> String {
    let mut md = format!(
        "{}\n\n| variant | depth | parameters | ‖∇W₁‖/‖∇W_last‖ at init | after training | last epoch's training loss | train loss (eval) | train acc (eval) | test acc |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        setup(opts)
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2e} | {:.2e} | {} | {} | {:.2}% | {:.2}% |",
            r.variant,
            r.depth,
            r.parameters,
            r.grad_ratio_init,
            r.grad_ratio_trained,
            or_diverged(last_epoch_loss(r), |v| format!("{v:.4}")),
            or_diverged(r.train_loss_final, |v| format!("{v:.4}")),
            r.train_accuracy * 100.0,
            r.test_accuracy * 100.0
        );
    }
    let pivot = |title: &str, cell: &dyn Fn(&DepthRow) -> String| {
        let mut t = format!("\n{title}\n\n| variant |");
        for d in &opts.depths {
            let _ = write!(t, " {d} |");
        }
        t += &format!("\n| --- |{}\n", " --- |".repeat(opts.depths.len()));
        for v in VARIANTS {
            let _ = write!(t, "| {} |", v.name());
            for r in rows.iter().filter(|r| r.variant == v.name()) {
                let _ = write!(t, " {} |", cell(r));
            }
            t.push('\n');
        }
        t
    };
    md += &pivot("Last epoch's training loss, by depth:", &|r| {
        or_diverged(last_epoch_loss(r), |v| format!("{v:.4}"))
    });
    md += &pivot("Test accuracy, by depth:", &|r| {
        format!("{:.2}%", r.test_accuracy * 100.0)
    });
    md
}

/// Training loss by epoch (one panel per variant, one curve per depth), the
/// gradient ratio by depth (at init and trained), and test accuracy by depth.
fn plot_depth(opts: &ExperimentOptions, rows: &[DepthRow]) -> Res<()> {
    let of = |v: Variant| rows.iter().filter(move |r| r.variant == v.name());
    let names: Vec<String> = VARIANTS.iter().map(|v| v.name()).collect();
    let loss_panels: Vec<Panel> = VARIANTS
        .iter()
        .zip(&names)
        .map(|(&v, name)| Panel {
            title: name,
            xlabel: "epoch",
            ylabel: "training loss (log)",
            series: of(v)
                .map(|r| {
                    let pts = r.train_loss.iter().enumerate().map(|(i, &l)| ((i + 1) as f64, l));
                    (format!("depth {}", r.depth), pts.collect())
                })
                .collect(),
            log_y: true,
        })
        .collect();
    panels_plot(
        &opts.out_dir.join("depth_train_loss.png"),
        (600, 400),
        2,
        &loss_panels,
        true,
    )?;
    let by_depth = |f: fn(&DepthRow) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        VARIANTS
            .iter()
            .map(|&v| (v.name(), of(v).map(|r| (r.depth as f64, f(r))).collect()))
            .collect()
    };
    let ratio = |title, f| Panel {
        title,
        xlabel: "hidden layers",
        ylabel: "‖∇W₁‖ / ‖∇W_last‖ (log)",
        series: by_depth(f),
        log_y: true,
    };
    let ratios = [
        ratio("Gradient ratio at initialization", |r| r.grad_ratio_init),
        ratio("Gradient ratio after training", |r| r.grad_ratio_trained),
    ];
    panels_plot(&opts.out_dir.join("depth_grad_ratio.png"), (600, 450), 2, &ratios, true)?;
    let accuracy = Panel {
        title: "Test accuracy by depth",
        xlabel: "hidden layers",
        ylabel: "test accuracy",
        series: by_depth(|r| r.test_accuracy),
        log_y: false,
    };
    panels_plot(
        &opts.out_dir.join("depth_test_accuracy.png"),
        (900, 560),
        1,
        &[accuracy],
        false,
    )
}
