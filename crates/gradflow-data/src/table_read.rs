//! The two streaming passes over a table file: [`scan`] types the columns,
//! [`read_plan`] stores the rows as `f32`. Neither holds the file's text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::csv::Task;
use crate::error::{DataError, Result};
use crate::table::{
    encode_with, EncodedRows, Encoding, Feature, Missing, Raw, Scan, ScanColumn, TableOptions, MAX_INTEGER_CLASSES,
    MISSING_TOKENS,
};

fn is_missing(field: &str) -> bool {
    MISSING_TOKENS.contains(&field)
}

/// Opens a table file; refuses directories and UTF-16 (the usual "other encoding" from spreadsheets).
fn open(path: &Path, delimiter: u8) -> Result<::csv::Reader<BufReader<File>>> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(DataError::format(shown, "is a directory, expected a CSV file"));
    }
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = [0u8; 2];
    let n = file.read(&mut head).map_err(|e| DataError::io(path, e))?;
    if n == 2 && (head == [0xff, 0xfe] || head == [0xfe, 0xff]) {
        return Err(DataError::format(
            shown,
            "line 1: the file is UTF-16 encoded; save it as UTF-8 (CSV UTF-8 in a spreadsheet)",
        ));
    }
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    Ok(::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(BufReader::with_capacity(1 << 16, file)))
}

/// A row's fields as text, with the ragged-row and encoding checks.
struct Rows<'a> {
    reader: ::csv::Reader<BufReader<File>>,
    /// Told the bytes read so far, every few thousand rows.
    on_bytes: Bytes<'a>,
    count: u64,
    record: ::csv::ByteRecord,
    shown: String,
    header: Vec<String>,
}

/// A callback told how many bytes of the file a pass has read.
pub(crate) type Bytes<'a> = &'a dyn Fn(u64);

impl<'a> Rows<'a> {
    fn new(path: &Path, delimiter: u8, on_bytes: Bytes<'a>) -> Result<Rows<'a>> {
        let shown = path.display().to_string();
        let mut rows = Rows {
            reader: open(path, delimiter)?,
            on_bytes,
            count: 0,
            record: ::csv::ByteRecord::new(),
            shown,
            header: Vec::new(),
        };
        if !rows.advance()? {
            return Err(DataError::format(
                rows.shown,
                "empty file: expected a header row naming the columns",
            ));
        }
        let header = (0..rows.record.len())
            .map(|i| rows.text(i).map(str::to_string))
            .collect::<Result<Vec<_>>>()?;
        rows.header = header;
        Ok(rows)
    }

    /// Reads the next record; false at the end of the file.
    fn advance(&mut self) -> Result<bool> {
        loop {
            let more = self.reader.read_byte_record(&mut self.record).map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                DataError::format(self.shown.clone(), format!("line {line}: {e}"))
            })?;
            if !more {
                (self.on_bytes)(self.reader.position().byte());
                return Ok(false);
            }
            self.count += 1;
            if self.count % 4096 == 0 {
                (self.on_bytes)(self.reader.position().byte());
            }
            // A blank line reads as one empty field: skip it.
            if !(self.record.len() == 1 && self.record[0].is_empty()) {
                break;
            }
        }
        if !self.header.is_empty() && self.record.len() != self.header.len() {
            return Err(self.error(format!(
                "{} fields, but the header has {} columns (a ragged row; check the delimiter and the quotes)",
                self.record.len(),
                self.header.len()
            )));
        }
        Ok(true)
    }

    fn line(&self) -> u64 {
        self.record.position().map_or(0, |p| p.line())
    }

    fn error(&self, msg: String) -> DataError {
        DataError::format(self.shown.clone(), format!("line {}: {msg}", self.line()))
    }

    fn column_error(&self, i: usize, msg: String) -> DataError {
        let name = self.header.get(i).map_or(String::new(), |h| format!(" '{h}'"));
        DataError::format(
            self.shown.clone(),
            format!("line {}, column {}{name}: {msg}", self.line(), i + 1),
        )
    }

    /// Field `i` as UTF-8 text.
    fn text(&self, i: usize) -> Result<&str> {
        std::str::from_utf8(&self.record[i]).map_err(|_| {
            self.column_error(
                i,
                "not valid UTF-8 (the file is in another encoding, e.g. Latin-1; save it as UTF-8)".into(),
            )
        })
    }
}

/// Statistics of one column in the first pass.
#[derive(Default)]
struct ColStat {
    numeric: Option<(bool, u64)>,
    levels: BTreeMap<String, u64>,
    min: f64,
    max: f64,
    integer: bool,
}

impl ColStat {
    /// Records one non-missing value; a text in a column that began with numbers is an error.
    fn add(&mut self, text: &str, line: u64, keep_levels: bool) -> std::result::Result<(), String> {
        let number = text.parse::<f64>().ok();
        if let Some(v) = number {
            if !v.is_finite() {
                return Err(format!("'{text}' is not a finite number"));
            }
        }
        let (numeric, first) = *self.numeric.get_or_insert((number.is_some(), line));
        match (numeric, number) {
            (true, Some(v)) => {
                if self.levels.is_empty() && self.min == 0.0 && self.max == 0.0 {
                    (self.min, self.max, self.integer) = (v, v, true);
                }
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.integer &= v.fract() == 0.0;
                if keep_levels && self.levels.len() <= MAX_INTEGER_CLASSES {
                    self.levels.entry(text.to_string()).or_insert(line);
                }
            }
            (true, None) => {
                return Err(format!(
                    "'{text}' is not a number (the column holds numbers from line {first})"
                ))
            }
            (false, _) => {
                self.levels.entry(text.to_string()).or_insert(line);
            }
        }
        Ok(())
    }

    fn is_constant(&self) -> bool {
        match self.numeric {
            None => true,
            Some((true, _)) => self.min == self.max,
            Some((false, _)) => self.levels.len() < 2,
        }
    }
}

/// Index of a named column, or an error listing the columns there are.
fn find(header: &[String], name: &str, shown: &str, what: &str) -> Result<usize> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        DataError::format(
            shown,
            format!(
                "line 1: no column named '{name}' ({what}); the columns are: {}",
                header.join(", ")
            ),
        )
    })
}

/// First pass: the columns' types, the target's classes, constant columns.
pub(crate) fn scan(path: &Path, options: &TableOptions, on_bytes: Bytes) -> Result<Scan> {
    let mut rows = Rows::new(path, options.delimiter, on_bytes)?;
    let header = rows.header.clone();
    let shown = rows.shown.clone();
    let target = match &options.target {
        Some(t) => find(&header, t, &shown, "--target")?,
        None => header.len() - 1,
    };
    let mut ignored = BTreeSet::new();
    for name in &options.ignore {
        ignored.insert(find(&header, name, &shown, "--ignore")?);
    }
    if ignored.contains(&target) {
        return Err(DataError::format(
            shown,
            format!("line 1: --ignore names the target column '{}'", header[target]),
        ));
    }
    let mut stats: Vec<ColStat> = header.iter().map(|_| ColStat::default()).collect();
    let mut count = 0u64;
    while rows.advance()? {
        if scan_row(&rows, &mut stats, &ignored, target, options.missing)? {
            count += 1;
        }
    }
    if count == 0 {
        return Err(DataError::format(shown, "the file has a header but no data rows"));
    }
    let mut scan = decide(&header, stats, &ignored, target, options.task, &shown)?;
    scan.delimiter = options.delimiter;
    scan.rows = count as usize;
    Ok(scan)
}

/// One row of the first pass; false when the row is dropped for a missing value.
fn scan_row(
    rows: &Rows,
    stats: &mut [ColStat],
    ignored: &BTreeSet<usize>,
    target: usize,
    missing: Missing,
) -> Result<bool> {
    for i in (0..stats.len()).filter(|i| !ignored.contains(i)) {
        let text = rows.text(i)?;
        if is_missing(text) {
            match (missing, i == target) {
                (Missing::Error, _) => return Err(missing_error(rows, i, text)),
                (Missing::Drop, _) | (Missing::Mean, true) => return Ok(false),
                (Missing::Mean, false) => {}
            }
        }
    }
    for i in (0..stats.len()).filter(|i| !ignored.contains(i)) {
        let text = rows.text(i)?;
        if !is_missing(text) {
            stats[i]
                .add(text, rows.line(), i == target)
                .map_err(|m| rows.column_error(i, m))?;
        }
    }
    Ok(true)
}

fn missing_error(rows: &Rows<'_>, i: usize, text: &str) -> DataError {
    let shown = if text.is_empty() {
        "empty".to_string()
    } else {
        format!("'{text}'")
    };
    rows.column_error(
        i,
        format!("missing value ({shown}); give --missing drop to drop such rows or --missing mean to impute"),
    )
}

/// Task, classes and kept columns from the first pass's statistics.
fn decide(
    header: &[String],
    mut stats: Vec<ColStat>,
    ignored: &BTreeSet<usize>,
    target: usize,
    task: Option<Task>,
    shown: &str,
) -> Result<Scan> {
    let t = std::mem::take(&mut stats[target]);
    let task = choose_task(&t, task, &header[target], target, shown)?;
    let numeric = matches!(t.numeric, Some((true, _)));
    let mut classes: Vec<(String, u64)> = t.levels.into_iter().collect();
    if numeric {
        classes.sort_by(|a, b| {
            a.0.parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&b.0.parse::<f64>().unwrap_or(0.0))
        });
    }
    let (columns, warnings) = keep_columns(header, stats, ignored, target, shown)?;
    let (classes, class_lines) = match task {
        Task::Classification => classes.into_iter().unzip(),
        Task::Regression => (Vec::new(), Vec::new()),
    };
    Ok(Scan {
        columns,
        target: (target, header[target].clone()),
        task,
        classes,
        class_lines,
        delimiter: b',',
        rows: 0,
        warnings,
    })
}

/// The task `--task` asks for, else the one the target's values suggest.
fn choose_task(t: &ColStat, task: Option<Task>, name: &str, index: usize, shown: &str) -> Result<Task> {
    let numeric = matches!(t.numeric, Some((true, _)));
    let few = t.levels.len() <= MAX_INTEGER_CLASSES;
    let inferred = if !numeric || (t.integer && few) {
        Task::Classification
    } else {
        Task::Regression
    };
    let task = task.unwrap_or(inferred);
    if task == Task::Regression && !numeric {
        let (first, line) = t.levels.iter().next().map(|(k, v)| (k.clone(), *v)).unwrap_or_default();
        return Err(DataError::format(
            shown,
            format!(
                "line {line}, column {} '{name}': '{first}' is not a number, so the target cannot be regressed",
                index + 1
            ),
        ));
    }
    if task == Task::Classification && numeric && !few {
        return Err(DataError::format(
            shown,
            format!("column '{name}': --task classification on a numeric target with more than {MAX_INTEGER_CLASSES} distinct values; use --task regression"),
        ));
    }
    Ok(task)
}

/// The input columns: all but the target, the ignored and the constant ones (each constant one a warning).
fn keep_columns(
    header: &[String],
    stats: Vec<ColStat>,
    ignored: &BTreeSet<usize>,
    target: usize,
    shown: &str,
) -> Result<(Vec<ScanColumn>, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut columns = Vec::new();
    for (i, s) in stats.into_iter().enumerate() {
        if i == target || ignored.contains(&i) {
            continue;
        }
        if s.is_constant() {
            warnings.push(format!(
                "{shown}: column '{}' has a single value in every row; dropped",
                header[i]
            ));
            continue;
        }
        let levels = matches!(s.numeric, Some((false, _))).then(|| s.levels.into_keys().collect());
        columns.push(ScanColumn {
            name: header[i].clone(),
            levels,
        });
    }
    if columns.is_empty() {
        return Err(DataError::format(
            shown,
            "line 1: no input columns left (besides the target, every column is ignored or constant)",
        ));
    }
    Ok((columns, warnings))
}

/// How the second pass turns one column's text into an f32.
enum Kind {
    Number,
    /// Position of the text in a list (`unseen` when absent).
    Level(HashMap<String, usize>, usize),
}

/// Which columns of a file to read, and how.
struct Plan {
    columns: Vec<(usize, Kind)>,
    target: Option<(usize, Option<HashMap<String, usize>>)>,
    missing: Missing,
}

fn level_map(levels: &[String]) -> HashMap<String, usize> {
    levels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect()
}

/// Second pass over the training (or test) file, with the first pass's types.
/// `expected` rows are allocated up front (the first pass counted the training file's).
pub(crate) fn read_raw(path: &Path, scan: &Scan, missing: Missing, expected: usize, on_bytes: Bytes) -> Result<Raw> {
    let rows = Rows::new(path, scan.delimiter, on_bytes)?;
    let shown = rows.shown.clone();
    let mut columns = Vec::new();
    for c in &scan.columns {
        let i = find(&rows.header, &c.name, &shown, "an input column of the training file")?;
        columns.push((
            i,
            match &c.levels {
                None => Kind::Number,
                Some(l) => Kind::Level(level_map(l), l.len()),
            },
        ));
    }
    let t = find(&rows.header, &scan.target.1, &shown, "the target column")?;
    let classes = (scan.task == Task::Classification).then(|| level_map(&scan.classes));
    read_plan(
        rows,
        &Plan {
            columns,
            target: Some((t, classes)),
            missing,
        },
        expected,
    )
}

/// Reads every row with the plan; `expected` rows are allocated up front (a
/// growing vector would briefly hold its old and new buffers).
fn read_plan(mut rows: Rows<'_>, plan: &Plan, expected: usize) -> Result<Raw> {
    let mut raw = Raw {
        values: Vec::with_capacity(expected * plan.columns.len()),
        targets: Vec::with_capacity(expected),
        dropped: 0,
    };
    let mut row = Vec::with_capacity(plan.columns.len());
    'rows: while rows.advance()? {
        row.clear();
        for (i, kind) in &plan.columns {
            let text = rows.text(*i)?;
            if is_missing(text) {
                match plan.missing {
                    Missing::Error => return Err(missing_error(&rows, *i, text)),
                    Missing::Drop => {
                        raw.dropped += 1;
                        continue 'rows;
                    }
                    Missing::Mean => {
                        row.push(f32::NAN);
                        continue;
                    }
                }
            }
            row.push(match kind {
                Kind::Number => number(&rows, *i, text)?,
                Kind::Level(map, unseen) => map.get(text).copied().unwrap_or(*unseen) as f32,
            });
        }
        let target = match &plan.target {
            None => 0.0,
            Some((i, classes)) => {
                let text = rows.text(*i)?;
                if is_missing(text) {
                    if plan.missing == Missing::Error {
                        return Err(missing_error(&rows, *i, text));
                    }
                    raw.dropped += 1;
                    continue;
                }
                match classes {
                    None => number(&rows, *i, text)?,
                    Some(map) => *map.get(text).ok_or_else(|| {
                        rows.column_error(*i, format!("class '{text}' does not occur in the training rows"))
                    })? as f32,
                }
            }
        };
        raw.values.extend_from_slice(&row);
        raw.targets.push(target);
    }
    Ok(raw)
}

fn number(rows: &Rows<'_>, i: usize, text: &str) -> Result<f32> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(rows.column_error(i, format!("'{text}' is not a number"))),
    }
}

/// Reads rows to evaluate or predict with a saved encoding; the target column is optional.
pub(crate) fn encode_file(enc: &Encoding, path: &Path) -> Result<EncodedRows> {
    let rows = Rows::new(path, enc.delimiter, &|_| {})?;
    let shown = rows.shown.clone();
    let mut columns = Vec::new();
    let mut counts = Vec::new();
    for f in &enc.features {
        let i = find(&rows.header, f.name(), &shown, "an input column of the training file")?;
        let kind = match f {
            Feature::Numeric { .. } => Kind::Number,
            Feature::Categorical { categories, .. } => Kind::Level(level_map(categories), categories.len()),
        };
        counts.push(match f {
            Feature::Numeric { .. } => 0,
            Feature::Categorical { categories, .. } => categories.len(),
        });
        columns.push((i, kind));
    }
    let target = rows.header.iter().position(|h| *h == enc.target);
    let classes = (enc.task == Task::Classification).then(|| level_map(&enc.class_names));
    let plan = Plan {
        columns,
        target: target.map(|t| (t, classes)),
        missing: enc.missing,
    };
    let raw = read_plan(rows, &plan, 0)?;
    if raw.targets.is_empty() {
        return Err(DataError::format(shown, "the file has a header but no data rows"));
    }
    let all: Vec<usize> = (0..raw.targets.len()).collect();
    let (dataset, unseen_rows) = encode_with(&raw, &all, enc, |c, v| {
        let i = v as usize;
        (i < counts[c]).then_some(i)
    });
    Ok(EncodedRows {
        dataset,
        has_target: target.is_some(),
        unseen_rows,
        dropped_rows: raw.dropped,
    })
}
