//! Gradient-flow and overfitting diagnostics: what PyTorch and Keras leave a
//! user to discover alone. Every N steps, per layer: gradient and weight
//! norms, the update-to-weight ratio, activation statistics, saturated and
//! dead units, near-zero weights. Warnings carry their evidence and one
//! suggestion, and each kind is raised once per run.

use crate::metrics::EpochMetrics;
use gradflow::{GradStore, Tensor};
use gradflow_nn::layers::activation::Saturation;
use gradflow_nn::{Ctx, HiddenGradSlot, Module, Sequential};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Thresholds of the warnings.
const VANISHING_RATIO: f64 = 1e-3;
/// What to try when the gradient fades through time.
const THROUGH_TIME_FIX: &str =
    "use an LSTM or GRU (type = \"LSTM\"), clip gradients (--clip-norm 1.0), or train on shorter sequences";
/// ‖∂L/∂h‖ at a recurrence's first step over its last step's, below which
/// the early inputs no longer reach the loss.
const TIME_VANISHING_RATIO: f64 = 1e-3;
const EXPLODING_NORM: f64 = 1e3;
const DEAD_FRACTION: f64 = 0.5;
const SATURATED_FRACTION: f64 = 0.5;
const OVERFIT_PATIENCE: usize = 3;
const OVERFIT_GAP: f64 = 0.05;

/// What a warning is about; serializes to the snake_case names that run
/// directories have always held (`vanishing_gradients`, `dead_relu`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// The first weighted layer's gradient is far below the last one's.
    VanishingGradients,
    /// A recurrent layer's ‖∂L/∂h_t‖ at its first step is far below its last step's.
    VanishingGradientsThroughTime,
    /// A gradient norm is huge or not finite.
    ExplodingGradients,
    /// The loss became NaN or infinite.
    NonFiniteLoss,
    /// Most ReLU units output zero for a whole batch.
    DeadRelu,
    /// Most sigmoid/tanh outputs sit where the derivative is nearly 0.
    Saturation,
    /// Validation loss rises while training loss falls.
    Overfitting,
    /// Training accuracy is well above validation accuracy.
    GeneralizationGap,
}

impl WarningKind {
    /// The name written in run files.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::VanishingGradients => "vanishing_gradients",
            WarningKind::VanishingGradientsThroughTime => "vanishing_gradients_through_time",
            WarningKind::ExplodingGradients => "exploding_gradients",
            WarningKind::NonFiniteLoss => "non_finite_loss",
            WarningKind::DeadRelu => "dead_relu",
            WarningKind::Saturation => "saturation",
            WarningKind::Overfitting => "overfitting",
            WarningKind::GeneralizationGap => "generalization_gap",
        }
    }

    /// The name as words, for people (`vanishing gradients`).
    pub fn title(self) -> String {
        self.as_str().replace('_', " ")
    }
}

impl std::fmt::Display for WarningKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A diagnosis with its evidence and a suggestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// What kind of trouble.
    pub kind: WarningKind,
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
            kind: WarningKind::NonFiniteLoss,
            evidence: detail.into(),
            suggestion: "lower the learning rate or clip gradients (--clip-norm 1.0)".into(),
            step: None,
            epoch: 0,
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} — try: {}", self.kind.title(), self.evidence, self.suggestion)
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
    /// ‖∂L/∂h_t‖ at every time step, for each stacked layer and direction of a recurrent layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_grad_norms: Vec<HiddenGradSeries>,
}

/// The gradient reaching the hidden state of one direction of one stacked
/// layer, step by step: where it fades, backpropagation through time no
/// longer carries the loss back to the early inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HiddenGradSeries {
    /// PyTorch's suffix of its weights: `l0`, `l1_reverse`.
    pub name: String,
    /// Whether it runs from the last step back (its first step is then t = T−1).
    pub reverse: bool,
    /// ‖∂L/∂h_t‖ (the batch's mean loss, over the batch and hidden units), t = 0, 1, ….
    #[serde(deserialize_with = "nan_for_null")]
    pub norms: Vec<f64>,
}

/// serde_json writes a non-finite f64 as `null`; a diverged run's norms read back as NaN.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

impl HiddenGradSeries {
    /// The norms in processing order: the step the recurrence ran first comes first.
    pub fn processing_order(&self) -> Vec<f64> {
        let mut v = self.norms.clone();
        if self.reverse {
            v.reverse();
        }
        v
    }
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

/// Why `diagnostics.jsonl` could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    /// Creating or writing the file failed.
    #[error("{}: {error}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
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
        ctx: &Ctx,
        grads: &GradStore,
        before: &[Option<Vec<f64>>],
    ) -> Vec<Warning> {
        let layers: Vec<LayerStats> = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut s = LayerStats {
                    index: i,
                    kind: layer.kind().to_string(),
                    ..Default::default()
                };
                if let Some(t) = layer.penalty_targets().first() {
                    weight_stats(&mut s, &t.tensor, grads, before.get(i).and_then(Option::as_ref));
                }
                if let Some(out) = ctx.outputs.get(i) {
                    output_stats(&mut s, layer.as_ref(), out);
                }
                s.hidden_grad_norms = hidden_series(&ctx.hidden_grads, i);
                s
            })
            .collect();
        let mut raised = Vec::new();
        for w in step_warnings(&layers, step, epoch) {
            self.raise(w, &mut raised);
        }
        self.records.push(StepRecord { step, epoch, layers });
        raised
    }

    /// Epoch-level checks (overfitting); returns new warnings.
    pub fn epoch_end(&mut self, history: &[EpochMetrics]) -> Vec<Warning> {
        let mut raised = Vec::new();
        for w in epoch_warnings(history) {
            self.raise(w, &mut raised);
        }
        raised
    }

    /// Write `diagnostics.jsonl`.
    pub fn write(&self, dir: &Path) -> Result<(), DiagnosticsError> {
        let path = dir.join("diagnostics.jsonl");
        let fail = |error| DiagnosticsError::Write {
            path: path.clone(),
            error,
        };
        let mut f = std::fs::File::create(&path).map_err(fail)?;
        for r in &self.records {
            writeln!(f, "{}", serde_json::to_string(r).expect("serialize")).map_err(fail)?;
        }
        Ok(())
    }
}

/// The ‖∂L/∂h_t‖ series the backward pass left for layer `index`.
fn hidden_series(slots: &[HiddenGradSlot], index: usize) -> Vec<HiddenGradSeries> {
    slots
        .iter()
        .filter(|s| s.layer == index)
        .filter_map(|s| {
            Some(HiddenGradSeries {
                name: s.name.clone(),
                reverse: s.reverse,
                norms: s.norms.get()?,
            })
        })
        .collect()
}

/// Norms of a weight, its gradient and this step's update.
fn weight_stats(s: &mut LayerStats, weight: &Tensor, grads: &GradStore, before: Option<&Vec<f64>>) {
    let w = weight.to_vec_f64();
    s.weight_norm = Some(norm(&w));
    s.grad_norm = grads.get(weight).map(|g| norm(&g.to_vec_f64()));
    if let Some(b) = before {
        let d: Vec<f64> = w.iter().zip(b).map(|(a, b)| a - b).collect();
        s.update_ratio = Some(norm(&d) / norm(b).max(1e-12));
    }
    s.near_zero = Some(w.iter().filter(|x| x.abs() < 1e-3).count() as f64 / w.len().max(1) as f64);
}

/// Mean and spread of a layer's output, and its saturated or dead share by
/// the activation's declared rule.
fn output_stats(s: &mut LayerStats, layer: &dyn Module, out: &Tensor) {
    let v = out.to_vec_f64();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    s.act_mean = mean;
    s.act_std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    match layer.as_activation().map(|a| a.saturation()) {
        Some(Saturation::Saturates(flat)) => s.saturated = Some(v.iter().filter(|&&y| flat(y)).count() as f64 / n),
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

/// Every warning one step's statistics call for, in the order they are raised.
pub fn step_warnings(layers: &[LayerStats], step: u64, epoch: usize) -> Vec<Warning> {
    let at = |kind, evidence: String, suggestion: &str| Warning {
        kind,
        evidence,
        suggestion: suggestion.into(),
        step: Some(step),
        epoch,
    };
    let mut out: Vec<Warning> = vanishing(layers)
        .map(|e| {
            at(
                WarningKind::VanishingGradients,
                e,
                "use ReLU-family activations with He init (--activation relu --init he), or add BatchNorm",
            )
        })
        .into_iter()
        .collect();
    let through_time = vanishing_through_time(layers);
    out.extend(through_time.map(|e| at(WarningKind::VanishingGradientsThroughTime, e, THROUGH_TIME_FIX)));
    for l in layers {
        if let Some(g) = l.grad_norm.filter(|&g| !g.is_finite() || g > EXPLODING_NORM) {
            out.push(at(
                WarningKind::ExplodingGradients,
                format!(
                    "layer {} ({}) gradient norm {g:.2e} (threshold {EXPLODING_NORM:.0e})",
                    l.index, l.kind
                ),
                "lower the learning rate or clip gradients (--clip-norm 1.0)",
            ));
        }
        if let Some(d) = l.dead.filter(|&d| d > DEAD_FRACTION) {
            out.push(at(
                WarningKind::DeadRelu,
                format!(
                    "{:.0}% of layer {} (ReLU) units output zero for the whole batch",
                    d * 100.0,
                    l.index
                ),
                "lower the learning rate, or use LeakyReLU/ELU (--activation leaky_relu)",
            ));
        }
        if let Some(sat) = l.saturated.filter(|&s| s > SATURATED_FRACTION) {
            out.push(at(
                WarningKind::Saturation,
                format!(
                    "{:.0}% of layer {} ({}) outputs are saturated, where the derivative is nearly 0",
                    sat * 100.0,
                    l.index,
                    l.kind
                ),
                "use Xavier init (--init xavier) or a non-saturating activation (--activation relu)",
            ));
        }
    }
    out
}

/// The evidence of vanishing gradients: the first weighted layer's gradient
/// norm far below the last one's.
fn vanishing(layers: &[LayerStats]) -> Option<String> {
    let with_grad: Vec<&LayerStats> = layers.iter().filter(|l| l.grad_norm.is_some()).collect();
    let (first, last) = (with_grad.first()?, with_grad.last()?);
    let (a, b) = (first.grad_norm.unwrap_or(0.0), last.grad_norm.unwrap_or(0.0));
    (with_grad.len() > 1 && b > 0.0 && a / b < VANISHING_RATIO).then(|| {
        format!(
            "layer {} ({}) gradient norm {a:.2e} is {:.1e}× the last layer's {b:.2e}",
            first.index,
            first.kind,
            a / b
        )
    })
}

/// The evidence of vanishing gradients through time: in some direction of a
/// recurrent layer, ‖∂L/∂h‖ at the step the recurrence ran first is far below
/// its last step's, so the early inputs barely move the weights.
fn vanishing_through_time(layers: &[LayerStats]) -> Option<String> {
    layers.iter().find_map(|l| {
        l.hidden_grad_norms.iter().find_map(|s| {
            let steps = s.norms.len();
            let order = s.processing_order();
            let (&a, &b) = (order.first()?, order.last()?);
            let (t_first, t_last) = if s.reverse { (steps - 1, 0) } else { (0, steps - 1) };
            (steps > 1 && b > 0.0 && a / b < TIME_VANISHING_RATIO).then(|| {
                format!(
                    "layer {} ({}, {}) ‖∂L/∂h_t‖ at its first step (t={t_first}) {a:.2e} is {:.1e}× its last step's (t={t_last}) {b:.2e}, over {steps} steps",
                    l.index,
                    l.kind,
                    s.name,
                    a / b
                )
            })
        })
    })
}

/// Every warning the epoch history calls for: overfitting, then the accuracy gap.
pub fn epoch_warnings(history: &[EpochMetrics]) -> Vec<Warning> {
    let Some(last) = history.last() else { return Vec::new() };
    let at = |kind, evidence: String, suggestion: &str| Warning {
        kind,
        evidence,
        suggestion: suggestion.into(),
        step: None,
        epoch: last.epoch,
    };
    let mut out = Vec::new();
    if let Some(e) = overfitting(history) {
        out.push(at(
            WarningKind::Overfitting,
            e,
            "add regularization (--l2 1e-4, --dropout 0.3) or early stopping (--early-stopping 3)",
        ));
    }
    if let Some(va) = last.val_accuracy {
        let gap = last.train_accuracy - va;
        if gap > OVERFIT_GAP {
            out.push(at(
                WarningKind::GeneralizationGap,
                format!(
                    "training accuracy {:.2}% vs validation {:.2}% (gap {:.1} points)",
                    last.train_accuracy * 100.0,
                    va * 100.0,
                    gap * 100.0
                ),
                "add regularization (--l2, --dropout) or more data",
            ));
        }
    }
    out
}

/// The evidence of overfitting: validation loss rising for the last
/// [`OVERFIT_PATIENCE`] epochs while the training loss fell.
fn overfitting(history: &[EpochMetrics]) -> Option<String> {
    let p = OVERFIT_PATIENCE;
    let last = history.last()?;
    if history.len() <= p {
        return None;
    }
    let tail = &history[history.len() - p - 1..];
    let val_rising = tail
        .windows(2)
        .all(|w| matches!((w[0].val_loss, w[1].val_loss), (Some(a), Some(b)) if b > a));
    let train_falling = tail.windows(2).all(|w| w[1].train_data_loss < w[0].train_data_loss);
    let (a, b) = (tail[0].val_loss.unwrap_or(0.0), last.val_loss.unwrap_or(0.0));
    (val_rising && train_falling).then(|| {
        format!(
            "validation loss rose for {p} epochs ({a:.4} → {b:.4}) while training loss fell ({:.4} → {:.4})",
            tail[0].train_data_loss, last.train_data_loss
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weighted(index: usize, grad_norm: f64) -> LayerStats {
        LayerStats {
            index,
            kind: "Linear".into(),
            grad_norm: Some(grad_norm),
            weight_norm: Some(1.0),
            update_ratio: Some(1e-3),
            near_zero: Some(0.0),
            ..Default::default()
        }
    }

    fn activation(index: usize, kind: &str, saturated: Option<f64>, dead: Option<f64>) -> LayerStats {
        LayerStats {
            index,
            kind: kind.into(),
            saturated,
            dead,
            ..Default::default()
        }
    }

    fn kinds(ws: &[Warning]) -> Vec<WarningKind> {
        ws.iter().map(|w| w.kind).collect()
    }

    fn epoch(n: usize, train_data_loss: f64, val_loss: f64, train_accuracy: f64, val_accuracy: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: n,
            train_data_loss,
            val_loss: Some(val_loss),
            train_accuracy,
            val_accuracy: Some(val_accuracy),
            ..Default::default()
        }
    }

    #[test]
    fn healthy_steps_and_epochs_raise_nothing() {
        let layers = [
            weighted(1, 0.5),
            activation(2, "ReLU", None, Some(0.1)),
            weighted(3, 1.0),
        ];
        assert!(step_warnings(&layers, 0, 1).is_empty());
        let history: Vec<EpochMetrics> = (1..=5)
            .map(|n| epoch(n, 1.0 / n as f64, 1.0 / n as f64, 0.9, 0.88))
            .collect();
        assert!(epoch_warnings(&history).is_empty());
    }

    #[test]
    fn vanishing_gradients_compare_the_first_and_last_weighted_layers() {
        let layers = [
            weighted(1, 2e-4),
            activation(2, "Sigmoid", Some(0.1), None),
            weighted(3, 0.5),
        ];
        let ws = step_warnings(&layers, 7, 2);
        assert_eq!(kinds(&ws), [WarningKind::VanishingGradients]);
        assert_eq!(
            ws[0].evidence,
            "layer 1 (Linear) gradient norm 2.00e-4 is 4.0e-4× the last layer's 5.00e-1"
        );
        assert_eq!((ws[0].step, ws[0].epoch), (Some(7), 2));
        // One weighted layer has nothing to compare with.
        assert!(step_warnings(&[weighted(0, 1e-9)], 0, 1).is_empty());
    }

    fn recurrent(index: usize, series: &[(&str, bool, &[f64])]) -> LayerStats {
        LayerStats {
            index,
            kind: "RNN".into(),
            hidden_grad_norms: series
                .iter()
                .map(|&(name, reverse, norms)| HiddenGradSeries {
                    name: name.into(),
                    reverse,
                    norms: norms.to_vec(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn vanishing_gradients_through_time_compare_the_first_and_last_steps() {
        let fading = [2e-7, 1e-5, 3e-3, 0.4];
        let ws = step_warnings(&[recurrent(0, &[("l0", false, &fading)])], 5, 3);
        assert_eq!(kinds(&ws), [WarningKind::VanishingGradientsThroughTime]);
        assert_eq!(
            ws[0].evidence,
            "layer 0 (RNN, l0) ‖∂L/∂h_t‖ at its first step (t=0) 2.00e-7 is 5.0e-7× its last step's (t=3) 4.00e-1, over 4 steps"
        );
        assert!(ws[0].suggestion.contains("LSTM or GRU") && ws[0].suggestion.contains("--clip-norm"));
        assert!(ws[0].suggestion.contains("shorter sequences"));
        assert_eq!((ws[0].step, ws[0].epoch), (Some(5), 3));
        // A reverse direction runs from t = T−1, so the same numbers read backwards are healthy…
        assert!(step_warnings(&[recurrent(0, &[("l0_reverse", true, &fading)])], 5, 3).is_empty());
        // …and fade when its first step, t = 3, is the small one.
        let reversed = [0.4, 3e-3, 1e-5, 2e-7];
        let ws = step_warnings(
            &[recurrent(
                2,
                &[("l0", false, &[0.5, 0.6]), ("l0_reverse", true, &reversed)],
            )],
            1,
            1,
        );
        assert_eq!(kinds(&ws), [WarningKind::VanishingGradientsThroughTime]);
        assert!(ws[0]
            .evidence
            .starts_with("layer 2 (RNN, l0_reverse) ‖∂L/∂h_t‖ at its first step (t=3) 2.00e-7"));
    }

    #[test]
    fn gradients_through_time_that_survive_or_cannot_be_compared_raise_nothing() {
        // An LSTM-like series that keeps its gradient, and a loss read at every step.
        assert!(step_warnings(&[recurrent(0, &[("l0", false, &[0.02, 0.05, 0.1, 0.3])])], 1, 1).is_empty());
        // One step, or a last step with no gradient at all, has nothing to compare with.
        assert!(step_warnings(&[recurrent(0, &[("l0", false, &[1e-9])])], 1, 1).is_empty());
        assert!(step_warnings(&[recurrent(0, &[("l0", false, &[0.0, 0.0])])], 1, 1).is_empty());
    }

    #[test]
    fn exploding_and_non_finite_gradients() {
        let ws = step_warnings(&[weighted(2, 5e3)], 1, 1);
        assert_eq!(kinds(&ws), [WarningKind::ExplodingGradients]);
        assert_eq!(ws[0].evidence, "layer 2 (Linear) gradient norm 5.00e3 (threshold 1e3)");
        let ws = step_warnings(&[weighted(0, f64::NAN)], 1, 1);
        assert_eq!(kinds(&ws), [WarningKind::ExplodingGradients]);
        assert_eq!(ws[0].evidence, "layer 0 (Linear) gradient norm NaN (threshold 1e3)");
    }

    #[test]
    fn non_finite_loss_carries_its_detail() {
        let w = Warning::non_finite("loss NaN at epoch 1, step 4");
        assert_eq!(w.kind, WarningKind::NonFiniteLoss);
        assert_eq!(w.evidence, "loss NaN at epoch 1, step 4");
        assert_eq!(
            w.to_string(),
            "non finite loss: loss NaN at epoch 1, step 4 — try: lower the learning rate or clip gradients (--clip-norm 1.0)"
        );
    }

    #[test]
    fn dead_relu_units() {
        let ws = step_warnings(&[activation(3, "ReLU", None, Some(0.75))], 1, 1);
        assert_eq!(kinds(&ws), [WarningKind::DeadRelu]);
        assert_eq!(
            ws[0].evidence,
            "75% of layer 3 (ReLU) units output zero for the whole batch"
        );
        assert!(step_warnings(&[activation(3, "ReLU", None, Some(0.5))], 1, 1).is_empty());
    }

    #[test]
    fn saturated_units() {
        let ws = step_warnings(&[activation(2, "Tanh", Some(0.9), None)], 1, 1);
        assert_eq!(kinds(&ws), [WarningKind::Saturation]);
        assert_eq!(
            ws[0].evidence,
            "90% of layer 2 (Tanh) outputs are saturated, where the derivative is nearly 0"
        );
    }

    #[test]
    fn overfitting_needs_rising_validation_and_falling_training_loss() {
        let history = [
            epoch(1, 1.0, 0.50, 0.80, 0.78),
            epoch(2, 0.8, 0.55, 0.82, 0.79),
            epoch(3, 0.6, 0.60, 0.83, 0.79),
            epoch(4, 0.4, 0.70, 0.84, 0.80),
        ];
        let ws = epoch_warnings(&history);
        assert_eq!(kinds(&ws), [WarningKind::Overfitting]);
        assert_eq!(
            ws[0].evidence,
            "validation loss rose for 3 epochs (0.5000 → 0.7000) while training loss fell (1.0000 → 0.4000)"
        );
        assert_eq!((ws[0].step, ws[0].epoch), (None, 4));
        // Three epochs are not enough evidence.
        assert!(epoch_warnings(&history[1..]).is_empty());
    }

    #[test]
    fn accuracy_gap() {
        let ws = epoch_warnings(&[epoch(1, 0.1, 0.5, 0.99, 0.90)]);
        assert_eq!(kinds(&ws), [WarningKind::GeneralizationGap]);
        assert_eq!(
            ws[0].evidence,
            "training accuracy 99.00% vs validation 90.00% (gap 9.0 points)"
        );
    }

    #[test]
    fn each_kind_is_raised_once_per_run() {
        let model = Sequential::new();
        let mut d = DiagnosticsRecorder::new(&model, 1);
        let gap = [epoch(1, 0.1, 0.5, 0.99, 0.90)];
        assert_eq!(d.epoch_end(&gap).len(), 1);
        assert!(d.epoch_end(&gap).is_empty());
        assert_eq!(d.warnings.len(), 1);
    }

    /// A tanh RNN over 4 steps of 2 features, 3 units, its last step read by Linear 1.
    const TINY_RNN: &str = "input = [4, 2]\n[[layer]]\ntype = \"RNN\"\nhidden_size = 3\noutput = \"last\"\n\
                            [[layer]]\ntype = \"Linear\"\nout_features = 1\n";

    fn l2(t: &Tensor) -> f64 {
        norm(&t.to_vec_f64())
    }

    #[test]
    fn a_recurrent_layer_records_the_gradient_reaching_each_hidden_state() {
        use gradflow::DType;
        use gradflow_nn::{BuildOptions, Loss, ModelSpec, Target};
        let options = BuildOptions {
            dtype: DType::F64,
            ..Default::default()
        };
        let model = ModelSpec::parse(TINY_RNN, "tiny").unwrap().build(options).unwrap();
        let x = Tensor::rand_normal(&[2, 4, 2], 0.0, 1.0, DType::F64, &mut gradflow::seeded_rng(3));
        let y = Tensor::from_vec(vec![0.5, -1.0], &[2, 1]).unwrap();
        let mut ctx = Ctx::eval();
        ctx.record_outputs = true;
        let out = model.forward(&x, &mut ctx).unwrap();
        let grads = Loss::Mse.compute(&out, Target::Values(&y)).unwrap().backward().unwrap();
        let mut d = DiagnosticsRecorder::new(&model, 1);
        let before = d.weights_before(&model);
        d.record(0, 1, &model, &ctx, &grads, &before);
        let series = &d.records[0].layers[0].hidden_grad_norms;
        assert_eq!(
            (series.len(), series[0].name.as_str(), series[0].reverse),
            (1, "l0", false)
        );
        assert!(d.records[0].layers[1].hidden_grad_norms.is_empty());

        // The plain computation: the same RNN unrolled from generic ops, every h_t kept.
        let p = model.parameters();
        let w = |name: &str| {
            p.iter()
                .find(|q| q.name == name)
                .unwrap()
                .tensor
                .detach()
                .requires_grad_(true)
        };
        let (w_ih, w_hh, b_ih, b_hh) = (
            w("0.weight_ih_l0"),
            w("0.weight_hh_l0"),
            w("0.bias_ih_l0"),
            w("0.bias_hh_l0"),
        );
        let mut h = Tensor::zeros(&[2, 3], DType::F64);
        let mut states = Vec::new();
        for t in 0..4 {
            let x_t = x.narrow(1, t, 1).unwrap().squeeze(1).unwrap();
            let pre = x_t.linear(&w_ih, Some(&b_ih)).unwrap();
            h = pre.add(&h.linear(&w_hh, Some(&b_hh)).unwrap()).unwrap().tanh();
            states.push(h.clone());
        }
        let out = h.linear(&w("1.weight"), Some(&w("1.bias"))).unwrap();
        let plain = Loss::Mse.compute(&out, Target::Values(&y)).unwrap();
        let plain = plain.backward_retain_all().unwrap();
        for (t, h) in states.iter().enumerate() {
            let expected = l2(plain.get(h).unwrap());
            let got = series[0].norms[t];
            assert!((got - expected).abs() < 1e-12, "t={t}: {got} vs {expected}");
        }
        // The loss reads the last step only: the gradient shrinks on its way back.
        assert!(series[0].norms[0] < series[0].norms[3]);

        // A step the diagnostics do not sample leaves no slot and computes no norm.
        let mut ctx = Ctx::eval();
        model.forward(&x, &mut ctx).unwrap();
        assert!(ctx.hidden_grads.is_empty());
    }

    #[test]
    fn hidden_gradient_norms_travel_through_the_run_file() {
        let mut s = recurrent(1, &[("l0_reverse", true, &[0.5, f64::NAN])]);
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.contains("\"norms\":[0.5,null]"), "{line}");
        let back: LayerStats = serde_json::from_str(&line).unwrap();
        assert_eq!(back.hidden_grad_norms[0].name, "l0_reverse");
        assert!(back.hidden_grad_norms[0].norms[1].is_nan());
        // Layers without a recurrence write nothing new, and older files read back.
        s.hidden_grad_norms.clear();
        assert!(!serde_json::to_string(&s).unwrap().contains("hidden_grad_norms"));
        let old = r#"{"index":0,"kind":"Linear","grad_norm":1.0,"weight_norm":1.0,"update_ratio":null,
            "near_zero":0.0,"act_mean":0.0,"act_std":1.0,"saturated":null,"dead":null}"#;
        assert!(serde_json::from_str::<LayerStats>(old)
            .unwrap()
            .hidden_grad_norms
            .is_empty());
    }

    #[test]
    fn kinds_serialize_to_the_run_file_strings() {
        for (k, s) in [
            (WarningKind::VanishingGradients, "vanishing_gradients"),
            (
                WarningKind::VanishingGradientsThroughTime,
                "vanishing_gradients_through_time",
            ),
            (WarningKind::ExplodingGradients, "exploding_gradients"),
            (WarningKind::NonFiniteLoss, "non_finite_loss"),
            (WarningKind::DeadRelu, "dead_relu"),
            (WarningKind::Saturation, "saturation"),
            (WarningKind::Overfitting, "overfitting"),
            (WarningKind::GeneralizationGap, "generalization_gap"),
        ] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
            assert_eq!(k.as_str(), s);
            assert_eq!(serde_json::from_str::<WarningKind>(&format!("\"{s}\"")).unwrap(), k);
        }
    }
}
