//! `gradflow predict`.

use anyhow::{bail, Result};
use clap::Args;
use gradflow::{no_grad, Tensor};
use gradflow_data::{MNIST_MEAN, MNIST_STD};
use gradflow_nn::{Ctx, Module};
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
    if spec.input.iter().product::<usize>() != 784 {
        bail!(
            "predict reads 28×28 grayscale images, but the model's input is {:?}",
            spec.input
        );
    }
    let _g = no_grad();
    for path in &images {
        let mut px = gradflow_data::load_gray_image(path)?;
        let inverted = gradflow_data::invert_if_light_background(&mut px, 28, 28);
        let x: Vec<f32> = px.iter().map(|v| (v - MNIST_MEAN) / MNIST_STD).collect();
        let mut shape = vec![1];
        shape.extend_from_slice(&spec.input);
        let logits = net.forward(&Tensor::from_vec(x, &shape)?, &mut Ctx::eval())?;
        let probs = logits.softmax(1)?.to_vec_f64();
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&c| format!("{c} ({:.1}%)", probs[c] * 100.0))
            .collect();
        println!(
            "{}: {}  top-3: {}{}",
            path.display(),
            order[0],
            top.join(", "),
            if inverted { "  [inverted light background]" } else { "" }
        );
    }
    Ok(())
}
