//! Checkpoints: the model's weights (under PyTorch's names) plus optimizer,
//! schedule, RNG and progress, in one safetensors file with JSON metadata.
//!
//! Writes are atomic: the bytes go to a temporary file in the same directory,
//! are synced, then renamed over the old checkpoint; a crash at any moment
//! leaves either the old or the new file, never a torn one. The metadata
//! carries a CRC-32 of the tensor bytes, and a second entry the CRC-32 of the
//! metadata JSON itself; the loader verifies both.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::metrics::{EpochMetrics, EpochSums};
use gradflow::Tensor;
use gradflow_nn::optim::OptimizerState;
use gradflow_nn::schedule::ScheduleState;
use gradflow_nn::serialize::{from_safetensors, to_safetensors};
use gradflow_nn::NamedTensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// File name of the full checkpoint inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the weights alone (what PyTorch's `load_state_dict` takes).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Prefix of optimizer buffers inside the checkpoint.
const OPT_PREFIX: &str = "optimizer/";
/// Metadata key holding the CRC-32 (hex) of the `gradflow` JSON metadata.
const META_CRC_KEY: &str = "gradflow_crc32";
/// Metadata key of the weights file holding its [`Progress`] as JSON (one key,
/// so the file's bytes do not depend on a map's order).
const WEIGHTS_PROGRESS_KEY: &str = "gradflow_progress";

/// Progress and state saved beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version.
    pub version: u32,
    /// Epochs fully completed.
    pub epoch: usize,
    /// Steps completed inside the current (incomplete) epoch; 0 at an epoch boundary.
    pub step_in_epoch: usize,
    /// Global step count.
    pub global_step: u64,
    /// Word position of the dropout RNG within the current epoch's stream.
    pub rng_word_pos: u128,
    /// The model file.
    pub model_toml: String,
    /// The run's settings.
    pub config: TrainConfig,
    /// Optimizer kind, step and scalars (its buffers are tensors in the file).
    pub optimizer_kind: String,
    /// Optimizer step count.
    pub optimizer_step: u64,
    /// Optimizer scalars.
    pub optimizer_scalars: BTreeMap<String, f64>,
    /// Schedule state.
    pub schedule: ScheduleState,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// Best validation loss so far and its epoch (early stopping).
    pub best: Option<(f64, usize)>,
    /// Epoch-level accumulators of a partial epoch (loss sums, counts), to resume mid-epoch exactly.
    #[serde(default)]
    pub partial: EpochSums,
    /// CRC-32 of the tensor section.
    pub checksum: u32,
}

/// A checkpoint read back.
pub struct Checkpoint {
    /// Progress and settings.
    pub meta: CheckpointMeta,
    /// Model tensors by name.
    pub model: BTreeMap<String, Tensor>,
    /// The optimizer's state.
    pub optimizer: OptimizerState,
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename, fsync the directory).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        remove_stale_temporaries(dir, name);
    }
    result
}

/// Removes `.{name}.tmp-PID` files left by writers that were killed mid-write
/// (`kill -9`, power loss), so interrupted runs do not accumulate partial
/// copies. Only files of processes that no longer exist are touched, and only
/// where `/proc` can tell.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let alive = pid.parse::<u32>().map_or(true, |pid| {
            pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
        });
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn crc_of(tensors: &[NamedTensor]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for t in tensors {
        h.update(t.name.as_bytes());
        for v in t.tensor.to_vec_f64() {
            h.update(&v.to_le_bytes());
        }
    }
    h.finalize()
}

/// Save a checkpoint, then the plain weights file, into `dir`. The weights
/// file records the epoch and step it holds ([`weights_progress`]), so a
/// reader can tell when a kill between the two writes left it behind the
/// checkpoint.
pub fn save(dir: &Path, model: &[NamedTensor], optimizer: &OptimizerState, mut meta: CheckpointMeta) -> Result<()> {
    let tensors = with_optimizer_buffers(model, optimizer);
    meta.optimizer_kind = optimizer.kind.clone();
    meta.optimizer_step = optimizer.step;
    meta.optimizer_scalars = optimizer.scalars.clone();
    meta.checksum = crc_of(&tensors);
    let json = serde_json::to_string(&meta).map_err(|e| Error::Checkpoint(e.to_string()))?;
    // Also proves the metadata reads back before anything is written.
    let (json, _) =
        parse_meta(&json).map_err(|e| Error::Checkpoint(format!("cannot encode checkpoint metadata: {e}")))?;
    // The tensor checksum does not cover the JSON (epoch, history, optimizer
    // scalars...): a flipped digit there would resume at the wrong place.
    let meta_crc = format!("{:08x}", crc32fast::hash(json.as_bytes()));
    let md = HashMap::from([("gradflow".to_string(), json), (META_CRC_KEY.to_string(), meta_crc)]);
    let bytes = to_safetensors(&tensors, Some(md))?;
    let ck = dir.join(CHECKPOINT_FILE);
    atomic_write(&ck, &bytes).map_err(|e| Error::io(&ck, "cannot write checkpoint", e))?;
    let progress = Progress {
        epoch: meta.epoch,
        step_in_epoch: meta.step_in_epoch,
    };
    let weights = to_safetensors(model, Some(progress.to_metadata()))?;
    let wf = dir.join(WEIGHTS_FILE);
    atomic_write(&wf, &weights).map_err(|e| Error::io(&wf, "cannot write weights", e))
}

/// How far a run had trained when a file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps into the next epoch (0 at an epoch boundary).
    pub step_in_epoch: usize,
}

impl Progress {
    fn to_metadata(self) -> HashMap<String, String> {
        let json = serde_json::to_string(&self).expect("two integers serialize");
        HashMap::from([(WEIGHTS_PROGRESS_KEY.to_string(), json)])
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step_in_epoch {
            0 => write!(f, "epoch {}", self.epoch),
            s => write!(f, "epoch {} step {s}", self.epoch + 1),
        }
    }
}

/// The progress a weights file records (files written by other tools, or by
/// gradflow before it recorded this, have none).
pub fn weights_progress(metadata: &HashMap<String, String>) -> Option<Progress> {
    serde_json::from_str(metadata.get(WEIGHTS_PROGRESS_KEY)?).ok()
}

/// The model's tensors followed by the optimizer's buffers, as the checkpoint stores them.
fn with_optimizer_buffers(model: &[NamedTensor], optimizer: &OptimizerState) -> Vec<NamedTensor> {
    let mut tensors: Vec<NamedTensor> = model.to_vec();
    for (name, t) in &optimizer.buffers {
        tensors.push(NamedTensor {
            name: format!("{OPT_PREFIX}{name}"),
            tensor: t.clone(),
        });
    }
    tensors
}

/// Read and verify a checkpoint file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read checkpoint", e))?;
    load_bytes(&bytes, &shown)
}

/// Parse a checkpoint from memory; `shown` names it in error messages. Exists
/// so fuzzers and tests can exercise the parser without files.
pub fn load_bytes(bytes: &[u8], shown: &str) -> Result<Checkpoint> {
    let (tensors, md) = from_safetensors(bytes, shown)?;
    let json = md
        .get("gradflow")
        .ok_or_else(|| Error::Checkpoint(format!("{shown}: not a gradflow checkpoint (no 'gradflow' metadata)")))?;
    // Checkpoints written before the metadata checksum existed have none.
    if let Some(stored) = md.get(META_CRC_KEY) {
        let computed = format!("{:08x}", crc32fast::hash(json.as_bytes()));
        if *stored != computed {
            return Err(Error::Checkpoint(format!(
                "{shown}: metadata checksum mismatch (stored {stored}, computed {computed}): the checkpoint is damaged"
            )));
        }
    }
    let (_, meta) =
        parse_meta(json).map_err(|e| Error::Checkpoint(format!("{shown}: damaged checkpoint metadata: {e}")))?;
    let mut model = BTreeMap::new();
    let mut buffers = BTreeMap::new();
    for (n, t) in tensors {
        match n.strip_prefix(OPT_PREFIX) {
            Some(rest) => {
                buffers.insert(rest.to_string(), t);
            }
            None => {
                model.insert(n, t);
            }
        }
    }
    let optimizer = OptimizerState {
        kind: meta.optimizer_kind.clone(),
        step: meta.optimizer_step,
        scalars: meta.optimizer_scalars.clone(),
        buffers,
    };
    Ok(Checkpoint { meta, model, optimizer })
}

/// Parses checkpoint metadata, returning the (possibly repaired) text with it.
///
/// serde_json writes NaN and ±infinity as `null`, which then cannot be read
/// where an `f64` is required: a diverging epoch's weight norm or loss, a best
/// loss of infinity. Such a checkpoint was written without complaint and then
/// refused to load. Each `null` standing where a number is required is
/// replaced by the largest finite `f64` (which no real metric reaches, so it
/// reads as "overflowed"); `null`s of optional values stay as they are. Any
/// other error is returned unchanged.
fn parse_meta(json: &str) -> Result<(String, CheckpointMeta), serde_json::Error> {
    let mut text = json.to_string();
    loop {
        let e = match serde_json::from_str::<CheckpointMeta>(&text) {
            Ok(meta) => return Ok((text, meta)),
            Err(e) => e,
        };
        let message = e.to_string();
        let float_null = e.is_data()
            && (message.starts_with("invalid type: null, expected f64")
                || message.starts_with("invalid type: null, expected f32"));
        // serde_json reports the 1-based line and the 1-based column of the
        // token's last byte.
        let line_start = text
            .split_inclusive('\n')
            .take(e.line().saturating_sub(1))
            .map(str::len)
            .sum::<usize>();
        let end = line_start + e.column();
        if !float_null || end < 4 || text.get(end - 4..end) != Some("null") {
            return Err(e);
        }
        // Each pass removes one `null`, so this terminates.
        text.replace_range(end - 4..end, "1.7976931348623157e308");
    }
}

/// Verify the checksum against the model's state_dict order (done after loading into the model).
pub fn verify(
    meta: &CheckpointMeta,
    model_in_order: &[NamedTensor],
    optimizer: &OptimizerState,
    source: &str,
) -> Result<()> {
    let crc = crc_of(&with_optimizer_buffers(model_in_order, optimizer));
    if crc != meta.checksum {
        return Err(Error::Checkpoint(format!(
            "{source}: checksum mismatch (stored {:08x}, computed {crc:08x}): the checkpoint is damaged",
            meta.checksum
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow::DType;
    use gradflow_nn::{BuildOptions, ModelSpec};

    const MODEL: &str = "input = [2]\n[[layer]]\ntype = \"Linear\"\nout_features = 3\n";

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            version: 1,
            epoch: 2,
            step_in_epoch: 5,
            global_step: 21,
            rng_word_pos: 1234,
            model_toml: MODEL.into(),
            config: TrainConfig::default(),
            optimizer_kind: String::new(),
            optimizer_step: 0,
            optimizer_scalars: BTreeMap::new(),
            schedule: ScheduleState {
                kind: "constant".into(),
                last_epoch: 2,
                scalars: BTreeMap::from([("base_lr".into(), 0.01)]),
                inner: None,
            },
            history: vec![EpochMetrics {
                epoch: 1,
                train_loss: 0.5,
                ..Default::default()
            }],
            best: Some((0.25, 1)),
            partial: EpochSums {
                loss: 1.5,
                data: 1.25,
                pen: 0.25,
                correct: 7.0,
                seen: 10.0,
                seconds: 0.125,
                ..Default::default()
            },
            checksum: 0,
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let net = ModelSpec::parse(MODEL, "m")
            .unwrap()
            .build(BuildOptions::default())
            .unwrap();
        let optimizer = OptimizerState {
            kind: "sgd".into(),
            step: 21,
            scalars: BTreeMap::from([("lr".into(), 0.01)]),
            buffers: BTreeMap::from([("momentum_buffer/0.bias".into(), Tensor::ones(&[3], DType::F32))]),
        };
        save(dir.path(), &net.state_dict(), &optimizer, meta()).unwrap();
        let ck = load(&dir.path().join(CHECKPOINT_FILE)).unwrap();
        verify(&ck.meta, &net.state_dict(), &ck.optimizer, "ck").unwrap();
        let written = meta();
        assert_eq!(ck.meta.partial, written.partial);
        assert_eq!(ck.meta.history, written.history);
        assert_eq!(ck.meta.best, written.best);
        assert_eq!(ck.meta.config, written.config);
        assert_eq!(
            (
                ck.meta.epoch,
                ck.meta.step_in_epoch,
                ck.meta.global_step,
                ck.meta.rng_word_pos
            ),
            (2, 5, 21, 1234)
        );
        assert_eq!((ck.optimizer.kind.as_str(), ck.optimizer.step), ("sgd", 21));
        assert_eq!(ck.optimizer.scalars, optimizer.scalars);
        assert_eq!(ck.optimizer.buffers["momentum_buffer/0.bias"].to_vec_f64(), [1.0; 3]);
        for p in net.state_dict() {
            assert_eq!(ck.model[&p.name].to_vec_f64(), p.tensor.to_vec_f64(), "{}", p.name);
        }
        // The weights file says which epoch it holds.
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let (_, metadata) = from_safetensors(&bytes, "w").unwrap();
        let progress = weights_progress(&metadata).unwrap();
        assert_eq!(
            progress,
            Progress {
                epoch: 2,
                step_in_epoch: 5
            }
        );
        assert_eq!(progress.to_string(), "epoch 3 step 5");
    }

    #[test]
    fn epoch_sums_read_the_map_older_checkpoints_wrote() {
        let mid_epoch = r#"{"correct":7.0,"data":1.25,"loss":1.5,"pen":0.25,"seconds":0.125,"seen":10.0}"#;
        assert_eq!(serde_json::from_str::<EpochSums>(mid_epoch).unwrap(), meta().partial);
        assert_eq!(serde_json::from_str::<EpochSums>("{}").unwrap(), EpochSums::default());
    }
}
