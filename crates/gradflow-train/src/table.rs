//! Training on your own table: where it came from (saved for `--resume`),
//! its encoding (saved for `eval` and `predict`), the default network sized
//! from the data, and predictions written back as class names or values.
//!
//! The default `mlp` on a table is two hidden ReLU layers of 128 and 64
//! units, each followed by dropout 0.2. The batch is an eighth of the
//! training rows, between 16 and 128, and the epochs are 15 000 / rows,
//! between 20 and 200, with Adam at 1e-3 and cosine annealing (the run's
//! defaults): small tables get many passes, large ones at least 20. Measured
//! on scikit-learn's bundled tables (tools/tables/compare.py), more steps
//! overfit the noisy regression (diabetes) and fewer underfit iris.

use crate::error::{Error, Result};
use crate::metrics::predict_all;
use gradflow_data::{read_table, DataError, EncodedRows, Encoding, Table, TableOptions, Task};
use gradflow_nn::{ModelSpec, Sequential};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The encoding of a run, in its run directory.
pub const ENCODING_FILE: &str = "encoding.json";
/// Where a run's table came from, in its run directory.
pub const SOURCE_FILE: &str = "table.json";

/// The files and options a table run read, so `--resume` and `eval` read the same rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSource {
    /// Training file.
    pub train: PathBuf,
    /// Test file, if one was given instead of a split.
    pub test: Option<PathBuf>,
    /// Reading, target and split options.
    pub options: TableOptions,
}

impl TableSource {
    /// Reads and encodes the table (errors name the file, line and column).
    pub fn load(&self) -> std::result::Result<Table, DataError> {
        read_table(&self.train, self.test.as_deref(), &self.options)
    }

    /// [`load`](Self::load), telling `progress(bytes_done, bytes_total)` as it reads.
    pub fn load_with_progress(&self, progress: &dyn Fn(u64, u64)) -> std::result::Result<Table, DataError> {
        gradflow_data::read_table_with_progress(&self.train, self.test.as_deref(), &self.options, progress)
    }

    /// Writes `table.json` and `encoding.json` into `dir` (creating it).
    pub fn save(&self, dir: &Path, encoding: &Encoding) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create run directory", e))?;
        let source = serde_json::to_string_pretty(self).expect("a table source always serializes");
        for (name, text) in [(SOURCE_FILE, source), (ENCODING_FILE, encoding.to_json())] {
            let p = dir.join(name);
            crate::checkpoint::atomic_write(&p, text.as_bytes()).map_err(|e| Error::io(&p, "", e))?;
        }
        Ok(())
    }

    /// The source saved in a run directory, if the run trained on a table.
    pub fn of_run(dir: &Path) -> Result<Option<TableSource>> {
        let p = dir.join(SOURCE_FILE);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, "cannot read", e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Input(format!("{}: {e}", p.display())))
    }

    /// Re-reads the table of a run and checks it still encodes as it did.
    pub fn reload(&self, dir: &Path) -> Result<Table> {
        let table = self.load()?;
        let saved = Encoding::read(&dir.join(ENCODING_FILE))?;
        if saved != table.encoding {
            return Err(Error::Input(format!(
                "{}: the table no longer encodes as when the run started (it changed since); cannot continue the run",
                self.train.display()
            )));
        }
        Ok(table)
    }
}

/// The encoding saved in a run directory, if the run trained on a table.
pub fn encoding_of_run(dir: &Path) -> Result<Option<Encoding>> {
    let p = dir.join(ENCODING_FILE);
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(Encoding::read(&p)?))
}

/// The default network for a table: `inputs → 128 → 64 → outputs`, ReLU and dropout 0.2.
pub fn default_model(encoding: &Encoding) -> Result<ModelSpec> {
    let mut text = format!(
        "# Default MLP for the table's {} inputs and {} outputs.\ninput = [{}]\n",
        encoding.width(),
        encoding.outputs(),
        encoding.width()
    );
    for (width, hidden) in [(128, true), (64, true), (encoding.outputs(), false)] {
        text += &format!("\n[[layer]]\ntype = \"Linear\"\nout_features = {width}\n");
        if hidden {
            text += "\n[[layer]]\ntype = \"ReLU\"\n\n[[layer]]\ntype = \"Dropout\"\np = 0.2\n";
        }
    }
    Ok(ModelSpec::parse(&text, "default table model")?)
}

/// Batch size and epochs of the default recipe for `rows` training rows.
pub fn default_schedule(rows: usize) -> (usize, usize) {
    let batch = (rows / 8).clamp(16, 128);
    let epochs = (15_000 / rows.max(1)).clamp(20, 200);
    (batch, epochs)
}

/// One row's prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// The class name and its probability.
    Class(String, f64),
    /// The value, in the target's units.
    Value(f64),
}

/// Predictions for encoded rows, in the target's terms (class names, or values in its units).
pub fn predict_rows(model: &Sequential, encoding: &Encoding, rows: &EncodedRows) -> Result<Vec<Prediction>> {
    let out = predict_all(model, &rows.dataset, 1000, gradflow::DType::F32)?;
    let k = encoding.outputs();
    Ok(out
        .chunks(k)
        .map(|o| match encoding.task {
            Task::Regression => Prediction::Value(f64::from(encoding.target_value(o[0] as f32))),
            Task::Classification => {
                let max = o.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = o.iter().map(|v| (v - max).exp()).sum();
                let (best, _) = o
                    .iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
                Prediction::Class(encoding.class_names[best].clone(), 1.0 / z)
            }
        })
        .collect())
}
