//! `gradflow experiment` (being written).

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct ExperimentArgs {}

pub fn run(_a: ExperimentArgs) -> Result<()> {
    bail!("gradflow experiment is not implemented yet")
}
