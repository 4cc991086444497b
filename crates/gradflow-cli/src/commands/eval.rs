//! `gradflow eval`.

use super::table::BadInput;
use anyhow::{bail, Result};
use clap::Args;
use gradflow_data::{EncodedRows, Encoding, Task};
use gradflow_train::table::TableSource;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow eval runs/mlp
  gradflow eval runs/flowers --data more-flowers.csv
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
    /// MNIST directory, or for a run trained on a table another CSV file to evaluate on (default: its test rows).
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
    if let Some(dir) = a.run_dir.as_deref() {
        if let Some(encoding) = gradflow_train::table::encoding_of_run(dir)? {
            return eval_table(dir, &encoding, &net, a.data.as_deref());
        }
    }
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
    let names: Vec<String> = (0..e.confusion.len()).map(|c| c.to_string()).collect();
    print_classes(&e, &names);
    Ok(())
}

/// A table run: its test rows (re-read as in training) or another file, with the saved encoding.
fn eval_table(dir: &Path, encoding: &Encoding, net: &gradflow_nn::Sequential, data: Option<&Path>) -> Result<()> {
    let (rows, what) = match data {
        Some(p) => (encoding.read_rows(p).map_err(BadInput)?, p.display().to_string()),
        None => {
            let Some(source) = TableSource::of_run(dir)? else {
                bail!("{}: no table.json; give --data FILE.csv", dir.display());
            };
            let table = source.reload(dir).map_err(super::table::bad_input)?;
            let rows = EncodedRows {
                dataset: table.test,
                has_target: true,
                unseen_rows: table.test_unseen_rows,
                dropped_rows: 0,
            };
            (rows, "the run's test rows".to_string())
        }
    };
    if !rows.has_target {
        bail!(
            "{what}: no column '{}' to evaluate against (use `gradflow predict` to predict it)",
            encoding.target
        );
    }
    println!("{} rows of {what}", rows.dataset.len());
    print_row_notes(&rows);
    let loss = match encoding.task {
        Task::Classification => gradflow_nn::Loss::CrossEntropy { label_smoothing: 0.0 },
        Task::Regression => gradflow_nn::Loss::Mse,
    };
    let e = gradflow_train::evaluate(net, &rows.dataset, &loss, 1000, gradflow::DType::F32)?;
    match e.regression {
        Some(r) => {
            let r = r.scaled(f64::from(encoding.target_std));
            println!(
                "RMSE {:.4}  MAE {:.4}  R² {:.4}  ({} rows)",
                r.rmse, r.mae, r.r2, e.samples
            );
        }
        None => {
            println!(
                "loss {:.4}  accuracy {:.2}%  error {:.2}%  ({} rows)",
                e.loss,
                e.accuracy * 100.0,
                (1.0 - e.accuracy) * 100.0,
                e.samples
            );
            print_classes(&e, &encoding.class_names);
        }
    }
    Ok(())
}

/// Rows with unseen categories, rows dropped for missing values.
pub fn print_row_notes(rows: &EncodedRows) {
    if rows.unseen_rows > 0 {
        println!(
            "{} rows have a category unseen in training (encoded as zeros)",
            rows.unseen_rows
        );
    }
    if rows.dropped_rows > 0 {
        println!("{} rows dropped for a missing value", rows.dropped_rows);
    }
}

fn print_classes(e: &gradflow_train::Evaluation, names: &[String]) {
    println!("\nper-class accuracy:");
    for (c, acc) in e.per_class_accuracy().iter().enumerate() {
        println!("  {}: {:.2}%", names[c], acc * 100.0);
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
}
