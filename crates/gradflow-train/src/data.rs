//! The data a run trains and is judged on, prepared one way for `train` and
//! `eval` alike: MNIST normalized with its mean and standard deviation, and
//! samples shaped to the model's input.

use crate::error::{Error, Result};
use gradflow_data::{Dataset, MnistSplit, MNIST_MEAN, MNIST_STD};
use gradflow_nn::ModelSpec;
use std::path::{Path, PathBuf};

/// Where the data comes from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per run; boxing would only add noise at call sites
pub enum DataSource {
    /// MNIST IDX files in this directory.
    Mnist(PathBuf),
    /// Ready-made datasets (already normalized), e.g. from Rust code.
    Datasets {
        /// Training set.
        train: Dataset,
        /// Validation set; when None, `val_split` carves one out of `train`.
        val: Option<Dataset>,
        /// Test set.
        test: Dataset,
    },
}

/// Training, validation and test sets, shaped for the model.
pub struct Splits {
    /// What the optimizer sees.
    pub train: Dataset,
    /// What early stopping and the schedule watch, if any.
    pub val: Option<Dataset>,
    /// What the summary reports.
    pub test: Dataset,
}

/// Limits and the validation split a run asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SplitOptions {
    /// Keep only the first N MNIST training images.
    pub limit_train: Option<usize>,
    /// Keep only the first N MNIST test images.
    pub limit_test: Option<usize>,
    /// Fraction of the training set held out when no validation set is given.
    pub val_split: f64,
    /// Seed of that split.
    pub seed: u64,
}

/// Load (or take) the data, shape it to `spec`'s input, check it has as many
/// classes as the model has outputs, and hold out the validation set.
pub fn prepare(source: DataSource, spec: &ModelSpec, options: SplitOptions) -> Result<Splits> {
    let (mut train, mut val, mut test) = match source {
        DataSource::Mnist(dir) => (
            mnist_split(&dir, MnistSplit::Train, options.limit_train)?,
            None,
            mnist_split(&dir, MnistSplit::Test, options.limit_test)?,
        ),
        DataSource::Datasets { train, val, test } => (train, val, test),
    };
    if let Some(v) = &mut val {
        fit_samples(v, &spec.input, "validation")?;
    }
    fit_samples(&mut train, &spec.input, "training")?;
    fit_samples(&mut test, &spec.input, "test")?;
    check_classes(spec, &train)?;
    if val.is_none() && options.val_split > 0.0 {
        let (rest, held_out) = train.split(options.val_split as f32, options.seed)?;
        (train, val) = (rest, Some(held_out));
    }
    Ok(Splits { train, val, test })
}

/// The MNIST test set as `eval` sees it: normalized like the training data and shaped to `spec`'s input.
pub fn mnist_test_set(dir: &Path, limit: Option<usize>, spec: &ModelSpec) -> Result<Dataset> {
    let mut test = mnist_split(dir, MnistSplit::Test, limit)?;
    fit_samples(&mut test, &spec.input, "test")?;
    Ok(test)
}

fn mnist_split(dir: &Path, split: MnistSplit, limit: Option<usize>) -> Result<Dataset> {
    let mut ds = gradflow_data::mnist::load_split(dir, split, limit)?;
    ds.normalize(MNIST_MEAN, MNIST_STD);
    Ok(ds)
}

/// Fit MNIST-shaped samples to the model's input: `[1, 28, 28]` data feeds a `[784]` model too.
fn fit_samples(ds: &mut Dataset, input: &[usize], what: &str) -> Result<()> {
    if ds.sample_shape == input {
        return Ok(());
    }
    if ds.sample_len() == input.iter().product::<usize>() {
        ds.reshape_samples(input.to_vec())?;
        return Ok(());
    }
    Err(Error::Input(format!(
        "the model's input {input:?} does not fit the {what} samples of shape {:?}",
        ds.sample_shape
    )))
}

fn check_classes(spec: &ModelSpec, train: &Dataset) -> Result<()> {
    let out_shape = spec.output_shape().map_err(|e| Error::Model(format!("model: {e}")))?;
    if let gradflow_data::Targets::Values { width, .. } = train.targets {
        if out_shape != [width] {
            return Err(Error::Model(format!(
                "model: the last layer gives {out_shape:?} outputs per sample but the regression has {width} targets"
            )));
        }
        return Ok(());
    }
    let classes = train.num_classes().unwrap_or(0);
    if out_shape != [classes] {
        return Err(Error::Model(format!(
            "model: the last layer gives {out_shape:?} outputs per sample but the data has {classes} classes"
        )));
    }
    Ok(())
}
