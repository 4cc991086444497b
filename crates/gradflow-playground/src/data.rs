//! The data sets, generated from a seed as TensorFlow Playground generates them
//! (same shapes, same noise model, points in [-6, 6]²), and CSV uploads.

use crate::config::{DatasetKind, MAX_CLASSES, MAX_CSV_BYTES, MAX_POINTS};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::PI;

/// One point: its position and its label (a class index for class data sets, a value in [-1, 1] for regression).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// First coordinate.
    pub x1: f64,
    /// Second coordinate.
    pub x2: f64,
    /// Class index (0, 1, …) or real value.
    pub label: f64,
}

fn p(x1: f64, x2: f64, label: f64) -> Point {
    Point { x1, x2, label }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// `n` points of data set `kind` with `noise` in [0, 0.5], drawn from `rng`.
/// Two-class sets label their points 0 and 1; `spiral3` uses 0, 1, 2; regression sets give values in [-1, 1].
/// `Csv` yields nothing: its points come from an upload.
pub fn generate(kind: DatasetKind, n: usize, noise: f64, rng: &mut ChaCha8Rng) -> Vec<Point> {
    let n = n.min(MAX_POINTS);
    match kind {
        DatasetKind::Circle => circle(n, noise, rng),
        DatasetKind::Xor => xor(n, noise, rng),
        DatasetKind::Gauss => gauss(n, noise, rng),
        DatasetKind::Spiral => spirals(2, n, noise, rng),
        DatasetKind::Spiral3 => spirals(3, n, noise, rng),
        DatasetKind::Plane => field(n, noise, rng, |x, nx, y, ny| {
            ((x + nx + y + ny) / 10.0).clamp(-1.0, 1.0)
        }),
        DatasetKind::Multigauss => field(n, noise, rng, |x, nx, y, ny| bumps(x + nx, y + ny)),
        DatasetKind::Csv => Vec::new(),
    }
}

/// A disc of class 1 inside a ring of class 0.
fn circle(n: usize, noise: f64, rng: &mut ChaCha8Rng) -> Vec<Point> {
    let radius = 5.0;
    let label = |x: f64, y: f64| {
        if (x * x + y * y).sqrt() < radius * 0.5 {
            1.0
        } else {
            0.0
        }
    };
    (0..n)
        .map(|i| {
            let (rlo, rhi) = if i < n / 2 {
                (0.0, radius * 0.5)
            } else {
                (radius * 0.7, radius)
            };
            let r = uniform(rng, rlo, rhi);
            let angle = uniform(rng, 0.0, 2.0 * PI);
            let (x, y) = (r * angle.sin(), r * angle.cos());
            let nx = uniform(rng, -radius, radius) * noise;
            let ny = uniform(rng, -radius, radius) * noise;
            p(x, y, label(x + nx, y + ny))
        })
        .collect()
}

/// The four quadrants, class 1 where x and y share a sign.
fn xor(n: usize, noise: f64, rng: &mut ChaCha8Rng) -> Vec<Point> {
    let pad = 0.3;
    (0..n)
        .map(|_| {
            let mut x = uniform(rng, -5.0, 5.0);
            x += if x > 0.0 { pad } else { -pad };
            let mut y = uniform(rng, -5.0, 5.0);
            y += if y > 0.0 { pad } else { -pad };
            let nx = uniform(rng, -5.0, 5.0) * noise;
            let ny = uniform(rng, -5.0, 5.0) * noise;
            p(x, y, if (x + nx) * (y + ny) >= 0.0 { 1.0 } else { 0.0 })
        })
        .collect()
}

/// Two Gaussian blobs around (2, 2) and (-2, -2).
fn gauss(n: usize, noise: f64, rng: &mut ChaCha8Rng) -> Vec<Point> {
    // Variance grows from 0.5 to 4 as noise goes from 0 to 0.5.
    let std = (0.5 + 7.0 * noise).sqrt();
    (0..n)
        .map(|i| {
            let (c, label) = if i < n / 2 { (2.0, 1.0) } else { (-2.0, 0.0) };
            let gx: f64 = StandardNormal.sample(rng);
            let gy: f64 = StandardNormal.sample(rng);
            p(c + std * gx, c + std * gy, label)
        })
        .collect()
}

/// `k` interleaved spiral arms, one class each.
fn spirals(k: usize, n: usize, noise: f64, rng: &mut ChaCha8Rng) -> Vec<Point> {
    let per = n / k;
    let mut out = Vec::with_capacity(n);
    for c in 0..k {
        let delta = 2.0 * PI * c as f64 / k as f64;
        for i in 0..per {
            let r = i as f64 / per as f64 * 5.0;
            let t = 1.75 * i as f64 / per as f64 * 2.0 * PI + delta;
            let x = r * t.sin() + uniform(rng, -1.0, 1.0) * noise;
            let y = r * t.cos() + uniform(rng, -1.0, 1.0) * noise;
            // Two spirals: the one at angle 0 is class 1, as in TensorFlow Playground.
            let label = if k == 2 { 1.0 - c as f64 } else { c as f64 };
            out.push(p(x, y, label));
        }
    }
    out
}

/// A regression set: uniform points labelled by `value(x, nx, y, ny)`, at the position moved by the noise (nx, ny).
fn field(n: usize, noise: f64, rng: &mut ChaCha8Rng, value: impl Fn(f64, f64, f64, f64) -> f64) -> Vec<Point> {
    let radius = 6.0;
    (0..n)
        .map(|_| {
            let x = uniform(rng, -radius, radius);
            let y = uniform(rng, -radius, radius);
            let nx = uniform(rng, -radius, radius) * noise;
            let ny = uniform(rng, -radius, radius) * noise;
            p(x, y, value(x, nx, y, ny))
        })
        .collect()
}

/// Six cones of alternating sign, the strongest one wins.
fn bumps(x: f64, y: f64) -> f64 {
    const BUMPS: [(f64, f64, f64); 6] = [
        (-4.0, 2.5, 1.0),
        (0.0, 2.5, -1.0),
        (4.0, 2.5, 1.0),
        (-4.0, -2.5, -1.0),
        (0.0, -2.5, 1.0),
        (4.0, -2.5, -1.0),
    ];
    let mut v: f64 = 0.0;
    for (cx, cy, sign) in BUMPS {
        let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
        let nv = sign * (1.0 - d / 2.0).clamp(0.0, 1.0);
        if nv.abs() > v.abs() {
            v = nv;
        }
    }
    v
}

/// Shuffle `points` with `rng` and split them: the first `train_ratio` (in percent) for training.
/// Both halves keep at least one point when there are two or more.
pub fn split(mut points: Vec<Point>, train_ratio: f64, rng: &mut ChaCha8Rng) -> (Vec<Point>, Vec<Point>) {
    points.shuffle(rng);
    let n = points.len();
    let mut k = ((n as f64) * train_ratio / 100.0).round() as usize;
    if n >= 2 {
        k = k.clamp(1, n - 1);
    }
    let test = points.split_off(k.min(n));
    (points, test)
}

/// A parsed CSV upload.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvData {
    /// The points, moved and scaled into [-5, 5]² (each axis on its own) so that they fit the page's square.
    pub points: Vec<Point>,
    /// Number of classes when every label is a small class index (or ±1), else `None` (real values).
    pub classes: Option<usize>,
    /// True when the positions were rescaled.
    pub rescaled: bool,
}

/// Parse `x1,x2,label` rows (an optional header row, `#` comments and blank lines allowed;
/// commas, semicolons, tabs or spaces between fields). Labels that are all -1/1 become classes 0/1;
/// labels that are all integers in 0..8 are classes; anything else is a regression target,
/// scaled into [-1, 1] when it leaves that range.
pub fn parse_csv(text: &str) -> Result<CsvData> {
    if text.len() > MAX_CSV_BYTES {
        return Err(Error::CsvTooLarge);
    }
    let rows = csv_rows(text)?;
    if rows.len() < 4 {
        return Err(Error::CsvTooFewRows(rows.len()));
    }
    let (classes, mapped) = csv_labels(&rows.iter().map(|r| r[2]).collect::<Vec<f64>>());
    let mut rescaled = false;
    let mut axis = |k: usize| -> (f64, f64) {
        let lo = rows.iter().fold(f64::INFINITY, |m, r| m.min(r[k]));
        let hi = rows.iter().fold(f64::NEG_INFINITY, |m, r| m.max(r[k]));
        if lo >= -5.0 && hi <= 5.0 {
            return (0.0, 1.0);
        }
        rescaled = true;
        let mid = (lo + hi) / 2.0;
        let half = ((hi - lo) / 2.0).max(1e-12);
        (mid, 5.0 / half)
    };
    let (m1, s1) = axis(0);
    let (m2, s2) = axis(1);
    let points = rows
        .iter()
        .zip(mapped)
        .map(|(r, l)| p((r[0] - m1) * s1, (r[1] - m2) * s2, l))
        .collect();
    Ok(CsvData {
        points,
        classes,
        rescaled,
    })
}

/// The rows of three finite numbers, past an optional header of three names.
fn csv_rows(text: &str) -> Result<Vec<[f64; 3]>> {
    let mut rows: Vec<[f64; 3]> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split([',', ';', '\t', ' '])
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        let nums: Option<Vec<f64>> = fields.iter().map(|f| f.parse::<f64>().ok()).collect();
        match nums {
            Some(v) if v.len() == 3 && v.iter().all(|x| x.is_finite()) => rows.push([v[0], v[1], v[2]]),
            Some(v) if v.len() == 3 => return Err(Error::CsvNotFinite(i + 1)),
            // A header row: three names, none of them a number.
            None if rows.is_empty() && fields.len() == 3 && fields.iter().all(|f| f.parse::<f64>().is_err()) => {}
            _ => {
                return Err(Error::CsvRow {
                    line: i + 1,
                    text: line.chars().take(60).collect(),
                })
            }
        }
        if rows.len() > MAX_POINTS {
            return Err(Error::CsvTooManyRows);
        }
    }
    Ok(rows)
}

/// The number of classes the labels name (`None`: real values) and the labels as the engine takes them.
fn csv_labels(labels: &[f64]) -> (Option<usize>, Vec<f64>) {
    let integral = labels.iter().all(|l| l.fract() == 0.0);
    if labels.iter().all(|&l| l == -1.0 || l == 1.0) {
        (
            Some(2),
            labels.iter().map(|&l| if l > 0.0 { 1.0 } else { 0.0 }).collect(),
        )
    } else if integral && labels.iter().all(|&l| (0.0..MAX_CLASSES as f64).contains(&l)) {
        let k = labels.iter().fold(0.0f64, |m, &l| m.max(l)) as usize + 1;
        (Some(k.max(2)), labels.to_vec())
    } else {
        let m = labels.iter().fold(0.0f64, |m, &l| m.max(l.abs()));
        let s = if m > 1.0 { 1.0 / m } else { 1.0 };
        (None, labels.iter().map(|l| l * s).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_fits_the_square_and_is_reproducible() {
        for kind in [
            DatasetKind::Circle,
            DatasetKind::Xor,
            DatasetKind::Gauss,
            DatasetKind::Spiral,
            DatasetKind::Spiral3,
            DatasetKind::Plane,
            DatasetKind::Multigauss,
        ] {
            let a = generate(kind, 300, 0.2, &mut gradflow::seeded_rng(3));
            let b = generate(kind, 300, 0.2, &mut gradflow::seeded_rng(3));
            assert_eq!(a, b);
            assert!(a.len() >= 297, "{kind:?}");
            for q in &a {
                assert!(q.label.abs() <= 2.0);
                if !kind.is_regression() {
                    assert_eq!(q.label.fract(), 0.0);
                }
            }
        }
        let s3 = generate(DatasetKind::Spiral3, 300, 0.0, &mut gradflow::seeded_rng(1));
        assert!(s3.iter().any(|q| q.label == 2.0));
    }

    #[test]
    fn circle_without_noise_is_separable() {
        for q in generate(DatasetKind::Circle, 200, 0.0, &mut gradflow::seeded_rng(0)) {
            let r = (q.x1 * q.x1 + q.x2 * q.x2).sqrt();
            assert_eq!(q.label == 1.0, r < 2.5);
        }
    }

    #[test]
    fn csv_classes_values_and_errors() {
        let d = parse_csv("x1,x2,label\n1,2,1\n-1,0,-1\n0.5,0.5,1\n# c\n\n2 2 -1\n").unwrap();
        assert_eq!(d.classes, Some(2));
        assert_eq!(d.points[1].label, 0.0);
        assert!(!d.rescaled);
        let d = parse_csv("0,0,0\n10,0,1\n0,10,2\n5,5,1\n").unwrap();
        assert_eq!(d.classes, Some(3));
        assert!(d.rescaled);
        assert!(d.points.iter().all(|q| q.x1.abs() <= 5.0 + 1e-9));
        let d = parse_csv("0,0,0.5\n1,0,3\n0,1,-2\n1,1,0\n").unwrap();
        assert_eq!(d.classes, None);
        assert!(d.points.iter().all(|q| q.label.abs() <= 1.0));
        assert!(parse_csv("1,2\n3,4\n").is_err());
        assert!(parse_csv("a,b,c\n1,2,x\n").is_err());
        assert!(parse_csv("1,2,3\n").unwrap_err().to_string().contains("at least 4"));
        assert!(parse_csv(&"1,2,1\n".repeat(MAX_POINTS + 1))
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }
}
