//! A run directory turned into something a person can look at: one
//! self-contained `report.html` (plots inlined as base64 PNG, no network, no
//! external CSS or JavaScript, so it can be mailed or archived as one file)
//! and the same plots as PNG files next to it.
//!
//! The report reads only what `gradflow train` already wrote (`metrics.jsonl`,
//! `diagnostics.jsonl`, `summary.json`, `model.toml`, `model.safetensors`), so
//! it can be produced long after the run, on another machine, and never
//! changes the run itself.

use crate::diagnostics::{LayerStats, StepRecord, Warning};
use crate::metrics::EpochMetrics;
use crate::trainer::Summary;
use base64::Engine as _;
use gradflow_nn::serialize::from_safetensors;
use gradflow_nn::{BuildOptions, Init, LayerSpec, ModelSpec};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a report could not be made, as one line naming the file at fault, so
/// the user knows which file to look at instead of reading a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run directory is missing.
    #[error("{}: no such run directory", .0.display())]
    NoRunDirectory(PathBuf),
    /// A run file could not be read.
    #[error("{}: cannot read: {error}{}", path.display(), not_found_hint(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `summary.json` is not a summary.
    #[error("{}: not a valid summary: {error}", path.display())]
    Summary {
        /// The file.
        path: PathBuf,
        /// What serde saw.
        error: serde_json::Error,
    },
    /// A line of a JSON-lines file does not parse.
    #[error("{}: line {line}: {error}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What serde saw.
        error: serde_json::Error,
    },
    /// `model.toml` does not parse, or `model.safetensors` is not a weights file.
    #[error(transparent)]
    Nn(#[from] gradflow_nn::Error),
    /// `model.toml` parses but does not build.
    #[error("{model}: {error}")]
    Build {
        /// The model file, as shown.
        model: String,
        /// Why.
        error: gradflow_nn::Error,
    },
    /// `model.safetensors` could not be read.
    #[error("{}: cannot read: {error}", path.display())]
    ReadWeights {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `model.safetensors` lacks a tensor that `model.toml` declares.
    #[error("{weights}: no tensor '{name}', but {model} has a {kind} there")]
    MissingTensor {
        /// The weights file, as shown.
        weights: String,
        /// The state-dict name.
        name: String,
        /// The model file, as shown.
        model: String,
        /// The layer class there.
        kind: &'static str,
    },
    /// A plot could not be drawn (plotters' errors are neither `Send` nor `Sync`, hence the text).
    #[error("{}: cannot draw: {detail} (text needs a system font, e.g. the fonts-dejavu package)", path.display())]
    Draw {
        /// The PNG file.
        path: PathBuf,
        /// What plotters said.
        detail: String,
    },
    /// A drawn plot could not be read back for inlining.
    #[error("{}: cannot read back: {error}", path.display())]
    ReadBack {
        /// The PNG file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `report.html` could not be written.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// A missing file most likely means the wrong directory, not a damaged run.
fn not_found_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (is this a directory written by `gradflow train --out`?)"
    } else {
        ""
    }
}

type RResult<T> = Result<T, ReportError>;

/// One Linear/Conv2d weight tensor, flattened: histograms need the values, not the layout.
#[derive(Debug, Clone)]
pub struct WeightTensor {
    /// State-dict name (`1.weight`), as the user will find it in PyTorch.
    pub name: String,
    /// Layer description (`Linear(784 → 800)`), so the histogram says what it shows.
    pub layer: String,
    /// Shape in the file.
    pub shape: Vec<usize>,
    /// Every element, in f64 whatever the file's dtype.
    pub values: Vec<f64>,
}

/// Everything a report shows, loaded and checked once so that rendering cannot
/// fail half-way on a bad file.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The run directory.
    pub dir: PathBuf,
    /// `summary.json`.
    pub summary: Summary,
    /// `metrics.jsonl`, one entry per completed epoch.
    pub metrics: Vec<EpochMetrics>,
    /// `diagnostics.jsonl`, one entry per recorded step (empty with `--diagnostics-every 0`).
    pub steps: Vec<StepRecord>,
    /// `model.toml`.
    pub spec: ModelSpec,
    /// One line per layer (`Linear(784 → 800)`), for the report's model table.
    pub layers: Vec<String>,
    /// Linear/Conv2d weights from `model.safetensors`; `None` when the run
    /// stopped before its first checkpoint, which is exactly when a report of
    /// the warnings is still wanted.
    pub weights: Option<Vec<WeightTensor>>,
}

/// The files of one written report.
#[derive(Debug, Clone)]
pub struct Report {
    /// `RUN_DIR/report.html`.
    pub html: PathBuf,
    /// The PNG plots, in the order the report shows them.
    pub plots: Vec<PathBuf>,
}

/// The file names of the plots, in report order (tests and tools can rely on them).
pub const PLOT_FILES: [&str; 6] = [
    "loss.png",
    "accuracy.png",
    "grad_norms.png",
    "saturation.png",
    "weights_hist.png",
    "sparsity.png",
];

/// The plot of ‖∂L/∂h_t‖ against the time step, drawn after the six when the
/// diagnostics recorded a recurrent layer.
pub const TIME_PLOT_FILE: &str = "time_grad_norms.png";

/// The report's own file name inside the run directory.
pub const REPORT_FILE: &str = "report.html";

fn read_text(path: &Path) -> RResult<String> {
    std::fs::read_to_string(path).map_err(|error| ReportError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// serde_json writes a NaN or infinite f64 as `null`, which does not read back
/// into an f64. A run that diverged is the one most in need of a report, so the
/// f64 fields of the run files read such nulls back as NaN (shown as "NaN": the
/// file no longer says whether it was NaN or infinite). Optional fields stay
/// `None`; the page tells a missing value from a non-finite one by its siblings.
trait Lenient: DeserializeOwned {
    /// Replace the nulls that stand for non-finite numbers with 0 and say where they were (array index, field).
    fn unnull(v: &mut Value) -> Vec<(usize, &'static str)>;
    /// Put NaN back where a null was.
    fn set_nan(&mut self, at: (usize, &'static str));
}

fn unnull_fields(v: &mut Value, fields: &[&'static str]) -> Vec<&'static str> {
    let mut found = Vec::new();
    if let Value::Object(m) = v {
        for f in fields {
            if let Some(x) = m.get_mut(*f) {
                if x.is_null() {
                    *x = Value::from(0.0);
                    found.push(*f);
                }
            }
        }
    }
    found
}

impl Lenient for Summary {
    fn unnull(v: &mut Value) -> Vec<(usize, &'static str)> {
        let fields = [
            "test_accuracy",
            "test_loss",
            "train_seconds",
            "samples_per_second",
            "train_accuracy",
        ];
        unnull_fields(v, &fields).into_iter().map(|f| (0, f)).collect()
    }
    fn set_nan(&mut self, (_, f): (usize, &'static str)) {
        match f {
            "test_accuracy" => self.test_accuracy = f64::NAN,
            "test_loss" => self.test_loss = f64::NAN,
            "train_seconds" => self.train_seconds = f64::NAN,
            "samples_per_second" => self.samples_per_second = f64::NAN,
            _ => self.train_accuracy = f64::NAN,
        }
    }
}

impl Lenient for EpochMetrics {
    fn unnull(v: &mut Value) -> Vec<(usize, &'static str)> {
        let plain = [
            "train_loss",
            "train_data_loss",
            "train_penalty",
            "train_accuracy",
            "lr",
            "seconds",
            "samples_per_second",
            "weight_sparsity",
            "weight_norm",
        ];
        unnull_fields(v, &plain).into_iter().map(|f| (0, f)).collect()
    }
    fn set_nan(&mut self, (_, f): (usize, &'static str)) {
        let nan = f64::NAN;
        match f {
            "train_loss" => self.train_loss = nan,
            "train_data_loss" => self.train_data_loss = nan,
            "train_penalty" => self.train_penalty = nan,
            "train_accuracy" => self.train_accuracy = nan,
            "lr" => self.lr = nan,
            "seconds" => self.seconds = nan,
            "samples_per_second" => self.samples_per_second = nan,
            "weight_sparsity" => self.weight_sparsity = nan,
            _ => self.weight_norm = nan,
        }
    }
}

impl Lenient for StepRecord {
    fn unnull(v: &mut Value) -> Vec<(usize, &'static str)> {
        let mut found = Vec::new();
        if let Some(layers) = v.get_mut("layers").and_then(Value::as_array_mut) {
            for (i, l) in layers.iter_mut().enumerate() {
                found.extend(unnull_fields(l, &["act_mean", "act_std"]).into_iter().map(|f| (i, f)));
            }
        }
        found
    }
    fn set_nan(&mut self, (i, f): (usize, &'static str)) {
        if let Some(l) = self.layers.get_mut(i) {
            match f {
                "act_mean" => l.act_mean = f64::NAN,
                _ => l.act_std = f64::NAN,
            }
        }
    }
}

fn parse_lenient<T: Lenient>(text: &str) -> serde_json::Result<T> {
    let mut v: Value = serde_json::from_str(text)?;
    let nulls = T::unnull(&mut v);
    let mut t: T = serde_json::from_value(v)?;
    for at in nulls {
        t.set_nan(at);
    }
    Ok(t)
}

fn read_jsonl<T: Lenient>(path: &Path) -> RResult<Vec<T>> {
    let text = read_text(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_lenient(l).map_err(|error| ReportError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                error,
            })
        })
        .collect()
}

impl RunData {
    /// Read and check every file of a run directory. `model.safetensors` may
    /// be missing (a run that diverged in its first epoch has none); every
    /// other file is required, and any unreadable file is an error naming it.
    pub fn load(dir: &Path) -> crate::Result<RunData> {
        if !dir.is_dir() {
            return Err(ReportError::NoRunDirectory(dir.to_path_buf()).into());
        }
        let sp = dir.join("summary.json");
        let summary: Summary =
            parse_lenient(&read_text(&sp)?).map_err(|error| ReportError::Summary { path: sp, error })?;
        let metrics = read_jsonl::<EpochMetrics>(&dir.join("metrics.jsonl"))?;
        let steps = read_jsonl::<StepRecord>(&dir.join("diagnostics.jsonl"))?;
        let mp = dir.join("model.toml");
        let shown = mp.display().to_string();
        let spec = ModelSpec::parse(&read_text(&mp)?, &shown)?;
        // Zero init: only the descriptions are wanted, not random numbers.
        let net = spec
            .build(BuildOptions {
                init: Init::Zeros,
                ..Default::default()
            })
            .map_err(|error| ReportError::Build {
                model: shown.clone(),
                error,
            })?;
        let layers: Vec<String> = net.layers.iter().map(|l| l.describe()).collect();
        let wp = dir.join(crate::checkpoint::WEIGHTS_FILE);
        let weights = if wp.exists() {
            Some(load_weights(&wp, &spec, &shown, &layers)?)
        } else {
            None
        };
        Ok(RunData {
            dir: dir.to_path_buf(),
            summary,
            metrics,
            steps,
            spec,
            layers,
            weights,
        })
    }
}

/// The Linear/Conv2d weights of `model.safetensors`, each named by the layer `model.toml` puts there.
fn load_weights(path: &Path, spec: &ModelSpec, model: &str, layers: &[String]) -> RResult<Vec<WeightTensor>> {
    let wshown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| ReportError::ReadWeights {
        path: path.to_path_buf(),
        error,
    })?;
    let (loaded, _) = from_safetensors(&bytes, &wshown)?;
    let mut out = Vec::new();
    for (i, l) in spec.layers.iter().enumerate() {
        if !matches!(l, LayerSpec::Linear(_) | LayerSpec::Conv2d(_)) {
            continue;
        }
        let name = format!("{i}.weight");
        let t = loaded.get(&name).ok_or_else(|| ReportError::MissingTensor {
            weights: wshown.clone(),
            name: name.clone(),
            model: model.to_string(),
            kind: l.kind(),
        })?;
        out.push(WeightTensor {
            name,
            layer: layers[i].clone(),
            shape: t.shape().to_vec(),
            values: t.to_vec_f64(),
        });
    }
    Ok(out)
}

/// Load a run directory, draw the plots into it and write `report.html`.
pub fn write_report(dir: &Path) -> crate::Result<Report> {
    let data = RunData::load(dir)?;
    let plots = render_plots(&data, dir)?;
    let mut images = Vec::with_capacity(plots.len());
    for p in &plots {
        let bytes = std::fs::read(p).map_err(|error| ReportError::ReadBack { path: p.clone(), error })?;
        images.push(bytes);
    }
    let html = render_html(&data, &images);
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, html).map_err(|error| ReportError::Write {
        path: path.clone(),
        error,
    })?;
    Ok(Report { html: path, plots })
}

// ---------------------------------------------------------------- plots

/// Tableau 10: distinguishable, and still distinguishable when printed grey.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

const FONT: &str = "sans-serif";
const WIDTH: u32 = 900;
const HEIGHT: u32 = 450;

type PlotResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// One curve: a label for the legend and its finite points.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    /// The palette entry, when it is not the series' position (two curves of one thing).
    color: Option<usize>,
}

impl Series {
    fn new(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        Series {
            label: label.into(),
            // NaN and ±∞ (a diverged run) cannot be placed on an axis; leave gaps instead of failing.
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
            dashed: false,
            color: None,
        }
    }
}

/// How the y axis is drawn.
#[derive(Clone, Copy, PartialEq)]
enum YAxis {
    Linear,
    /// Fractions in [0, 1] shown as percent.
    Percent,
    /// Log scale: gradient norms span many decades, which is the point of the plot.
    Log,
}

struct LinePlot<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    y: YAxis,
    series: Vec<Series>,
    /// Shown instead of axes when there is nothing to draw.
    empty: &'a str,
    /// Draw a dot at every point (few epochs: a line alone hides where the data are).
    markers: bool,
}

/// Pad a degenerate or tight range so a single point or a flat line is still visible.
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if hi > lo {
        let d = (hi - lo) * frac;
        (lo - d, hi + d)
    } else {
        let d = if lo == 0.0 { 0.5 } else { lo.abs() * 0.1 };
        (lo - d, hi + d)
    }
}

fn message(area: &Area, title: &str, text: &str) -> PlotResult {
    let inner = area.titled(title, (FONT, 24))?;
    let (w, h) = inner.dim_in_pixel();
    let style = TextStyle::from((FONT, 18)).color(&RGBColor(90, 90, 90));
    let style = style.pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Center,
    ));
    inner.draw_text(text, &style, (w as i32 / 2, h as i32 / 2))?;
    Ok(())
}

fn draw_lines<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    series: &[Series],
    markers: bool,
) -> PlotResult
where
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (i, s) in series.iter().enumerate() {
        let c = color(s.color.unwrap_or(i));
        let style = c.stroke_width(2);
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        if markers {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

fn line_plot(path: &Path, p: &LinePlot) -> PlotResult {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|&(_, y)| p.y != YAxis::Log || y > 0.0)
        .collect();
    if pts.is_empty() {
        message(&root, p.title, p.empty)?;
        root.present()?;
        return Ok(());
    }
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let ys = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(_, y)| (a.min(y), b.max(y)));
    let (x0, x1) = padded(xmin, xmax, 0.03);
    // Room on the right for the legend, so it never hides the latest (most interesting) points.
    let x1 = x1 + (x1 - x0) * 0.3;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(p.title, (FONT, 24))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75);
    match p.y {
        YAxis::Log => log_chart(&mut builder, p, x0..x1, ys)?,
        YAxis::Linear | YAxis::Percent => linear_chart(&mut builder, p, x0..x1, ys)?,
    }
    root.present()?;
    Ok(())
}

fn log_chart<'a>(
    builder: &mut ChartBuilder<'_, '_, BitMapBackend<'a>>,
    p: &LinePlot,
    xs: std::ops::Range<f64>,
    (ymin, ymax): (f64, f64),
) -> PlotResult {
    let (lo, hi) = (ymin / 2.0, ymax * 2.0);
    let mut chart = builder.build_cartesian_2d(xs, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(p.x_desc)
        .y_desc(p.y_desc)
        .label_style((FONT, 14))
        .light_line_style(LIGHT)
        .x_label_formatter(&whole)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    // Zeros cannot sit on a log axis; drop them from the curves.
    let series: Vec<Series> = p
        .series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().copied().filter(|&(_, y)| y > 0.0).collect(),
            dashed: s.dashed,
            color: s.color,
        })
        .collect();
    draw_lines(&mut chart, &series, p.markers)
}

fn linear_chart<'a>(
    builder: &mut ChartBuilder<'_, '_, BitMapBackend<'a>>,
    p: &LinePlot,
    xs: std::ops::Range<f64>,
    (ymin, ymax): (f64, f64),
) -> PlotResult {
    let (y0, y1) = if p.y == YAxis::Percent {
        let (a, b) = padded(ymin, ymax, 0.08);
        (a.max(0.0).min(ymin), b.min(1.0).max(ymax))
    } else {
        padded(ymin, ymax, 0.08)
    };
    let (y0, y1) = if y1 > y0 { (y0, y1) } else { padded(y0, y1, 0.1) };
    let mut chart = builder.build_cartesian_2d(xs, y0..y1)?;
    let percent = |v: &f64| format!("{:.0}%", v * 100.0);
    let percent_fine = |v: &f64| format!("{:.1}%", v * 100.0);
    let plain = |v: &f64| format!("{v:.3}");
    let fine = y1 - y0 < 0.05;
    let fmt: &dyn Fn(&f64) -> String = match (p.y, fine) {
        (YAxis::Percent, false) => &percent,
        (YAxis::Percent, true) => &percent_fine,
        _ => &plain,
    };
    chart
        .configure_mesh()
        .x_desc(p.x_desc)
        .y_desc(p.y_desc)
        .label_style((FONT, 14))
        .light_line_style(LIGHT)
        .max_light_lines(4)
        .x_label_formatter(&whole)
        .y_label_formatter(fmt)
        .draw()?;
    draw_lines(&mut chart, &p.series, p.markers)
}

/// The faint minor grid: enough to read values off, not enough to hide the curves.
const LIGHT: RGBColor = RGBColor(238, 238, 238);

/// Epochs and steps are whole numbers; fractional ticks ("1.5 epochs") would only mislead.
fn whole(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

fn epochs_of(m: &[EpochMetrics], f: impl Fn(&EpochMetrics) -> Option<f64>) -> Vec<(f64, f64)> {
    m.iter().filter_map(|e| f(e).map(|v| (e.epoch as f64, v))).collect()
}

/// Per-layer step series of one statistic, one curve per layer that has it.
fn layer_series(steps: &[StepRecord], label: &str, f: impl Fn(&LayerStats) -> Option<f64>) -> Vec<Series> {
    let Some(first) = steps.first() else { return Vec::new() };
    first
        .layers
        .iter()
        .filter(|l| f(l).is_some())
        .map(|l| {
            let pts = steps.iter().filter_map(|r| {
                r.layers
                    .iter()
                    .find(|x| x.index == l.index)
                    .and_then(&f)
                    .map(|v| (r.step as f64, v))
            });
            Series::new(format!("layer {} {}{label}", l.index, l.kind), pts)
        })
        .collect()
}

fn weights_plot(path: &Path, weights: Option<&[WeightTensor]>) -> PlotResult {
    let title = "Weight distribution per layer";
    let weights = match weights {
        Some(w) if !w.is_empty() => w,
        Some(_) => return message_plot(path, title, "the model has no Linear or Conv2d weights"),
        None => {
            return message_plot(
                path,
                title,
                "no model.safetensors: the run stopped before its first epoch ended",
            )
        }
    };
    let cols = weights.len().min(3);
    let rows = weights.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (WIDTH, 50 + 280 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 24))?;
    for (i, (w, area)) in weights.iter().zip(root.split_evenly((rows, cols))).enumerate() {
        histogram(&area, w, color(i))?;
    }
    root.present()?;
    Ok(())
}

/// A plot that is only a sentence saying why there is nothing to draw.
fn message_plot(path: &Path, title: &str, text: &str) -> PlotResult {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    message(&root, title, text)?;
    root.present()?;
    Ok(())
}

/// One tensor's histogram of finite values, captioned with its mean and spread.
fn histogram(area: &Area, w: &WeightTensor, c: RGBColor) -> PlotResult {
    let v: Vec<f64> = w.values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let caption = format!("{} {}  μ {mean:.3} σ {std:.3}", w.name, w.layer);
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if v.is_empty() {
        return message(area, &caption, "no finite values");
    }
    let (lo, hi) = padded(lo, hi, 0.02);
    let bins = 40usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for x in &v {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64 * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 14))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0.0..top.max(1.0))?;
    chart
        .configure_mesh()
        .label_style((FONT, 11))
        .light_line_style(LIGHT)
        .max_light_lines(2)
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(b, &k)| {
        let x0 = lo + b as f64 * width;
        Rectangle::new([(x0, 0.0), (x0 + width, k as f64)], c.mix(0.75).filled())
    }))?;
    Ok(())
}

/// Whether the run's epochs measured a regression (RMSE) rather than an accuracy.
fn is_regression(m: &[EpochMetrics]) -> bool {
    m.iter().any(|e| e.train_rmse.is_some())
}

/// The loss and accuracy (or RMSE) curves, one series per split that has points.
fn epoch_curves(m: &[EpochMetrics]) -> (Vec<Series>, Vec<Series>) {
    let penalty = m.iter().any(|e| e.train_penalty > 0.0);
    let mut loss = vec![Series::new("train", epochs_of(m, |e| Some(e.train_loss)))];
    if penalty {
        // With L1/L2 the objective and the data loss differ; the validation loss compares with the latter.
        let mut s = Series::new("train (data loss only)", epochs_of(m, |e| Some(e.train_data_loss)));
        s.dashed = true;
        loss.push(s);
    }
    loss.push(Series::new("validation", epochs_of(m, |e| e.val_loss)));
    loss.retain(|s| !s.points.is_empty());
    // A regression has no accuracy: its second plot shows the RMSE in the target's units.
    let accuracy: Vec<Series> = if is_regression(m) {
        vec![
            Series::new("train", epochs_of(m, |e| e.train_rmse)),
            Series::new("validation", epochs_of(m, |e| e.val_regression.map(|r| r.val_rmse))),
        ]
    } else {
        vec![
            Series::new("train", epochs_of(m, |e| Some(e.train_accuracy))),
            Series::new("validation", epochs_of(m, |e| e.val_accuracy)),
        ]
    }
    .into_iter()
    .filter(|s| !s.points.is_empty())
    .collect();
    (loss, accuracy)
}

/// The five line plots, with their file names.
fn line_plots(data: &RunData) -> [(&'static str, LinePlot<'static>); 5] {
    let m = &data.metrics;
    let (loss, accuracy) = epoch_curves(m);
    let epoch_plot = |title, y_desc, y, series| LinePlot {
        title,
        x_desc: "epoch",
        y_desc,
        y,
        series,
        empty: "no epoch completed",
        markers: true,
    };
    let sparsity = vec![Series::new(
        "Linear/Conv2d weights",
        epochs_of(m, |e| Some(e.weight_sparsity)),
    )];
    let [grad_norms, saturation] = step_plots(&data.steps);
    [
        ("loss.png", epoch_plot("Loss", "loss", YAxis::Linear, loss)),
        (
            "accuracy.png",
            if is_regression(m) {
                epoch_plot("RMSE (target units)", "rmse", YAxis::Linear, accuracy)
            } else {
                epoch_plot("Accuracy", "accuracy", YAxis::Percent, accuracy)
            },
        ),
        ("grad_norms.png", grad_norms),
        ("saturation.png", saturation),
        (
            "sparsity.png",
            epoch_plot(
                "Weight sparsity (|w| < 1e-3)",
                "fraction of weights",
                YAxis::Percent,
                sparsity,
            ),
        ),
    ]
}

/// The plots of the recorded steps: gradient norms, and saturated and dead units.
fn step_plots(steps: &[StepRecord]) -> [LinePlot<'static>; 2] {
    let no_steps = "no diagnostics recorded (--diagnostics-every 0, or no step finished)";
    let mut saturation = layer_series(steps, " saturated", |l| l.saturated);
    saturation.extend(layer_series(steps, " dead", |l| l.dead));
    [
        LinePlot {
            title: "Weight-gradient norm per layer (log scale)",
            x_desc: "step",
            y_desc: "L2 norm of the weight gradient",
            y: YAxis::Log,
            series: layer_series(steps, "", |l| l.grad_norm),
            empty: no_steps,
            markers: steps.len() < 30,
        },
        LinePlot {
            title: "Saturated (sigmoid/tanh) and dead (ReLU) units",
            x_desc: "step",
            y_desc: "fraction of units",
            y: YAxis::Percent,
            series: saturation,
            empty: if steps.is_empty() {
                no_steps
            } else {
                "no Sigmoid, Tanh or ReLU layer to watch"
            },
            markers: steps.len() < 30,
        },
    ]
}

/// Each recurrent direction's ‖∂L/∂h_t‖ against t, averaged over the sampled
/// steps of the first and of the last sampled epoch (dashed): whether the
/// gradient reaching the early steps fades, and whether training changed it.
fn time_plot(steps: &[StepRecord]) -> Option<LinePlot<'static>> {
    let has = |r: &StepRecord| r.layers.iter().any(|l| !l.hidden_grad_norms.is_empty());
    let (first, last) = (
        steps.iter().find(|r| has(r))?.epoch,
        steps.iter().rfind(|r| has(r))?.epoch,
    );
    let epochs = if first == last { vec![first] } else { vec![first, last] };
    let mut series = Vec::new();
    for (k, &epoch) in epochs.iter().enumerate() {
        let records: Vec<&StepRecord> = steps.iter().filter(|r| r.epoch == epoch).collect();
        let directions = records[0]
            .layers
            .iter()
            .flat_map(|l| l.hidden_grad_norms.iter().map(move |h| (l, h)));
        // One colour per direction; the last epoch's curve is dashed.
        for (d, (l, h)) in directions.enumerate() {
            let pts = mean_norms(&records, l.index, &h.name).into_iter().enumerate();
            let label = format!("layer {} {} {}, epoch {epoch}", l.index, l.kind, h.name);
            let mut curve = Series::new(label, pts.map(|(t, v)| (t as f64, v)));
            (curve.dashed, curve.color) = (k == 1, Some(d));
            series.push(curve);
        }
    }
    Some(LinePlot {
        title: "Gradient reaching the hidden state by time step (log scale)",
        x_desc: "time step t",
        y_desc: "‖∂L/∂h_t‖",
        y: YAxis::Log,
        series,
        empty: "no recurrent layer recorded",
        markers: false,
    })
}

/// The mean over `records` of layer `index`'s ‖∂L/∂h_t‖ series `name`, step by step.
fn mean_norms(records: &[&StepRecord], index: usize, name: &str) -> Vec<f64> {
    let all: Vec<&Vec<f64>> = records
        .iter()
        .flat_map(|r| r.layers.iter().filter(|l| l.index == index))
        .flat_map(|l| l.hidden_grad_norms.iter().filter(|h| h.name == name))
        .map(|h| &h.norms)
        .collect();
    let steps = all.iter().map(|v| v.len()).max().unwrap_or(0);
    (0..steps)
        .map(|t| all.iter().filter_map(|v| v.get(t)).sum::<f64>() / all.len() as f64)
        .collect()
}

/// Draw the six plots into `out_dir` (file names in [`PLOT_FILES`]), and
/// [`TIME_PLOT_FILE`] after them for a recurrent model; returns their paths.
pub fn render_plots(data: &RunData, out_dir: &Path) -> crate::Result<Vec<PathBuf>> {
    let fail = |path: &Path, e: Box<dyn std::error::Error>| ReportError::Draw {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut drawn = Vec::new();
    for (name, plot) in &line_plots(data) {
        let file = out_dir.join(name);
        line_plot(&file, plot).map_err(|e| fail(&file, e))?;
        drawn.push((*name, file));
    }
    let file = out_dir.join("weights_hist.png");
    weights_plot(&file, data.weights.as_deref()).map_err(|e| fail(&file, e))?;
    drawn.push(("weights_hist.png", file));
    let mut paths: Vec<PathBuf> = PLOT_FILES
        .iter()
        .map(|f| drawn.iter().find(|(n, _)| n == f).expect("every plot drawn").1.clone())
        .collect();
    if let Some(plot) = time_plot(&data.steps) {
        let file = out_dir.join(TIME_PLOT_FILE);
        line_plot(&file, &plot).map_err(|e| fail(&file, e))?;
        paths.push(file);
    }
    Ok(paths)
}

// ---------------------------------------------------------------- HTML

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A fraction as percent; a non-finite one as plain `NaN` or `inf`, since "NaN%" reads as a typo.
fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}%", v * 100.0)
    } else {
        format!("{v}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// [`opt`] for a value that was `measured` (its siblings say so): there a
/// missing number is one serde wrote as null, so non-finite, not absent.
fn measured(v: Option<f64>, measured: bool, f: impl Fn(f64) -> String) -> String {
    match v {
        None if measured => "NaN".into(),
        v => opt(v, f),
    }
}

fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e4).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.warn{border-left:4px solid #d62728;background:#fff5f5;padding:.5em .9em;margin:.7em 0}
.ok{border-left:4px solid #2ca02c;background:#f4fbf4;padding:.5em .9em}
.muted{color:#666}code{background:#f4f4f4;padding:0 .25em}";

/// The report page, with `images` (PNG bytes, in [`PLOT_FILES`] order) inlined.
pub fn render_html(data: &RunData, images: &[Vec<u8>]) -> String {
    let s = &data.summary;
    let mut h = String::new();
    let title = format!("gradflow report: {}", data.dir.display());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let stopped = match &s.stop_detail {
        Some(d) => format!("{} — {}", s.stopped, d),
        None => s.stopped.to_string(),
    };
    let _ = writeln!(
        h,
        "<p class=\"muted\">{} epochs, {} parameters, stopped: {}</p>",
        s.epochs,
        s.parameters,
        esc(&stopped)
    );
    summary_html(s, &stopped, &mut h);
    warnings_html(&s.warnings, &mut h);
    model_html(data, &mut h);
    plots_html(images, &mut h);
    epochs_html(data, &mut h);
    layers_html(data.steps.last(), &mut h);
    h.push_str("<p class=\"muted\">Written by <code>gradflow report</code>. The plots are also saved as PNG files in the run directory.</p>\n</body>\n</html>\n");
    h
}

fn summary_html(s: &Summary, stopped: &str, h: &mut String) {
    h.push_str("<h2 id=\"summary\">Summary</h2>\n<table>\n");
    // A negative clock reading shows as 0; a NaN one stays visible.
    let seconds = if s.train_seconds < 0.0 { 0.0 } else { s.train_seconds };
    let mut rows = score_rows(s);
    rows.extend([
        ("Epochs", s.epochs.to_string()),
        ("Best epoch", s.best_epoch.to_string()),
        ("Parameters", s.parameters.to_string()),
        ("Training time", format!("{seconds:.1} s")),
        ("Throughput", format!("{:.0} samples/s", s.samples_per_second)),
        ("Stopped", stopped.to_string()),
    ]);
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td class=\"n\">{}</td></tr>", esc(k), esc(&v));
    }
    h.push_str("</table>\n");
}

fn warnings_html(warnings: &[Warning], h: &mut String) {
    h.push_str("<h2 id=\"warnings\">Warnings</h2>\n");
    if warnings.is_empty() {
        h.push_str("<p class=\"ok\">No warnings: the diagnostics saw no vanishing or exploding gradients, saturation, dead units or overfitting.</p>\n");
    }
    for w in warnings {
        let when = match w.step {
            Some(st) => format!("epoch {}, step {st}", w.epoch),
            None if w.epoch > 0 => format!("epoch {}", w.epoch),
            None => String::new(),
        };
        let _ = write!(
            h,
            "<div class=\"warn\"><strong>{}</strong> <span class=\"muted\">{}</span><br>\nEvidence: {}<br>\nSuggestion: {}</div>\n",
            esc(&w.kind.title()),
            esc(&when),
            esc(&w.evidence),
            esc(&w.suggestion)
        );
    }
}

fn model_html(data: &RunData, h: &mut String) {
    h.push_str("<h2 id=\"model\">Model</h2>\n<table>\n<tr><th>#</th><th>Layer</th></tr>\n");
    for (i, l) in data.layers.iter().enumerate() {
        let _ = writeln!(h, "<tr><td class=\"n\">{i}</td><td>{}</td></tr>", esc(l));
    }
    h.push_str("</table>\n");
    let _ = writeln!(h, "<p class=\"muted\">Input shape {:?}.</p>", data.spec.input);
}

/// The six plots (and the recurrent one), each under its heading with a sentence on how to read it.
fn plots_html(images: &[Vec<u8>], h: &mut String) {
    let img = |i: usize, alt: &str| -> String {
        match images.get(i) {
            Some(b) => format!(
                "<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
                esc(alt),
                base64::engine::general_purpose::STANDARD.encode(b)
            ),
            None => String::new(),
        }
    };
    h.push_str("<h2 id=\"loss\">Loss</h2>\n");
    h.push_str("<p>Training loss is the mean over each epoch's steps; validation loss is measured at the epoch's end. A validation curve that turns up while training keeps falling is overfitting.</p>\n");
    h.push_str(&img(0, "loss per epoch, training and validation"));
    h.push_str("<h2 id=\"accuracy\">Accuracy</h2>\n");
    h.push_str(&img(1, "accuracy per epoch, training and validation"));
    h.push_str("<h2 id=\"gradients\">Gradient flow</h2>\n");
    h.push_str("<p>The norm of each layer's weight gradient. Layers near the input whose curve sits decades below the last layer's learn that much slower: vanishing gradients.</p>\n");
    h.push_str(&img(2, "weight-gradient norm per layer over steps, log scale"));
    h.push_str("<h2 id=\"saturation\">Saturation and dead units</h2>\n");
    h.push_str("<p>Sigmoid outputs outside [0.01, 0.99] and tanh outputs beyond ±0.99 pass almost no gradient; ReLU units that are zero for a whole batch pass none.</p>\n");
    h.push_str(&img(3, "fraction of saturated and dead units over steps"));
    h.push_str("<h2 id=\"weights\">Weights</h2>\n");
    h.push_str(&img(4, "histogram of each layer's weights"));
    h.push_str("<h2 id=\"sparsity\">Sparsity</h2>\n");
    h.push_str(
        "<p>The fraction of weights with |w| &lt; 1e-3 at each epoch's end; L1 regularization drives it up.</p>\n",
    );
    h.push_str(&img(5, "weight sparsity per epoch"));
    if images.len() > PLOT_FILES.len() {
        h.push_str("<h2 id=\"time\">Gradient through time</h2>\n");
        h.push_str("<p>The norm of the loss's gradient with respect to each recurrent layer's hidden state at every time step, at the first sampled epoch and (dashed) the last. A curve that falls by decades towards the steps the recurrence ran first means those inputs barely reach the loss: vanishing gradients through time, which LSTM and GRU cells resist.</p>\n");
        h.push_str(&img(
            PLOT_FILES.len(),
            "gradient norm against time step per recurrent layer",
        ));
    }
}

/// The summary's first rows: accuracy for a classifier, RMSE/MAE/R² (target units) for a regression.
fn score_rows(s: &Summary) -> Vec<(&'static str, String)> {
    if let (Some(rmse), Some(mae), Some(r2)) = (s.test_rmse, s.test_mae, s.test_r2) {
        return vec![
            ("Test RMSE", format!("{rmse:.4}")),
            ("Test MAE", format!("{mae:.4}")),
            ("Test R²", format!("{r2:.4}")),
            ("Test loss (standardized target)", format!("{:.4}", s.test_loss)),
        ];
    }
    vec![
        ("Test accuracy", pct(s.test_accuracy)),
        ("Test error", pct(1.0 - s.test_accuracy)),
        ("Test loss", format!("{:.4}", s.test_loss)),
        ("Final training accuracy", pct(s.train_accuracy)),
        ("Final validation accuracy", opt(s.val_accuracy, pct)),
    ]
}

fn epochs_html(data: &RunData, h: &mut String) {
    h.push_str("<h2 id=\"epochs\">Epochs</h2>\n");
    if data.metrics.is_empty() {
        h.push_str("<p class=\"muted\">No epoch completed.</p>\n");
        return;
    }
    let (train_h, val_h) = if is_regression(&data.metrics) {
        ("train rmse", "val rmse")
    } else {
        ("train acc", "val acc")
    };
    let _ = writeln!(h, "<table>\n<tr><th>epoch</th><th>train loss</th><th>{train_h}</th><th>val loss</th><th>{val_h}</th><th>lr</th><th>sparsity</th><th>‖W‖</th><th>s</th></tr>");
    for e in &data.metrics {
        let val_rmse = e.val_regression.map(|r| r.val_rmse);
        let (train_v, val_v, val_measured) = match e.train_rmse {
            Some(rmse) => (
                format!("{rmse:.4}"),
                opt(val_rmse, |v| format!("{v:.4}")),
                val_rmse.is_some(),
            ),
            None => (
                pct(e.train_accuracy),
                opt(e.val_accuracy, pct),
                e.val_accuracy.is_some(),
            ),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{:.4}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2e}</td><td class=\"n\">{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.1}</td></tr>",
            e.epoch,
            e.train_loss,
            train_v,
            // A validation set gives an accuracy every epoch; a loss missing beside it was not finite.
            measured(e.val_loss, val_measured, |v| format!("{v:.4}")),
            val_v,
            e.lr,
            pct(e.weight_sparsity),
            e.weight_norm,
            e.seconds
        );
    }
    h.push_str("</table>\n");
}

fn layers_html(last: Option<&StepRecord>, h: &mut String) {
    h.push_str("<h2 id=\"layers\">Layers at the last recorded step</h2>\n");
    let Some(r) = last else {
        h.push_str("<p class=\"muted\">No diagnostics recorded.</p>\n");
        return;
    };
    let _ = writeln!(
        h,
        "<p class=\"muted\">Step {}, epoch {}. Update ratio ‖ΔW‖/‖W‖ is healthy around 1e-3.</p>",
        r.step, r.epoch
    );
    h.push_str("<table>\n<tr><th>#</th><th>layer</th><th>‖∂L/∂W‖</th><th>‖W‖</th><th>update ratio</th><th>|w| &lt; 1e-3</th><th>act mean</th><th>act std</th><th>saturated</th><th>dead</th></tr>\n");
    for l in &r.layers {
        // A layer with weights always has a near-zero share (a count, never NaN);
        // its norms and update ratio were measured beside it.
        let weighted = l.near_zero.is_some();
        let _ = writeln!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            l.index,
            esc(&l.kind),
            measured(l.grad_norm, weighted, sci),
            measured(l.weight_norm, weighted, sci),
            measured(l.update_ratio, weighted, sci),
            opt(l.near_zero, pct),
            l.act_mean,
            l.act_std,
            opt(l.saturated, pct),
            opt(l.dead, pct)
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn padding_keeps_single_points_visible() {
        let (a, b) = padded(1.0, 1.0, 0.05);
        assert!(a < 1.0 && b > 1.0);
        let (a, b) = padded(0.0, 0.0, 0.05);
        assert!(a < 0.0 && b > 0.0);
    }

    #[test]
    fn nulls_written_for_nan_read_back_as_nan() {
        let m: EpochMetrics = parse_lenient(
            r#"{"epoch":1,"train_loss":null,"train_data_loss":1.0,"train_penalty":0.0,"train_accuracy":0.1,
            "val_loss":null,"val_accuracy":null,"lr":0.1,"seconds":1.0,"samples_per_second":1.0,
            "weight_sparsity":0.0,"weight_norm":null}"#,
        )
        .unwrap();
        assert!(m.train_loss.is_nan() && m.weight_norm.is_nan());
        assert_eq!((m.train_data_loss, m.val_loss), (1.0, None));
        let r: StepRecord = parse_lenient(
            r#"{"step":3,"epoch":1,"layers":[{"index":0,"kind":"Linear","grad_norm":null,"weight_norm":1.0,
            "update_ratio":null,"near_zero":0.0,"act_mean":null,"act_std":2.0,"saturated":null,"dead":null}]}"#,
        )
        .unwrap();
        assert!(r.layers[0].act_mean.is_nan());
        assert_eq!((r.layers[0].act_std, r.layers[0].grad_norm), (2.0, None));
        assert!(parse_lenient::<Summary>("{\"test_loss\": null}").is_err());
    }

    #[test]
    fn missing_directory_and_files_are_named() {
        let e = RunData::load(Path::new("/nonexistent/run")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/run"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("summary.json"), "{e}");
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        let e = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("summary.json") && e.contains("not a valid summary"), "{e}");
    }

    /// A run whose numbers went non-finite: serde wrote them as null.
    fn diverged_run() -> RunData {
        let summary = r#"{"test_accuracy":0.1,"test_loss":null,"epochs":2,"train_seconds":1.5,
            "samples_per_second":null,"best_epoch":1,"parameters":10,"stopped":"non_finite_loss",
            "stop_detail":null,"warnings":[],"val_accuracy":0.1,"train_accuracy":0.2}"#;
        let epoch = r#"{"epoch":2,"train_loss":null,"train_data_loss":1.0,"train_penalty":0.0,"train_accuracy":0.2,
            "val_loss":null,"val_accuracy":0.1,"lr":0.1,"seconds":1.0,"samples_per_second":1.0,
            "weight_sparsity":0.0,"weight_norm":1.0}"#;
        let step = r#"{"step":3,"epoch":2,"layers":[{"index":0,"kind":"Linear","grad_norm":null,"weight_norm":null,
            "update_ratio":null,"near_zero":0.0,"act_mean":null,"act_std":2.0,"saturated":null,"dead":null}]}"#;
        let spec = ModelSpec::parse(
            "input = [2]\n[[layer]]\ntype = \"Linear\"\nout_features = 5\n",
            "m.toml",
        )
        .unwrap();
        RunData {
            dir: PathBuf::from("run"),
            summary: parse_lenient(summary).unwrap(),
            metrics: vec![parse_lenient(epoch).unwrap()],
            steps: vec![parse_lenient(step).unwrap()],
            spec,
            layers: vec!["Linear(2 → 5)".into()],
            weights: None,
        }
    }

    #[test]
    fn a_recurrent_run_gets_the_plot_of_gradient_against_time_step() {
        let mut data = diverged_run();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(render_plots(&data, dir.path()).unwrap().len(), PLOT_FILES.len());
        assert!(!render_html(&data, &[]).contains("Gradient through time"));
        let record = |epoch: usize, scale: f64| {
            let line = format!(
                r#"{{"step":{epoch},"epoch":{epoch},"layers":[{{"index":0,"kind":"RNN","grad_norm":1.0,"weight_norm":1.0,
                "update_ratio":null,"near_zero":0.0,"act_mean":0.0,"act_std":1.0,"saturated":null,"dead":null,
                "hidden_grad_norms":[{{"name":"l0","reverse":false,"norms":[{},{},null,0.1]}}]}}]}}"#,
                1e-6 * scale,
                1e-3 * scale
            );
            parse_lenient::<StepRecord>(&line).unwrap()
        };
        data.steps = vec![record(1, 1.0), record(1, 3.0), record(2, 10.0)];
        let plot = time_plot(&data.steps).unwrap();
        let labels: Vec<&str> = plot.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["layer 0 RNN l0, epoch 1", "layer 0 RNN l0, epoch 2"]);
        // The first epoch's two samples are averaged; the NaN step is left as a gap.
        let (t, y) = plot.series[0].points[0];
        assert!(t == 0.0 && (y - 2e-6).abs() < 1e-18, "{y}");
        assert_eq!(plot.series[0].points.len(), 3);
        assert!(plot.series[1].dashed && !plot.series[0].dashed);
        assert_eq!((plot.series[0].color, plot.series[1].color), (Some(0), Some(0)));
        let paths = render_plots(&data, dir.path()).unwrap();
        assert_eq!(paths.last().unwrap(), &dir.path().join(TIME_PLOT_FILE));
        let images: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let html = render_html(&data, &images);
        assert!(html.contains("Gradient through time"));
        assert_eq!(html.matches("<img ").count(), PLOT_FILES.len() + 1);
    }

    #[test]
    fn non_finite_numbers_show_as_nan_not_zero_or_blank() {
        let mut data = diverged_run();
        let html = render_html(&data, &[]);
        let cell = |v: &str| format!("<td class=\"n\">{v}</td>");
        // Test loss, throughput, the epoch's train and validation loss, the layer's norms and act mean.
        assert!(html.contains(&cell("NaN")), "{html}");
        assert!(html.contains(&cell("NaN samples/s")), "{html}");
        let epoch_row = html
            .lines()
            .find(|l| l.starts_with("<tr><td class=\"n\">2</td>"))
            .unwrap();
        assert_eq!(epoch_row.matches(&cell("NaN")).count(), 2, "{epoch_row}");
        let layer_row = html.lines().find(|l| l.contains("<td>Linear</td>")).unwrap();
        assert_eq!(layer_row.matches(&cell("NaN")).count(), 4, "{layer_row}");
        assert!(!html.contains("NaN%"), "{html}");
        // A validation set measured nothing else as missing: the blank stays for a run without one.
        data.metrics[0].val_accuracy = None;
        data.metrics[0].val_loss = None;
        let row = render_html(&data, &[]);
        let row = row
            .lines()
            .find(|l| l.starts_with("<tr><td class=\"n\">2</td>"))
            .unwrap();
        assert_eq!(row.matches(&cell("–")).count(), 2, "{row}");
        // Numbers still in memory keep their kind of infinity.
        data.summary.test_loss = f64::INFINITY;
        data.summary.test_accuracy = f64::NEG_INFINITY;
        let html = render_html(&data, &[]);
        assert!(html.contains(&cell("inf")) && html.contains(&cell("-inf")), "{html}");
    }
}
