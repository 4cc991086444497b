//! Losses, averaged over the batch (PyTorch's default `reduction="mean"`).

use gradflow::{Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// What a batch is compared against.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices, one per sample.
    Classes(&'a [usize]),
    /// A tensor of the output's shape (regression, or probabilities for BCE).
    Values(&'a Tensor),
}

/// A loss function.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy from logits, with label smoothing ε (0 for none). Fused: backward is `softmax − target`.
    CrossEntropy {
        /// ε in [0, 1].
        label_smoothing: f64,
    },
    /// Negative log-likelihood of log-probabilities (after a LogSoftmax).
    Nll,
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    L1,
    /// Binary cross-entropy from logits, computed as softplus(x) − x·y (stable for any x).
    BceWithLogits,
    /// Huber loss with threshold δ: quadratic below δ, linear above.
    Huber {
        /// δ > 0.
        delta: f64,
    },
}

/// One loss as a name chooses it (`--loss`), with PyTorch's class and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossInfo {
    /// The name written in flags.
    pub name: &'static str,
    /// Other names accepted for it.
    #[serde(skip)]
    pub aliases: &'static [&'static str],
    /// PyTorch's class name.
    pub torch_name: &'static str,
    /// The loss with PyTorch's default arguments.
    pub loss: Loss,
    /// One line on what it measures.
    pub description: &'static str,
}

/// Every loss, declared once.
const DECLARED: &[LossInfo] = &[
    LossInfo {
        name: "cross_entropy",
        aliases: &["ce", "crossentropy"],
        torch_name: "CrossEntropyLoss",
        loss: Loss::CrossEntropy { label_smoothing: 0.0 },
        description: "Softmax cross-entropy of logits against class indices",
    },
    LossInfo {
        name: "nll",
        aliases: &[],
        torch_name: "NLLLoss",
        loss: Loss::Nll,
        description: "Negative log-likelihood of log-probabilities against class indices",
    },
    LossInfo {
        name: "mse",
        aliases: &[],
        torch_name: "MSELoss",
        loss: Loss::Mse,
        description: "Mean squared error against real targets",
    },
    LossInfo {
        name: "l1",
        aliases: &["mae"],
        torch_name: "L1Loss",
        loss: Loss::L1,
        description: "Mean absolute error against real targets",
    },
    LossInfo {
        name: "bce",
        aliases: &["bce_with_logits"],
        torch_name: "BCEWithLogitsLoss",
        loss: Loss::BceWithLogits,
        description: "Binary cross-entropy of logits against probabilities",
    },
    LossInfo {
        name: "huber",
        aliases: &[],
        torch_name: "HuberLoss",
        loss: Loss::Huber { delta: 1.0 },
        description: "Quadratic below delta, linear above: MSE robust to outliers",
    },
];

impl Loss {
    /// Every loss, for lists (the CLI's help, the playground's menu).
    pub fn registry() -> &'static [LossInfo] {
        DECLARED
    }

    /// Parse a name from [`registry`](Self::registry) or one of its aliases
    /// (case-insensitive, `-` as `_`), with PyTorch's default arguments.
    pub fn parse(name: &str) -> crate::Result<Loss> {
        let name = name.to_ascii_lowercase().replace('-', "_");
        DECLARED
            .iter()
            .find(|d| d.name == name || d.aliases.contains(&name.as_str()))
            .map(|d| d.loss)
            .ok_or_else(|| crate::Error::UnknownName {
                what: "loss",
                name,
                expected: crate::error::one_of(&DECLARED.iter().map(|d| d.name).collect::<Vec<_>>()),
            })
    }

    /// True for losses that take class indices.
    pub fn wants_classes(&self) -> bool {
        matches!(self, Loss::CrossEntropy { .. } | Loss::Nll)
    }

    /// The mean loss of `output` against `target`.
    pub fn compute(&self, output: &Tensor, target: Target) -> Result<Tensor> {
        match (self, target) {
            (Loss::CrossEntropy { label_smoothing }, Target::Classes(t)) => output.cross_entropy(t, *label_smoothing),
            (Loss::Nll, Target::Classes(t)) => {
                let n = output.shape().first().copied().unwrap_or(0);
                Ok(output.gather(1, t, &[n, 1])?.mean_all().neg())
            }
            (Loss::Mse, Target::Values(y)) => Ok(output.sub(y)?.square().mean_all()),
            (Loss::L1, Target::Values(y)) => Ok(output.sub(y)?.abs().mean_all()),
            (Loss::BceWithLogits, Target::Values(y)) => Ok(output.softplus().sub(&output.mul(y)?)?.mean_all()),
            (Loss::Huber { delta }, Target::Values(y)) => {
                let a = output.sub(y)?.abs();
                let q = a.clamp(f64::NEG_INFINITY, *delta);
                Ok(q.square()
                    .mul_scalar(0.5)
                    .add(&a.sub(&q)?.mul_scalar(*delta))?
                    .mean_all())
            }
            (l, _) => Err(Error::Argument {
                op: "loss",
                msg: format!(
                    "{l:?} needs {} targets",
                    if l.wants_classes() {
                        "class-index"
                    } else {
                        "real-valued"
                    }
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f64>, s: &[usize]) -> Tensor {
        Tensor::from_vec(v, s).unwrap()
    }

    #[test]
    fn cross_entropy_by_hand() {
        // Uniform logits over 4 classes: loss = ln 4.
        let x = t(vec![0.0; 8], &[2, 4]);
        let l = Loss::CrossEntropy { label_smoothing: 0.0 }
            .compute(&x, Target::Classes(&[1, 3]))
            .unwrap();
        assert!((l.item().unwrap() - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn nll_matches_cross_entropy_after_log_softmax() {
        let x = t(vec![0.3, -1.0, 2.0, 0.5, 0.1, -0.2], &[2, 3]);
        let ce = Loss::CrossEntropy { label_smoothing: 0.0 }
            .compute(&x, Target::Classes(&[2, 0]))
            .unwrap();
        let nll = Loss::Nll
            .compute(&x.log_softmax(1).unwrap(), Target::Classes(&[2, 0]))
            .unwrap();
        assert!((ce.item().unwrap() - nll.item().unwrap()).abs() < 1e-12);
    }

    #[test]
    fn mse_bce_huber_by_hand() {
        let x = t(vec![1.0, 3.0], &[2]);
        let y = t(vec![0.0, 1.0], &[2]);
        assert_eq!(Loss::Mse.compute(&x, Target::Values(&y)).unwrap().item().unwrap(), 2.5);
        assert_eq!(Loss::L1.compute(&x, Target::Values(&y)).unwrap().item().unwrap(), 1.5);
        assert_eq!(Loss::parse("mae").unwrap(), Loss::L1);
        // Huber δ=1: |1| → 0.5, |2| → 1.5; mean 1.0.
        assert_eq!(
            Loss::Huber { delta: 1.0 }
                .compute(&x, Target::Values(&y))
                .unwrap()
                .item()
                .unwrap(),
            1.0
        );
        // BCE at logit 0 is ln 2 whatever the target.
        let z = t(vec![0.0, 0.0], &[2]);
        let b = Loss::BceWithLogits
            .compute(&z, Target::Values(&y))
            .unwrap()
            .item()
            .unwrap();
        assert!((b - 2f64.ln()).abs() < 1e-12);
        // Stable for huge logits.
        let big = t(vec![1e4, -1e4], &[2]);
        let b = Loss::BceWithLogits
            .compute(&big, Target::Values(&t(vec![1.0, 0.0], &[2])))
            .unwrap()
            .item()
            .unwrap();
        assert!(b.abs() < 1e-9);
    }

    #[test]
    fn l1_gradcheck() {
        let x = t(vec![0.3, -1.2, 2.0, 0.7], &[4]);
        let y = t(vec![0.0, 1.0, -1.0, 0.2], &[4]);
        gradflow::gradcheck(
            |v| Loss::L1.compute(&v[0], Target::Values(&y)),
            &[x],
            gradflow::GradcheckOptions::default(),
        )
        .unwrap();
    }

    #[test]
    fn wrong_target_kind_is_an_error() {
        let x = t(vec![0.0; 4], &[2, 2]);
        assert!(Loss::Mse.compute(&x, Target::Classes(&[0, 1])).is_err());
        assert!(Loss::parse("hinge")
            .unwrap_err()
            .to_string()
            .contains("unknown loss 'hinge'"));
    }
}
