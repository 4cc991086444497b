//! One module per subcommand.

pub mod eval;
pub mod experiment;
pub mod explain;
pub mod grad;
pub mod playground;
pub mod predict;
pub mod report;
pub mod train;

use anyhow::{bail, Context, Result};
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

/// Model and weights of a finished run directory (or explicit files).
pub fn load_model(
    run_dir: Option<&Path>,
    model: Option<&str>,
    weights: Option<&Path>,
) -> Result<(gradflow_nn::ModelSpec, gradflow_nn::Sequential)> {
    let (spec, weights) = match (run_dir, model, weights) {
        (_, Some(m), Some(w)) => (gradflow_train::trainer::resolve_model(m)?, w.to_path_buf()),
        (Some(dir), None, None) => {
            let mt = dir.join("model.toml");
            let text = std::fs::read_to_string(&mt)
                .with_context(|| format!("{}: not a run directory (cannot read model.toml)", dir.display()))?;
            let spec = gradflow_nn::ModelSpec::parse(&text, &mt.display().to_string())?;
            (spec, dir.join(gradflow_train::checkpoint::WEIGHTS_FILE))
        }
        (_, Some(_), None) => bail!("--model needs --weights"),
        (_, None, Some(_)) => bail!("--weights needs --model"),
        (None, None, None) => bail!("give a RUN_DIR, or --model and --weights"),
    };
    let net = spec
        .build(gradflow_nn::BuildOptions::default())
        .map_err(|e| anyhow::anyhow!("model: {}", e))?;
    gradflow_train::trainer::load_weights_file(&net, &weights)?;
    Ok((spec, net))
}
