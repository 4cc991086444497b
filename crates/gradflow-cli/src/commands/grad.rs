//! `gradflow grad`: one forward and backward pass on a given batch, writing
//! the loss and every gradient under the parameters' own names, so anyone can
//! compare gradflow's backprop with another framework on their own model.

use anyhow::{bail, Context, Result};
use clap::Args;
use gradflow::Tensor;
use gradflow_nn::serialize::{dominant_dtype, from_safetensors, load_into, to_safetensors};
use gradflow_nn::{BuildOptions, Ctx, Loss, Module, NamedTensor, Penalty, Target};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Example:
  gradflow grad --model m.toml --weights w.safetensors --batch b.safetensors --out g.safetensors
The batch file holds `input` ([N, ...], f32 or f64) and `target` (int64 class indices, or floats for mse/bce).
The output holds `loss`, one gradient per parameter under its own name, and `input` (the input's gradient).")]
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
    /// cross_entropy, nll, mse, bce or huber.
    #[arg(long, default_value = "cross_entropy")]
    loss: String,
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
    let loss = Loss::parse(&a.loss).map_err(anyhow::Error::msg)?;
    for (n, v) in [("l1", a.l1), ("l2", a.l2)] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("--{n} must be a non-negative number, got {v}");
        }
    }
    let spec = gradflow_train::trainer::resolve_model(&a.model)?;
    let wshown = a.weights.display().to_string();
    let wbytes = std::fs::read(&a.weights).with_context(|| format!("{wshown}: cannot read weights"))?;
    let (weights, _) = from_safetensors(&wbytes, &wshown)?;
    let dtype = dominant_dtype(&weights);
    let net = spec
        .build(BuildOptions {
            dtype,
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("{}: {}", a.model, e))?;
    load_into(&net.state_dict(), &weights, &wshown, false)?;

    let bshown = a.batch.display().to_string();
    let bbytes = std::fs::read(&a.batch).with_context(|| format!("{bshown}: cannot read batch"))?;
    let (batch, _) = from_safetensors(&bbytes, &bshown)?;
    let input = batch
        .get("input")
        .ok_or_else(|| anyhow::anyhow!("{bshown}: no tensor named 'input'"))?;
    let target = batch
        .get("target")
        .ok_or_else(|| anyhow::anyhow!("{bshown}: no tensor named 'target'"))?;
    if input.ndim() < 1 || input.shape()[1..] != spec.input[..] {
        bail!(
            "{bshown}: 'input' has shape {:?}, the model takes [N, {}]",
            input.shape(),
            spec.input.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let x = input.to_dtype(dtype).copy().requires_grad_(true);
    let mut ctx = if training { Ctx::train(a.seed) } else { Ctx::eval() };
    let out = net.forward(&x, &mut ctx)?;
    let classes: Vec<usize>;
    let values: Tensor;
    let tgt = if loss.wants_classes() {
        let v = target.to_vec_f64();
        if v.len() != x.shape()[0] || v.iter().any(|&c| c < 0.0 || c.fract() != 0.0) {
            bail!(
                "{bshown}: 'target' must hold {} non-negative class indices",
                x.shape()[0]
            );
        }
        classes = v.iter().map(|&c| c as usize).collect();
        Target::Classes(&classes)
    } else {
        values = target.to_dtype(dtype);
        if values.shape() != out.shape() {
            bail!(
                "{bshown}: 'target' has shape {:?} but the model outputs {:?}",
                values.shape(),
                out.shape()
            );
        }
        Target::Values(&values)
    };
    let data_loss = loss.compute(&out, tgt)?;
    let total = match (Penalty { l1: a.l1, l2: a.l2 }).term(&net.named_penalty_targets())? {
        Some(p) => data_loss.add(&p)?,
        None => data_loss,
    };
    let grads = total.backward()?;
    let mut outputs = vec![NamedTensor {
        name: "loss".into(),
        tensor: total.detach(),
    }];
    for p in net.parameters() {
        let g = grads.get(&p.tensor).cloned().unwrap_or_else(|| p.tensor.zeros_like());
        outputs.push(NamedTensor {
            name: p.name,
            tensor: g.contiguous(),
        });
    }
    let gx = grads.get(&x).cloned().unwrap_or_else(|| x.zeros_like());
    outputs.push(NamedTensor {
        name: "input".into(),
        tensor: gx.contiguous(),
    });
    let bytes = to_safetensors(&outputs, None)?;
    gradflow_train::checkpoint::atomic_write(&a.out, &bytes)
        .with_context(|| format!("{}: cannot write", a.out.display()))?;
    println!(
        "loss {:.10e}; wrote {} gradients to {}",
        total.item()?,
        outputs.len() - 1,
        a.out.display()
    );
    Ok(())
}
