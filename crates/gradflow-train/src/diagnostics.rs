//! Gradient-flow and overfitting diagnostics: what PyTorch and Keras leave a
//! user to discover alone. Every N steps, per layer: gradient and weight
//! norms, the update-to-weight ratio, activation statistics, saturated and
//! dead units, near-zero weights. Warnings carry their evidence and one
//! suggestion, and each kind is raised once per run.

use crate::metrics::EpochMetrics;
use gradflow::{GradStore, Tensor};
use gradflow_nn::layers::activation::Saturation;
use gradflow_nn::Sequential;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Thresholds of the warnings.
const VANISHING_RATIO: f64 = 1e-3;
const EXPLODING_NORM: f64 = 1e3;
const DEAD_FRACTION: f64 = 0.5;
const SATURATED_FRACTION: f64 = 0.5;
const OVERFIT_PATIENCE: usize = 3;
const OVERFIT_GAP: f64 = 0.05;

/// A diagnosis with its evidence and a suggestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// vanishing_gradients, exploding_gradients, non_finite_loss, dead_relu, saturation, overfitting.
    pub kind: String,
    /// What was seen, with numbers.
    pub evidence: String,
    /// One thing to try.
    pub suggestion: String,
    /// Global step when raised (None for epoch-level warnings).
    pub step: Option<u64>,
    /// Epoch when raised.
    pub epoch: usize,
}

impl Warning {
    /// The warning for a loss that became NaN or infinite.
    pub fn non_finite(detail: &str) -> Warning {
        Warning {
            kind: "non_finite_loss".into(),
            evidence: detail.into(),
            suggestion: "lower the learning rate or clip gradients (--clip-norm 1.0)".into(),
            step: None,
            epoch: 0,
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} — try: {}",
            self.kind.replace('_', " "),
            self.evidence,
            self.suggestion
        )
    }
}

/// One layer's statistics at one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Index in the Sequential.
    pub index: usize,
    /// Layer class.
    pub kind: String,
    /// L2 norm of the weight's gradient (layers with weights).
    pub grad_norm: Option<f64>,
    /// L2 norm of the weight.
    pub weight_norm: Option<f64>,
    /// ‖Δw‖ / ‖w‖ of this step's update (healthy is around 1e-3).
    pub update_ratio: Option<f64>,
    /// Fraction of weights with |w| < 1e-3.
    pub near_zero: Option<f64>,
    /// Mean of the layer's output.
    pub act_mean: f64,
    /// Standard deviation of the layer's output.
    pub act_std: f64,
    /// Fraction of saturated outputs, by the activation's declared rule ([`gradflow_nn::Activation::saturation`]).
    pub saturated: Option<f64>,
    /// Fraction of ReLU units that are zero for every sample of the batch.
    pub dead: Option<f64>,
}

/// One line of `diagnostics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// Global step.
    pub step: u64,
    /// Epoch (1-based).
    pub epoch: usize,
    /// Per-layer statistics.
    pub layers: Vec<LayerStats>,
}

/// Collects diagnostics during training.
pub struct DiagnosticsRecorder {
    every: usize,
    /// Every record so far.
    pub records: Vec<StepRecord>,
    /// Warnings raised so far (one per kind).
    pub warnings: Vec<Warning>,
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

impl DiagnosticsRecorder {
    /// Record every `every` steps (0 turns recording off; epoch-level warnings stay on).
    pub fn new(_model: &Sequential, every: usize) -> DiagnosticsRecorder {
        DiagnosticsRecorder {
            every,
            records: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Whether this step is recorded.
    pub fn due(&self, step: u64) -> bool {
        self.every > 0 && step.is_multiple_of(self.every as u64)
    }

    /// Copies of each layer's weight before the optimizer step, for the update ratio.
    pub fn weights_before(&self, model: &Sequential) -> Vec<Option<Vec<f64>>> {
        model
            .layers
            .iter()
            .map(|l| l.penalty_targets().first().map(|t| t.tensor.to_vec_f64()))
            .collect()
    }

    fn raise(&mut self, w: Warning, out: &mut Vec<Warning>) {
        if !self.warnings.iter().any(|x| x.kind == w.kind) {
            self.warnings.push(w.clone());
            out.push(w);
        }
    }

    /// Record one step; returns the warnings raised for the first time.
    pub fn record(
        &mut self,
        step: u64,
        epoch: usize,
        model: &Sequential,
        outputs: &[Tensor],
        grads: &GradStore,
        before: &[Option<Vec<f64>>],
    ) -> Vec<Warning> {
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, layer) in model.layers.iter().enumerate() {
            let mut s = LayerStats {
                index: i,
                kind: layer.kind().to_string(),
                ..Default::default()
            };
            if let Some(t) = layer.penalty_targets().first() {
                let w = t.tensor.to_vec_f64();
                let wn = norm(&w);
                s.weight_norm = Some(wn);
                s.grad_norm = grads.get(&t.tensor).map(|g| norm(&g.to_vec_f64()));
                if let Some(Some(b)) = before.get(i) {
                    let d: Vec<f64> = w.iter().zip(b).map(|(a, b)| a - b).collect();
                    s.update_ratio = Some(norm(&d) / norm(b).max(1e-12));
                }
                s.near_zero = Some(w.iter().filter(|x| x.abs() < 1e-3).count() as f64 / w.len().max(1) as f64);
            }
            if let Some(out) = outputs.get(i) {
                let v = out.to_vec_f64();
                let n = v.len().max(1) as f64;
                let mean = v.iter().sum::<f64>() / n;
                s.act_mean = mean;
                s.act_std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
                match layer.as_activation().map(|a| a.saturation()) {
                    Some(Saturation::Saturates(flat)) => {
                        s.saturated = Some(v.iter().filter(|&&y| flat(y)).count() as f64 / n)
                    }
                    Some(Saturation::Dies(flat)) => {
                        let batch = out.shape().first().copied().unwrap_or(1).max(1);
                        let units = v.len() / batch;
                        let dead = (0..units)
                            .filter(|&u| (0..batch).all(|b| flat(v[b * units + u])))
                            .count();
                        s.dead = Some(dead as f64 / units.max(1) as f64);
                    }
                    _ => {}
                }
            }
            layers.push(s);
        }
        let mut raised = Vec::new();
        let with_grad: Vec<&LayerStats> = layers.iter().filter(|l| l.grad_norm.is_some()).collect();
        if let (Some(first), Some(last)) = (with_grad.first(), with_grad.last()) {
            let (a, b) = (first.grad_norm.unwrap_or(0.0), last.grad_norm.unwrap_or(0.0));
            if with_grad.len() > 1 && b > 0.0 && a / b < VANISHING_RATIO {
                self.raise(
                    Warning {
                        kind: "vanishing_gradients".into(),
                        evidence: format!(
                            "layer {} ({}) gradient norm {a:.2e} is {:.1e}× the last layer's {b:.2e}",
                            first.index,
                            first.kind,
                            a / b
                        ),
                        suggestion:
                            "use ReLU-family activations with He init (--activation relu --init he), or add BatchNorm"
                                .into(),
                        step: Some(step),
                        epoch,
                    },
                    &mut raised,
                );
            }
        }
        for l in &layers {
            if let Some(g) = l.grad_norm {
                if !g.is_finite() || g > EXPLODING_NORM {
                    self.raise(
                        Warning {
                            kind: "exploding_gradients".into(),
                            evidence: format!(
                                "layer {} ({}) gradient norm {g:.2e} (threshold {EXPLODING_NORM:.0e})",
                                l.index, l.kind
                            ),
                            suggestion: "lower the learning rate or clip gradients (--clip-norm 1.0)".into(),
                            step: Some(step),
                            epoch,
                        },
                        &mut raised,
                    );
                }
            }
            if let Some(d) = l.dead.filter(|&d| d > DEAD_FRACTION) {
                self.raise(
                    Warning {
                        kind: "dead_relu".into(),
                        evidence: format!(
                            "{:.0}% of layer {} (ReLU) units output zero for the whole batch",
                            d * 100.0,
                            l.index
                        ),
                        suggestion: "lower the learning rate, or use LeakyReLU/ELU (--activation leaky_relu)".into(),
                        step: Some(step),
                        epoch,
                    },
                    &mut raised,
                );
            }
            if let Some(sat) = l.saturated.filter(|&s| s > SATURATED_FRACTION) {
                self.raise(
                    Warning {
                        kind: "saturation".into(),
                        evidence: format!(
                            "{:.0}% of layer {} ({}) outputs are saturated, where the derivative is nearly 0",
                            sat * 100.0,
                            l.index,
                            l.kind
                        ),
                        suggestion:
                            "use Xavier init (--init xavier) or a non-saturating activation (--activation relu)".into(),
                        step: Some(step),
                        epoch,
                    },
                    &mut raised,
                );
            }
        }
        self.records.push(StepRecord { step, epoch, layers });
        raised
    }

    /// Epoch-level checks (overfitting); returns new warnings.
    pub fn epoch_end(&mut self, history: &[EpochMetrics]) -> Vec<Warning> {
        let mut raised = Vec::new();
        let Some(last) = history.last() else { return raised };
        let p = OVERFIT_PATIENCE;
        if history.len() > p {
            let tail = &history[history.len() - p - 1..];
            let val_rising = tail
                .windows(2)
                .all(|w| matches!((w[0].val_loss, w[1].val_loss), (Some(a), Some(b)) if b > a));
            let train_falling = tail.windows(2).all(|w| w[1].train_data_loss < w[0].train_data_loss);
            if val_rising && train_falling {
                let (a, b) = (tail[0].val_loss.unwrap_or(0.0), last.val_loss.unwrap_or(0.0));
                self.raise(
                    Warning {
                        kind: "overfitting".into(),
                        evidence: format!("validation loss rose for {p} epochs ({a:.4} → {b:.4}) while training loss fell ({:.4} → {:.4})", tail[0].train_data_loss, last.train_data_loss),
                        suggestion: "add regularization (--l2 1e-4, --dropout 0.3) or early stopping (--early-stopping 3)".into(),
                        step: None,
                        epoch: last.epoch,
                    },
                    &mut raised,
                );
            }
        }
        if let Some(va) = last.val_accuracy {
            let gap = last.train_accuracy - va;
            if gap > OVERFIT_GAP {
                self.raise(
                    Warning {
                        kind: "generalization_gap".into(),
                        evidence: format!(
                            "training accuracy {:.2}% vs validation {:.2}% (gap {:.1} points)",
                            last.train_accuracy * 100.0,
                            va * 100.0,
                            gap * 100.0
                        ),
                        suggestion: "add regularization (--l2, --dropout) or more data".into(),
                        step: None,
                        epoch: last.epoch,
                    },
                    &mut raised,
                );
            }
        }
        raised
    }

    /// Write `diagnostics.jsonl`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let p = dir.join("diagnostics.jsonl");
        let mut f = std::fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        for r in &self.records {
            writeln!(f, "{}", serde_json::to_string(r).expect("serialize"))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(())
    }
}
