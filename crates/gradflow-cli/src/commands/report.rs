//! `gradflow report RUN_DIR`: the run's curves, gradient flow, saturation,
//! weights and warnings as one self-contained HTML page plus PNG plots. All
//! the work is in `gradflow_train::report`, so Rust code gets the same report.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Example:
  gradflow train --limit-train 3000 --epochs 3 --val-split 0.1 --out runs/quick
  gradflow report runs/quick        # writes runs/quick/report.html and six PNG plots")]
pub struct ReportArgs {
    /// Run directory written by `gradflow train --out RUN_DIR`.
    #[arg(value_name = "RUN_DIR")]
    run_dir: PathBuf,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let report = gradflow_train::report::write_report(&a.run_dir)?;
    for p in &report.plots {
        println!("wrote {}", p.display());
    }
    println!("wrote {}", report.html.display());
    Ok(())
}
