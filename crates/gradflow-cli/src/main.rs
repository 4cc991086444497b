//! The `gradflow` command-line tool: argument parsing and printing only;
//! every command is a thin shell over the library crates.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gradflow",
    version,
    about = "Train neural networks by backpropagation: exact, fast, and open to inspection."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on MNIST (the default MLP unless --model says otherwise).
    Train(Box<commands::train::TrainArgs>),
    /// Evaluate a trained model on the MNIST test set.
    Eval(commands::eval::EvalArgs),
    /// Classify images (PNG or PGM) with a trained model.
    Predict(commands::predict::PredictArgs),
    /// Compute the loss and every gradient of a model on one batch, for checking against another framework.
    Grad(commands::grad::GradArgs),
    /// Write RUN_DIR/report.html and PNG plots: curves, gradient flow, saturation, weights, warnings.
    Report(commands::report::ReportArgs),
    /// Walk one forward and backward pass through a small network, printing the chain rule step by step.
    Explain(commands::explain::ExplainArgs),
    /// Run a study: `activations` (vanishing gradients vs depth), `regularization` (the train/validation gap)
    /// or `memory` (gradients through time: RNN, LSTM, GRU).
    Experiment(commands::experiment::ExperimentArgs),
    /// Start a local web page that trains small networks live with the real engine.
    Playground(commands::playground::PlaygroundArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Training frees and reallocates the same buffers every step: keep them.
    gradflow::keep_freed_memory();
    let result = match cli.command {
        Command::Train(a) => commands::train::run(*a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Predict(a) => commands::predict::run(a),
        Command::Grad(a) => commands::grad::run(a),
        Command::Report(a) => commands::report::run(a),
        Command::Explain(a) => commands::explain::run(a),
        Command::Experiment(a) => commands::experiment::run(a),
        Command::Playground(a) => commands::playground::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line per cause; weights mismatches list one tensor per line.
            eprintln!("error: {e:#}");
            // A bad input file (a table that does not validate) is exit 2, like a bad flag.
            if e.downcast_ref::<commands::table::BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
