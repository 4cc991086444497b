//! `gradflow predict`.

use super::table::BadInput;
use anyhow::{bail, Context, Result};
use clap::Args;
use gradflow_data::{Encoding, Targets, Task};
use gradflow_train::predict;
use gradflow_train::table::{self, Prediction};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow predict runs/mlp digit.png
  gradflow predict --model mlp --weights w.safetensors a.pgm b.png
  gradflow predict runs/flowers rows.csv --out predictions.csv   # a run trained on a table")]
pub struct PredictArgs {
    /// Run directory, then one or more images (PNG or PGM; any size, resized to 28×28), or one CSV file for a run trained on a table.
    #[arg(required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Preset or model TOML (with --weights; then every positional argument is an image).
    #[arg(long)]
    model: Option<String>,
    /// Weights file.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// For a run trained on a table: write the predictions here as CSV (default: print them).
    #[arg(long)]
    out: Option<PathBuf>,
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
    if let Some(dir) = run_dir.as_deref() {
        if let Some(encoding) = gradflow_train::table::encoding_of_run(dir)? {
            let [rows] = images.as_slice() else {
                bail!(
                    "{}: a run trained on a table predicts one CSV file at a time",
                    dir.display()
                );
            };
            return predict_table(&encoding, &net, rows, a.out.as_deref());
        }
    }
    if a.out.is_some() {
        bail!("--out is for a run trained on a table (CSV rows in, CSV predictions out)");
    }
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

/// Predicts the rows of a CSV file with the run's saved encoding; prints the
/// accuracy or error too when the file holds the target column.
fn predict_table(
    encoding: &Encoding,
    net: &gradflow_nn::Sequential,
    rows_path: &Path,
    out: Option<&Path>,
) -> Result<()> {
    let rows = encoding.read_rows(rows_path).map_err(BadInput)?;
    let predictions = table::predict_rows(net, encoding, &rows)?;
    let mut text = String::new();
    match encoding.task {
        Task::Classification => text += &format!("{},probability\n", csv_field(&encoding.target)),
        Task::Regression => text += &format!("{}\n", csv_field(&encoding.target)),
    }
    for p in &predictions {
        match p {
            Prediction::Class(name, prob) => text += &format!("{},{prob:.4}\n", csv_field(name)),
            Prediction::Value(v) => text += &format!("{v}\n"),
        }
    }
    match out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("{}: cannot write predictions", path.display()))?;
            println!("wrote {} predictions to {}", predictions.len(), path.display());
        }
        None => print!("{text}"),
    }
    // The notes and the score go to stderr when the predictions go to stdout.
    let say = |line: String| {
        if out.is_some() {
            println!("{line}")
        } else {
            eprintln!("{line}")
        }
    };
    if rows.unseen_rows > 0 {
        say(format!(
            "{} rows have a category unseen in training (encoded as zeros)",
            rows.unseen_rows
        ));
    }
    if rows.dropped_rows > 0 {
        say(format!(
            "{} rows dropped for a missing value (no prediction)",
            rows.dropped_rows
        ));
    }
    if rows.has_target {
        say(score(encoding, &rows, &predictions));
    }
    Ok(())
}

/// Accuracy, or RMSE/MAE/R², of the predictions against the file's target column.
fn score(encoding: &Encoding, rows: &gradflow_data::EncodedRows, predictions: &[Prediction]) -> String {
    match &rows.dataset.targets {
        Targets::Classes { labels, .. } => {
            let correct = predictions
                .iter()
                .zip(labels)
                .filter(|(p, &l)| matches!(p, Prediction::Class(n, _) if *n == encoding.class_names[l]))
                .count();
            let acc = correct as f64 / labels.len().max(1) as f64;
            format!(
                "'{}' column present: accuracy {:.2}% ({correct} of {} rows)",
                encoding.target,
                acc * 100.0,
                labels.len()
            )
        }
        Targets::Values { values, .. } => {
            let pred: Vec<f64> = predictions
                .iter()
                .map(|p| if let Prediction::Value(v) = p { *v } else { 0.0 })
                .collect();
            let truth: Vec<f32> = values.iter().map(|&v| encoding.target_value(v)).collect();
            let r = gradflow_train::regression_metrics(&pred, &truth);
            format!(
                "'{}' column present: RMSE {:.4}  MAE {:.4}  R² {:.4}",
                encoding.target, r.rmse, r.mae, r.r2
            )
        }
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
