//! The flags of `train --data FILE.csv`, and the exit code of a bad table.

use clap::{Args, ValueEnum};
use gradflow_data::{DataError, Missing, TableOptions, Task};
use gradflow_train::table::TableSource;
use std::path::{Path, PathBuf};

/// A bad input file: printed like any error, exit status 2.
#[derive(Debug)]
pub struct BadInput(pub DataError);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BadInput {}

/// Data errors become [`BadInput`] (exit 2); the others pass through.
pub fn bad_input(e: gradflow_train::Error) -> anyhow::Error {
    match e {
        gradflow_train::Error::Data(d) => BadInput(d).into(),
        e => e.into(),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TaskArg {
    Classification,
    Regression,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum MissingArg {
    /// Stop at the first missing value ('', NA, N/A, NaN, null).
    Error,
    /// Drop the rows with one.
    Drop,
    /// Numeric columns: the training mean; text columns: no category.
    Mean,
}

/// Options of a CSV table (`--data FILE.csv`).
#[derive(Args, Debug, Clone, Default)]
pub struct TableArgs {
    /// Target column of a CSV table (default: the last column).
    #[arg(long)]
    target: Option<String>,
    /// Columns of the table to leave out (identifiers), comma-separated.
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Field separator of the table (one character, or "tab").
    #[arg(long)]
    delimiter: Option<String>,
    /// Task (default: inferred from the target column and printed).
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// Missing values in the table.
    #[arg(long, value_enum)]
    missing: Option<MissingArg>,
    /// Test table (default: hold out --test-split of the rows).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Fraction of the table held out for testing, stratified for classification (default 0.2).
    #[arg(long)]
    test_split: Option<f64>,
}

impl TableArgs {
    /// Whether any table flag was given (then `--data` must be a CSV file).
    pub fn any(&self) -> bool {
        self.target.is_some()
            || !self.ignore.is_empty()
            || self.delimiter.is_some()
            || self.task.is_some()
            || self.missing.is_some()
            || self.test.is_some()
            || self.test_split.is_some()
    }

    /// The source to read, with absolute paths so `--resume` works from anywhere.
    pub fn source(&self, train: &Path, seed: u64) -> anyhow::Result<TableSource> {
        let delimiter = match self.delimiter.as_deref() {
            None => b',',
            Some("tab" | "\\t" | "\t") => b'\t',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) => anyhow::bail!("--delimiter {d:?}: expected one ASCII character or \"tab\""),
        };
        let options = TableOptions {
            target: self.target.clone(),
            ignore: self.ignore.clone(),
            delimiter,
            task: self.task.map(|t| match t {
                TaskArg::Classification => Task::Classification,
                TaskArg::Regression => Task::Regression,
            }),
            missing: match self.missing {
                None | Some(MissingArg::Error) => Missing::Error,
                Some(MissingArg::Drop) => Missing::Drop,
                Some(MissingArg::Mean) => Missing::Mean,
            },
            test_split: self.test_split.unwrap_or(0.2),
            seed,
        };
        Ok(TableSource {
            train: absolute(train),
            test: self.test.as_deref().map(absolute),
            options,
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `--data` names a table rather than an MNIST directory: a file, or a path ending in .csv or .tsv.
pub fn is_table(data: Option<&Path>) -> bool {
    data.is_some_and(|p| {
        p.is_file()
            || p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("tsv"))
    })
}
