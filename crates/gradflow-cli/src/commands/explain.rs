//! `gradflow explain`: backpropagation written out by hand, with gradflow's
//! own numbers, then checked against finite differences. The working is built
//! in `gradflow_train::explain`; this file only reads flags and prints.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gradflow_train::explain::{explain, parse_values, ExplainOptions};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// The chain rule as a textbook writes it, 80 columns wide.
    Text,
    /// The same numbers and working as JSON, for tools.
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow explain                                  # Mazur's 2-2-1 sigmoid network
  gradflow explain --input 1,0 --target 1           # same weights, another example
  gradflow explain --seed 7                         # random weights (PyTorch init)
  gradflow explain --model tiny.toml --format json  # any Linear + activation model")]
pub struct ExplainArgs {
    /// Model TOML of Linear and activation layers with a flat input (default: 2 inputs, 2 sigmoid hidden, 1 sigmoid output).
    #[arg(long, value_name = "M.toml")]
    model: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The example's input, comma-separated (default: 0.05,0.1 for the default model, else seeded).
    #[arg(long, value_name = "X1,X2,...", allow_hyphen_values = true)]
    input: Option<String>,
    /// The target, comma-separated, one per output (default: 0.01, else seeded).
    #[arg(long, value_name = "Y", allow_hyphen_values = true)]
    target: Option<String>,
    /// Seed of the weights; without it the default model uses the textbook's fixed weights.
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(a: ExplainArgs) -> Result<()> {
    let model = match &a.model {
        Some(p) => {
            let shown = p.display().to_string();
            let text = std::fs::read_to_string(p).with_context(|| format!("{shown}: cannot read model file"))?;
            Some(gradflow_nn::ModelSpec::parse(&text, &shown)?)
        }
        None => None,
    };
    let opts = ExplainOptions {
        model,
        seed: a.seed,
        input: a.input.as_deref().map(|s| parse_values(s, "--input")).transpose()?,
        target: a.target.as_deref().map(|s| parse_values(s, "--target")).transpose()?,
    };
    let e = explain(&opts)?;
    match a.format {
        Format::Text => print!("{}", e.to_text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&e)?),
    }
    Ok(())
}
