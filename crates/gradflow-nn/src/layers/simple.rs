//! Layers without parameters: pooling, flatten, dropout.

use crate::layers::conv::Size2d;
use crate::module::{Ctx, Module};
use crate::spec::keys::pair_text;
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::ops::conv::conv_out_size;
use gradflow::{Pool2dParams, Result, Tensor};
use std::fmt::Write as _;

fn pooled(input: &[usize], p: &Pool2dParams) -> crate::Result<Vec<usize>> {
    let [c, h, w] = input else {
        return crate::error::bad_shape(format!("expects [channels, height, width] input, gets shape {input:?}"));
    };
    if 2 * p.padding.0 > p.kernel.0 || 2 * p.padding.1 > p.kernel.1 {
        return crate::error::bad_shape(format!(
            "padding {:?} must be at most half the kernel {:?}",
            p.padding, p.kernel
        ));
    }
    match (
        conv_out_size(*h, p.kernel.0, p.stride.0, p.padding.0, 1),
        conv_out_size(*w, p.kernel.1, p.stride.1, p.padding.1, 1),
    ) {
        (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![*c, oh, ow]),
        _ => crate::error::bad_shape(format!("window {:?} does not fit input {input:?}", p.kernel)),
    }
}

/// `Pool2dParams` for a window of `kernel_size`, with PyTorch's defaults
/// (stride = kernel_size, no padding).
fn window(kernel_size: impl Size2d) -> Pool2dParams {
    let kernel = kernel_size.pair();
    Pool2dParams {
        kernel,
        stride: kernel,
        padding: (0, 0),
    }
}

/// Max over windows.
pub struct MaxPool2d(pub Pool2dParams);

impl MaxPool2d {
    /// `nn.MaxPool2d(kernel_size)`: stride = kernel_size, no padding.
    pub fn new(kernel_size: impl Size2d) -> MaxPool2d {
        MaxPool2d(window(kernel_size))
    }
    /// Step between windows (default the kernel size).
    pub fn stride(mut self, stride: impl Size2d) -> MaxPool2d {
        self.0.stride = stride.pair();
        self
    }
    /// Implicit −∞ added on each side (default 0).
    pub fn padding(mut self, padding: impl Size2d) -> MaxPool2d {
        self.0.padding = padding.pair();
        self
    }
}

impl Module for MaxPool2d {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        x.max_pool2d(self.0)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        pooled(input, &self.0)
    }
    fn describe(&self) -> String {
        format!("MaxPool2d({:?}, stride {:?})", self.0.kernel, self.0.stride)
    }
}

/// Mean over windows.
pub struct AvgPool2d(pub Pool2dParams);

impl AvgPool2d {
    /// `nn.AvgPool2d(kernel_size)`: stride = kernel_size, no padding.
    pub fn new(kernel_size: impl Size2d) -> AvgPool2d {
        AvgPool2d(window(kernel_size))
    }
    /// Step between windows (default the kernel size).
    pub fn stride(mut self, stride: impl Size2d) -> AvgPool2d {
        self.0.stride = stride.pair();
        self
    }
    /// Zeros added on each side (default 0).
    pub fn padding(mut self, padding: impl Size2d) -> AvgPool2d {
        self.0.padding = padding.pair();
        self
    }
}

impl Module for AvgPool2d {
    fn kind(&self) -> &'static str {
        "AvgPool2d"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        x.avg_pool2d(self.0)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        pooled(input, &self.0)
    }
    fn describe(&self) -> String {
        format!("AvgPool2d({:?}, stride {:?})", self.0.kernel, self.0.stride)
    }
}

/// Flatten every dimension after the batch into one (PyTorch's `nn.Flatten()` defaults).
pub struct Flatten;

impl Module for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        if x.ndim() <= 2 {
            return Ok(x.clone());
        }
        x.flatten(1, -1)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        Ok(vec![input.iter().product()])
    }
}

/// Inverted dropout with probability `p`; identity in eval mode.
pub struct Dropout(pub f64);

impl Dropout {
    /// `nn.Dropout(p)`.
    pub fn new(p: f64) -> Dropout {
        Dropout(p)
    }
}

impl Default for Dropout {
    /// PyTorch's p = 0.5.
    fn default() -> Dropout {
        Dropout(0.5)
    }
}

impl Module for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        x.dropout(self.0, ctx.training, &mut ctx.rng)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn describe(&self) -> String {
        format!("Dropout(p={})", self.0)
    }
}

/// `nn.MaxPool2d(kernel_size, stride, padding)` in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxPool2dSpec(pub Pool2dParams);

/// `nn.AvgPool2d(kernel_size, stride, padding)` in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvgPool2dSpec(pub Pool2dParams);

/// The pooling keys, with PyTorch's defaults (stride = kernel_size, no padding).
fn read_pool(k: &mut Keys<'_>) -> crate::Result<Pool2dParams> {
    let kernel = k.pair("kernel_size", None, false)?;
    let stride = k.pair("stride", Some(kernel), false)?;
    let padding = k.pair("padding", Some((0, 0)), true)?;
    Ok(Pool2dParams {
        kernel,
        stride,
        padding,
    })
}

fn write_pool(s: &mut String, p: &Pool2dParams) {
    let _ = writeln!(
        s,
        "kernel_size = {}\nstride = {}\npadding = {}",
        pair_text(p.kernel),
        pair_text(p.stride),
        pair_text(p.padding)
    );
}

fn pool_sizes(p: &Pool2dParams) -> Vec<(&'static str, usize)> {
    vec![
        ("kernel_size", p.kernel.0),
        ("kernel_size", p.kernel.1),
        ("stride", p.stride.0),
        ("stride", p.stride.1),
        ("padding", p.padding.0),
        ("padding", p.padding.1),
    ]
}

impl LayerDecl for MaxPool2dSpec {
    fn types() -> Vec<&'static str> {
        vec!["MaxPool2d"]
    }
    fn description() -> &'static str {
        "the maximum over each window"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<MaxPool2dSpec> {
        read_pool(k).map(MaxPool2dSpec)
    }
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }
    fn write(&self, s: &mut String) {
        write_pool(s, &self.0);
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        pool_sizes(&self.0)
    }
    fn build(&self, _shape: &[usize], _cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        Ok(Box::new(MaxPool2d(self.0)))
    }
}

impl LayerDecl for AvgPool2dSpec {
    fn types() -> Vec<&'static str> {
        vec!["AvgPool2d"]
    }
    fn description() -> &'static str {
        "the mean over each window"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<AvgPool2dSpec> {
        read_pool(k).map(AvgPool2dSpec)
    }
    fn kind(&self) -> &'static str {
        "AvgPool2d"
    }
    fn write(&self, s: &mut String) {
        write_pool(s, &self.0);
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        pool_sizes(&self.0)
    }
    fn build(&self, _shape: &[usize], _cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        Ok(Box::new(AvgPool2d(self.0)))
    }
}

/// `nn.Flatten()` in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlattenSpec;

impl LayerDecl for FlattenSpec {
    fn types() -> Vec<&'static str> {
        vec!["Flatten"]
    }
    fn description() -> &'static str {
        "every dimension of a sample into one"
    }
    fn read(_ty: &str, _k: &mut Keys<'_>) -> crate::Result<FlattenSpec> {
        Ok(FlattenSpec)
    }
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn write(&self, _s: &mut String) {}
    fn build(&self, _shape: &[usize], _cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        Ok(Box::new(Flatten))
    }
}

/// `nn.Dropout(p)` in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutSpec {
    /// The probability of zeroing a value in training.
    pub p: f64,
}

impl LayerDecl for DropoutSpec {
    fn types() -> Vec<&'static str> {
        vec!["Dropout"]
    }
    fn description() -> &'static str {
        "zeroes values with probability p in training (inverted dropout)"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<DropoutSpec> {
        let p = k.float("p", 0.5)?;
        if !(0.0..1.0).contains(&p) {
            return k.err(format!("'p' must be in [0, 1), got {p}"));
        }
        Ok(DropoutSpec { p })
    }
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(s, "p = {:?}", self.p);
    }
    fn build(&self, _shape: &[usize], _cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        Ok(Box::new(Dropout(self.p)))
    }
}
