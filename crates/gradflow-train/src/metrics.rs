//! What a run measures: per-epoch metrics (one JSON line each) and the
//! evaluation of a model on a labelled set.

use crate::collective::Collective;
use gradflow::{no_grad, Result, Tensor};
use gradflow_data::{Dataset, Targets};
use gradflow_nn::{Ctx, Loss, Module, Sequential, Target};
use serde::{Deserialize, Serialize};

/// One epoch's numbers, as written to `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training objective (data loss + penalty) over the epoch's steps.
    pub train_loss: f64,
    /// Mean data loss alone.
    pub train_data_loss: f64,
    /// Mean L1/L2 penalty alone.
    pub train_penalty: f64,
    /// Training accuracy, measured on the fly (dropout on) over the epoch.
    pub train_accuracy: f64,
    /// Validation loss (None without a validation set).
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Learning rate used during the epoch.
    pub lr: f64,
    /// Seconds in the training loop (no evaluation).
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// Fraction of Linear/Conv2d weights with |w| < 1e-3 at the epoch's end.
    pub weight_sparsity: f64,
    /// L2 norm of all Linear/Conv2d weights at the epoch's end.
    pub weight_norm: f64,
    /// Regression: training RMSE in the target's units, on the fly (dropout on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_rmse: Option<f64>,
    /// Regression: validation RMSE, MAE and R², in the target's units.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub val_regression: Option<ValRegression>,
}

/// Validation errors of a regression epoch, in the target's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ValRegression {
    /// Root mean squared error.
    pub val_rmse: f64,
    /// Mean absolute error.
    pub val_mae: f64,
    /// Coefficient of determination.
    pub val_r2: f64,
}

/// The running sums of an epoch in progress, saved in a checkpoint taken
/// mid-epoch so that a resumed run ends the epoch with the same metrics.
/// Checkpoints written before this type existed stored a map with these keys
/// (or an empty map at an epoch boundary); both read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpochSums {
    /// Sum of the objective over the steps so far.
    pub loss: f64,
    /// Sum of the data loss.
    pub data: f64,
    /// Sum of the penalty.
    pub pen: f64,
    /// Correctly classified training samples.
    pub correct: f64,
    /// Training samples seen.
    pub seen: f64,
    /// Seconds spent in the training loop.
    pub seconds: f64,
    /// Regression: sum of squared errors (standardized units) of the samples seen.
    pub sq_err: f64,
}

/// Result of evaluating a classifier on a labelled set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean data loss.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// Samples evaluated.
    pub samples: usize,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Regression errors (in the units of the dataset's targets), instead of accuracy.
    #[serde(default)]
    pub regression: Option<RegressionMetrics>,
}

/// How far a regression's predictions are from the targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// 1 − SSE / SST (1 is perfect, 0 is predicting the mean).
    pub r2: f64,
}

impl RegressionMetrics {
    /// The same errors for targets that were standardized by `scale` (R² does not change).
    pub fn scaled(self, scale: f64) -> RegressionMetrics {
        RegressionMetrics {
            rmse: self.rmse * scale,
            mae: self.mae * scale,
            r2: self.r2,
        }
    }
}

impl Evaluation {
    /// Accuracy of each true class.
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: usize = row.iter().sum();
                if n == 0 {
                    0.0
                } else {
                    row[i] as f64 / n as f64
                }
            })
            .collect()
    }
}

/// Build a batch tensor from a dataset slice (features already normalized).
pub fn batch_tensor(ds: &Dataset, indices: &[usize], dtype: gradflow::DType) -> Result<Tensor> {
    let len = ds.sample_len();
    let mut v = Vec::with_capacity(indices.len() * len);
    for &i in indices {
        v.extend_from_slice(&ds.features[i * len..(i + 1) * len]);
    }
    let mut shape = vec![indices.len()];
    shape.extend_from_slice(&ds.sample_shape);
    Ok(Tensor::from_vec(v, &shape)?.to_dtype(dtype))
}

/// Evaluate a classifier (or, with real-valued targets, a regression) in eval
/// mode (no dropout, running batch-norm statistics), without recording a graph.
pub fn evaluate(
    model: &Sequential,
    ds: &Dataset,
    loss: &Loss,
    batch_size: usize,
    dtype: gradflow::DType,
) -> Result<Evaluation> {
    let _g = no_grad();
    let (labels, num_classes) = match &ds.targets {
        Targets::Classes { labels, num_classes } => (labels, num_classes),
        Targets::Values { values, width } => {
            return evaluate_values(model, ds, values, *width, loss, batch_size, dtype)
        }
    };
    let mut ctx = Ctx::eval();
    let mut confusion = vec![vec![0usize; *num_classes]; *num_classes];
    let (mut total_loss, mut correct) = (0.0, 0usize);
    let idx: Vec<usize> = (0..ds.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let x = batch_tensor(ds, chunk, dtype)?;
        let out = model.forward(&x, &mut ctx)?;
        let y: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
        total_loss += loss.compute(&out, Target::Classes(&y))?.item()? * chunk.len() as f64;
        let pred = out.argmax(1)?;
        for (&p, &t) in pred.iter().zip(&y) {
            if p == t {
                correct += 1;
            }
            if t < *num_classes && p < *num_classes {
                confusion[t][p] += 1;
            }
        }
    }
    let n = ds.len().max(1) as f64;
    Ok(Evaluation {
        loss: total_loss / n,
        accuracy: correct as f64 / n,
        samples: ds.len(),
        confusion,
        regression: None,
    })
}

/// The model's outputs for the whole set, `[n, width]` flattened (eval mode, no graph).
pub fn predict_all(model: &Sequential, ds: &Dataset, batch_size: usize, dtype: gradflow::DType) -> Result<Vec<f64>> {
    let _g = no_grad();
    let mut ctx = Ctx::eval();
    let idx: Vec<usize> = (0..ds.len()).collect();
    let mut out = Vec::new();
    for chunk in idx.chunks(batch_size.max(1)) {
        let x = batch_tensor(ds, chunk, dtype)?;
        out.extend(
            model
                .forward(&x, &mut ctx)?
                .to_dtype(gradflow::DType::F64)
                .to_vec::<f64>()?,
        );
    }
    Ok(out)
}

/// RMSE, MAE and R² of predictions against targets.
pub fn regression_metrics(pred: &[f64], target: &[f32]) -> RegressionMetrics {
    let n = target.len().max(1) as f64;
    let mean = target.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
    let (mut sse, mut sae, mut sst) = (0.0, 0.0, 0.0);
    for (&p, &t) in pred.iter().zip(target) {
        let t = f64::from(t);
        sse += (p - t) * (p - t);
        sae += (p - t).abs();
        sst += (t - mean) * (t - mean);
    }
    RegressionMetrics {
        rmse: (sse / n).sqrt(),
        mae: sae / n,
        r2: if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
    }
}

fn evaluate_values(
    model: &Sequential,
    ds: &Dataset,
    values: &[f32],
    width: usize,
    loss: &Loss,
    batch_size: usize,
    dtype: gradflow::DType,
) -> Result<Evaluation> {
    let pred = predict_all(model, ds, batch_size, dtype)?;
    let n = ds.len();
    let out = Tensor::from_vec(pred.clone(), &[n, width])?;
    let y = Tensor::from_vec(values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), &[n, width])?;
    let l = if n == 0 {
        0.0
    } else {
        loss.compute(&out, Target::Values(&y))?.item()?
    };
    Ok(Evaluation {
        loss: l,
        accuracy: 0.0,
        samples: n,
        confusion: Vec::new(),
        regression: Some(regression_metrics(&pred, values)),
    })
}

/// The evaluation of a whole set from each process's evaluation `e` of its
/// part `mine`: losses, counts and confusion are summed over the processes;
/// a regression's errors are rebuilt from their sums (R² from Σt and Σt²).
pub fn all_reduce_evaluation(collective: &dyn Collective, e: Evaluation, mine: &Dataset) -> Evaluation {
    let n = e.samples as f64;
    let mut sums = vec![e.loss * n, e.accuracy * n, n];
    if let (Some(r), Targets::Values { values, .. }) = (e.regression, &mine.targets) {
        let m = values.len() as f64;
        let (t, t2) = values.iter().fold((0.0, 0.0), |(a, b), &v| {
            let v = f64::from(v);
            (a + v, b + v * v)
        });
        sums.extend([r.rmse * r.rmse * m, r.mae * m, t, t2, m]);
    }
    sums.extend(e.confusion.iter().flatten().map(|&c| c as f64));
    collective.sum_f64(&mut sums);
    let total = sums[2].max(1.0);
    let regression = e.regression.map(|_| {
        let [sse, sae, t, t2, m] = [sums[3], sums[4], sums[5], sums[6], sums[7].max(1.0)];
        let sst = t2 - t * t / m;
        RegressionMetrics {
            rmse: (sse / m).sqrt(),
            mae: sae / m,
            r2: if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
        }
    });
    let skip = if regression.is_some() { 8 } else { 3 };
    let width = e.confusion.len();
    Evaluation {
        loss: sums[0] / total,
        accuracy: sums[1] / total,
        samples: sums[2] as usize,
        confusion: sums[skip..]
            .chunks(width.max(1))
            .map(|row| row.iter().map(|&c| c as usize).collect())
            .collect(),
        regression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow_data::Dataset;

    #[test]
    fn epoch_metrics_keep_their_json_keys_and_write_non_finite_values_as_null() {
        let m = EpochMetrics {
            epoch: 3,
            train_loss: f64::NAN,
            train_data_loss: f64::INFINITY,
            train_penalty: 0.25,
            train_accuracy: 0.5,
            val_loss: Some(0.75),
            val_accuracy: None,
            lr: 0.001,
            seconds: 2.0,
            samples_per_second: 100.0,
            weight_sparsity: 0.0,
            weight_norm: 4.0,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"epoch":3,"train_loss":null,"train_data_loss":null,"train_penalty":0.25,"train_accuracy":0.5,"val_loss":0.75,"val_accuracy":null,"lr":0.001,"seconds":2.0,"samples_per_second":100.0,"weight_sparsity":0.0,"weight_norm":4.0}"#
        );
    }

    #[test]
    fn evaluation_counts_a_confusion_matrix() {
        // Identity "model": the logits are the features.
        let model = gradflow_nn::Sequential::new();
        let ds = Dataset::new(
            vec![2.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 2.0],
            vec![2],
            Targets::Classes {
                labels: vec![0, 1, 1, 1],
                num_classes: 2,
            },
        )
        .unwrap();
        let loss = Loss::CrossEntropy { label_smoothing: 0.0 };
        let e = evaluate(&model, &ds, &loss, 3, gradflow::DType::F64).unwrap();
        assert_eq!(e.confusion, vec![vec![1, 0], vec![1, 2]]);
        assert_eq!(e.accuracy, 0.75);
        assert_eq!(e.per_class_accuracy(), vec![1.0, 2.0 / 3.0]);
        assert_eq!(e.samples, 4);
        let whole = all_reduce_evaluation(&crate::collective::SingleProcess, e.clone(), &ds);
        assert_eq!((whole.loss, whole.accuracy, whole.samples), (e.loss, e.accuracy, 4));
        assert_eq!(whole.confusion, e.confusion);
    }

    #[test]
    fn a_regression_evaluation_is_rebuilt_from_its_sums() {
        let model = gradflow_nn::Sequential::new();
        let ds = Dataset::new(
            vec![0.5, 1.0, -2.0, 4.0, 0.0],
            vec![1],
            Targets::Values {
                values: vec![0.0, 1.5, -1.0, 3.0, 0.5],
                width: 1,
            },
        )
        .unwrap();
        let e = evaluate(&model, &ds, &Loss::Mse, 2, gradflow::DType::F64).unwrap();
        let whole = all_reduce_evaluation(&crate::collective::SingleProcess, e.clone(), &ds);
        let (r, w) = (e.regression.unwrap(), whole.regression.unwrap());
        for (a, b) in [(r.rmse, w.rmse), (r.mae, w.mae), (r.r2, w.r2), (e.loss, whole.loss)] {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}
