//! Training on a folder of images (torchvision's `ImageFolder` layout): where
//! it came from and how its pixels were normalized (saved in the run directory
//! as `images.json`, for `--resume`, `eval` and `predict`), and the model's
//! input shape and class count fitted to the images.
//!
//! The default model for images is `lenet5` when both sides are at least 12
//! pixels (its two 5×5 convolutions and 2×2 poolings need that), else `mlp`.

use crate::error::{Error, Result};
use crate::metrics::predict_all;
use gradflow_data::{load_image_folder, DataError, Dataset, ImageFolder, ImageFolderOptions, ImageNorm, Targets};
use gradflow_nn::spec::LayerSpec;
use gradflow_nn::{ModelSpec, Sequential};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where an image run's folder is and how it was read, with its normalization.
pub const IMAGES_FILE: &str = "images.json";

/// What an image run read, saved as `images.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    /// The folder holding `train/` (and maybe `test/`).
    pub dir: PathBuf,
    /// `--image-size HxW`.
    pub size: Option<(usize, usize)>,
    /// `--skip-bad`.
    pub skip_bad: bool,
    /// Held-out fraction without `test/`.
    pub test_split: f64,
    /// Seed of that split.
    pub seed: u64,
    /// Normalization, shape and class names (filled in by [`load`](Self::load)).
    pub norm: Option<ImageNorm>,
}

impl ImageSource {
    /// Reads and normalizes the folder; records its normalization.
    pub fn load(&mut self) -> std::result::Result<ImageFolder, DataError> {
        let options = ImageFolderOptions {
            size: self.size,
            skip_bad: self.skip_bad,
            test_split: self.test_split,
            seed: self.seed,
        };
        let folder = load_image_folder(&self.dir, &options)?;
        self.norm = Some(folder.norm.clone());
        Ok(folder)
    }

    /// Writes `images.json` into `dir` (creating it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create run directory", e))?;
        let text = serde_json::to_string_pretty(self).expect("an image source always serializes");
        let p = dir.join(IMAGES_FILE);
        crate::checkpoint::atomic_write(&p, text.as_bytes()).map_err(|e| Error::io(&p, "", e))
    }

    /// The source saved in a run directory, if the run trained on an image folder.
    pub fn of_run(dir: &Path) -> Result<Option<ImageSource>> {
        let p = dir.join(IMAGES_FILE);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, "cannot read", e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Input(format!("{}: {e}", p.display())))
    }
}

/// The default model name for images of this shape.
pub fn default_model(norm: &ImageNorm) -> &'static str {
    if norm.height.min(norm.width) >= 12 {
        "lenet5"
    } else {
        "mlp"
    }
}

/// `spec` with its input set to the images' `[channels, height, width]` and
/// its last Linear layer giving one output per class.
pub fn fit_model(mut spec: ModelSpec, norm: &ImageNorm) -> Result<ModelSpec> {
    spec.input = vec![norm.channels, norm.height, norm.width];
    let last = spec.layers.iter_mut().rev().find_map(|l| match l {
        LayerSpec::Linear(linear) => Some(&mut linear.out_features),
        _ => None,
    });
    match last {
        Some(out) => *out = norm.class_names.len(),
        None => {
            return Err(Error::Model(
                "model: no Linear layer to give one output per class".into(),
            ))
        }
    }
    spec.output_shape()
        .map_err(|e| Error::Model(format!("model on {:?} images: {e}", spec.input)))?;
    Ok(spec)
}

/// Classifies image files with a run's saved normalization: for each, every
/// class name with its probability, most probable first.
pub fn classify_images(model: &Sequential, norm: &ImageNorm, paths: &[PathBuf]) -> Result<Vec<Vec<(String, f64)>>> {
    let pixels = gradflow_data::load_images(paths, norm)?;
    let shape = vec![norm.channels, norm.height, norm.width];
    let labels = Targets::Classes {
        labels: vec![0; paths.len()],
        num_classes: norm.class_names.len(),
    };
    let ds = Dataset::new(pixels, shape, labels)?;
    let logits = predict_all(model, &ds, 256, gradflow::DType::F32)?;
    let k = norm.class_names.len();
    Ok(logits
        .chunks(k)
        .map(|o| {
            let max = o.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = o.iter().map(|v| (v - max).exp()).sum();
            let mut ranked: Vec<(String, f64)> = o
                .iter()
                .zip(&norm.class_names)
                .map(|(v, name)| (name.clone(), (v - max).exp() / z))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            ranked
        })
        .collect())
}
