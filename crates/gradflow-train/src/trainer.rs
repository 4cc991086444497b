//! The fit loop: forward, loss (+ L1/L2 penalty), backward, optimizer step,
//! epoch after epoch, with validation, schedules, early stopping,
//! checkpoints after every epoch, and a clean stop on Ctrl-C or on a
//! non-finite loss. It prints nothing; an [`Observer`] sees the progress.

use crate::checkpoint::{self, CheckpointMeta, CHECKPOINT_FILE};
use crate::config::TrainConfig;
use crate::diagnostics::{DiagnosticsRecorder, Warning};
use crate::metrics::{batch_tensor, evaluate, EpochMetrics, Evaluation};
use gradflow::{no_grad, DType, Tensor};
use gradflow_data::{Dataset, Loader, Mnist, MNIST_MEAN, MNIST_STD};
use gradflow_nn::optim::{self, Optimizer, OptimizerState, Param};
use gradflow_nn::schedule::{LrSchedule, ScheduleState};
use gradflow_nn::serialize::{from_safetensors, load_into};
use gradflow_nn::{
    regularize, Activation, BuildOptions, Ctx, Init, Loss, ModelSpec, Module, Penalty, PenaltyTarget, Sequential,
    Target,
};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A training error, as one line for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TrainError(pub String);

impl From<gradflow::Error> for TrainError {
    fn from(e: gradflow::Error) -> Self {
        TrainError(e.to_string())
    }
}

type TResult<T> = Result<T, TrainError>;

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
    /// Why training ended: "completed", "early_stopping", "interrupted", "non_finite_loss".
    pub stopped: String,
    /// A sentence explaining `stopped` when it is not "completed".
    pub stop_detail: Option<String>,
    /// Warnings raised by the diagnostics, with evidence.
    pub warnings: Vec<Warning>,
    /// Final validation accuracy, if a validation set was used.
    pub val_accuracy: Option<f64>,
    /// Final training accuracy (on the fly, last epoch).
    pub train_accuracy: f64,
}

/// Where the data comes from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per run; boxing would only add noise at call sites
pub enum DataSource {
    /// MNIST IDX files in this directory.
    Mnist(PathBuf),
    /// Ready-made datasets (already normalized), e.g. from Rust code.
    Datasets {
        /// Training set.
        train: Dataset,
        /// Validation set; when None, `val_split` carves one out of `train`.
        val: Option<Dataset>,
        /// Test set.
        test: Dataset,
    },
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
    out_dir: PathBuf,
    dtype: DType,
    // progress
    epoch: usize,
    step_in_epoch: usize,
    global_step: u64,
    rng_word_pos: u128,
    history: Vec<EpochMetrics>,
    best: Option<(f64, usize)>,
    best_weights: Option<Vec<Tensor>>,
    partial: BTreeMap<String, f64>,
    diagnostics: DiagnosticsRecorder,
}

/// Resolve `--model`: a preset name or a TOML file.
pub fn resolve_model(name: &str) -> TResult<ModelSpec> {
    if let Some(spec) = ModelSpec::preset(name) {
        return Ok(spec);
    }
    let path = Path::new(name);
    if !path.exists() {
        return Err(TrainError(format!(
            "--model {name}: no such preset (mlp, mlp3, lenet5) or file"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError(format!("{name}: cannot read model file: {e}")))?;
    ModelSpec::parse(&text, name).map_err(|e| TrainError(e.0))
}

/// The model the settings describe: preset or file, with `--activation` and `--dropout` applied.
pub fn model_from_config(config: &TrainConfig) -> TResult<ModelSpec> {
    let mut spec = resolve_model(&config.model)?;
    if let Some(a) = &config.activation {
        let act = Activation::parse(a).ok_or_else(|| {
            TrainError(format!(
                "--activation {a}: unknown (expected one of {})",
                Activation::NAMES.join(", ")
            ))
        })?;
        spec = spec.with_activation(act);
    }
    if let Some(p) = config.dropout {
        spec = spec.with_dropout(p);
    }
    Ok(spec)
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    gradflow::seeded_rng(seed ^ 0x5eed_d80f ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Fit MNIST-shaped samples to the model's input: `[1, 28, 28]` data feeds a `[784]` model too.
fn fit_samples(ds: &mut Dataset, input: &[usize], what: &str) -> TResult<()> {
    if ds.sample_shape == input {
        return Ok(());
    }
    if ds.sample_len() == input.iter().product::<usize>() {
        ds.reshape_samples(input.to_vec())
            .map_err(|e| TrainError(e.to_string()))?;
        return Ok(());
    }
    Err(TrainError(format!(
        "the model's input {input:?} does not fit the {what} samples of shape {:?}",
        ds.sample_shape
    )))
}

impl Trainer {
    /// Build a fresh run: load data, build and check the model, create the optimizer.
    pub fn new(config: TrainConfig, spec: ModelSpec, data: DataSource, out_dir: &Path) -> TResult<Trainer> {
        config.validate().map_err(TrainError)?;
        let init = match &config.init {
            Some(name) => Init::parse(name).map_err(|e| TrainError(format!("--init: {e}")))?,
            None => Init::PytorchDefault,
        };
        let model = spec
            .build(BuildOptions {
                init,
                dtype: DType::F32,
                seed: config.seed,
            })
            .map_err(|e| TrainError(format!("model: {}", e.0)))?;
        Trainer::with_model(config, spec, model, data, out_dir)
    }

    /// Like [`new`](Self::new), with weights from a safetensors file (PyTorch state_dict names).
    pub fn with_weights(
        config: TrainConfig,
        spec: ModelSpec,
        weights: &Path,
        data: DataSource,
        out_dir: &Path,
    ) -> TResult<Trainer> {
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
    ) -> TResult<Trainer> {
        let mut given_val = None;
        let (mut train, mut test) = match data {
            DataSource::Mnist(dir) => {
                let m = Mnist::load_limited(&dir, config.limit_train, config.limit_test)
                    .map_err(|e| TrainError(e.to_string()))?;
                let (mut tr, mut te) = (m.train, m.test);
                tr.normalize(MNIST_MEAN, MNIST_STD);
                te.normalize(MNIST_MEAN, MNIST_STD);
                (tr, te)
            }
            DataSource::Datasets { train, val, test } => {
                given_val = val;
                (train, test)
            }
        };
        if let Some(v) = &mut given_val {
            fit_samples(v, &spec.input, "validation")?;
        }
        fit_samples(&mut train, &spec.input, "training")?;
        fit_samples(&mut test, &spec.input, "test")?;
        let out_shape = spec.output_shape().map_err(|e| TrainError(format!("model: {}", e.0)))?;
        let classes = train.num_classes().unwrap_or(0);
        if out_shape != [classes] {
            return Err(TrainError(format!(
                "model: the last layer gives {out_shape:?} outputs per sample but the data has {classes} classes"
            )));
        }
        let (train, val) = if given_val.is_some() {
            (train, given_val)
        } else if config.val_split > 0.0 {
            let (a, b) = train
                .split(config.val_split as f32, config.seed)
                .map_err(|e| TrainError(e.to_string()))?;
            (a, Some(b))
        } else {
            (train, None)
        };
        let params: Vec<Param> = model
            .parameters()
            .into_iter()
            .map(|p| Param::new(p.name, p.tensor))
            .collect();
        let penalty_targets = model.named_penalty_targets();
        let opt_spec = config.optimizer_spec().map_err(TrainError)?;
        let optimizer = optim::build(&opt_spec);
        let schedule = config.schedule_spec().map_err(TrainError)?.build(config.lr);
        let loss = Loss::CrossEntropy {
            label_smoothing: config.label_smoothing,
        };
        let penalty = Penalty {
            l1: config.l1,
            l2: config.l2,
        };
        let diagnostics = DiagnosticsRecorder::new(&model, config.diagnostics_every);
        Ok(Trainer {
            config,
            spec,
            model,
            params,
            penalty_targets,
            optimizer,
            schedule,
            loss,
            penalty,
            train,
            val,
            test,
            out_dir: out_dir.to_path_buf(),
            dtype: DType::F32,
            epoch: 0,
            step_in_epoch: 0,
            global_step: 0,
            rng_word_pos: 0,
            history: Vec::new(),
            best: None,
            best_weights: None,
            partial: BTreeMap::new(),
            diagnostics,
        })
    }

    /// Continue the run saved in `dir`: same settings, weights, optimizer and schedule state, RNG position.
    pub fn resume(dir: &Path, data: DataSource, epochs_override: Option<usize>) -> TResult<Trainer> {
        let path = dir.join(CHECKPOINT_FILE);
        if !path.exists() {
            return Err(TrainError(format!(
                "--resume {}: no {CHECKPOINT_FILE} in that directory",
                dir.display()
            )));
        }
        let ck = checkpoint::load(&path).map_err(TrainError)?;
        let mut config = ck.meta.config.clone();
        if let Some(e) = epochs_override {
            config.epochs = e;
        }
        let spec = ModelSpec::parse(&ck.meta.model_toml, &format!("{} (model)", path.display()))
            .map_err(|e| TrainError(e.0))?;
        let mut t = Trainer::new(config, spec, data, dir)?;
        let shown = path.display().to_string();
        load_into(&t.model.state_dict(), &ck.model, &shown, false).map_err(|e| TrainError(e.0))?;
        checkpoint::verify(&ck.meta, &t.model.state_dict(), &ck.optimizer, &shown).map_err(TrainError)?;
        t.optimizer
            .load_state(&ck.optimizer)
            .map_err(|e| TrainError(format!("{shown}: {e}")))?;
        t.schedule
            .load_state(&ck.meta.schedule)
            .map_err(|e| TrainError(format!("{shown}: {e}")))?;
        t.optimizer.set_lr(t.schedule.lr());
        t.epoch = ck.meta.epoch;
        t.step_in_epoch = ck.meta.step_in_epoch;
        t.global_step = ck.meta.global_step;
        t.rng_word_pos = ck.meta.rng_word_pos;
        t.history = ck.meta.history;
        t.best = ck.meta.best;
        t.partial = ck.meta.partial;
        let best_path = dir.join("best.safetensors");
        if t.best.is_some() && best_path.exists() {
            let bytes = std::fs::read(&best_path).map_err(|e| TrainError(format!("{}: {e}", best_path.display())))?;
            let (loaded, _) =
                from_safetensors(&bytes, &best_path.display().to_string()).map_err(|e| TrainError(e.0))?;
            let sd = t.model.state_dict();
            t.best_weights = Some(
                sd.iter()
                    .map(|p| loaded.get(&p.name).cloned().unwrap_or_else(|| p.tensor.detach()))
                    .collect(),
            );
        }
        Ok(t)
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

    fn save_checkpoint(&self) -> TResult<()> {
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
            optimizer_scalars: BTreeMap::new(),
            schedule: self.schedule.state(),
            history: self.history.clone(),
            best: self.best,
            partial: self.partial.clone(),
            checksum: 0,
        };
        checkpoint::save(&self.out_dir, &self.model.state_dict(), &self.optimizer.state(), meta).map_err(TrainError)
    }

    fn write_metrics(&self) -> TResult<()> {
        let mut s = String::new();
        for m in &self.history {
            s.push_str(&serde_json::to_string(m).expect("metrics serialize"));
            s.push('\n');
        }
        let p = self.out_dir.join("metrics.jsonl");
        checkpoint::atomic_write(&p, s.as_bytes()).map_err(|e| TrainError(format!("{}: {e}", p.display())))
    }

    /// Which layer first produced a non-finite value on this batch, for the divergence message.
    fn locate_non_finite(&self, x: &Tensor) -> String {
        for p in &self.params {
            if p.tensor.to_vec_f64().iter().any(|v| !v.is_finite()) {
                return format!("parameter '{}' holds a non-finite value", p.name);
            }
        }
        let _g = no_grad();
        let mut ctx = Ctx::eval();
        ctx.record_outputs = true;
        if self.model.forward(x, &mut ctx).is_ok() {
            for (i, out) in ctx.outputs.iter().enumerate() {
                if out.to_vec_f64().iter().any(|v| !v.is_finite()) {
                    return format!(
                        "layer {i} ({}) produced the first non-finite value",
                        self.model.layers[i].kind()
                    );
                }
            }
        }
        "the loss itself overflowed (the logits are finite but too large)".into()
    }

    /// Train until the configured epochs are done, early stopping triggers,
    /// `stop` is set (Ctrl-C), or the loss becomes non-finite.
    pub fn fit(&mut self, obs: &mut dyn Observer, stop: &AtomicBool) -> TResult<Summary> {
        std::fs::create_dir_all(&self.out_dir)
            .map_err(|e| TrainError(format!("{}: cannot create run directory: {e}", self.out_dir.display())))?;
        let probe = self.out_dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| {
            TrainError(format!(
                "{}: run directory is not writable: {e}",
                self.out_dir.display()
            ))
        })?;
        let _ = std::fs::remove_file(&probe);
        checkpoint::atomic_write(&self.out_dir.join("model.toml"), self.spec.to_toml().as_bytes())
            .map_err(|e| TrainError(format!("{}: {e}", self.out_dir.display())))?;

        let loader = Loader::new(self.config.batch_size, true, self.config.drop_last, self.config.seed)
            .map_err(|e| TrainError(e.to_string()))?;
        let n = self.train.len();
        let labels = self
            .train
            .labels()
            .ok_or_else(|| TrainError("training data has no class labels".into()))?
            .to_vec();
        let mut stopped = ("completed".to_string(), None::<String>);
        self.optimizer.set_lr(self.schedule.lr());

        'epochs: while self.epoch < self.config.epochs {
            let order = loader.order(n, self.epoch);
            let batches: Vec<&[usize]> = loader.chunks(&order).collect();
            obs.epoch_start(self.epoch + 1, self.config.epochs, batches.len());
            let mut ctx = Ctx {
                training: true,
                rng: epoch_rng(self.config.seed, self.epoch),
                record_outputs: false,
                outputs: Vec::new(),
            };
            ctx.rng.set_word_pos(self.rng_word_pos);
            let get = |p: &BTreeMap<String, f64>, k: &str| p.get(k).copied().unwrap_or(0.0);
            let (mut sum_loss, mut sum_data, mut sum_pen) = (
                get(&self.partial, "loss"),
                get(&self.partial, "data"),
                get(&self.partial, "pen"),
            );
            let (mut correct, mut seen, mut seconds) = (
                get(&self.partial, "correct"),
                get(&self.partial, "seen"),
                get(&self.partial, "seconds"),
            );
            let lr = self.optimizer.lr();
            let t0 = Instant::now();
            for (s, idx) in batches.iter().enumerate().skip(self.step_in_epoch) {
                let x = batch_tensor(&self.train, idx, self.dtype)?;
                let y: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
                let record = self.diagnostics.due(self.global_step);
                ctx.record_outputs = record;
                ctx.outputs.clear();
                let out = self.model.forward(&x, &mut ctx)?;
                let data_loss = self.loss.compute(&out, Target::Classes(&y))?;
                let pen = self.penalty.term(&self.penalty_targets)?;
                let total = match &pen {
                    Some(p) => data_loss.add(p)?,
                    None => data_loss.clone(),
                };
                let (lv, dv) = (total.item()?, data_loss.item()?);
                if !lv.is_finite() {
                    let where_ = self.locate_non_finite(&x);
                    let detail = format!("non-finite loss ({lv}) at epoch {} step {}: {where_}; the last good checkpoint is kept. Lower the learning rate (--lr {}) or clip gradients (--clip-norm 1.0)", self.epoch + 1, s + 1, self.config.lr / 10.0);
                    let w = Warning::non_finite(&detail);
                    obs.warning(&w);
                    self.diagnostics.warnings.push(w);
                    stopped = ("non_finite_loss".into(), Some(detail));
                    break 'epochs;
                }
                let mut grads = total.backward()?;
                if let Some(c) = self.config.clip_norm {
                    optim::clip_grad_norm(&self.params, &mut grads, c)?;
                }
                if let Some(c) = self.config.clip_value {
                    optim::clip_grad_value(&self.params, &mut grads, c)?;
                }
                let before = if record {
                    Some(self.diagnostics.weights_before(&self.model))
                } else {
                    None
                };
                self.optimizer.step(&self.params, &grads)?;
                if let Some(m) = self.config.max_norm {
                    regularize::apply_max_norm(&self.penalty_targets, m)?;
                }
                if let Some(before) = before {
                    let ws = self.diagnostics.record(
                        self.global_step,
                        self.epoch + 1,
                        &self.model,
                        &ctx.outputs,
                        &grads,
                        &before,
                    );
                    for w in ws {
                        obs.warning(&w);
                    }
                }
                let pred = out.argmax(1)?;
                correct += pred.iter().zip(&y).filter(|(p, t)| p == t).count() as f64;
                seen += y.len() as f64;
                sum_loss += lv;
                sum_data += dv;
                sum_pen += lv - dv;
                self.step_in_epoch = s + 1;
                self.global_step += 1;
                obs.step(s + 1, lv);
                if stop.load(Ordering::SeqCst) && self.step_in_epoch < batches.len() {
                    seconds += t0.elapsed().as_secs_f64();
                    self.rng_word_pos = ctx.rng.get_word_pos();
                    self.partial = BTreeMap::from([
                        ("loss".into(), sum_loss),
                        ("data".into(), sum_data),
                        ("pen".into(), sum_pen),
                        ("correct".into(), correct),
                        ("seen".into(), seen),
                        ("seconds".into(), seconds),
                    ]);
                    self.save_checkpoint()?;
                    stopped = (
                        "interrupted".into(),
                        Some(format!(
                            "interrupted at epoch {} step {}",
                            self.epoch + 1,
                            self.step_in_epoch
                        )),
                    );
                    break 'epochs;
                }
            }
            seconds += t0.elapsed().as_secs_f64();
            let steps = batches.len().max(1) as f64;
            let (val_loss, val_acc) = match &self.val {
                Some(v) => {
                    let e = evaluate(&self.model, v, &self.loss, 1000, self.dtype)?;
                    (Some(e.loss), Some(e.accuracy))
                }
                None => (None, None),
            };
            let m = EpochMetrics {
                epoch: self.epoch + 1,
                train_loss: sum_loss / steps,
                train_data_loss: sum_data / steps,
                train_penalty: sum_pen / steps,
                train_accuracy: if seen > 0.0 { correct / seen } else { 0.0 },
                val_loss,
                val_accuracy: val_acc,
                lr,
                seconds,
                samples_per_second: if seconds > 0.0 { seen / seconds } else { 0.0 },
                weight_sparsity: regularize::sparsity(&self.penalty_targets, 1e-3),
                weight_norm: self
                    .penalty_targets
                    .iter()
                    .map(|t| t.tensor.square().sum_all().item().unwrap_or(0.0))
                    .sum::<f64>()
                    .sqrt(),
            };
            self.history.push(m.clone());
            self.epoch += 1;
            self.step_in_epoch = 0;
            self.rng_word_pos = 0;
            self.partial.clear();
            for w in self.diagnostics.epoch_end(&self.history) {
                obs.warning(&w);
            }
            obs.epoch_end(&m);
            // Early stopping and the schedule look at validation loss when there is one.
            let monitored = val_loss.unwrap_or(m.train_data_loss);
            let improved = match self.best {
                None => true,
                Some((b, _)) => monitored < b - self.config.min_delta,
            };
            if improved {
                self.best = Some((monitored, self.epoch));
                if self.config.early_stopping.is_some() {
                    self.best_weights = Some(self.snapshot_weights());
                    let sd = self.model.state_dict();
                    let bytes = gradflow_nn::serialize::to_safetensors(&sd, None).map_err(|e| TrainError(e.0))?;
                    checkpoint::atomic_write(&self.out_dir.join("best.safetensors"), &bytes)
                        .map_err(|e| TrainError(e.to_string()))?;
                }
            }
            let next_lr = self.schedule.step(Some(monitored));
            self.optimizer.set_lr(next_lr);
            self.save_checkpoint()?;
            self.write_metrics()?;
            if let (Some(patience), Some((_, best_epoch))) = (self.config.early_stopping, self.best) {
                if self.epoch - best_epoch >= patience && self.epoch < self.config.epochs {
                    stopped = ("early_stopping".into(), Some(format!("validation loss has not improved for {patience} epochs; restored the weights of epoch {best_epoch}")));
                    break;
                }
            }
            if stop.load(Ordering::SeqCst) && self.epoch < self.config.epochs {
                stopped = (
                    "interrupted".into(),
                    Some(format!("interrupted after epoch {}", self.epoch)),
                );
                break;
            }
        }
        if self.config.early_stopping.is_some() {
            if let Some(best) = &self.best_weights {
                for (p, b) in self.model.state_dict().iter().zip(best) {
                    p.tensor.assign(b)?;
                }
            }
        }
        let test = evaluate(&self.model, &self.test, &self.loss, 1000, self.dtype)?;
        let summary = self.summary(&test, stopped);
        self.write_metrics()?;
        self.diagnostics.write(&self.out_dir).map_err(|e| TrainError(e.to_string()))?;
        let p = self.out_dir.join("summary.json");
        checkpoint::atomic_write(&p, serde_json::to_string_pretty(&summary).expect("summary").as_bytes())
            .map_err(|e| TrainError(format!("{}: {e}", p.display())))?;
        Ok(summary)
    }

    fn summary(&self, test: &Evaluation, stopped: (String, Option<String>)) -> Summary {
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
        }
    }
}

/// Load PyTorch-named safetensors weights into a model (converting dtype if needed).
pub fn load_weights_file(model: &Sequential, path: &Path) -> TResult<()> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TrainError(format!("{shown}: cannot read weights: {e}")))?;
    let (loaded, _) = from_safetensors(&bytes, &shown).map_err(|e| TrainError(e.0))?;
    load_into(&model.state_dict(), &loaded, &shown, true).map_err(|e| TrainError(e.0))
}

/// Restore optimizer state saved elsewhere (used by tests).
pub fn optimizer_state_of(t: &Trainer) -> OptimizerState {
    t.optimizer.state()
}

/// Schedule state (used by tests).
pub fn schedule_state_of(t: &Trainer) -> ScheduleState {
    t.schedule.state()
}
