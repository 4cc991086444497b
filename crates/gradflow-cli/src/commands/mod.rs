//! One module per subcommand.

pub mod eval;
pub mod experiment;
pub mod explain;
pub mod grad;
pub mod playground;
pub mod predict;
pub mod report;
pub mod table;
pub mod train;

use anyhow::{bail, Result};
use gradflow_train::run_dir;
use std::path::{Path, PathBuf};

/// `--data`, else `$GRADFLOW_DATA`, else the bundled `data/mnist`.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(gradflow_data::default_data_dir)
}

/// Use `n` threads (default: all cores).
pub fn set_threads(n: Option<usize>) -> Result<()> {
    if n == Some(0) {
        bail!("--threads must be at least 1");
    }
    let n = n.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    gradflow::set_num_threads_on_this_thread(n);
    Ok(())
}

/// Model and weights of a finished run directory (or explicit files); says on
/// stderr when the weights came from elsewhere than the user would expect.
pub fn load_model(
    run_dir: Option<&Path>,
    model: Option<&str>,
    weights: Option<&Path>,
) -> Result<(gradflow_nn::ModelSpec, gradflow_nn::Sequential)> {
    let trained = match (run_dir, model, weights) {
        (_, Some(m), Some(w)) => run_dir::load_with_weights(m, w)?,
        (Some(dir), None, None) => run_dir::load_run_dir(dir)?,
        (_, Some(_), None) => bail!("--model needs --weights"),
        (_, None, Some(_)) => bail!("--weights needs --model"),
        (None, None, None) => bail!("give a RUN_DIR, or --model and --weights"),
    };
    if let Some(note) = &trained.note {
        eprintln!("note: {note}");
    }
    Ok((trained.spec, trained.model))
}
