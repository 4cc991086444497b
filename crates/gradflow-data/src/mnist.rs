//! MNIST loading: finds the four IDX files, cross-checks them and turns them
//! into [`Dataset`]s with pixels scaled to `[0, 1]`.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};
use crate::idx::{read_idx_images, read_idx_labels};

/// Mean pixel value of the MNIST training set after scaling to `[0, 1]`;
/// pass it to [`Dataset::normalize`] to match the usual preprocessing.
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of the MNIST training pixels after scaling to `[0, 1]`.
pub const MNIST_STD: f32 = 0.3081;
/// Number of digit classes.
pub const MNIST_CLASSES: usize = 10;
/// Environment variable that overrides where MNIST is looked for.
pub const DATA_ENV_VAR: &str = "GRADFLOW_DATA";

/// How to fix a missing-data error; shared by every such message so they
/// all point at the same two knobs.
const HOW_TO_FIX: &str = "pass --data DIR or set GRADFLOW_DATA to a directory holding \
train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
t10k-labels-idx1-ubyte (each optionally .gz)";

/// The standard MNIST train/test split.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The 60,000 training digits (fewer with [`Mnist::load_limited`]).
    pub train: Dataset,
    /// The 10,000 test digits (fewer with [`Mnist::load_limited`]).
    pub test: Dataset,
}

/// Which of the two MNIST parts to load, for callers (e.g. evaluation)
/// that need only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistSplit {
    /// `train-*` files.
    Train,
    /// `t10k-*` files.
    Test,
}

impl MnistSplit {
    fn describe(self) -> &'static str {
        match self {
            MnistSplit::Train => "training",
            MnistSplit::Test => "test",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            MnistSplit::Train => "train",
            MnistSplit::Test => "t10k",
        }
    }
}

impl Mnist {
    /// Loads both parts from `dir`. Samples have shape `[1, 28, 28]`
    /// (channels first); call [`Dataset::reshape_samples`] for `[784]`.
    pub fn load(dir: &Path) -> Result<Mnist> {
        Self::load_limited(dir, None, None)
    }

    /// Like [`Mnist::load`] but keeps only the first `max_train` / `max_test`
    /// samples, for fast smoke tests. The files are still fully validated.
    pub fn load_limited(dir: &Path, max_train: Option<usize>, max_test: Option<usize>) -> Result<Mnist> {
        Ok(Mnist {
            train: load_split(dir, MnistSplit::Train, max_train)?,
            test: load_split(dir, MnistSplit::Test, max_test)?,
        })
    }
}

/// Loads one MNIST part from `dir`, keeping at most `max` samples.
pub fn load_split(dir: &Path, split: MnistSplit, max: Option<usize>) -> Result<Dataset> {
    check_dir(dir)?;
    let images_path = find_file(dir, &format!("{}-images", split.prefix()), "idx3-ubyte")?;
    let labels_path = find_file(dir, &format!("{}-labels", split.prefix()), "idx1-ubyte")?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::format(
            images_path.display().to_string(),
            format!(
                "holds {} images but {} holds {} labels; the two files must match",
                images.count,
                labels_path.display(),
                labels.len()
            ),
        ));
    }
    if let Some((i, &v)) = labels
        .iter()
        .enumerate()
        .find(|(_, &v)| usize::from(v) >= MNIST_CLASSES)
    {
        return Err(DataError::format(
            labels_path.display().to_string(),
            format!("label at index {i} is {v}, expected a digit 0..=9"),
        ));
    }
    // An empty split would "train" and "evaluate" on nothing and report a
    // meaningless 0% accuracy; refuse it with the reason.
    if images.count == 0 {
        return Err(DataError::format(
            images_path.display().to_string(),
            "holds no images (its header's count is 0)",
        ));
    }
    if max == Some(0) {
        return Err(DataError::InvalidArgument(format!(
            "a limit of 0 {} images leaves nothing to use; the limit must be at least 1",
            split.describe()
        )));
    }
    let keep = max.unwrap_or(usize::MAX).min(images.count);
    let per_image = images.rows * images.cols;
    let features = images.pixels[..keep * per_image]
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    let labels = labels[..keep].iter().map(|&l| usize::from(l)).collect();
    Dataset::new(
        features,
        vec![1, images.rows, images.cols],
        Targets::Classes {
            labels,
            num_classes: MNIST_CLASSES,
        },
    )
}

/// Where to look for MNIST when the user did not say: `$GRADFLOW_DATA` if
/// set, else `data/mnist` under the current directory, else the copy bundled
/// in this repository (`<crate>/../../data/mnist`). When none exists the
/// relative `data/mnist` is returned so the error message names it.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_ENV_VAR).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("data/mnist");
    if local.is_dir() {
        return local;
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    if bundled.is_dir() {
        bundled
    } else {
        local
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        return Err(DataError::format(
            dir.display().to_string(),
            format!("is not a directory; {HOW_TO_FIX}"),
        ));
    }
    Err(DataError::NotFound {
        path: dir.display().to_string(),
        hint: format!("MNIST directory does not exist; {HOW_TO_FIX}"),
    })
}

/// Finds `<stem>-<suffix>` in its usual spellings: raw or `.gz`, and with a
/// dot instead of the last dash (as some mirrors name them).
fn find_file(dir: &Path, stem: &str, suffix: &str) -> Result<PathBuf> {
    let names = [
        format!("{stem}-{suffix}"),
        format!("{stem}-{suffix}.gz"),
        format!("{stem}.{suffix}"),
        format!("{stem}.{suffix}.gz"),
    ];
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::NotFound {
            path: dir.join(&names[0]).display().to_string(),
            hint: format!("neither it nor {} exists; {HOW_TO_FIX}", names[1]),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::tests::{gzip, idx_images, idx_labels};

    fn write_split(dir: &Path, prefix: &str, n: u32, labels: &[u8], gz: bool) {
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 17 % 256) as u8).collect();
        let img = idx_images(n, 2, 2, &pixels);
        let lab = idx_labels(labels);
        let (img, lab, ext) = if gz {
            (gzip(&img), gzip(&lab), ".gz")
        } else {
            (img, lab, "")
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
    }

    #[test]
    fn loads_mixed_raw_and_gz_and_scales_pixels() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, &[5, 0, 4], true);
        write_split(dir.path(), "t10k", 2, &[7, 2], false);
        let m = Mnist::load(dir.path()).unwrap();
        assert_eq!(m.train.len(), 3);
        assert_eq!(m.test.len(), 2);
        assert_eq!(m.train.sample_shape, vec![1, 2, 2]);
        assert_eq!(m.train.labels(), Some(&[5, 0, 4][..]));
        assert_eq!(m.test.labels(), Some(&[7, 2][..]));
        assert_eq!(m.train.num_classes(), Some(10));
        assert_eq!(m.train.features[1], 17.0 / 255.0);
        assert!(m.train.features.iter().all(|&x| (0.0..=1.0).contains(&x)));

        let lim = Mnist::load_limited(dir.path(), Some(1), Some(100)).unwrap();
        assert_eq!((lim.train.len(), lim.test.len()), (1, 2));
        assert_eq!(lim.train.features.len(), 4);
    }

    #[test]
    fn count_mismatch_names_both_files_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, &[1, 2], false);
        let e = load_split(dir.path(), MnistSplit::Train, None).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
        assert!(e.contains("3 images") && e.contains("2 labels"), "{e}");
    }

    #[test]
    fn label_out_of_range_names_file_index_and_value() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "t10k", 3, &[1, 12, 2], true);
        let e = load_split(dir.path(), MnistSplit::Test, None).unwrap_err().to_string();
        assert!(e.contains("t10k-labels-idx1-ubyte.gz"), "{e}");
        assert!(e.contains("index 1") && e.contains("is 12"), "{e}");
    }

    #[test]
    fn missing_dir_and_file_say_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = Mnist::load(&missing).unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("--data DIR") && e.contains("GRADFLOW_DATA"), "{e}");
        let e = Mnist::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        assert!(e.contains("--data DIR"), "{e}");
    }

    #[test]
    fn default_dir_is_a_path() {
        // The environment is shared by parallel tests, so only check the
        // fallback logic's shape, not a specific value.
        assert!(!default_data_dir().as_os_str().is_empty());
    }

    #[test]
    fn real_mnist_if_present() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        if !dir.join("train-labels-idx1-ubyte.gz").exists() && !dir.join("train-labels-idx1-ubyte").exists() {
            eprintln!("skipping: {} not present", dir.display());
            return;
        }
        let m = Mnist::load(&dir).unwrap();
        assert_eq!(m.train.len(), 60_000);
        assert_eq!(m.test.len(), 10_000);
        assert_eq!(m.train.sample_shape, vec![1, 28, 28]);
        assert_eq!(&m.train.labels().unwrap()[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
        assert_eq!(&m.test.labels().unwrap()[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
        let mean = m.train.features.iter().map(|&x| f64::from(x)).sum::<f64>() / m.train.features.len() as f64;
        assert!((mean as f32 - MNIST_MEAN).abs() < 1e-3, "mean {mean}");
    }
}
