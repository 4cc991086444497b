//! `gradflow train`.

use super::images::ImageArgs;
use super::table::{bad_input, is_table, BadInput, TableArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use gradflow_data::is_image_folder;
use gradflow_data::Encoding;
use gradflow_nn::optim::OptimizerSpec;
use gradflow_nn::schedule::ScheduleSpec;
use gradflow_nn::{Activation, Init};
use gradflow_train::collective::Collective;
use gradflow_train::diagnostics::Warning;
use gradflow_train::images::ImageSource;
use gradflow_train::table::{default_model, default_schedule, TableSource};
use gradflow_train::{DataSource, EpochMetrics, Observer, Silent, StopReason, Summary, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(
    allow_negative_numbers = true,
    args_override_self = true,
    after_help = "Examples:
  gradflow train                                  # 784-800-10 MLP, Adam, cosine, 5 epochs
  gradflow train --model lenet5 --epochs 15 --optimizer sgd --lr 0.05 --momentum 0.9 --nesterov
  gradflow train --l1 1e-5 --val-split 0.1 --early-stopping 3
  gradflow train --resume runs/mlp               # continue an interrupted run
  gradflow train --data flowers.csv --target species --ignore id   # your own table
  gradflow train --data houses.csv --target price --loss huber --test houses-test.csv
  gradflow train --data photos/ --image-size 32x32 --skip-bad        # train/<class>/*.jpg"
)]
pub struct TrainArgs {
    /// Settings file (TOML with the same keys as these flags, snake_case); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, help = choices("Preset", gradflow_nn::spec::PRESETS.iter().map(|(name, _)| *name)) + " Or a model TOML file.")]
    model: Option<String>,
    /// Start from these weights (safetensors, PyTorch state_dict names).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// MNIST directory (default: $GRADFLOW_DATA, else data/mnist), a CSV table with a header row, or an image folder (DIR/train/<class>/*.png|jpg, optionally DIR/test/<class>/...).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    table: TableArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// Loss of a regression: mse, l1 or huber (default mse; classification uses cross-entropy).
    #[arg(long)]
    loss: Option<String>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, help = choices("Optimizer", OptimizerSpec::registry().iter().map(|o| o.name)))]
    optimizer: Option<String>,
    /// Momentum (SGD, RMSprop).
    #[arg(long)]
    momentum: Option<f64>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    /// L1 penalty λ₁ (adds λ₁·Σ|w| over Linear/Conv2d weights).
    #[arg(long)]
    l1: Option<f64>,
    /// L2 penalty λ₂ (adds λ₂·Σw²).
    #[arg(long)]
    l2: Option<f64>,
    /// Optimizer weight decay (decoupled with adamw).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Dropout probability for every Dropout layer (adds them after activations if the model has none).
    #[arg(long)]
    dropout: Option<f64>,
    #[arg(long, help = choices("Replace every activation", Activation::ALL.iter().map(|a| a.cli_name())))]
    activation: Option<String>,
    #[arg(long, help = choices("Weight initializer", Init::registry().iter().map(|i| i.name)))]
    init: Option<String>,
    #[arg(long, help = choices("Learning-rate schedule", ScheduleSpec::registry().iter().map(|s| s.name)))]
    schedule: Option<String>,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Stop after PATIENCE epochs without validation improvement and restore the best weights.
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
    /// Minimum validation-loss improvement for early stopping.
    #[arg(long)]
    min_delta: Option<f64>,
    /// Fraction of the training set held out for validation.
    #[arg(long)]
    val_split: Option<f64>,
    /// Max-norm constraint on each unit's incoming weights.
    #[arg(long)]
    max_norm: Option<f64>,
    /// Clip the global gradient norm.
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Clip each gradient element to ±VALUE.
    #[arg(long)]
    clip_value: Option<f64>,
    /// Label smoothing of the cross-entropy.
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Use only the first N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Record gradient-flow diagnostics every N steps (0 = off).
    #[arg(long)]
    diagnostics_every: Option<usize>,
    /// Seed of weights, shuffling, split and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the last, smaller batch of each epoch (as PyTorch's drop_last=True).
    #[arg(long)]
    drop_last: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run directory (default: runs/<model>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
}

/// A flag's help line listing the names its declarations carry.
pub(super) fn choices<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> String {
    format!("{what}: {}.", names.collect::<Vec<_>>().join(", "))
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("{}: cannot read settings", p.display()))?;
                toml::from_str::<TrainConfig>(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "{}",
                        gradflow_nn::spec::toml_error(&p.display().to_string(), &text, &e, None)
                    )
                })?
            }
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone().into(); } )* };
        }
        set!(
            model,
            epochs,
            batch_size,
            lr,
            optimizer,
            momentum,
            l1,
            l2,
            weight_decay,
            schedule,
            warmup_epochs,
            min_delta,
            val_split,
            label_smoothing,
            seed,
            diagnostics_every
        );
        if self.nesterov {
            c.nesterov = true;
        }
        if self.drop_last {
            c.drop_last = true;
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f.clone(); } )* };
        }
        set_opt!(
            dropout,
            activation,
            init,
            early_stopping,
            max_norm,
            clip_norm,
            clip_value,
            loss,
            limit_train,
            limit_test
        );
        c.validate()?;
        Ok(c)
    }
}

struct Console {
    bar: Option<ProgressBar>,
    tty: bool,
    epochs: usize,
}

impl Observer for Console {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epochs = epochs;
        if self.tty {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} ({eta})")
                    .expect("template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }
    fn step(&mut self, step: usize, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            if step.is_multiple_of(20) {
                b.set_message(format!("{loss:.4}"));
            }
        }
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let val = match (m.val_loss, m.val_accuracy, m.val_regression) {
            (Some(l), Some(a), _) => format!("  val loss {l:.4} acc {:.2}%", a * 100.0),
            (Some(l), None, Some(r)) => format!(
                "  val loss {l:.4} rmse {:.4} mae {:.4} r2 {:.4}",
                r.val_rmse, r.val_mae, r.val_r2
            ),
            _ => String::new(),
        };
        let train = match m.train_rmse {
            Some(rmse) => format!("rmse {rmse:.4}"),
            None => format!("acc {:.2}%", m.train_accuracy * 100.0),
        };
        let pen = if m.train_penalty > 0.0 {
            format!(" (data {:.4} + penalty {:.4})", m.train_data_loss, m.train_penalty)
        } else {
            String::new()
        };
        println!(
            "epoch {:>3}/{}  train loss {:.4}{pen} {train}{val}  lr {:.2e}  {:.1}s  {:.0} samples/s",
            m.epoch, self.epochs, m.train_loss, m.lr, m.seconds, m.samples_per_second
        );
    }
    fn warning(&mut self, w: &Warning) {
        if let Some(b) = &self.bar {
            b.suspend(|| eprintln!("warning: {w}"));
        } else {
            eprintln!("warning: {w}");
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let collective = gradflow_train::collective::from_environment()?;
    let (rank, size) = (collective.rank(), collective.size());
    let result = train(args, collective);
    if let (Err(e), true) = (&result, size > 1) {
        // Shown here: after an error, `finish` aborts every process of the run.
        eprintln!("error (rank {rank} of {size}): {e:#}");
    }
    gradflow_train::collective::finish(result.is_ok());
    result
}

fn train(args: TrainArgs, collective: Box<dyn Collective>) -> Result<()> {
    let root = collective.rank() == 0;
    if !root {
        silence_stdout()?;
    }
    super::set_threads(args.threads.or_else(|| threads_per_process(collective.size())))?;
    let (mut trainer, out_dir, table) = build_trainer(&args)?;
    trainer.set_collective(collective)?;
    if trainer.epochs_done() >= trainer.config.epochs {
        bail!(
            "{}: the run already finished its {} epochs (give --epochs N to extend it)",
            out_dir.display(),
            trainer.config.epochs
        );
    }
    // Written only now that the data validated and the model fits it.
    match &table {
        _ if !root => {}
        RunData::Table(source, encoding) => source.save(&out_dir, encoding)?,
        RunData::Images(source) => source.save(&out_dir)?,
        RunData::Mnist => {}
    }
    let stop = stop_on_ctrl_c();
    println!(
        "model {} ({} parameters), {} threads, run directory {}",
        trainer.config.model,
        trainer.model.num_parameters(),
        gradflow::num_threads(),
        out_dir.display()
    );
    let processes = trainer.collective().size();
    if processes > 1 {
        println!(
            "data-parallel over {processes} processes: each takes its share of every batch of {}",
            trainer.config.batch_size
        );
    }
    let mut console = Console {
        bar: None,
        tty: std::io::stderr().is_terminal(),
        epochs: trainer.config.epochs,
    };
    let observer: &mut dyn Observer = if root { &mut console } else { &mut Silent };
    let summary = trainer.fit(observer, &stop)?;
    print_summary(summary, &out_dir)
}

/// Under `mpirun`, the cores of a machine shared by the processes on it.
fn threads_per_process(processes: usize) -> Option<usize> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok()?;
    (processes > 1).then(|| (cores / gradflow_train::collective::local_processes()).max(1))
}

/// Rank 0 alone prints: the other processes' standard output goes to
/// /dev/null, while their errors still reach standard error.
fn silence_stdout() -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    // SAFETY: both descriptors are open; dup2 only redirects descriptor 1, which Rust's stdout writes to.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
        bail!("cannot redirect standard output: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a run's directory records about its data before training: a table's
/// source and encoding, or an image folder's source and normalization.
pub(super) enum RunData {
    Mnist,
    Table(TableSource, Encoding),
    Images(ImageSource),
}

/// A fresh run from the flags, or the run `--resume` names; with its run directory.
fn build_trainer(args: &TrainArgs) -> Result<(Trainer, PathBuf, RunData)> {
    if let Some(dir) = &args.resume {
        return Ok((resume(dir, args)?, dir.clone(), RunData::Mnist));
    }
    let config = args.config()?;
    if config.early_stopping.is_some() && config.val_split == 0.0 {
        bail!("--early-stopping needs a validation set: give --val-split (e.g. 0.1)");
    }
    let images = |d: &&Path| is_image_folder(d) || (args.images.any() && d.is_dir());
    if let Some(dir) = args.data.as_deref().filter(images) {
        return build_image_trainer(args, config, dir);
    }
    if args.images.any() {
        bail!("--image-size and --skip-bad need --data DIR holding train/<class>/*.png|jpg");
    }
    if is_table(args.data.as_deref()) || args.table.any() {
        return build_table_trainer(args, config);
    }
    let data = DataSource::Mnist(super::data_dir(args.data.clone()));
    let spec = gradflow_train::trainer::model_from_config(&config)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(model_stem(&config.model)));
    if config.loss.is_some() {
        bail!("--loss is for regression on a table; MNIST trains with cross-entropy");
    }
    let trainer = match &args.weights {
        Some(w) => Trainer::with_weights(config, spec, w, data, &out)?,
        None => Trainer::new(config, spec, data, &out)?,
    };
    Ok((trainer, out, RunData::Mnist))
}

/// `--resume`: a table run re-reads its table (which must encode as before), an MNIST run its IDX files.
fn resume(dir: &std::path::Path, args: &TrainArgs) -> Result<Trainer> {
    if let Some(mut source) = ImageSource::of_run(dir)? {
        let folder = source.load().map_err(BadInput)?;
        let data = DataSource::Datasets {
            train: folder.train,
            val: None,
            test: folder.test,
        };
        return Ok(Trainer::resume(dir, data, args.epochs)?);
    }
    let Some(source) = TableSource::of_run(dir)? else {
        let data = DataSource::Mnist(super::data_dir(args.data.clone()));
        return Ok(Trainer::resume(dir, data, args.epochs)?);
    };
    let table = source.reload(dir).map_err(bad_input)?;
    let scale = f64::from(table.encoding.target_std);
    let data = DataSource::Datasets {
        train: table.train,
        val: None,
        test: table.test,
    };
    let mut trainer = Trainer::resume(dir, data, args.epochs)?;
    trainer.set_target_scale(scale);
    Ok(trainer)
}

/// `--data FILE.csv`: read and validate the table, size the default model and recipe from it.
fn build_table_trainer(args: &TrainArgs, mut config: TrainConfig) -> Result<(Trainer, PathBuf, RunData)> {
    let Some(path) = args.data.as_deref() else {
        bail!("the table flags (--target, --test, ...) need --data FILE.csv");
    };
    let source = args.table.source(path, config.seed)?;
    let table = read_with_bar(&source)?;
    describe_table(path, &table);
    if config.loss.is_some() && table.encoding.task == gradflow_data::Task::Classification {
        bail!("--loss is for regression; classification trains with cross-entropy (give --task regression for a numeric target)");
    }
    if args.config.is_none() {
        let (batch, epochs) = default_schedule(table.train.len());
        config.batch_size = args.batch_size.unwrap_or(batch);
        config.epochs = args.epochs.unwrap_or(epochs);
    }
    let spec = if config.model == "mlp" {
        gradflow_train::trainer::with_overrides(default_model(&table.encoding)?, &config)?
    } else {
        gradflow_train::trainer::model_from_config(&config)?
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(model_stem(&path.display().to_string())));
    let scale = f64::from(table.encoding.target_std);
    let data = DataSource::Datasets {
        train: table.train,
        val: None,
        test: table.test,
    };
    let mut trainer = match &args.weights {
        Some(w) => Trainer::with_weights(config, spec, w, data, &out)?,
        None => Trainer::new(config, spec, data, &out)?,
    };
    trainer.set_target_scale(scale);
    Ok((trainer, out, RunData::Table(source, table.encoding)))
}

/// `--data DIR` holding `train/<class>/*.png|jpg`: read the images, fit the model's input and outputs to them.
fn build_image_trainer(args: &TrainArgs, mut config: TrainConfig, dir: &Path) -> Result<(Trainer, PathBuf, RunData)> {
    let mut source = args.images.source(dir, args.table.test_split(), config.seed)?;
    let folder = source.load().map_err(BadInput)?;
    let norm = &folder.norm;
    println!(
        "images {}: {} training, {} test, {}x{}x{} (CxHxW), {} classes: {}{}",
        dir.display(),
        folder.train.len(),
        folder.test.len(),
        norm.channels,
        norm.height,
        norm.width,
        norm.class_names.len(),
        norm.class_names.join(", "),
        if folder.skipped > 0 {
            format!("; skipped {} unreadable images", folder.skipped)
        } else {
            String::new()
        }
    );
    if config.loss.is_some() {
        bail!("--loss is for regression on a table; images train with cross-entropy");
    }
    if args.model.is_none() && args.config.is_none() {
        config.model = gradflow_train::images::default_model(norm).to_string();
        println!(
            "model {} (the default for {}x{} images)",
            config.model, norm.height, norm.width
        );
    }
    let spec = gradflow_train::images::fit_model(gradflow_train::trainer::model_from_config(&config)?, norm)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(model_stem(&dir.display().to_string())));
    let data = DataSource::Datasets {
        train: folder.train,
        val: None,
        test: folder.test,
    };
    let trainer = match &args.weights {
        Some(w) => Trainer::with_weights(config, spec, w, data, &out)?,
        None => Trainer::new(config, spec, data, &out)?,
    };
    Ok((trainer, out, RunData::Images(source)))
}

/// Reads the table, with a progress bar on a terminal (the file is read twice: types, then values).
fn read_with_bar(source: &TableSource) -> Result<gradflow_data::Table> {
    if !std::io::stderr().is_terminal() {
        return Ok(source.load().map_err(BadInput)?);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("reading {prefix} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(source.train.display().to_string());
    let table = source.load_with_progress(&|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    Ok(table.map_err(BadInput)?)
}

/// What was read, the task and why, and the warnings about the table.
fn describe_table(path: &std::path::Path, t: &gradflow_data::Table) {
    for w in &t.warnings {
        eprintln!("warning: {w}");
    }
    let e = &t.encoding;
    let task = match e.task {
        gradflow_data::Task::Classification => format!("classification of {} classes", e.class_names.len()),
        gradflow_data::Task::Regression => "regression".to_string(),
    };
    let how = if t.task_inferred {
        "inferred; --task overrides"
    } else {
        "--task"
    };
    println!(
        "table {}: {} training rows, {} test rows, {} columns as {} inputs; target '{}': {task} ({how})",
        path.display(),
        t.train.len(),
        t.test.len(),
        e.features.len(),
        e.width(),
        e.target
    );
    if t.test_unseen_rows > 0 {
        println!(
            "{} test rows have a category unseen in training (encoded as zeros)",
            t.test_unseen_rows
        );
    }
}

/// The flag a first Ctrl-C sets (the run stops after the step and checkpoints); a second one quits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after this step and saving a checkpoint (press Ctrl-C again to quit at once)");
    });
    stop
}

fn print_summary(summary: Summary, out_dir: &std::path::Path) -> Result<()> {
    let score = match (summary.test_rmse, summary.test_mae, summary.test_r2) {
        (Some(rmse), Some(mae), Some(r2)) => format!("test RMSE {rmse:.4}, MAE {mae:.4}, R² {r2:.4}"),
        _ => format!(
            "test accuracy {:.2}% (error {:.2}%)",
            summary.test_accuracy * 100.0,
            (1.0 - summary.test_accuracy) * 100.0
        ),
    };
    println!(
        "{score}, test loss {:.4}, {:.1}s training, {:.0} samples/s",
        summary.test_loss, summary.train_seconds, summary.samples_per_second
    );
    let detail = summary.stop_detail.unwrap_or_default();
    match summary.stopped {
        StopReason::Completed => {}
        StopReason::Interrupted => {
            println!("{detail}; resume with: gradflow train --resume {}", out_dir.display());
        }
        reason if reason.is_divergence() => bail!("training stopped: {detail}"),
        _ => println!("{detail}"),
    }
    println!("wrote {}", out_dir.display());
    Ok(())
}

fn model_stem(model: &str) -> String {
    std::path::Path::new(model)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("run")
        .to_string()
}
