//! `gradflow report` (being written).

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {}

pub fn run(_a: ReportArgs) -> Result<()> {
    bail!("gradflow report is not implemented yet")
}
