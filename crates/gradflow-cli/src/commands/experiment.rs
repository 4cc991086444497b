//! `gradflow experiment activations|regularization|depth|memory`.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use gradflow_train::experiment::{self, ExperimentOptions, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Study {
    /// Vanishing gradients: a deep MLP with each activation, Xavier and He init.
    Activations,
    /// Overfitting: a large MLP on a small training set with each regularizer.
    Regularization,
    /// Degradation: plain and residual MLPs (ReLU, ReLU + BatchNorm, sigmoid) at growing depth.
    Depth,
    /// Memory through time: the adding problem with a tanh RNN, an LSTM and a GRU.
    Memory,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow experiment activations                 # depth 10, width 256
  gradflow experiment regularization --quick      # a small version (seconds)
  gradflow experiment depth --depths 4,16         # plain against residual nets
  gradflow experiment memory --lengths 10,100     # RNN, LSTM, GRU on the adding problem
Writes CSV, JSON, a markdown table and PNG plots into --out (default runs/experiment-<name>).")]
pub struct ExperimentArgs {
    /// Which study.
    #[arg(value_enum)]
    study: Study,
    /// A small, fast version.
    #[arg(long)]
    quick: bool,
    /// Hidden layers (activations study).
    #[arg(long)]
    depth: Option<usize>,
    /// Hidden layers of each net, comma-separated (depth study; default 4,16,32,64).
    #[arg(long, value_delimiter = ',')]
    depths: Option<Vec<usize>>,
    /// Hidden width (the recurrent layer's hidden units in the memory study).
    #[arg(long)]
    width: Option<usize>,
    /// Sequence lengths T of the memory study, comma-separated (default 10,50,100,200).
    #[arg(long, value_delimiter = ',')]
    lengths: Option<Vec<usize>>,
    /// Epochs per run.
    #[arg(long)]
    epochs: Option<usize>,
    /// Training images (training sequences in the memory study).
    #[arg(long)]
    train_size: Option<usize>,
    /// MNIST directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads.
    #[arg(long)]
    threads: Option<usize>,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn run_start(&mut self, index: usize, total: usize, name: &str) {
        self.0.set_length(total as u64);
        self.0.set_position(index as u64);
        self.0.set_message(name.to_string());
    }
    fn run_end(&mut self, _index: usize, summary: &str) {
        let msg = self.0.message();
        self.0.println(format!("{msg:<28} {summary}"));
        self.0.inc(1);
    }
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let study = match a.study {
        Study::Activations => experiment::Study::Activations,
        Study::Regularization => experiment::Study::Regularization,
        Study::Depth => experiment::Study::Depth,
        Study::Memory => experiment::Study::Memory,
    };
    let defaults = study.options(a.quick, super::data_dir(a.data));
    let opts = ExperimentOptions {
        out_dir: a.out.unwrap_or(defaults.out_dir.clone()),
        depth: a.depth.unwrap_or(defaults.depth),
        depths: a.depths.unwrap_or(defaults.depths.clone()),
        width: a.width.unwrap_or(defaults.width),
        epochs: a.epochs.unwrap_or(defaults.epochs),
        train_size: a.train_size.unwrap_or(defaults.train_size),
        seed: a.seed,
        lengths: a.lengths.unwrap_or(defaults.lengths.clone()),
        ..defaults
    };
    if opts.depth == 0 || opts.width == 0 || opts.epochs == 0 || opts.train_size == 0 {
        bail!("--depth, --width, --epochs and --train-size must be at least 1");
    }
    if opts.depths.is_empty() || opts.depths.contains(&0) {
        bail!("--depths must list hidden-layer counts of at least 1, e.g. --depths 4,16,32,64");
    }
    if let Some(t) = opts.lengths.iter().find(|&&t| t < 2) {
        bail!("--lengths: each sequence needs at least 2 steps (one marker in each half), got {t}");
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut progress = Bar(bar);
    let table = study.run(&opts, &mut progress)?;
    progress.0.finish_and_clear();
    println!("{table}");
    println!("wrote {}", opts.out_dir.display());
    Ok(())
}
