//! Tables for training: a CSV file read twice as a stream (once to type the
//! columns, once to store them as `f32`), split into training and test rows,
//! and encoded with statistics from the training rows only.
//!
//! * Numeric columns are standardized; string columns are one-hot encoded
//!   with the categories seen in the training rows (an unseen category
//!   encodes as all zeros and is counted).
//! * The target is the `--target` column (default: the last one). A
//!   non-numeric target, or an integer one with at most
//!   [`MAX_INTEGER_CLASSES`] distinct values, means classification;
//!   otherwise regression, with the target standardized too.
//! * The [`Encoding`] serializes to JSON, so `eval` and `predict` apply
//!   exactly what training used.
//!
//! Every bad table is a [`DataError::Format`] naming the file, the line and
//! the column.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::csv::Task;
use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};

/// An integer target with at most this many distinct values is a class label.
pub const MAX_INTEGER_CLASSES: usize = 50;

/// Field texts that mean "no value".
pub const MISSING_TOKENS: [&str; 6] = ["", "NA", "N/A", "NaN", "nan", "null"];

/// What to do with a missing value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Stop with an error naming the line and column.
    #[default]
    Error,
    /// Drop the rows that have one.
    Drop,
    /// Numeric: the training mean; string: all zeros. Rows without a target are dropped.
    Mean,
}

/// How to read a table and hold out its test rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableOptions {
    /// Target column (default: the last column).
    pub target: Option<String>,
    /// Columns to drop (identifiers).
    pub ignore: Vec<String>,
    /// Field separator.
    pub delimiter: u8,
    /// Forced task; inferred when `None`.
    pub task: Option<Task>,
    /// Missing values.
    pub missing: Missing,
    /// Fraction of rows held out for testing when there is no test file (stratified for classification).
    pub test_split: f64,
    /// Seed of that split.
    pub seed: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            target: None,
            ignore: Vec::new(),
            delimiter: b',',
            task: None,
            missing: Missing::Error,
            test_split: 0.2,
            seed: 0,
        }
    }
}

/// How one input column becomes model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Feature {
    /// `(x − mean) / std`: one input.
    Numeric {
        /// Header name.
        name: String,
        /// Training mean.
        mean: f32,
        /// Training standard deviation (never 0).
        std: f32,
    },
    /// One input per category, 1 for the row's category.
    Categorical {
        /// Header name.
        name: String,
        /// Categories of the training rows, sorted.
        categories: Vec<String>,
    },
}

impl Feature {
    /// Header name.
    pub fn name(&self) -> &str {
        match self {
            Feature::Numeric { name, .. } | Feature::Categorical { name, .. } => name,
        }
    }

    fn width(&self) -> usize {
        match self {
            Feature::Numeric { .. } => 1,
            Feature::Categorical { categories, .. } => categories.len(),
        }
    }
}

/// Everything needed to turn a row of the table into model inputs and a
/// model output back into a class name or a value: saved as JSON in the run
/// directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoding {
    /// Target column.
    pub target: String,
    /// Classification or regression.
    pub task: Task,
    /// Class names in output order (classification).
    pub class_names: Vec<String>,
    /// Training mean of the target (regression; 0 for classification).
    pub target_mean: f32,
    /// Training standard deviation of the target (regression; 1 for classification).
    pub target_std: f32,
    /// Input columns in order.
    pub features: Vec<Feature>,
    /// Field separator of the training file (written as a one-character string).
    #[serde(with = "delimiter_text")]
    pub delimiter: u8,
    /// Missing-value policy of the training run.
    pub missing: Missing,
}

impl Encoding {
    /// Model inputs per row.
    pub fn width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }

    /// Outputs the model needs: classes, or 1 for regression.
    pub fn outputs(&self) -> usize {
        match self.task {
            Task::Classification => self.class_names.len(),
            Task::Regression => 1,
        }
    }

    /// The JSON text saved in the run directory.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an encoding always serializes")
    }

    /// Reads `encoding.json`.
    pub fn read(path: &Path) -> Result<Encoding> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| DataError::format(path.display().to_string(), e.to_string()))
    }

    /// A model output in the target's units (regression).
    pub fn target_value(&self, standardized: f32) -> f32 {
        standardized * self.target_std + self.target_mean
    }

    /// Reads rows to predict or evaluate with this encoding; the target column is optional.
    pub fn read_rows(&self, path: &Path) -> Result<EncodedRows> {
        crate::table_read::encode_file(self, path)
    }
}

/// The delimiter as a one-character string in JSON (`","`, not `44`).
mod delimiter_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&char::from(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_bytes() {
            [b] => Ok(*b),
            _ => Err(D::Error::custom(format!(
                "delimiter {text:?}: expected one ASCII character"
            ))),
        }
    }
}

/// Rows encoded with a saved [`Encoding`] (for `eval` and `predict`).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRows {
    /// `[rows, encoding.width()]`, with targets when the file had the target column.
    pub dataset: Dataset,
    /// Whether the file held the target column.
    pub has_target: bool,
    /// Rows with a category the training rows did not have (encoded as zeros).
    pub unseen_rows: usize,
    /// Rows dropped for a missing value (`--missing drop`).
    pub dropped_rows: usize,
}

/// A table ready for training.
#[derive(Debug, Clone)]
pub struct Table {
    /// Training rows, encoded.
    pub train: Dataset,
    /// Test rows, encoded.
    pub test: Dataset,
    /// What was applied.
    pub encoding: Encoding,
    /// Whether the task was inferred (not forced).
    pub task_inferred: bool,
    /// Messages a person should see (dropped constant columns, dropped rows).
    pub warnings: Vec<String>,
    /// Test rows with a category unseen in training.
    pub test_unseen_rows: usize,
}

/// Reads `train` (and the `test` file, else holds out `test_split` of the rows) into an encoded [`Table`].
pub fn read_table(train: &Path, test: Option<&Path>, options: &TableOptions) -> Result<Table> {
    read_table_with_progress(train, test, options, &|_, _| {})
}

/// [`read_table`], telling `progress(bytes_done, bytes_total)` as it reads
/// (the training file is read twice, the test file once).
pub fn read_table_with_progress(
    train: &Path,
    test: Option<&Path>,
    options: &TableOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<Table> {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let (n_train, n_test) = (size(train), test.map_or(0, size));
    let total = 2 * n_train + n_test;
    let scan = crate::table_read::scan(train, options, &|b| progress(b, total))?;
    let mut warnings = scan.warnings.clone();
    let raw = crate::table_read::read_raw(train, &scan, options.missing, scan.rows, &|b| {
        progress(n_train + b, total)
    })?;
    if raw.dropped > 0 {
        warnings.push(format!(
            "{}: dropped {} rows with a missing value",
            train.display(),
            raw.dropped
        ));
    }
    // The test rows are encoded first, so the training rows can then be encoded in place.
    let (train_rows, encoding, (test_ds, test_unseen_rows)) = match test {
        Some(p) => {
            let test_raw =
                crate::table_read::read_raw(p, &scan, options.missing, 0, &|b| progress(2 * n_train + b, total))?;
            let rows: Vec<usize> = (0..raw.rows()).collect();
            let encoding = fit_encoding(&raw, &rows, &scan, options);
            let test = encode(&test_raw, &(0..test_raw.rows()).collect::<Vec<_>>(), &scan, &encoding);
            (rows, encoding, test)
        }
        None => {
            let (rows, test_rows) = split_rows(&raw, &scan, options, train)?;
            let encoding = fit_encoding(&raw, &rows, &scan, options);
            let test = encode(&raw, &test_rows, &scan, &encoding);
            (rows, encoding, test)
        }
    };
    let train_ds = encode_train(raw, &train_rows, &scan, &encoding);
    Ok(Table {
        train: train_ds,
        test: test_ds,
        encoding,
        task_inferred: options.task.is_none(),
        warnings,
        test_unseen_rows,
    })
}

/// Column types and names found by the first pass.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Kept feature columns: (index in the file, name, numeric?, all distinct strings).
    pub columns: Vec<ScanColumn>,
    /// Target: index in the file, name.
    pub target: (usize, String),
    pub task: Task,
    /// Class names in output order (classification).
    pub classes: Vec<String>,
    /// First line of each class, for messages.
    pub class_lines: Vec<u64>,
    /// Field separator.
    pub delimiter: u8,
    /// Rows the first pass kept.
    pub rows: usize,
    pub warnings: Vec<String>,
}

/// One kept input column.
#[derive(Debug, Clone)]
pub(crate) struct ScanColumn {
    pub name: String,
    /// For a string column, its distinct values (in all rows) in sorted order.
    pub levels: Option<Vec<String>>,
}

/// Rows as read: one f32 per kept column (NaN for missing; a string column
/// holds the index of its value in `levels`), and the target (class index or value).
#[derive(Debug, Clone, Default)]
pub(crate) struct Raw {
    pub values: Vec<f32>,
    pub targets: Vec<f32>,
    pub dropped: usize,
}

impl Raw {
    fn rows(&self) -> usize {
        self.targets.len()
    }
}

/// Holds out `test_split` of the rows: per class for classification (a class with one row is an error).
fn split_rows(raw: &Raw, scan: &Scan, options: &TableOptions, path: &Path) -> Result<(Vec<usize>, Vec<usize>)> {
    let shown = path.display().to_string();
    if !(options.test_split > 0.0 && options.test_split < 1.0) {
        return Err(DataError::InvalidArgument(format!(
            "--test-split {} must be in (0, 1), or give --test FILE",
            options.test_split
        )));
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for r in 0..raw.rows() {
        let key = match scan.task {
            Task::Classification => raw.targets[r] as usize,
            Task::Regression => 0,
        };
        groups.entry(key).or_default().push(r);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x7e57);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (class, mut rows) in groups {
        if rows.len() < 2 && scan.task == Task::Classification {
            return Err(DataError::format(
                shown,
                format!(
                    "line {}, column '{}': class '{}' has a single row, too few to hold one out for testing (stratified --test-split); add rows, drop it, or give --test FILE",
                    scan.class_lines[class], scan.target.1, scan.classes[class]
                ),
            ));
        }
        rows.shuffle(&mut rng);
        let n_test = ((rows.len() as f64 * options.test_split).round() as usize).clamp(1, rows.len() - 1);
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }
    if train.is_empty() || test.is_empty() {
        return Err(DataError::format(
            shown,
            format!("{} rows are too few to hold out a test set", raw.rows()),
        ));
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}

/// Means, standard deviations and categories of the training rows.
fn fit_encoding(raw: &Raw, rows: &[usize], scan: &Scan, options: &TableOptions) -> Encoding {
    let w = scan.columns.len();
    let features = scan
        .columns
        .iter()
        .enumerate()
        .map(|(c, col)| {
            let values = rows.iter().map(|&r| raw.values[r * w + c]).filter(|v| !v.is_nan());
            match &col.levels {
                None => {
                    let (mean, std) = mean_std(values);
                    Feature::Numeric {
                        name: col.name.clone(),
                        mean,
                        std,
                    }
                }
                Some(levels) => {
                    let seen: BTreeSet<usize> = values.map(|v| v as usize).collect();
                    Feature::Categorical {
                        name: col.name.clone(),
                        categories: seen.into_iter().map(|i| levels[i].clone()).collect(),
                    }
                }
            }
        })
        .collect();
    let (target_mean, target_std) = match scan.task {
        Task::Regression => mean_std(rows.iter().map(|&r| raw.targets[r])),
        Task::Classification => (0.0, 1.0),
    };
    Encoding {
        target: scan.target.1.clone(),
        task: scan.task,
        class_names: scan.classes.clone(),
        target_mean,
        target_std,
        features,
        delimiter: options.delimiter,
        missing: options.missing,
    }
}

/// Mean and standard deviation (population; 1 when the values do not vary).
fn mean_std(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for v in values {
        let v = f64::from(v);
        n += 1.0;
        sum += v;
        sq += v * v;
    }
    if n == 0.0 {
        return (0.0, 1.0);
    }
    let mean = sum / n;
    let var = (sq / n - mean * mean).max(0.0);
    let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
    (mean as f32, std as f32)
}

/// The training rows: standardized in place, without a copy, when every input is numeric.
fn encode_train(mut raw: Raw, rows: &[usize], scan: &Scan, enc: &Encoding) -> Dataset {
    let numeric: Option<Vec<(f32, f32)>> = enc
        .features
        .iter()
        .map(|f| match f {
            Feature::Numeric { mean, std, .. } => Some((*mean, *std)),
            Feature::Categorical { .. } => None,
        })
        .collect();
    let Some(stats) = numeric else {
        return encode(&raw, rows, scan, enc).0;
    };
    let w = stats.len();
    // Rows ascend, so row k is written at or below where it is read.
    for (k, &r) in rows.iter().enumerate() {
        for (c, &(mean, std)) in stats.iter().enumerate() {
            let v = raw.values[r * w + c];
            raw.values[k * w + c] = if v.is_nan() { 0.0 } else { (v - mean) / std };
        }
        raw.targets[k] = raw.targets[r];
    }
    raw.values.truncate(rows.len() * w);
    raw.values.shrink_to_fit();
    raw.targets.truncate(rows.len());
    let targets = targets_of(&raw.targets, enc);
    Dataset::new(raw.values, vec![w], targets).expect("encoded rows have the encoding's width")
}

/// Class indices, or standardized values.
fn targets_of(raw: &[f32], enc: &Encoding) -> Targets {
    match enc.task {
        Task::Classification => Targets::Classes {
            labels: raw.iter().map(|&t| t as usize).collect(),
            num_classes: enc.class_names.len(),
        },
        Task::Regression => Targets::Values {
            values: raw.iter().map(|&t| (t - enc.target_mean) / enc.target_std).collect(),
            width: 1,
        },
    }
}

/// Encodes some raw rows; returns the dataset and the number of rows with an unseen category.
fn encode(raw: &Raw, rows: &[usize], scan: &Scan, enc: &Encoding) -> (Dataset, usize) {
    let maps: Vec<Option<HashMap<usize, usize>>> = scan
        .columns
        .iter()
        .zip(&enc.features)
        .map(|(col, f)| match (&col.levels, f) {
            (Some(levels), Feature::Categorical { categories, .. }) => {
                let pos: HashMap<&str, usize> = categories.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
                Some(
                    levels
                        .iter()
                        .enumerate()
                        .filter_map(|(i, l)| pos.get(l.as_str()).map(|&p| (i, p)))
                        .collect(),
                )
            }
            _ => None,
        })
        .collect();
    let lookup = |c: usize, v: f32| -> Option<usize> { maps[c].as_ref().and_then(|m| m.get(&(v as usize)).copied()) };
    encode_with(raw, rows, enc, lookup)
}

/// Shared by training and by `eval`/`predict`: `category(c, raw)` gives the
/// one-hot position of a string column's raw value, `None` when unseen.
pub(crate) fn encode_with(
    raw: &Raw,
    rows: &[usize],
    enc: &Encoding,
    category: impl Fn(usize, f32) -> Option<usize>,
) -> (Dataset, usize) {
    let w = enc.features.len();
    let width = enc.width();
    let mut features = vec![0f32; rows.len() * width];
    let mut unseen = 0;
    for (k, &r) in rows.iter().enumerate() {
        let out = &mut features[k * width..(k + 1) * width];
        let mut at = 0;
        let mut row_unseen = false;
        for (c, f) in enc.features.iter().enumerate() {
            let v = raw.values[r * w + c];
            match f {
                Feature::Numeric { mean, std, .. } => out[at] = if v.is_nan() { 0.0 } else { (v - mean) / std },
                Feature::Categorical { .. } if v.is_nan() => {}
                Feature::Categorical { .. } => match category(c, v) {
                    Some(p) => out[at + p] = 1.0,
                    None => row_unseen = true,
                },
            }
            at += f.width();
        }
        unseen += usize::from(row_unseen);
    }
    let picked: Vec<f32> = rows.iter().map(|&r| raw.targets[r]).collect();
    let targets = targets_of(&picked, enc);
    let ds = Dataset::new(features, vec![width], targets).expect("encoded rows have the encoding's width");
    (ds, unseen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The training file's rows are allocated once at their final size, and
    /// encoded in place when every input is numeric: no buffer larger than
    /// the table's f32 values (a growing vector would reach up to twice that).
    #[test]
    fn the_largest_buffer_is_the_tables_f32_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.csv");
        let (rows, cols) = (20_000, 20);
        let mut text = (0..cols).map(|c| format!("x{c}")).collect::<Vec<_>>().join(",") + ",y\n";
        for r in 0..rows {
            for c in 0..cols {
                text += &format!("{},", (r * 31 + c * 7) % 97);
            }
            text += &format!("{}\n", r % 2);
        }
        std::fs::write(&p, text).unwrap();
        let (t, peak) = crate::alloc_probe::peak_during(|| read_table(&p, None, &TableOptions::default()).unwrap());
        assert_eq!(t.train.len() + t.test.len(), rows);
        let f32_size = rows * cols * 4;
        assert!(
            peak <= f32_size,
            "largest allocation {peak} bytes for {f32_size} bytes of f32 values"
        );
    }
}
