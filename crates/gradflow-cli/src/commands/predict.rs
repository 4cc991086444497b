//! `gradflow predict`.

use anyhow::{bail, Result};
use clap::Args;
use gradflow_train::predict;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow predict runs/mlp digit.png
  gradflow predict --model mlp --weights w.safetensors a.pgm b.png")]
pub struct PredictArgs {
    /// Run directory, then one or more images (PNG or PGM; any size, resized to 28×28).
    #[arg(required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Preset or model TOML (with --weights; then every positional argument is an image).
    #[arg(long)]
    model: Option<String>,
    /// Weights file.
    #[arg(long)]
    weights: Option<PathBuf>,
}

pub fn run(a: PredictArgs) -> Result<()> {
    let (run_dir, images) = if a.model.is_some() {
        (None, a.paths.clone())
    } else {
        (Some(a.paths[0].clone()), a.paths[1..].to_vec())
    };
    if images.is_empty() {
        bail!("give at least one image after the run directory");
    }
    let (spec, net) = super::load_model(run_dir.as_deref(), a.model.as_deref(), a.weights.as_deref())?;
    predict::check_image_model(&spec)?;
    for path in &images {
        let p = predict::classify_image(&spec, &net, path)?;
        let top: Vec<String> = p
            .ranked
            .iter()
            .take(3)
            .map(|&(c, prob)| format!("{c} ({:.1}%)", prob * 100.0))
            .collect();
        println!(
            "{}: {}  top-3: {}{}",
            path.display(),
            p.class(),
            top.join(", "),
            if p.inverted {
                "  [inverted light background]"
            } else {
                ""
            }
        );
    }
    Ok(())
}
