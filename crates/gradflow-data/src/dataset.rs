//! In-memory datasets: a flat feature buffer plus per-sample targets.
//!
//! Kept deliberately independent of any tensor type so that loaders, the CLI
//! and tests can share data without pulling in the compute crates; the
//! training side turns batches into tensors itself.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// What a model is asked to predict for each sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class index per sample, for classification losses.
    Classes {
        /// Class index of each sample, each `< num_classes`.
        labels: Vec<usize>,
        /// Number of classes, so the model's output width is known even when
        /// a subset happens to miss some classes.
        num_classes: usize,
    },
    /// `width` real values per sample, for regression losses.
    Values {
        /// `len * width` values, sample after sample.
        values: Vec<f32>,
        /// Values per sample (at least 1).
        width: usize,
    },
}

impl Targets {
    /// Number of samples the targets describe.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values { values, width } => values.len().checked_div(*width).unwrap_or(0),
        }
    }

    /// True when there are no samples, as clippy's convention asks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Targets of the samples at `indices`, in that order.
    fn select(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes { labels, num_classes } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                num_classes: *num_classes,
            },
            Targets::Values { values, width } => {
                let mut out = Vec::with_capacity(indices.len() * width);
                for &i in indices {
                    out.extend_from_slice(&values[i * width..(i + 1) * width]);
                }
                Targets::Values {
                    values: out,
                    width: *width,
                }
            }
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Targets::Classes { labels, .. } => labels.truncate(n),
            Targets::Values { values, width } => values.truncate(n.saturating_mul(*width)),
        }
    }
}

/// A set of samples with identical shape, stored contiguously so batches can
/// be assembled with plain slice copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() * sample_len()` values, sample after sample, row-major.
    pub features: Vec<f32>,
    /// Shape of one sample, e.g. `[1, 28, 28]` for MNIST or `[k]` for a
    /// table with `k` feature columns.
    pub sample_shape: Vec<usize>,
    /// One target per sample.
    pub targets: Targets,
}

impl Dataset {
    /// Builds a dataset after checking that features, shape and targets
    /// agree, so later indexing cannot go out of bounds.
    pub fn new(features: Vec<f32>, sample_shape: Vec<usize>, targets: Targets) -> Result<Dataset> {
        let sample_len = sample_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| DataError::InvalidArgument("sample shape overflows".into()))?;
        let n = targets.len();
        match &targets {
            Targets::Classes { labels, num_classes } => {
                if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= *num_classes) {
                    return Err(DataError::InvalidArgument(format!(
                        "label {l} at index {i} is not below num_classes {num_classes}"
                    )));
                }
            }
            Targets::Values { values, width } => {
                if *width == 0 || values.len() % width != 0 {
                    return Err(DataError::InvalidArgument(format!(
                        "{} target values do not split into samples of width {width}",
                        values.len()
                    )));
                }
            }
        }
        if n.checked_mul(sample_len) != Some(features.len()) {
            return Err(DataError::InvalidArgument(format!(
                "{} feature values do not match {n} samples of shape {sample_shape:?}",
                features.len()
            )));
        }
        Ok(Dataset {
            features,
            sample_shape,
            targets,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when the dataset has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of `f32` values per sample (product of `sample_shape`).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Features of sample `index`, or `None` past the end; used by
    /// prediction and inspection code that looks at single samples.
    pub fn sample(&self, index: usize) -> Option<&[f32]> {
        let len = self.sample_len();
        let start = index.checked_mul(len)?;
        self.features.get(start..start.checked_add(len)?)
    }

    /// Number of classes for classification data, `None` for regression;
    /// lets callers size the output layer without matching on targets.
    pub fn num_classes(&self) -> Option<usize> {
        match self.targets {
            Targets::Classes { num_classes, .. } => Some(num_classes),
            Targets::Values { .. } => None,
        }
    }

    /// Class labels for classification data, `None` for regression.
    pub fn labels(&self) -> Option<&[usize]> {
        match &self.targets {
            Targets::Classes { labels, .. } => Some(labels),
            Targets::Values { .. } => None,
        }
    }

    /// A new dataset holding the samples at `indices`, in that order
    /// (repeats allowed), e.g. for validation splits or debugging subsets.
    ///
    /// # Panics
    /// If an index is `>= self.len()`; indices come from the program, not
    /// from files, so this is a bug in the caller.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            panic!("Dataset::subset: index {bad} out of range for {n} samples");
        }
        let len = self.sample_len();
        let mut features = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            features.extend_from_slice(&self.features[i * len..(i + 1) * len]);
        }
        Dataset {
            features,
            sample_shape: self.sample_shape.clone(),
            targets: self.targets.select(indices),
        }
    }

    /// Keeps only the first `n` samples (all of them if `n >= len()`),
    /// without copying; for quick experiments on a slice of the data.
    pub fn take(mut self, n: usize) -> Dataset {
        let n = n.min(self.len());
        self.features.truncate(n * self.sample_len());
        self.targets.truncate(n);
        self
    }

    /// Changes the per-sample shape (e.g. `[1, 28, 28]` to `[784]` for a
    /// dense network) without touching the data.
    pub fn reshape_samples(&mut self, sample_shape: Vec<usize>) -> Result<()> {
        let new_len = sample_shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if new_len != Some(self.sample_len()) {
            return Err(DataError::InvalidArgument(format!(
                "cannot reshape samples of shape {:?} to {sample_shape:?}",
                self.sample_shape
            )));
        }
        self.sample_shape = sample_shape;
        Ok(())
    }

    /// Applies `(x - mean) / std` to every feature, the usual image
    /// normalization with dataset-wide constants such as
    /// [`crate::MNIST_MEAN`] / [`crate::MNIST_STD`].
    ///
    /// A zero or non-finite `std` is treated as 1 so a bad constant can never
    /// fill the data with infinities.
    pub fn normalize(&mut self, mean: f32, std: f32) {
        let std = if std.is_finite() && std != 0.0 { std } else { 1.0 };
        let inv = 1.0 / std;
        for x in &mut self.features {
            *x = (*x - mean) * inv;
        }
    }

    /// Per-feature mean and (population) standard deviation over all
    /// samples, for standardizing tabular data. Compute them on the training
    /// split and apply them to every split with [`Dataset::standardize`].
    ///
    /// Accumulates in `f64` so large datasets do not lose precision. An empty
    /// dataset gives means of 0 and standard deviations of 1.
    pub fn feature_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let len = self.sample_len();
        let n = self.len();
        if n == 0 || len == 0 {
            return (vec![0.0; len], vec![1.0; len]);
        }
        let mut sum = vec![0f64; len];
        for sample in self.features.chunks_exact(len) {
            for (s, &x) in sum.iter_mut().zip(sample) {
                *s += f64::from(x);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mut var = vec![0f64; len];
        for sample in self.features.chunks_exact(len) {
            for ((v, &x), m) in var.iter_mut().zip(sample).zip(&mean) {
                let d = f64::from(x) - m;
                *v += d * d;
            }
        }
        let std = var.iter().map(|v| (v / n as f64).sqrt() as f32).collect();
        (mean.iter().map(|&m| m as f32).collect(), std)
    }

    /// Applies `(x - means[j]) / stds[j]` to feature `j` of every sample.
    ///
    /// A standard deviation that is zero, tiny or non-finite (a constant
    /// column) is treated as 1, so such a column becomes 0 instead of NaN.
    /// Errors if the slices do not have one entry per feature, since the
    /// statistics may come from a saved checkpoint of another dataset.
    pub fn standardize(&mut self, means: &[f32], stds: &[f32]) -> Result<()> {
        let len = self.sample_len();
        if means.len() != len || stds.len() != len {
            return Err(DataError::InvalidArgument(format!(
                "standardize needs {len} means and stds, got {} and {}",
                means.len(),
                stds.len()
            )));
        }
        let inv: Vec<f32> = stds
            .iter()
            .map(|&s| if s.is_finite() && s.abs() > 1e-12 { 1.0 / s } else { 1.0 })
            .collect();
        if len == 0 {
            return Ok(());
        }
        for sample in self.features.chunks_exact_mut(len) {
            for ((x, m), k) in sample.iter_mut().zip(means).zip(&inv) {
                *x = (*x - m) * k;
            }
        }
        Ok(())
    }

    /// Splits into `(train, validation)` with a seeded shuffle, so the same
    /// seed always holds out the same samples. `val_fraction` of the samples
    /// (rounded) go to validation; each part keeps the original order.
    ///
    /// Errors if `val_fraction` is not in `[0, 1)`, the training part would
    /// be empty, or a positive fraction would leave the validation part empty.
    pub fn split(&self, val_fraction: f32, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(DataError::InvalidArgument(format!(
                "validation fraction {val_fraction} must be in [0, 1)"
            )));
        }
        let n = self.len();
        let n_val = ((n as f64) * f64::from(val_fraction)).round() as usize;
        let n_val = n_val.min(n);
        if n - n_val == 0 {
            return Err(DataError::InvalidArgument(format!(
                "validation fraction {val_fraction} of {n} samples leaves no training samples"
            )));
        }
        // Asking for validation and getting an empty set would report a
        // meaningless validation loss of 0.
        if val_fraction > 0.0 && n_val == 0 {
            return Err(DataError::InvalidArgument(format!(
                "validation fraction {val_fraction} of {n} samples leaves no validation samples"
            )));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let (val, train) = order.split_at_mut(n_val);
        val.sort_unstable();
        train.sort_unstable();
        Ok((self.subset(train), self.subset(val)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        let features = (0..n * 2).map(|i| i as f32).collect();
        let labels = (0..n).map(|i| i % 3).collect();
        Dataset::new(features, vec![2], Targets::Classes { labels, num_classes: 3 }).unwrap()
    }

    #[test]
    fn new_rejects_inconsistent_parts() {
        let bad_len = Dataset::new(
            vec![0.0; 5],
            vec![2],
            Targets::Classes {
                labels: vec![0, 1],
                num_classes: 2,
            },
        );
        assert!(bad_len.is_err());
        let bad_label = Dataset::new(
            vec![0.0; 4],
            vec![2],
            Targets::Classes {
                labels: vec![0, 2],
                num_classes: 2,
            },
        );
        assert!(bad_label.unwrap_err().to_string().contains("label 2"));
        let bad_width = Dataset::new(
            vec![],
            vec![1],
            Targets::Values {
                values: vec![],
                width: 0,
            },
        );
        assert!(bad_width.is_err());
    }

    #[test]
    fn len_subset_take_and_sample() {
        let ds = toy(5);
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.sample_len(), 2);
        assert_eq!(ds.num_classes(), Some(3));
        assert_eq!(ds.sample(4), Some(&[8.0, 9.0][..]));
        assert_eq!(ds.sample(5), None);
        let sub = ds.subset(&[4, 0, 4]);
        assert_eq!(sub.features, vec![8.0, 9.0, 0.0, 1.0, 8.0, 9.0]);
        assert_eq!(sub.labels(), Some(&[1, 0, 1][..]));
        let t = ds.clone().take(2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.features, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(ds.clone().take(99).len(), 5);
        assert!(ds.clone().take(0).is_empty());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn subset_panics_on_bad_index() {
        toy(2).subset(&[2]);
    }

    #[test]
    fn regression_targets_follow_subset() {
        let ds = Dataset::new(
            vec![1.0, 2.0, 3.0],
            vec![1],
            Targets::Values {
                values: vec![10.0, 11.0, 20.0, 21.0, 30.0, 31.0],
                width: 2,
            },
        )
        .unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.num_classes(), None);
        let sub = ds.subset(&[2, 0]);
        assert_eq!(
            sub.targets,
            Targets::Values {
                values: vec![30.0, 31.0, 10.0, 11.0],
                width: 2
            }
        );
        assert_eq!(ds.take(1).targets.len(), 1);
    }

    #[test]
    fn normalize_and_reshape() {
        let mut ds = toy(2);
        ds.normalize(1.0, 2.0);
        assert_eq!(ds.features, vec![-0.5, 0.0, 0.5, 1.0]);
        ds.normalize(0.0, 0.0);
        assert_eq!(ds.features, vec![-0.5, 0.0, 0.5, 1.0]);
        ds.reshape_samples(vec![1, 2]).unwrap();
        assert_eq!(ds.sample_shape, vec![1, 2]);
        assert!(ds.reshape_samples(vec![3]).is_err());
    }

    #[test]
    fn stats_then_standardize_gives_zero_mean_unit_std() {
        let mut ds = Dataset::new(
            vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0],
            vec![2],
            Targets::Values {
                values: vec![0.0; 3],
                width: 1,
            },
        )
        .unwrap();
        let (m, s) = ds.feature_stats();
        assert_eq!(m, vec![3.0, 5.0]);
        assert!((s[0] - (8.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert_eq!(s[1], 0.0);
        ds.standardize(&m, &s).unwrap();
        let (m2, s2) = ds.feature_stats();
        assert!(m2[0].abs() < 1e-6 && (s2[0] - 1.0).abs() < 1e-5);
        // Constant column becomes 0, not NaN.
        assert!(ds.features.iter().skip(1).step_by(2).all(|&x| x == 0.0));
        assert!(ds.standardize(&[0.0], &[1.0]).is_err());
    }

    #[test]
    fn split_sizes_determinism_and_disjointness() {
        let ds = toy(100);
        let (tr, va) = ds.split(0.2, 7).unwrap();
        assert_eq!((tr.len(), va.len()), (80, 20));
        let (tr2, va2) = ds.split(0.2, 7).unwrap();
        assert_eq!(tr, tr2);
        assert_eq!(va, va2);
        let (_, va3) = ds.split(0.2, 8).unwrap();
        assert_ne!(va, va3);
        // Every sample lands in exactly one part (feature 0 is 2*index).
        let mut seen: Vec<usize> = tr
            .features
            .iter()
            .chain(&va.features)
            .step_by(2)
            .map(|&x| x as usize / 2)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        let (tr0, va0) = ds.split(0.0, 1).unwrap();
        assert_eq!((tr0.len(), va0.len()), (100, 0));
    }

    #[test]
    fn split_rejects_bad_fractions() {
        let ds = toy(3);
        assert!(ds.split(1.0, 0).is_err());
        assert!(ds.split(-0.1, 0).is_err());
        assert!(ds.split(f32::NAN, 0).is_err());
        assert!(toy(1).split(0.9, 0).is_err());
        assert!(toy(0).split(0.1, 0).is_err());
    }
}
