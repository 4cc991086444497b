//! `gradflow playground` (being written).

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct PlaygroundArgs {}

pub fn run(_a: PlaygroundArgs) -> Result<()> {
    bail!("gradflow playground is not implemented yet")
}
