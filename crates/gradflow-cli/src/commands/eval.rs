//! `gradflow eval`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow eval runs/mlp
  gradflow eval --model lenet5 --weights lenet5_from_pytorch.safetensors")]
pub struct EvalArgs {
    /// Run directory written by `gradflow train`.
    run_dir: Option<PathBuf>,
    /// Preset or model TOML (with --weights instead of a run directory).
    #[arg(long)]
    model: Option<String>,
    /// Weights file (safetensors, PyTorch state_dict names).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// MNIST directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluate only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
    /// Threads.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    super::set_threads(a.threads)?;
    let (spec, net) = super::load_model(a.run_dir.as_deref(), a.model.as_deref(), a.weights.as_deref())?;
    let test = gradflow_train::data::mnist_test_set(&super::data_dir(a.data), a.limit, &spec)?;
    let loss = gradflow_nn::Loss::CrossEntropy { label_smoothing: 0.0 };
    let e = gradflow_train::evaluate(&net, &test, &loss, 1000, gradflow::DType::F32)?;
    println!(
        "test loss {:.4}  accuracy {:.2}%  error {:.2}%  ({} images)",
        e.loss,
        e.accuracy * 100.0,
        (1.0 - e.accuracy) * 100.0,
        e.samples
    );
    println!("\nper-class accuracy:");
    for (c, acc) in e.per_class_accuracy().iter().enumerate() {
        println!("  {c}: {:.2}%", acc * 100.0);
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted):");
    print!("     ");
    for c in 0..e.confusion.len() {
        print!("{c:>6}");
    }
    println!();
    for (t, row) in e.confusion.iter().enumerate() {
        print!("  {t:>2} ");
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}
