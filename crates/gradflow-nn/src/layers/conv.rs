//! 2-D convolution layer, weight `[out_channels, in_channels/groups, kh, kw]`.

use crate::init::{init_bias, init_weight, Init};
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use gradflow::ops::conv::conv_out_size;
use gradflow::{Conv2dParams, DType, Result, Tensor};
use rand::Rng;

/// A convolution over `[N, C, H, W]` inputs.
pub struct Conv2d {
    /// The kernels.
    pub weight: Tensor,
    /// One bias per output channel.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub params: Conv2dParams,
    /// Per-layer λ₁ override.
    pub l1: Option<f64>,
    /// Per-layer λ₂ override.
    pub l2: Option<f64>,
}

impl Conv2d {
    /// A layer initialized with `init`; the bias follows PyTorch's default.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        params: Conv2dParams,
        bias: bool,
        init: Init,
        gain: f64,
        dtype: DType,
        rng: &mut impl Rng,
    ) -> Conv2d {
        let shape = [out_channels, in_channels / params.groups.max(1), kernel.0, kernel.1];
        let weight = init_weight(&shape, init, gain, dtype, rng).requires_grad_(true);
        let bias = bias.then(|| {
            let b = if matches!(init, Init::PytorchDefault) {
                init_bias(out_channels, &shape, dtype, rng)
            } else {
                Tensor::zeros(&[out_channels], dtype)
            };
            b.requires_grad_(true)
        });
        Conv2d {
            weight,
            bias,
            params,
            l1: None,
            l2: None,
        }
    }
}

impl Module for Conv2d {
    fn kind(&self) -> &'static str {
        "Conv2d"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.params)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        let w = self.weight.shape();
        let cin = w[1] * self.params.groups;
        let [c, h, wd] = input else {
            return crate::error::bad_shape(format!("expects [channels, height, width] input, gets shape {input:?}"));
        };
        if *c != cin {
            return crate::error::bad_shape(format!("expects {cin} input channels, gets {c} (shape {input:?})"));
        }
        let p = &self.params;
        match (
            conv_out_size(*h, w[2], p.stride.0, p.padding.0, p.dilation.0),
            conv_out_size(*wd, w[3], p.stride.1, p.padding.1, p.dilation.1),
        ) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![w[0], oh, ow]),
            _ => crate::error::bad_shape(format!(
                "kernel {}x{} does not fit input {input:?} with padding {:?}",
                w[2], w[3], p.padding
            )),
        }
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        let mut v = vec![NamedTensor {
            name: "weight".into(),
            tensor: self.weight.clone(),
        }];
        if let Some(b) = &self.bias {
            v.push(NamedTensor {
                name: "bias".into(),
                tensor: b.clone(),
            });
        }
        v
    }
    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        vec![PenaltyTarget {
            name: "weight".into(),
            tensor: self.weight.clone(),
            l1: self.l1,
            l2: self.l2,
        }]
    }
    fn describe(&self) -> String {
        let w = self.weight.shape();
        format!(
            "Conv2d({} → {}, {}x{}, stride {:?}, padding {:?})",
            w[1] * self.params.groups,
            w[0],
            w[2],
            w[3],
            self.params.stride,
            self.params.padding
        )
    }
}
