//! Batch normalization (Ioffe & Szegedy 2015), 1-D over `[N, C]` / `[N, C, L]`
//! and 2-D over `[N, C, H, W]`, with PyTorch's running statistics: biased
//! batch variance to normalize, unbiased to update `running_var`.

use crate::module::{Ctx, Module, NamedTensor};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{no_grad, DType, Result, Tensor};
use std::fmt::Write as _;

/// Normalizes each channel over the batch (and spatial positions).
pub struct BatchNorm {
    /// γ, one per channel.
    pub weight: Tensor,
    /// β, one per channel.
    pub bias: Tensor,
    /// Running mean used in eval mode.
    pub running_mean: Tensor,
    /// Running (unbiased) variance used in eval mode.
    pub running_var: Tensor,
    /// Batches seen in training (saved as int64 `num_batches_tracked`).
    pub num_batches_tracked: Tensor,
    /// Added to the variance for stability.
    pub eps: f64,
    /// Weight of the new batch in the running statistics.
    pub momentum: f64,
    /// True for BatchNorm2d.
    pub spatial: bool,
}

impl BatchNorm {
    /// `nn.BatchNorm1d(num_features)` over `[N, C]` or `[N, C, L]`: γ = 1, β = 0,
    /// running mean 0 and variance 1, PyTorch's eps 1e-5 and momentum 0.1, f32.
    pub fn new_1d(num_features: usize) -> BatchNorm {
        BatchNorm::fresh(num_features, false, DType::F32)
    }

    /// `nn.BatchNorm2d(num_features)` over `[N, C, H, W]`, with the same defaults.
    pub fn new_2d(num_features: usize) -> BatchNorm {
        BatchNorm::fresh(num_features, true, DType::F32)
    }

    fn fresh(num_features: usize, spatial: bool, dtype: DType) -> BatchNorm {
        BatchNorm {
            weight: Tensor::ones(&[num_features], dtype).requires_grad_(true),
            bias: Tensor::zeros(&[num_features], dtype).requires_grad_(true),
            running_mean: Tensor::zeros(&[num_features], dtype),
            running_var: Tensor::ones(&[num_features], dtype),
            num_batches_tracked: Tensor::zeros(&[], DType::F64),
            eps: 1e-5,
            momentum: 0.1,
            spatial,
        }
    }

    /// Added to the variance for stability (default 1e-5).
    pub fn eps(self, eps: f64) -> BatchNorm {
        BatchNorm { eps, ..self }
    }

    /// Weight of each new batch in the running statistics (default 0.1).
    pub fn momentum(self, momentum: f64) -> BatchNorm {
        BatchNorm { momentum, ..self }
    }

    /// A fresh layer of the same size in another element type (default f32).
    pub fn dtype(self, dtype: DType) -> BatchNorm {
        BatchNorm {
            eps: self.eps,
            momentum: self.momentum,
            ..BatchNorm::fresh(self.channels(), self.spatial, dtype)
        }
    }

    /// running ← (1 − momentum)·running + momentum·batch, with the variance
    /// unbiased as PyTorch does.
    fn update_running_stats(&self, axes: &[isize], shape: &[usize], mean: &Tensor, var: &Tensor) -> Result<()> {
        let _g = no_grad();
        let count: usize = axes.iter().map(|&a| shape[a as usize]).product();
        let unbias = count as f64 / (count.max(2) - 1) as f64;
        let m = self.momentum;
        let c = [self.channels()];
        let rm = self
            .running_mean
            .mul_scalar(1.0 - m)
            .add(&mean.reshape(&c)?.mul_scalar(m))?;
        let rv = self
            .running_var
            .mul_scalar(1.0 - m)
            .add(&var.reshape(&c)?.mul_scalar(m * unbias))?;
        self.running_mean.assign(&rm)?;
        self.running_var.assign(&rv)?;
        self.num_batches_tracked
            .assign(&self.num_batches_tracked.add_scalar(1.0))
    }

    fn channels(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for BatchNorm {
    fn kind(&self) -> &'static str {
        if self.spatial {
            "BatchNorm2d"
        } else {
            "BatchNorm1d"
        }
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let nd = x.ndim();
        let axes: Vec<isize> = std::iter::once(0).chain(2..nd as isize).collect();
        let mut bshape = vec![1usize; nd];
        bshape[1] = self.channels();
        let xhat = if ctx.training {
            // One fused op, its sums in f64: statistics of small or
            // ill-conditioned f32 batches as accurate as PyTorch's.
            let n = x.normalize(&axes, self.eps)?;
            self.update_running_stats(&axes, x.shape(), &n.mean, &n.var)?;
            n.xhat
        } else {
            let (mean, var) = (self.running_mean.reshape(&bshape)?, self.running_var.reshape(&bshape)?);
            x.sub(&mean)?.div(&var.add_scalar(self.eps).sqrt())?
        };
        xhat.mul(&self.weight.reshape(&bshape)?)?
            .add(&self.bias.reshape(&bshape)?)
    }

    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        let ok_rank = if self.spatial {
            input.len() == 3
        } else {
            input.len() == 1 || input.len() == 2
        };
        if !ok_rank {
            let want = if self.spatial { "[C, H, W]" } else { "[C] or [C, L]" };
            return crate::error::bad_shape(format!("expects {want} input, gets shape {input:?}"));
        }
        if input[0] != self.channels() {
            return crate::error::bad_shape(format!(
                "expects {} channels, gets {} (shape {input:?})",
                self.channels(),
                input[0]
            ));
        }
        Ok(input.to_vec())
    }

    fn parameters(&self) -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "weight".into(),
                tensor: self.weight.clone(),
            },
            NamedTensor {
                name: "bias".into(),
                tensor: self.bias.clone(),
            },
        ]
    }

    fn buffers(&self) -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "running_mean".into(),
                tensor: self.running_mean.clone(),
            },
            NamedTensor {
                name: "running_var".into(),
                tensor: self.running_var.clone(),
            },
            NamedTensor {
                name: "num_batches_tracked".into(),
                tensor: self.num_batches_tracked.clone(),
            },
        ]
    }

    fn describe(&self) -> String {
        format!("{}({})", self.kind(), self.channels())
    }
}

/// `nn.BatchNorm1d` or `nn.BatchNorm2d` in a model file: `num_features` is
/// inferred from the input's channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormSpec {
    /// True for BatchNorm2d.
    pub spatial: bool,
    /// ε.
    pub eps: f64,
    /// Running-statistics momentum.
    pub momentum: f64,
}

impl LayerDecl for BatchNormSpec {
    fn types() -> Vec<&'static str> {
        vec!["BatchNorm1d", "BatchNorm2d"]
    }
    fn description() -> &'static str {
        "normalizes each channel over the batch, with running statistics for evaluation"
    }
    fn read(ty: &str, k: &mut Keys<'_>) -> crate::Result<BatchNormSpec> {
        let eps = k.float("eps", 1e-5)?;
        let momentum = k.float("momentum", 0.1)?;
        if eps <= 0.0 || !(0.0..=1.0).contains(&momentum) {
            return k.err("'eps' must be positive and 'momentum' in [0, 1]");
        }
        Ok(BatchNormSpec {
            spatial: ty.eq_ignore_ascii_case("BatchNorm2d"),
            eps,
            momentum,
        })
    }
    fn kind(&self) -> &'static str {
        if self.spatial {
            "BatchNorm2d"
        } else {
            "BatchNorm1d"
        }
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(s, "eps = {:?}\nmomentum = {:?}", self.eps, self.momentum);
    }
    /// γ, β, the running mean and variance, and the step counter.
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        shape[0].checked_mul(4)?.checked_add(1)
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let layer = if self.spatial {
            BatchNorm::new_2d(shape[0])
        } else {
            BatchNorm::new_1d(shape[0])
        };
        Ok(Box::new(layer.eps(self.eps).momentum(self.momentum).dtype(cx.dtype())))
    }
}
