//! The flags of `train --data DIR` on an image folder.

use anyhow::{bail, Result};
use clap::Args;
use gradflow_train::images::ImageSource;
use std::path::Path;

/// Options of an image folder (`--data DIR` with `train/<class>/*.png|jpg`).
#[derive(Args, Debug, Clone, Default)]
pub struct ImageArgs {
    /// Resize every image to HxW pixels (e.g. 32x32); without it, images of different sizes are an error.
    #[arg(long, value_name = "HxW")]
    image_size: Option<String>,
    /// Skip unreadable or corrupt images (and report how many) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

impl ImageArgs {
    /// Whether any image flag was given.
    pub fn any(&self) -> bool {
        self.image_size.is_some() || self.skip_bad
    }

    /// The source to read, with an absolute path so `--resume` works from anywhere.
    pub fn source(&self, dir: &Path, test_split: f64, seed: u64) -> Result<ImageSource> {
        let size = match self.image_size.as_deref() {
            None => None,
            Some(s) => Some(parse_size(s)?),
        };
        if !(0.0..1.0).contains(&test_split) {
            bail!("--test-split {test_split}: expected a fraction in [0, 1)");
        }
        Ok(ImageSource {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            size,
            skip_bad: self.skip_bad,
            test_split,
            seed,
            norm: None,
        })
    }
}

/// `HxW`, both at least 1 and at most 4096.
fn parse_size(s: &str) -> Result<(usize, usize)> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(h, w)| Some((h.trim().parse::<usize>().ok()?, w.trim().parse::<usize>().ok()?)));
    match parsed {
        Some((h, w)) if (1..=4096).contains(&h) && (1..=4096).contains(&w) => Ok((h, w)),
        _ => bail!("--image-size {s:?}: expected HxW with both between 1 and 4096, e.g. 32x32"),
    }
}
