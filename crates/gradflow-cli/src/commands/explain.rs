//! `gradflow explain` (being written).

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct ExplainArgs {}

pub fn run(_a: ExplainArgs) -> Result<()> {
    bail!("gradflow explain is not implemented yet")
}
