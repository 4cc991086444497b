//! Trained models read back for `eval` and `predict`: from a run directory,
//! or from a model file and a weights file.

use crate::checkpoint::{self, weights_progress, Progress, CHECKPOINT_FILE, WEIGHTS_FILE};
use crate::error::{Error, Result};
use crate::trainer::resolve_model;
use gradflow_nn::serialize::{from_safetensors, load_into};
use gradflow_nn::{BuildOptions, ModelSpec, NamedTensor, Sequential};
use std::path::Path;

/// A model with its trained weights.
pub struct TrainedModel {
    /// The model file.
    pub spec: ModelSpec,
    /// The network, weights loaded.
    pub model: Sequential,
    /// Set when the weights came from somewhere the user would not expect, saying where and why.
    pub note: Option<String>,
}

/// The model of a run directory, with the weights `--resume` would continue
/// from. A kill between the checkpoint's write and the weights file's leaves
/// `model.safetensors` one epoch behind; then the checkpoint's weights are
/// used, and the note says so.
pub fn load_run_dir(dir: &Path) -> Result<TrainedModel> {
    let toml_path = dir.join("model.toml");
    let text = std::fs::read_to_string(&toml_path)
        .map_err(|e| Error::io(dir, "not a run directory (cannot read model.toml)", e))?;
    let spec = ModelSpec::parse(&text, &toml_path.display().to_string())?;
    let model = build(&spec)?;
    let weights = dir.join(WEIGHTS_FILE);
    let shown = weights.display().to_string();
    let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, "cannot read weights", e))?;
    let (loaded, metadata) = from_safetensors(&bytes, &shown)?;
    load_into(&model.state_dict(), &loaded, &shown, true)?;
    let note = match weights_progress(&metadata) {
        Some(progress) => use_checkpoint_if_ahead(dir, &model, progress),
        None => None,
    };
    Ok(TrainedModel { spec, model, note })
}

/// Load the checkpoint's weights into `model` when it records other progress than the weights file.
fn use_checkpoint_if_ahead(dir: &Path, model: &Sequential, weights: Progress) -> Option<String> {
    let path = dir.join(CHECKPOINT_FILE);
    let ck = checkpoint::load(&path).ok()?;
    let ahead = Progress {
        epoch: ck.meta.epoch,
        step_in_epoch: ck.meta.step_in_epoch,
    };
    if ahead == weights {
        return None;
    }
    let shown = path.display().to_string();
    let sd = model.state_dict();
    // Verified in the model's order before anything is loaded, so a damaged
    // checkpoint leaves the weights file's weights in place.
    let in_model_order = sd
        .iter()
        .map(|p| {
            let tensor = ck.model.get(&p.name)?.clone();
            Some(NamedTensor {
                name: p.name.clone(),
                tensor,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    checkpoint::verify(&ck.meta, &in_model_order, &ck.optimizer, &shown).ok()?;
    load_into(&sd, &ck.model, &shown, false).ok()?;
    Some(format!(
        "{WEIGHTS_FILE} holds the weights of {weights} but {CHECKPOINT_FILE} those of {ahead} (the run was stopped between the two writes): using the checkpoint's, which --resume continues from"
    ))
}

/// A preset or model TOML, with weights from a safetensors file (PyTorch names).
pub fn load_with_weights(model: &str, weights: &Path) -> Result<TrainedModel> {
    let spec = resolve_model(model)?;
    let net = build(&spec)?;
    crate::trainer::load_weights_file(&net, weights)?;
    Ok(TrainedModel {
        spec,
        model: net,
        note: None,
    })
}

fn build(spec: &ModelSpec) -> Result<Sequential> {
    spec.build(BuildOptions::default())
        .map_err(|e| Error::Model(format!("model: {e}")))
}
