//! 2-D convolution layer, weight `[out_channels, in_channels/groups, kh, kw]`.

use crate::init::{init_bias, init_weight, Init};
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use crate::spec::keys::{pair_text, write_weight_keys};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::ops::conv::conv_out_size;
use gradflow::{Conv2dParams, DType, Result, Tensor};
use rand::Rng;
use std::fmt::Write as _;

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

/// A size PyTorch takes as an int or a pair (`kernel_size`, `stride`, …).
pub trait Size2d {
    /// (rows, cols).
    fn pair(self) -> (usize, usize);
}

impl Size2d for usize {
    fn pair(self) -> (usize, usize) {
        (self, self)
    }
}

impl Size2d for (usize, usize) {
    fn pair(self) -> (usize, usize) {
        self
    }
}

/// How to build a [`Conv2d`]: PyTorch's defaults (stride 1, no padding,
/// dilation 1, one group, a bias, PyTorch's own initializer, f32), changed by
/// the builder methods, then drawn with [`build`](Self::build).
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a config builds nothing until .build(&mut rng)"]
pub struct Conv2dConfig {
    in_channels: usize,
    out_channels: usize,
    kernel_size: (usize, usize),
    params: Conv2dParams,
    bias: bool,
    init: Init,
    gain: f64,
    dtype: DType,
}

impl Conv2dConfig {
    /// Step between windows (default 1).
    pub fn stride(mut self, stride: impl Size2d) -> Self {
        self.params.stride = stride.pair();
        self
    }
    /// Zeros added on each side (default 0).
    pub fn padding(mut self, padding: impl Size2d) -> Self {
        self.params.padding = padding.pair();
        self
    }
    /// Spacing of the kernel's taps (default 1).
    pub fn dilation(mut self, dilation: impl Size2d) -> Self {
        self.params.dilation = dilation.pair();
        self
    }
    /// Channel groups (default 1).
    pub fn groups(mut self, groups: usize) -> Self {
        self.params.groups = groups;
        self
    }
    /// Stride, padding, dilation and groups at once.
    pub fn params(self, params: Conv2dParams) -> Self {
        Conv2dConfig { params, ..self }
    }
    /// Whether to learn a bias (default true).
    pub fn bias(self, bias: bool) -> Self {
        Conv2dConfig { bias, ..self }
    }
    /// The weight initializer (default PyTorch's own); with any other, the bias starts at 0.
    pub fn init(self, init: Init) -> Self {
        Conv2dConfig { init, ..self }
    }
    /// The gain of the activation that follows, for initializers that use one (default 1).
    pub fn gain(self, gain: f64) -> Self {
        Conv2dConfig { gain, ..self }
    }
    /// The element type (default f32).
    pub fn dtype(self, dtype: DType) -> Self {
        Conv2dConfig { dtype, ..self }
    }
    /// Draw the kernels (then the bias) from `rng`.
    pub fn build(self, rng: &mut impl Rng) -> Conv2d {
        let (out_channels, (kh, kw)) = (self.out_channels, self.kernel_size);
        let shape = [out_channels, self.in_channels / self.params.groups.max(1), kh, kw];
        let weight = init_weight(&shape, self.init, self.gain, self.dtype, rng).requires_grad_(true);
        let bias = self.bias.then(|| {
            let b = if matches!(self.init, Init::PytorchDefault) {
                init_bias(out_channels, &shape, self.dtype, rng)
            } else {
                Tensor::zeros(&[out_channels], self.dtype)
            };
            b.requires_grad_(true)
        });
        Conv2d {
            weight,
            bias,
            params: self.params,
            l1: None,
            l2: None,
        }
    }
}

impl Conv2d {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)`: options by the config's
    /// builder methods, e.g. `Conv2d::new(1, 6, 5).padding(2).build(&mut rng)`.
    #[allow(clippy::new_ret_no_self)] // PyTorch's spelling; weights are drawn by `.build(&mut rng)`.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Size2d) -> Conv2dConfig {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: kernel_size.pair(),
            params: Conv2dParams::default(),
            bias: true,
            init: Init::PytorchDefault,
            gain: 1.0,
            dtype: DType::F32,
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

/// `nn.Conv2d` in a model file: `in_channels` is inferred from the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dSpec {
    /// Output channels.
    pub out_channels: usize,
    /// Kernel (rows, cols).
    pub kernel_size: (usize, usize),
    /// Stride, padding, dilation, groups.
    pub params: Conv2dParams,
    /// Whether to learn a bias.
    pub bias: bool,
    /// Per-layer λ₁.
    pub l1: Option<f64>,
    /// Per-layer λ₂.
    pub l2: Option<f64>,
    /// Per-layer initializer.
    pub init: Option<Init>,
}

impl LayerDecl for Conv2dSpec {
    fn types() -> Vec<&'static str> {
        vec!["Conv2d"]
    }
    fn description() -> &'static str {
        "2-d convolution over [channels, height, width] inputs"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<Conv2dSpec> {
        Ok(Conv2dSpec {
            out_channels: k.usize("out_channels", None)?,
            kernel_size: k.pair("kernel_size", None, false)?,
            params: Conv2dParams {
                stride: k.pair("stride", Some((1, 1)), false)?,
                padding: k.pair("padding", Some((0, 0)), true)?,
                dilation: k.pair("dilation", Some((1, 1)), false)?,
                groups: k.usize("groups", Some(1))?,
            },
            bias: k.bool("bias", true)?,
            l1: k.opt_float("l1")?,
            l2: k.opt_float("l2")?,
            init: k.init()?,
        })
    }
    fn kind(&self) -> &'static str {
        "Conv2d"
    }
    fn write(&self, s: &mut String) {
        let p = &self.params;
        let _ = writeln!(
            s,
            "out_channels = {}\nkernel_size = {}\nstride = {}\npadding = {}\ndilation = {}\ngroups = {}",
            self.out_channels,
            pair_text(self.kernel_size),
            pair_text(p.stride),
            pair_text(p.padding),
            pair_text(p.dilation),
            p.groups
        );
        write_weight_keys(s, self.bias, self.l1, self.l2, self.init);
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        let p = &self.params;
        vec![
            ("out_channels", self.out_channels),
            ("kernel_size", self.kernel_size.0),
            ("kernel_size", self.kernel_size.1),
            ("stride", p.stride.0),
            ("stride", p.stride.1),
            ("padding", p.padding.0),
            ("padding", p.padding.1),
            ("dilation", p.dilation.0),
            ("dilation", p.dilation.1),
            ("groups", p.groups),
        ]
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        let groups = self.params.groups;
        if shape.len() != 3 {
            return crate::error::bad_shape(format!("expects [channels, height, width] input, gets shape {shape:?}"));
        }
        if !shape[0].is_multiple_of(groups) || !self.out_channels.is_multiple_of(groups) {
            return crate::error::bad_shape(format!(
                "{} input and {} output channels are not divisible by groups = {groups}",
                shape[0], self.out_channels
            ));
        }
        Ok(())
    }
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        (shape[0] / self.params.groups.max(1))
            .checked_mul(self.out_channels)?
            .checked_mul(self.kernel_size.0)?
            .checked_mul(self.kernel_size.1)?
            .checked_add(if self.bias { self.out_channels } else { 0 })
    }
    fn gain_before(&self) -> Option<f64> {
        Some(1.0)
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let (init, gain) = cx.weight_init(self.init);
        let config = Conv2d::new(shape[0], self.out_channels, self.kernel_size).params(self.params);
        let mut conv = config
            .bias(self.bias)
            .init(init)
            .gain(gain)
            .dtype(cx.dtype())
            .build(cx.rng());
        (conv.l1, conv.l2) = (self.l1, self.l2);
        Ok(Box::new(conv))
    }
}
