//! `gradflow grad`: one forward and backward pass on a given batch, writing
//! the loss and every gradient under the parameters' own names, so anyone can
//! compare gradflow's backprop with another framework on their own model.

use anyhow::{bail, Result};
use clap::Args;
use gradflow_nn::{Loss, Penalty};
use gradflow_train::grad::{self, GradOptions};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Example:
  gradflow grad --model m.toml --weights w.safetensors --batch b.safetensors --out g.safetensors
The batch file holds `input` ([N, ...], f32 or f64; int64 token ids when the model starts with an Embedding)
and `target` (int64 class indices, or floats for mse/bce).
The output holds `loss`, one gradient per parameter under its own name, and `input` (the input's gradient,
absent for token ids).")]
pub struct GradArgs {
    /// Model TOML or preset.
    #[arg(long)]
    model: String,
    /// Weights (safetensors, PyTorch names); their dtype sets the arithmetic precision.
    #[arg(long)]
    weights: PathBuf,
    /// Batch (safetensors with `input` and `target`).
    #[arg(long)]
    batch: PathBuf,
    #[arg(long, default_value = "cross_entropy", help = super::train::choices("Loss", Loss::registry().iter().map(|l| l.name)))]
    loss: String,
    /// Label smoothing of the cross-entropy (as `train --label-smoothing`).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// L1 penalty λ₁.
    #[arg(long, default_value_t = 0.0)]
    l1: f64,
    /// L2 penalty λ₂.
    #[arg(long, default_value_t = 0.0)]
    l2: f64,
    /// train (dropout on, batch statistics) or eval.
    #[arg(long, default_value = "eval")]
    mode: String,
    /// Dropout seed in train mode.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: GradArgs) -> Result<()> {
    let training = match a.mode.as_str() {
        "train" => true,
        "eval" => false,
        m => bail!("--mode {m}: expected train or eval"),
    };
    let mut loss = Loss::parse(&a.loss).map_err(anyhow::Error::msg)?;
    if a.label_smoothing != 0.0 {
        let Loss::CrossEntropy { label_smoothing } = &mut loss else {
            bail!("--label-smoothing applies to the cross_entropy loss only");
        };
        *label_smoothing = a.label_smoothing;
    }
    let options = GradOptions {
        loss,
        penalty: Penalty { l1: a.l1, l2: a.l2 },
        training,
        seed: a.seed,
    };
    options.validate()?;
    let (spec, net) = grad::load_model_for_grad(&a.model, &a.weights)?;
    let batch = grad::Batch::load(&a.batch)?;
    let gradients = grad::grad(&spec, &net, &batch, &options)?;
    gradients.save(&a.out)?;
    println!(
        "loss {:.10e}; wrote {} gradients to {}",
        gradients.loss.item()?,
        gradients.parameters.len() + 1,
        a.out.display()
    );
    Ok(())
}
