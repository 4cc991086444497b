//! The fit loop: epoch after epoch of [`train_step`](crate::step::train_step)s, with validation,
//! schedules, early stopping, checkpoints after every epoch, and a clean stop
//! on Ctrl-C or on a non-finite loss or parameter. It prints nothing; an
//! [`Observer`] sees the progress.

use crate::checkpoint::{self, CheckpointMeta, CHECKPOINT_FILE};
use crate::collective::{self, shard_range, Collective, Shard, SingleProcess};
use crate::config::TrainConfig;
pub use crate::data::DataSource;
use crate::data::{self, SplitOptions};
use crate::diagnostics::{DiagnosticsRecorder, Warning};
use crate::error::{Error, Result};
use crate::metrics::{self, batch_tensor, evaluate, EpochMetrics, EpochSums, Evaluation, ValRegression};
use crate::step::{self, train_step_sharded, Objective, Step, StepOutcome, Update};
use gradflow::{no_grad, DType, Tensor};
use gradflow_data::{Dataset, Loader, Targets};
use gradflow_nn::optim::{self, Optimizer, OptimizerState, Param};
use gradflow_nn::schedule::{LrSchedule, ScheduleState};
use gradflow_nn::serialize::{from_safetensors, load_into};
use gradflow_nn::{
    regularize, Activation, BuildOptions, Ctx, Init, Loss, ModelSpec, Module, Penalty, PenaltyTarget, Sequential,
    Target,
};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Progress callbacks, so the CLI can draw bars and print lines.
pub trait Observer {
    /// An epoch begins with `steps` steps (some may be skipped on resume).
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// A step finished with this objective value.
    fn step(&mut self, _step: usize, _loss: f64) {}
    /// An epoch ended.
    fn epoch_end(&mut self, _m: &EpochMetrics) {}
    /// A diagnostic warning was raised.
    fn warning(&mut self, _w: &Warning) {}
}

/// An observer that ignores everything (library use and tests).
pub struct Silent;
impl Observer for Silent {}

/// Why training ended, as written to `summary.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every configured epoch ran.
    #[default]
    Completed,
    /// Validation loss stopped improving; the best weights were restored.
    EarlyStopping,
    /// Ctrl-C (or the caller's stop flag); the checkpoint resumes it.
    Interrupted,
    /// The objective became NaN or infinite; the last good checkpoint is kept.
    NonFiniteLoss,
    /// An update left a parameter NaN or infinite; the last good checkpoint is kept.
    NonFiniteParameter,
    /// A gradient was NaN or infinite (and `--clip-value` would have hidden it); the last good checkpoint is kept.
    NonFiniteGradient,
}

impl StopReason {
    /// The name `summary.json` holds.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::EarlyStopping => "early_stopping",
            StopReason::Interrupted => "interrupted",
            StopReason::NonFiniteLoss => "non_finite_loss",
            StopReason::NonFiniteParameter => "non_finite_parameter",
            StopReason::NonFiniteGradient => "non_finite_gradient",
        }
    }

    /// Whether the run diverged (the CLI exits with an error).
    pub fn is_divergence(self) -> bool {
        matches!(
            self,
            StopReason::NonFiniteLoss | StopReason::NonFiniteParameter | StopReason::NonFiniteGradient
        )
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run stopped, with the sentence that explains it.
type Stop = (StopReason, Option<String>);

/// What a finished (or stopped) run reports, written to `summary.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Test-set accuracy of the final (or best, with early stopping) weights.
    pub test_accuracy: f64,
    /// Test-set loss.
    pub test_loss: f64,
    /// Epochs completed.
    pub epochs: usize,
    /// Seconds spent in training loops only.
    pub train_seconds: f64,
    /// Training samples per second over the whole run.
    pub samples_per_second: f64,
    /// Epoch with the best validation loss (or the last epoch without validation).
    pub best_epoch: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Why training ended.
    pub stopped: StopReason,
    /// A sentence explaining `stopped` when it is not "completed".
    pub stop_detail: Option<String>,
    /// Warnings raised by the diagnostics, with evidence.
    pub warnings: Vec<Warning>,
    /// Final validation accuracy, if a validation set was used.
    pub val_accuracy: Option<f64>,
    /// Final training accuracy (on the fly, last epoch).
    pub train_accuracy: f64,
    /// Regression: test root mean squared error, in the target's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_rmse: Option<f64>,
    /// Regression: test mean absolute error, in the target's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_mae: Option<f64>,
    /// Regression: test coefficient of determination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_r2: Option<f64>,
}

/// A prepared run: model, optimizer, data and progress, ready to [`fit`](Trainer::fit).
pub struct Trainer {
    /// Settings.
    pub config: TrainConfig,
    /// The model file.
    pub spec: ModelSpec,
    /// The network.
    pub model: Sequential,
    params: Vec<Param>,
    penalty_targets: Vec<PenaltyTarget>,
    optimizer: Box<dyn Optimizer>,
    schedule: Box<dyn LrSchedule>,
    loss: Loss,
    penalty: Penalty,
    train: Dataset,
    val: Option<Dataset>,
    test: Dataset,
    out_dir: std::path::PathBuf,
    dtype: DType,
    /// Regression: the standard deviation the targets were divided by (metrics are reported times it).
    target_scale: f64,
    // progress
    epoch: usize,
    step_in_epoch: usize,
    global_step: u64,
    rng_word_pos: u128,
    history: Vec<EpochMetrics>,
    best: Option<(f64, usize)>,
    best_weights: Option<Vec<Tensor>>,
    partial: EpochSums,
    diagnostics: DiagnosticsRecorder,
    /// The processes sharing each batch (this one alone unless `mpirun` started the run).
    collective: Box<dyn Collective>,
}

/// Resolve `--model`: a preset name or a TOML file.
pub fn resolve_model(name: &str) -> Result<ModelSpec> {
    if let Some(spec) = ModelSpec::preset(name) {
        return Ok(spec);
    }
    let path = Path::new(name);
    if !path.exists() {
        let presets: Vec<&str> = gradflow_nn::spec::PRESETS.iter().map(|(n, _)| *n).collect();
        return Err(Error::Model(format!(
            "--model {name}: no such preset ({}) or file",
            presets.join(", ")
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read model file", e))?;
    Ok(ModelSpec::parse(&text, name)?)
}

/// The model the settings describe: preset or file, with `--activation` and `--dropout` applied.
pub fn model_from_config(config: &TrainConfig) -> Result<ModelSpec> {
    with_overrides(resolve_model(&config.model)?, config)
}

/// `spec` with the settings' `--activation` and `--dropout` applied.
pub fn with_overrides(mut spec: ModelSpec, config: &TrainConfig) -> Result<ModelSpec> {
    if let Some(a) = &config.activation {
        let act = Activation::parse(a).ok_or_else(|| {
            Error::Setting(format!(
                "--activation {a}: unknown (expected one of {})",
                Activation::names()
            ))
        })?;
        spec = spec.with_activation(act);
    }
    if let Some(p) = config.dropout {
        spec = spec.with_dropout(p);
    }
    Ok(spec)
}

/// Dropout's random stream for an epoch; each process of a data-parallel run
/// draws its own (rank 0's is the single-process stream).
fn epoch_rng(seed: u64, epoch: usize, rank: usize) -> ChaCha8Rng {
    gradflow::seeded_rng(
        seed ^ 0x5eed_d80f
            ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

/// A batch's targets: class indices, or a `[n, width]` tensor of values.
enum BatchY {
    Classes(Vec<usize>),
    Values(Tensor),
}

impl BatchY {
    fn of(ds: &Dataset, idx: &[usize], dtype: DType) -> Result<BatchY> {
        Ok(match &ds.targets {
            Targets::Classes { labels, .. } => BatchY::Classes(idx.iter().map(|&i| labels[i]).collect()),
            Targets::Values { values, width } => {
                let v: Vec<f32> = idx
                    .iter()
                    .flat_map(|&i| &values[i * width..(i + 1) * width])
                    .copied()
                    .collect();
                BatchY::Values(Tensor::from_vec(v, &[idx.len(), *width])?.to_dtype(dtype))
            }
        })
    }

    fn target(&self) -> Target<'_> {
        match self {
            BatchY::Classes(y) => Target::Classes(y),
            BatchY::Values(y) => Target::Values(y),
        }
    }

    fn len(&self) -> usize {
        match self {
            BatchY::Classes(y) => y.len(),
            BatchY::Values(y) => y.shape()[0],
        }
    }
}

/// How an epoch's loop over its batches ended.
enum EpochRun {
    /// Every batch ran: the sums, and the learning rate they ran at.
    Finished { sums: EpochSums, lr: f64, steps: usize },
    /// The run stops inside the epoch.
    Stopped(Stop),
}

/// Steps between two scans of the parameters for NaN and infinity (and always
/// the last step of an epoch, before its checkpoint). Every step cost 5–10% of
/// a small MLP's step on 2 cores; a non-finite weight nearly always shows in the
/// next step's loss, which is checked every step.
const PARAMETER_CHECK_EVERY: u64 = 16;

impl Trainer {
    /// Build a fresh run: load data, build and check the model, create the optimizer.
    pub fn new(config: TrainConfig, spec: ModelSpec, data: DataSource, out_dir: &Path) -> Result<Trainer> {
        config.validate()?;
        let init = match &config.init {
            Some(name) => Init::parse(name).map_err(|e| Error::Setting(format!("--init: {e}")))?,
            None => Init::PytorchDefault,
        };
        let model = spec
            .build(BuildOptions {
                init,
                dtype: DType::F32,
                seed: config.seed,
            })
            .map_err(|e| Error::Model(format!("model: {e}")))?;
        Trainer::with_model(config, spec, model, data, out_dir)
    }

    /// Like [`new`](Self::new), with weights from a safetensors file (PyTorch state_dict names).
    pub fn with_weights(
        config: TrainConfig,
        spec: ModelSpec,
        weights: &Path,
        data: DataSource,
        out_dir: &Path,
    ) -> Result<Trainer> {
        let t = Trainer::new(config, spec, data, out_dir)?;
        load_weights_file(&t.model, weights)?;
        Ok(t)
    }

    fn with_model(
        config: TrainConfig,
        spec: ModelSpec,
        model: Sequential,
        data: DataSource,
        out_dir: &Path,
    ) -> Result<Trainer> {
        let split = SplitOptions {
            limit_train: config.limit_train,
            limit_test: config.limit_test,
            val_split: config.val_split,
            seed: config.seed,
        };
        let splits = data::prepare(data, &spec, split)?;
        let params = model
            .parameters()
            .into_iter()
            .map(|p| Param::new(p.name, p.tensor))
            .collect();
        let optimizer = optim::build(&config.optimizer_spec()?);
        let schedule = config.schedule_spec()?.build(config.lr);
        Ok(Trainer {
            params,
            penalty_targets: model.named_penalty_targets(),
            optimizer,
            schedule,
            loss: match splits.train.targets {
                Targets::Values { .. } => config.regression_loss()?,
                Targets::Classes { .. } => Loss::CrossEntropy {
                    label_smoothing: config.label_smoothing,
                },
            },
            penalty: Penalty {
                l1: config.l1,
                l2: config.l2,
            },
            diagnostics: DiagnosticsRecorder::new(&model, config.diagnostics_every),
            train: splits.train,
            val: splits.val,
            test: splits.test,
            out_dir: out_dir.to_path_buf(),
            dtype: DType::F32,
            target_scale: 1.0,
            epoch: 0,
            step_in_epoch: 0,
            global_step: 0,
            rng_word_pos: 0,
            history: Vec::new(),
            best: None,
            best_weights: None,
            partial: EpochSums::default(),
            collective: Box::new(SingleProcess),
            config,
            spec,
            model,
        })
    }

    /// Train data-parallel with these processes (see `collective::from_environment`):
    /// each takes its share of every batch. Checks that the processes agree
    /// on every setting and that each gets samples from every batch, then
    /// gives every process rank 0's weights, before any training.
    pub fn set_collective(&mut self, collective: Box<dyn Collective>) -> Result<()> {
        let size = collective.size();
        let batch = self.config.batch_size;
        if size > batch {
            return Err(Error::Distributed(format!(
                "{size} processes share each batch of {batch} samples (--batch-size): give a batch of at least {size} or start fewer processes"
            )));
        }
        let last = self.train.len() % batch;
        if !self.config.drop_last && last != 0 && last < size {
            return Err(Error::Distributed(format!(
                "the last batch of each epoch has {last} samples ({} training samples, --batch-size {batch}), fewer than the {size} processes: add --drop-last or change --batch-size",
                self.train.len()
            )));
        }
        let settings = format!(
            "{}\n{}\n{} {} {} {}",
            serde_json::to_string(&self.config).expect("settings serialize"),
            self.spec.to_toml(),
            self.train.len(),
            self.val.as_ref().map_or(0, Dataset::len),
            self.test.len(),
            self.epoch
        );
        collective::check_same_settings(collective.as_ref(), &settings)?;
        let state: Vec<Tensor> = self.model.state_dict().into_iter().map(|t| t.tensor).collect();
        collective::broadcast_tensors(collective.as_ref(), &state)?;
        self.collective = collective;
        Ok(())
    }

    /// The processes this run trains with.
    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_ref()
    }

    /// Rank 0 alone writes the run directory and checkpoints.
    fn writes_files(&self) -> bool {
        self.collective.rank() == 0
    }

    /// The sums an epoch starts from: the counts of samples carried over from
    /// a checkpoint belong to rank 0 only, so that summing over the processes
    /// counts them once.
    fn own_counts(&self, mut sums: EpochSums) -> EpochSums {
        if self.collective.rank() != 0 {
            (sums.correct, sums.seen, sums.sq_err) = (0.0, 0.0, 0.0);
        }
        sums
    }

    /// The epoch's sums over every process's samples (the losses are already the batches').
    fn all_counts(&self, mut sums: EpochSums) -> EpochSums {
        let mut counts = [sums.correct, sums.seen, sums.sq_err];
        self.collective.sum_f64(&mut counts);
        [sums.correct, sums.seen, sums.sq_err] = counts;
        sums
    }

    /// Give every process rank 0's buffers (BatchNorm's running statistics,
    /// which each process updates from its own shard), so all validate and
    /// save the same model.
    fn share_buffers(&self) -> Result<()> {
        let params: std::collections::HashSet<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let buffers: Vec<Tensor> = self
            .model
            .state_dict()
            .into_iter()
            .filter(|t| !params.contains(t.name.as_str()))
            .map(|t| t.tensor)
            .collect();
        collective::broadcast_tensors(self.collective.as_ref(), &buffers)
    }

    /// Evaluate on `ds`, each process on its share of the samples.
    fn evaluate_shared(&self, ds: &Dataset) -> Result<Evaluation> {
        let (rank, size) = (self.collective.rank(), self.collective.size());
        if size == 1 {
            return Ok(evaluate(&self.model, ds, &self.loss, 1000, self.dtype)?);
        }
        let part: Vec<usize> = shard_range(ds.len(), rank, size).collect();
        let mine = ds.subset(&part);
        let e = evaluate(&self.model, &mine, &self.loss, 1000, self.dtype)?;
        Ok(metrics::all_reduce_evaluation(self.collective.as_ref(), e, &mine))
    }

    /// Regression: report errors in the target's units, when the targets were standardized by dividing by `scale`.
    pub fn set_target_scale(&mut self, scale: f64) {
        self.target_scale = scale;
    }

    /// Whether the run predicts values rather than classes.
    pub fn is_regression(&self) -> bool {
        matches!(self.train.targets, Targets::Values { .. })
    }

    /// Continue the run saved in `dir`: same settings, weights, optimizer and schedule state, RNG position.
    pub fn resume(dir: &Path, data: DataSource, epochs_override: Option<usize>) -> Result<Trainer> {
        let path = dir.join(CHECKPOINT_FILE);
        if !path.exists() {
            return Err(Error::Checkpoint(format!(
                "--resume {}: no {CHECKPOINT_FILE} in that directory",
                dir.display()
            )));
        }
        let ck = checkpoint::load(&path)?;
        let mut config = ck.meta.config.clone();
        if let Some(e) = epochs_override {
            config.epochs = e;
        }
        let spec = ModelSpec::parse(&ck.meta.model_toml, &format!("{} (model)", path.display()))?;
        let mut t = Trainer::new(config, spec, data, dir)?;
        t.restore(ck, &path.display().to_string())?;
        if t.best.is_some() {
            t.best_weights = t.read_best_weights()?;
        }
        Ok(t)
    }

    /// Put the checkpoint's weights, optimizer and schedule state and progress into this run.
    fn restore(&mut self, ck: checkpoint::Checkpoint, shown: &str) -> Result<()> {
        load_into(&self.model.state_dict(), &ck.model, shown, false)?;
        checkpoint::verify(&ck.meta, &self.model.state_dict(), &ck.optimizer, shown)?;
        self.optimizer
            .load_state(&ck.optimizer)
            .map_err(|e| Error::Checkpoint(format!("{shown}: {e}")))?;
        self.schedule
            .load_state(&ck.meta.schedule)
            .map_err(|e| Error::Checkpoint(format!("{shown}: {e}")))?;
        self.optimizer.set_lr(self.schedule.lr());
        let meta = ck.meta;
        self.epoch = meta.epoch;
        self.step_in_epoch = meta.step_in_epoch;
        self.global_step = meta.global_step;
        self.rng_word_pos = meta.rng_word_pos;
        self.history = meta.history;
        self.best = meta.best;
        self.partial = meta.partial;
        Ok(())
    }

    /// The weights early stopping kept, in `state_dict` order, when the run directory has them.
    fn read_best_weights(&self) -> Result<Option<Vec<Tensor>>> {
        let path = self.out_dir.join("best.safetensors");
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "", e))?;
        let (loaded, _) = from_safetensors(&bytes, &path.display().to_string())?;
        let sd = self.model.state_dict();
        Ok(Some(
            sd.iter()
                .map(|p| loaded.get(&p.name).cloned().unwrap_or_else(|| p.tensor.detach()))
                .collect(),
        ))
    }

    /// Epochs completed so far.
    pub fn epochs_done(&self) -> usize {
        self.epoch
    }

    /// Metrics of every completed epoch.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// The test set (normalized).
    pub fn test_set(&self) -> &Dataset {
        &self.test
    }

    fn snapshot_weights(&self) -> Vec<Tensor> {
        self.model.state_dict().iter().map(|p| p.tensor.copy()).collect()
    }

    fn save_checkpoint(&self) -> Result<()> {
        if !self.writes_files() {
            return Ok(());
        }
        let meta = CheckpointMeta {
            version: 1,
            epoch: self.epoch,
            step_in_epoch: self.step_in_epoch,
            global_step: self.global_step,
            rng_word_pos: self.rng_word_pos,
            model_toml: self.spec.to_toml(),
            config: self.config.clone(),
            optimizer_kind: String::new(),
            optimizer_step: 0,
            optimizer_scalars: Default::default(),
            schedule: self.schedule.state(),
            history: self.history.clone(),
            best: self.best,
            partial: self.partial,
            checksum: 0,
        };
        checkpoint::save(&self.out_dir, &self.model.state_dict(), &self.optimizer.state(), meta)
    }

    fn write_metrics(&self) -> Result<()> {
        let mut s = String::new();
        for m in &self.history {
            s.push_str(&serde_json::to_string(m).expect("metrics serialize"));
            s.push('\n');
        }
        let p = self.out_dir.join("metrics.jsonl");
        checkpoint::atomic_write(&p, s.as_bytes()).map_err(|e| Error::io(&p, "", e))
    }

    /// Which layer first produced a non-finite value on this batch, for the divergence message.
    fn locate_non_finite(&self, x: &Tensor) -> Result<String> {
        if let Some(p) = step::first_non_finite(&self.params)? {
            return Ok(format!("parameter '{}' holds a non-finite value", p.name));
        }
        let _g = no_grad();
        let mut ctx = Ctx::eval();
        ctx.record_outputs = true;
        if self.model.forward(x, &mut ctx).is_ok() {
            for (i, out) in ctx.outputs.iter().enumerate() {
                if !step::all_finite(out)? {
                    return Ok(format!(
                        "layer {i} ({}) produced the first non-finite value",
                        self.model.layers[i].kind()
                    ));
                }
            }
        }
        Ok("the loss itself overflowed (the logits are finite but too large)".into())
    }

    /// Check the run directory can be written, and write the model file into it.
    fn prepare_run_dir(&self) -> Result<()> {
        let dir = &self.out_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create run directory", e))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| Error::io(dir, "run directory is not writable", e))?;
        let _ = std::fs::remove_file(&probe);
        checkpoint::atomic_write(&dir.join("model.toml"), self.spec.to_toml().as_bytes())
            .map_err(|e| Error::io(dir, "", e))
    }

    /// Train until the configured epochs are done, early stopping triggers,
    /// `stop` is set (Ctrl-C), or the loss or a parameter becomes non-finite.
    pub fn fit(&mut self, obs: &mut dyn Observer, stop: &AtomicBool) -> Result<Summary> {
        if self.writes_files() {
            self.prepare_run_dir()?;
        }
        let loader = Loader::new(self.config.batch_size, true, self.config.drop_last, self.config.seed)?;
        self.optimizer.set_lr(self.schedule.lr());
        let mut stopped: Stop = (StopReason::Completed, None);
        // The kernel threads poll for work while the run lasts (see `keep_threads_awake`).
        let _awake = gradflow::keep_threads_awake();
        while self.epoch < self.config.epochs {
            let (sums, lr, steps) = match self.train_epoch(&loader, obs, stop)? {
                EpochRun::Finished { sums, lr, steps } => (sums, lr, steps),
                EpochRun::Stopped(why) => {
                    stopped = why;
                    break;
                }
            };
            self.share_buffers()?;
            let metrics = self.validate(self.all_counts(sums), lr, steps)?;
            self.record_epoch(metrics, obs)?;
            self.checkpoint()?;
            if let Some(why) = self.stop_after_epoch(stop) {
                stopped = why;
                break;
            }
        }
        self.finish(stopped)
    }

    /// One pass over the training set (or the rest of it, on resume).
    fn train_epoch(&mut self, loader: &Loader, obs: &mut dyn Observer, stop: &AtomicBool) -> Result<EpochRun> {
        let order = loader.order(self.train.len(), self.epoch);
        let batches: Vec<&[usize]> = loader.chunks(&order).collect();
        obs.epoch_start(self.epoch + 1, self.config.epochs, batches.len());
        let mut ctx = Ctx {
            training: true,
            rng: epoch_rng(self.config.seed, self.epoch, self.collective.rank()),
            record_outputs: false,
            outputs: Vec::new(),
            hidden_grads: Vec::new(),
        };
        ctx.rng.set_word_pos(self.rng_word_pos);
        let mut sums = self.own_counts(self.partial);
        let lr = self.optimizer.lr();
        let t0 = Instant::now();
        for (s, idx) in batches.iter().enumerate().skip(self.step_in_epoch) {
            // Read once: the parameters are checked before any checkpoint this step leads to.
            let stopping = collective::any(self.collective.as_ref(), stop.load(Ordering::SeqCst));
            let check =
                stopping || s + 1 == batches.len() || (self.global_step + 1).is_multiple_of(PARAMETER_CHECK_EVERY);
            if let Some(why) = self.train_batch((s, check), idx, &mut ctx, &mut sums, obs)? {
                return Ok(EpochRun::Stopped(why));
            }
            if stopping && self.step_in_epoch < batches.len() {
                sums.seconds += t0.elapsed().as_secs_f64();
                self.rng_word_pos = ctx.rng.get_word_pos();
                self.partial = self.all_counts(sums);
                self.save_checkpoint()?;
                let detail = format!("interrupted at epoch {} step {}", self.epoch + 1, self.step_in_epoch);
                return Ok(EpochRun::Stopped((StopReason::Interrupted, Some(detail))));
            }
        }
        sums.seconds += t0.elapsed().as_secs_f64();
        Ok(EpochRun::Finished {
            sums,
            lr,
            steps: batches.len(),
        })
    }

    /// Step `s` of the epoch, on the samples `idx`: the update, the diagnostics
    /// and the epoch's sums; `check` scans the parameters for NaN after the update.
    fn train_batch(
        &mut self,
        (s, check): (usize, bool),
        idx: &[usize],
        ctx: &mut Ctx,
        sums: &mut EpochSums,
        obs: &mut dyn Observer,
    ) -> Result<Option<Stop>> {
        let (rank, size) = (self.collective.rank(), self.collective.size());
        let batch = idx.len();
        let idx = &idx[shard_range(batch, rank, size)];
        let x = batch_tensor(&self.train, idx, self.dtype)?;
        let y = BatchY::of(&self.train, idx, self.dtype)?;
        let record = self.diagnostics.due(self.global_step);
        ctx.record_outputs = record;
        ctx.outputs.clear();
        ctx.hidden_grads.clear();
        // Forward and backward leave the weights alone: this is their value before the update.
        let before = record.then(|| self.diagnostics.weights_before(&self.model));
        let objective = Objective {
            loss: &self.loss,
            penalty: self.penalty,
            penalty_targets: &self.penalty_targets,
        };
        let mut update = Update {
            optimizer: self.optimizer.as_mut(),
            params: &self.params,
            clip_norm: self.config.clip_norm,
            clip_value: self.config.clip_value,
            max_norm: self.config.max_norm,
            check_parameters: check,
        };
        let shard = Shard {
            collective: self.collective.as_ref(),
            weight: idx.len() as f64 / batch as f64,
        };
        let step = match train_step_sharded(&self.model, &x, y.target(), &objective, &mut update, ctx, shard)? {
            StepOutcome::Updated(step) => step,
            StepOutcome::NonFiniteLoss { loss } => return self.non_finite_loss(loss, &x, s, obs).map(Some),
            StepOutcome::NonFiniteParameter {
                parameter,
                gradient_non_finite,
                ..
            } => return Ok(Some(self.non_finite_parameter(&parameter, gradient_non_finite, s, obs))),
            StepOutcome::NonFiniteGradient { parameter, .. } => {
                return Ok(Some(self.non_finite_gradient(&parameter, s, obs)))
            }
        };
        if let Some(before) = before {
            self.record_diagnostics(&before, ctx, &step, obs);
        }
        self.count_step(&step, &y, sums)?;
        self.step_in_epoch = s + 1;
        self.global_step += 1;
        obs.step(s + 1, step.loss);
        Ok(None)
    }

    /// The diagnostics of a step, from this process's shard (its activations, the batch's gradients).
    fn record_diagnostics(&mut self, before: &[Option<Vec<f64>>], ctx: &Ctx, step: &Step, obs: &mut dyn Observer) {
        let raised = self
            .diagnostics
            .record(self.global_step, self.epoch + 1, &self.model, ctx, &step.grads, before);
        for w in raised {
            obs.warning(&w);
        }
    }

    fn count_step(&self, step: &Step, y: &BatchY, sums: &mut EpochSums) -> Result<()> {
        match y {
            BatchY::Classes(y) => {
                let pred = step.output.argmax(1)?;
                sums.correct += pred.iter().zip(y).filter(|(p, t)| p == t).count() as f64;
            }
            BatchY::Values(y) => {
                let _g = no_grad();
                sums.sq_err += step.output.detach().sub(y)?.square().sum_all().item()?;
            }
        }
        sums.seen += y.len() as f64;
        sums.loss += step.loss;
        sums.data += step.data_loss;
        sums.pen += step.loss - step.data_loss;
        Ok(())
    }

    fn non_finite_loss(&mut self, loss: f64, x: &Tensor, s: usize, obs: &mut dyn Observer) -> Result<Stop> {
        let where_ = self.locate_non_finite(x)?;
        let detail = format!(
            "non-finite loss ({loss}) at epoch {} step {}: {where_}; the last good checkpoint is kept. Lower the learning rate (--lr {}) or clip gradients (--clip-norm 1.0)",
            self.epoch + 1,
            s + 1,
            self.config.lr / 10.0
        );
        Ok(self.diverged(StopReason::NonFiniteLoss, detail, obs))
    }

    fn non_finite_parameter(&mut self, parameter: &str, gradient: bool, s: usize, obs: &mut dyn Observer) -> Stop {
        let cause = if gradient { " (its gradient was non-finite)" } else { "" };
        let detail = format!(
            "parameter '{parameter}' became non-finite{cause} in the update at epoch {} step {}; the last good checkpoint is kept. Lower the learning rate (--lr {}) or the weight decay, or clip gradients (--clip-norm 1.0)",
            self.epoch + 1,
            s + 1,
            self.config.lr / 10.0
        );
        self.diverged(StopReason::NonFiniteParameter, detail, obs)
    }

    fn non_finite_gradient(&mut self, parameter: &str, s: usize, obs: &mut dyn Observer) -> Stop {
        let detail = format!(
            "the gradient of parameter '{parameter}' is non-finite at epoch {} step {} (--clip-value would have hidden it); the last good checkpoint is kept. Lower the learning rate (--lr {}) or clip the gradient norm (--clip-norm 1.0)",
            self.epoch + 1,
            s + 1,
            self.config.lr / 10.0
        );
        self.diverged(StopReason::NonFiniteGradient, detail, obs)
    }

    fn diverged(&mut self, reason: StopReason, detail: String, obs: &mut dyn Observer) -> Stop {
        let w = Warning::non_finite(&detail);
        obs.warning(&w);
        self.diagnostics.warnings.push(w);
        (reason, Some(detail))
    }

    /// The finished epoch's metrics, with the validation set's loss and accuracy.
    fn validate(&self, sums: EpochSums, lr: f64, steps: usize) -> Result<EpochMetrics> {
        let steps = steps.max(1) as f64;
        let (val_loss, val_accuracy, val_regression) = match &self.val {
            Some(v) => {
                let e = self.evaluate_shared(v)?;
                let r = e.regression.map(|r| r.scaled(self.target_scale));
                let reg = r.map(|r| ValRegression {
                    val_rmse: r.rmse,
                    val_mae: r.mae,
                    val_r2: r.r2,
                });
                (Some(e.loss), r.is_none().then_some(e.accuracy), reg)
            }
            None => (None, None, None),
        };
        let regression = self.is_regression();
        Ok(EpochMetrics {
            epoch: self.epoch + 1,
            train_loss: sums.loss / steps,
            train_data_loss: sums.data / steps,
            train_penalty: sums.pen / steps,
            train_accuracy: if sums.seen > 0.0 && !regression {
                sums.correct / sums.seen
            } else {
                0.0
            },
            train_rmse: regression.then(|| (sums.sq_err / sums.seen.max(1.0)).sqrt() * self.target_scale),
            val_regression,
            val_loss,
            val_accuracy,
            lr,
            seconds: sums.seconds,
            samples_per_second: if sums.seconds > 0.0 {
                sums.seen / sums.seconds
            } else {
                0.0
            },
            weight_sparsity: regularize::sparsity(&self.penalty_targets, 1e-3),
            weight_norm: self
                .penalty_targets
                .iter()
                .map(|t| t.tensor.square().sum_all().item().unwrap_or(0.0))
                .sum::<f64>()
                .sqrt(),
        })
    }

    /// Add the epoch to the history, tell the observer, track the best epoch and step the schedule.
    fn record_epoch(&mut self, m: EpochMetrics, obs: &mut dyn Observer) -> Result<()> {
        self.history.push(m.clone());
        self.epoch += 1;
        self.step_in_epoch = 0;
        self.rng_word_pos = 0;
        self.partial = EpochSums::default();
        for w in self.diagnostics.epoch_end(&self.history) {
            obs.warning(&w);
        }
        obs.epoch_end(&m);
        // Early stopping and the schedule look at validation loss when there is one.
        let monitored = m.val_loss.unwrap_or(m.train_data_loss);
        self.track_best(monitored)?;
        let next_lr = self.schedule.step(Some(monitored));
        self.optimizer.set_lr(next_lr);
        Ok(())
    }

    /// Early stopping's verdict, or an interruption, at an epoch boundary.
    fn stop_after_epoch(&self, stop: &AtomicBool) -> Option<Stop> {
        // Every process asks, so that all stop at the same epoch.
        let interrupted = collective::any(self.collective.as_ref(), stop.load(Ordering::SeqCst));
        if let (Some(patience), Some((_, best_epoch))) = (self.config.early_stopping, self.best) {
            if self.epoch - best_epoch >= patience && self.epoch < self.config.epochs {
                let detail = format!("validation loss has not improved for {patience} epochs; restored the weights of epoch {best_epoch}");
                return Some((StopReason::EarlyStopping, Some(detail)));
            }
        }
        if interrupted && self.epoch < self.config.epochs {
            let detail = format!("interrupted after epoch {}", self.epoch);
            return Some((StopReason::Interrupted, Some(detail)));
        }
        None
    }

    /// Remember the best epoch so far (and, with early stopping, its weights).
    fn track_best(&mut self, monitored: f64) -> Result<()> {
        let improved = match self.best {
            None => true,
            Some((b, _)) => monitored < b - self.config.min_delta,
        };
        if !improved {
            return Ok(());
        }
        self.best = Some((monitored, self.epoch));
        if self.config.early_stopping.is_some() {
            self.best_weights = Some(self.snapshot_weights());
            if !self.writes_files() {
                return Ok(());
            }
            let bytes = gradflow_nn::serialize::to_safetensors(&self.model.state_dict(), None)?;
            let path = self.out_dir.join("best.safetensors");
            checkpoint::atomic_write(&path, &bytes).map_err(|e| Error::io(&path, "", e))?;
        }
        Ok(())
    }

    /// The end-of-epoch files: the checkpoint (with the weights) and the metrics.
    fn checkpoint(&self) -> Result<()> {
        if !self.writes_files() {
            return Ok(());
        }
        self.save_checkpoint()?;
        self.write_metrics()
    }

    /// Restore the best weights if early stopping kept them, test, and write the summary.
    fn finish(&mut self, stopped: Stop) -> Result<Summary> {
        if self.config.early_stopping.is_some() {
            if let Some(best) = &self.best_weights {
                for (p, b) in self.model.state_dict().iter().zip(best) {
                    p.tensor.assign(b)?;
                }
            }
        }
        let mut test = self.evaluate_shared(&self.test)?;
        test.regression = test.regression.map(|r| r.scaled(self.target_scale));
        let summary = self.summary(&test, stopped);
        if !self.writes_files() {
            return Ok(summary);
        }
        self.write_metrics()?;
        self.diagnostics.write(&self.out_dir)?;
        let p = self.out_dir.join("summary.json");
        checkpoint::atomic_write(&p, serde_json::to_string_pretty(&summary).expect("summary").as_bytes())
            .map_err(|e| Error::io(&p, "", e))?;
        Ok(summary)
    }

    fn summary(&self, test: &Evaluation, stopped: Stop) -> Summary {
        // (Folded from +0.0: an empty f64 sum is −0.0, printed "-0.0s".)
        let secs = self.history.iter().fold(0.0, |s, m| s + m.seconds);
        let samples = self
            .history
            .iter()
            .fold(0.0, |s, m| s + m.samples_per_second * m.seconds);
        Summary {
            test_accuracy: test.accuracy,
            test_loss: test.loss,
            epochs: self.history.len(),
            train_seconds: secs,
            samples_per_second: if secs > 0.0 { samples / secs } else { 0.0 },
            best_epoch: self.best.map(|b| b.1).unwrap_or(self.history.len()),
            parameters: self.model.num_parameters(),
            stopped: stopped.0,
            stop_detail: stopped.1,
            warnings: self.diagnostics.warnings.clone(),
            val_accuracy: self.history.last().and_then(|m| m.val_accuracy),
            train_accuracy: self.history.last().map(|m| m.train_accuracy).unwrap_or(0.0),
            test_rmse: test.regression.map(|r| r.rmse),
            test_mae: test.regression.map(|r| r.mae),
            test_r2: test.regression.map(|r| r.r2),
        }
    }
}

/// Load PyTorch-named safetensors weights into a model (converting dtype if needed).
pub fn load_weights_file(model: &Sequential, path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read weights", e))?;
    let (loaded, _) = from_safetensors(&bytes, &shown)?;
    Ok(load_into(&model.state_dict(), &loaded, &shown, true)?)
}

/// Restore optimizer state saved elsewhere (used by tests).
pub fn optimizer_state_of(t: &Trainer) -> OptimizerState {
    t.optimizer.state()
}

/// Schedule state (used by tests).
pub fn schedule_state_of(t: &Trainer) -> ScheduleState {
    t.schedule.state()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow_data::Targets;
    use gradflow_nn::optim::OptimizerSpec;
    use gradflow_nn::schedule::ScheduleSpec;

    #[test]
    fn stop_reasons_serialize_to_the_strings_summary_json_always_had() {
        for (reason, name) in [
            (StopReason::Completed, "completed"),
            (StopReason::EarlyStopping, "early_stopping"),
            (StopReason::Interrupted, "interrupted"),
            (StopReason::NonFiniteLoss, "non_finite_loss"),
            (StopReason::NonFiniteParameter, "non_finite_parameter"),
            (StopReason::NonFiniteGradient, "non_finite_gradient"),
        ] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("\"{name}\""));
            assert_eq!(reason.to_string(), name);
            assert_eq!(
                serde_json::from_str::<StopReason>(&format!("\"{name}\"")).unwrap(),
                reason
            );
        }
    }

    fn blobs(n: usize) -> Dataset {
        let features = (0..n * 2).map(|i| if i % 3 == 0 { 1.0 } else { -0.5 }).collect();
        let labels = (0..n).map(|i| i % 2).collect();
        Dataset::new(features, vec![2], Targets::Classes { labels, num_classes: 2 }).unwrap()
    }

    /// y = 2·x₀ − x₁, standardized by a scale of 10.
    fn line(n: usize) -> Dataset {
        let features: Vec<f32> = (0..n * 2).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let values = features.chunks(2).map(|x| 2.0 * x[0] - x[1]).collect();
        Dataset::new(features, vec![2], Targets::Values { values, width: 1 }).unwrap()
    }

    #[test]
    fn a_regression_learns_and_reports_errors_in_the_targets_units() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::parse("input = [2]\n[[layer]]\ntype = \"Linear\"\nout_features = 1\n", "m").unwrap();
        let config = TrainConfig {
            epochs: 30,
            batch_size: 8,
            lr: 0.05,
            val_split: 0.25,
            loss: Some("l1".into()),
            diagnostics_every: 0,
            ..TrainConfig::default()
        };
        let data = DataSource::Datasets {
            train: line(64),
            val: None,
            test: line(16),
        };
        let mut t = Trainer::new(config, spec, data, dir.path()).unwrap();
        assert!(t.is_regression());
        assert_eq!(t.loss, Loss::L1);
        t.set_target_scale(10.0);
        let s = t.fit(&mut Silent, &AtomicBool::new(false)).unwrap();
        let (rmse, mae, r2) = (s.test_rmse.unwrap(), s.test_mae.unwrap(), s.test_r2.unwrap());
        assert!(r2 > 0.99 && mae <= rmse, "{s:?}");
        // The test loss is the L1 of the standardized target; the MAE is ten times it.
        assert!(
            (mae - 10.0 * s.test_loss).abs() < 1e-4 * mae.max(1.0),
            "{mae} vs {}",
            s.test_loss
        );
        let last = t.history().last().unwrap();
        assert!(last.train_rmse.is_some() && last.val_regression.is_some() && last.val_accuracy.is_none());
        let bad = TrainConfig {
            loss: Some("cross_entropy".into()),
            ..TrainConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--loss cross_entropy: unknown regression loss"));
    }

    #[test]
    fn a_parameter_that_overflows_stops_the_run_and_keeps_the_last_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::parse("input = [2]\n[[layer]]\ntype = \"Linear\"\nout_features = 2\n", "m").unwrap();
        let config = TrainConfig {
            epochs: 1,
            batch_size: 4,
            diagnostics_every: 0,
            ..TrainConfig::default()
        };
        let data = DataSource::Datasets {
            train: blobs(8),
            val: None,
            test: blobs(4),
        };
        let mut t = Trainer::new(config, spec, data, dir.path()).unwrap();
        assert_eq!(
            t.fit(&mut Silent, &AtomicBool::new(false)).unwrap().stopped,
            StopReason::Completed
        );
        let good = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let good_weights = std::fs::read(dir.path().join(crate::checkpoint::WEIGHTS_FILE)).unwrap();
        // A second epoch under an update that overflows every weight.
        t.config.epochs = 2;
        t.optimizer = optim::build(&OptimizerSpec::sgd(f64::MAX));
        t.schedule = ScheduleSpec::parse("constant", 2).unwrap().build(f64::MAX);
        let s = t.fit(&mut Silent, &AtomicBool::new(false)).unwrap();
        // Caught by the next step's loss or, at the latest, by the parameter
        // scan before the epoch's checkpoint; either way the parameter is named.
        assert!(
            matches!(s.stopped, StopReason::NonFiniteParameter | StopReason::NonFiniteLoss),
            "{:?}",
            s.stopped
        );
        let detail = s.stop_detail.unwrap();
        assert!(detail.contains("parameter '0.weight'"), "{detail}");
        assert!(detail.contains("at epoch 2 step"), "{detail}");
        assert_eq!(std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap(), good);
        assert_eq!(
            std::fs::read(dir.path().join(crate::checkpoint::WEIGHTS_FILE)).unwrap(),
            good_weights
        );
        assert_eq!(s.warnings.last().unwrap().kind.as_str(), "non_finite_loss");
    }
}
