//! CSV reader for tabular data: one header row, one label column chosen by
//! name, every other column a numeric feature.
//!
//! Errors point at the exact line, column and value, because a CSV that a
//! user exported from a spreadsheet is the most likely input to be subtly
//! wrong (a stray text cell, a missing value, a ragged row).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};

/// What the label column means, which decides how it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Labels are class names or integers, mapped to class indices.
    Classification,
    /// Labels are real numbers, predicted directly.
    Regression,
}

/// How to interpret a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Header name of the column holding the target.
    pub label_column: String,
    /// Whether the target is a class or a value.
    pub task: Task,
    /// Field separator, usually `b','` (`b';'` and `b'\t'` are common too).
    pub delimiter: u8,
}

impl CsvOptions {
    /// Options for a comma-separated file, the common case.
    pub fn new(label_column: impl Into<String>, task: Task) -> CsvOptions {
        CsvOptions {
            label_column: label_column.into(),
            task,
            delimiter: b',',
        }
    }

    /// Same options with another field separator.
    pub fn with_delimiter(mut self, delimiter: u8) -> CsvOptions {
        self.delimiter = delimiter;
        self
    }
}

/// A parsed table: the dataset plus the names needed to explain a model's
/// inputs and outputs to a person.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvDataset {
    /// Features have shape `[feature_names.len()]`; targets are classes or
    /// single values (`width == 1`) depending on [`Task`].
    pub dataset: Dataset,
    /// For classification, the label text of each class index (sorted
    /// numerically if every label is an integer, else lexicographically);
    /// `None` for regression.
    pub class_names: Option<Vec<String>>,
    /// Header names of the feature columns, in column order.
    pub feature_names: Vec<String>,
}

/// Reads a CSV file; see [`parse_csv_bytes`] for the rules.
pub fn read_csv(path: impl AsRef<Path>, options: &CsvOptions) -> Result<CsvDataset> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(DataError::format(
            path.display().to_string(),
            "is a directory, expected a CSV file",
        ));
    }
    let data = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_csv_bytes(&data, &path.display().to_string(), options)
}

/// Parses CSV text from memory; `source` names it in error messages. Exists
/// so tests and fuzzers can exercise the parser without files.
///
/// The first row is the header. Fields are trimmed; blank lines are skipped.
/// Missing, non-numeric or non-finite feature values are errors.
pub fn parse_csv_bytes(data: &[u8], source: &str, options: &CsvOptions) -> Result<CsvDataset> {
    let err = |msg: String| DataError::format(source, msg);
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(options.delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(data);
    let mut records = reader.records();
    let header = match records.next() {
        None => return Err(err("empty file: expected a header row naming the columns".into())),
        Some(r) => r.map_err(|e| csv_error(source, &e))?,
    };
    let columns: Vec<String> = header.iter().map(str::to_string).collect();
    let label_idx = find_label_column(&columns, &options.label_column).map_err(err)?;
    let feature_names: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != label_idx)
        .map(|(_, c)| c.clone())
        .collect();
    if feature_names.is_empty() {
        return Err(err(format!(
            "no feature columns: the header has only the label column '{}'",
            options.label_column
        )));
    }
    let mut rows = Rows::default();
    for record in records {
        let record = record.map_err(|e| csv_error(source, &e))?;
        rows.push(&record, &columns, label_idx, options.task).map_err(err)?;
    }
    let (targets, class_names) = rows
        .targets(options.task)
        .ok_or_else(|| err("no data rows after the header".into()))?;
    let dataset = Dataset::new(rows.features, vec![feature_names.len()], targets)
        .map_err(|e| err(format!("internal inconsistency: {e}")))?;
    Ok(CsvDataset {
        dataset,
        class_names,
        feature_names,
    })
}

/// The data rows read so far: features row-major, and the label column as text (classes) or values.
#[derive(Default)]
struct Rows {
    features: Vec<f32>,
    raw_labels: Vec<String>,
    values: Vec<f32>,
}

impl Rows {
    /// Add one record, checked against the header; the error names its line and column.
    fn push(
        &mut self,
        record: &::csv::StringRecord,
        columns: &[String],
        label_idx: usize,
        task: Task,
    ) -> std::result::Result<(), String> {
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != columns.len() {
            return Err(format!(
                "line {line}: {} fields, but the header has {} columns",
                record.len(),
                columns.len()
            ));
        }
        for (i, field) in record.iter().enumerate() {
            let name = &columns[i];
            if i != label_idx {
                self.features.push(parse_number(field, line, name)?);
                continue;
            }
            match task {
                Task::Classification if field.is_empty() => {
                    return Err(format!("line {line}, column '{name}': empty label"));
                }
                Task::Classification => self.raw_labels.push(field.to_string()),
                Task::Regression => self.values.push(parse_number(field, line, name)?),
            }
        }
        Ok(())
    }

    /// The targets, with class names for classification; `None` when there was no row.
    fn targets(&mut self, task: Task) -> Option<(Targets, Option<Vec<String>>)> {
        if self.raw_labels.len().max(self.values.len()) == 0 {
            return None;
        }
        Some(match task {
            Task::Regression => (
                Targets::Values {
                    values: std::mem::take(&mut self.values),
                    width: 1,
                },
                None,
            ),
            Task::Classification => {
                let (labels, names) = index_classes(&self.raw_labels);
                (
                    Targets::Classes {
                        labels,
                        num_classes: names.len(),
                    },
                    Some(names),
                )
            }
        })
    }
}

fn find_label_column(columns: &[String], label: &str) -> std::result::Result<usize, String> {
    let hits: Vec<usize> = (0..columns.len()).filter(|&i| columns[i] == label).collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => Err(format!(
            "no column named '{label}'; available columns: {}",
            columns.join(", ")
        )),
        many => Err(format!(
            "column '{label}' appears {} times in the header; the label column must be unique",
            many.len()
        )),
    }
}

fn parse_number(field: &str, line: u64, column: &str) -> std::result::Result<f32, String> {
    if field.is_empty() {
        return Err(format!(
            "line {line}, column '{column}': empty value (missing values are not supported)"
        ));
    }
    match field.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!(
            "line {line}, column '{column}': '{field}' is not a finite number"
        )),
        Err(_) => Err(format!("line {line}, column '{column}': '{field}' is not a number")),
    }
}

/// Maps label strings to class indices in sorted order of the distinct
/// labels: numeric order when all are integers (so "10" follows "9"),
/// otherwise string order.
fn index_classes(raw: &[String]) -> (Vec<usize>, Vec<String>) {
    let distinct: BTreeSet<&str> = raw.iter().map(String::as_str).collect();
    let mut names: Vec<&str> = distinct.into_iter().collect();
    let ints: Option<Vec<i128>> = names.iter().map(|s| s.parse::<i128>().ok()).collect();
    if let Some(ints) = ints {
        let mut pairs: Vec<(i128, &str)> = ints.into_iter().zip(names).collect();
        pairs.sort();
        names = pairs.into_iter().map(|(_, s)| s).collect();
    }
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let labels = raw.iter().map(|l| index[l.as_str()]).collect();
    (labels, names.into_iter().map(str::to_string).collect())
}

fn csv_error(source: &str, e: &::csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    let msg = match e.kind() {
        ::csv::ErrorKind::Utf8 { err, .. } => {
            format!("line {line}: field {} is not valid UTF-8", err.field() + 1)
        }
        ::csv::ErrorKind::Io(io) => format!("read failed: {io}"),
        _ => format!("line {line}: {e}"),
    };
    DataError::format(source, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cls(label: &str) -> CsvOptions {
        CsvOptions::new(label, Task::Classification)
    }

    fn parse_err(text: &str, opts: &CsvOptions) -> String {
        parse_csv_bytes(text.as_bytes(), "t.csv", opts).unwrap_err().to_string()
    }

    #[test]
    fn classification_with_string_labels() {
        let text = "sepal, petal ,species\n5.1,1.4,setosa\n\n6.3,4.9,virginica\n5.0,1.5,setosa\n7.0,4.7,versicolor\n";
        let t = parse_csv_bytes(text.as_bytes(), "iris.csv", &cls("species")).unwrap();
        assert_eq!(t.feature_names, vec!["sepal", "petal"]);
        assert_eq!(
            t.class_names.as_deref(),
            Some(&["setosa".to_string(), "versicolor".into(), "virginica".into()][..])
        );
        assert_eq!(t.dataset.labels(), Some(&[0, 2, 0, 1][..]));
        assert_eq!(t.dataset.num_classes(), Some(3));
        assert_eq!(t.dataset.sample_shape, vec![2]);
        assert_eq!(t.dataset.features, vec![5.1, 1.4, 6.3, 4.9, 5.0, 1.5, 7.0, 4.7]);
    }

    #[test]
    fn integer_labels_sort_numerically_and_label_may_be_first() {
        let text = "y;x\n10;1\n9;2\n-1;3\n9;4\n";
        let opts = cls("y").with_delimiter(b';');
        let t = parse_csv_bytes(text.as_bytes(), "s", &opts).unwrap();
        assert_eq!(t.class_names.unwrap(), vec!["-1".to_string(), "9".into(), "10".into()]);
        assert_eq!(t.dataset.labels(), Some(&[2, 1, 0, 1][..]));
        assert_eq!(t.feature_names, vec!["x"]);
    }

    #[test]
    fn regression_from_file_with_bom() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("house.csv");
        std::fs::write(&p, "\u{feff}area,rooms,price\n50,2,100.5\n80,3,1.5e2\n").unwrap();
        let t = read_csv(&p, &CsvOptions::new("price", Task::Regression)).unwrap();
        assert_eq!(t.class_names, None);
        assert_eq!(t.feature_names, vec!["area", "rooms"]);
        assert_eq!(
            t.dataset.targets,
            Targets::Values {
                values: vec![100.5, 150.0],
                width: 1
            }
        );
        assert_eq!(t.dataset.len(), 2);
    }

    #[test]
    fn structural_errors() {
        let o = cls("y");
        assert!(parse_err("", &o).contains("empty file"));
        assert!(parse_err("a,y\n", &o).contains("no data rows"));
        let e = parse_err("a,b\n1,2\n", &o);
        assert!(
            e.contains("no column named 'y'") && e.contains("available columns: a, b"),
            "{e}"
        );
        assert!(parse_err("y,a,y\n1,2,3\n", &o).contains("appears 2 times"));
        assert!(parse_err("y\n1\n", &o).contains("no feature columns"));
        let e = parse_err("a,y\n1,2\n3\n", &o);
        assert!(e.starts_with("t.csv: line 3: 1 fields, but the header has 2"), "{e}");
    }

    #[test]
    fn value_errors_name_line_column_and_value() {
        let o = cls("y");
        let e = parse_err("a,b,y\n1,2,x\n1,oops,x\n", &o);
        assert_eq!(e, "t.csv: line 3, column 'b': 'oops' is not a number");
        assert!(parse_err("a,y\n,1\n", &o).contains("line 2, column 'a': empty value"));
        assert!(parse_err("a,y\nNaN,1\n", &o).contains("not a finite number"));
        assert!(parse_err("a,y\n1,\n", &o).contains("empty label"));
        let r = CsvOptions::new("y", Task::Regression);
        assert!(parse_err("a,y\n1,cat\n", &r).contains("column 'y': 'cat' is not a number"));
        let e = parse_csv_bytes(b"a,y\n1,\xff\n", "u", &o).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn missing_file_names_path() {
        let e = read_csv("/nonexistent/x.csv", &cls("y")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.csv: "));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b'y', b'1', b'.', b',', b'\n', b'"', b' ', 0xff]), 0..40)) {
            for task in [Task::Classification, Task::Regression] {
                let _ = parse_csv_bytes(&data, "fuzz", &CsvOptions::new("y", task));
            }
        }
    }
}
