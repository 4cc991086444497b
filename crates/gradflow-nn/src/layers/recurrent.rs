//! Recurrent layers: `nn.RNN`, `nn.LSTM` and `nn.GRU` with `batch_first=True`
//! and PyTorch's parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`, ...)
//! and gate orders. Each direction of each layer is one input GEMM over all
//! steps followed by the [`Tensor::recurrence`] op.

use crate::module::{Ctx, HiddenGradSlot, Module, NamedTensor};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{Cell, DType, HiddenGradNorms, Result, Tensor};
use rand::Rng;
use std::fmt::Write as _;

/// What a recurrent layer hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentOutput {
    /// Every step's hidden state, `[N, T, H·dirs]` (PyTorch's `output`).
    Sequence,
    /// The last step of each direction, `[N, H·dirs]` (PyTorch's `h_n` of the top layer).
    Last,
}

impl RecurrentOutput {
    /// The name a model file uses.
    pub fn name(self) -> &'static str {
        match self {
            RecurrentOutput::Sequence => "sequence",
            RecurrentOutput::Last => "last",
        }
    }
}

/// The constructor arguments of a recurrent layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentConfig {
    /// The cell (RNN tanh/relu, LSTM, GRU).
    pub cell: Cell,
    /// Features per step.
    pub input_size: usize,
    /// Hidden units per direction.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Whether to learn the biases.
    pub bias: bool,
    /// Whether a second direction runs from the last step back.
    pub bidirectional: bool,
    /// Dropout on the outputs of every layer but the last (training only).
    pub dropout: f64,
    /// What the layer hands on.
    pub output: RecurrentOutput,
}

/// One direction of one layer's weights.
struct Direction {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
}

/// A recurrent layer (RNN, LSTM or GRU).
pub struct Recurrent {
    config: RecurrentConfig,
    /// Layer-major, then direction.
    weights: Vec<Direction>,
}

impl RecurrentConfig {
    fn dirs(&self) -> usize {
        1 + usize::from(self.bidirectional)
    }
    /// Draw every weight from U(−1/√H, 1/√H) as PyTorch does, in its parameter order.
    pub fn build(self, dtype: DType, rng: &mut impl Rng) -> Recurrent {
        let k = 1.0 / (self.hidden_size as f64).sqrt();
        let gh = self.cell.gates() * self.hidden_size;
        let mut draw = |shape: &[usize]| Tensor::rand_uniform(shape, -k, k, dtype, rng).requires_grad_(true);
        let mut weights = Vec::new();
        for layer in 0..self.num_layers {
            let input = if layer == 0 {
                self.input_size
            } else {
                self.hidden_size * self.dirs()
            };
            for _ in 0..self.dirs() {
                let (w_ih, w_hh) = (draw(&[gh, input]), draw(&[gh, self.hidden_size]));
                let (b_ih, b_hh) = if self.bias {
                    (Some(draw(&[gh])), Some(draw(&[gh])))
                } else {
                    (None, None)
                };
                weights.push(Direction { w_ih, w_hh, b_ih, b_hh });
            }
        }
        Recurrent { config: self, weights }
    }
}

impl Recurrent {
    /// The layer's constructor arguments.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// PyTorch's suffix of the `i`-th direction's weights (`l0`, `l1_reverse`).
    fn suffix(&self, i: usize) -> String {
        let dirs = self.config.dirs();
        format!("l{}{}", i / dirs, if i % dirs == 1 { "_reverse" } else { "" })
    }

    /// The `i`-th direction over `x`; while the diagnostics record, it leaves
    /// a slot for its ‖∂L/∂h_t‖ in `ctx`.
    fn run_direction(&self, x: &Tensor, i: usize, ctx: &mut Ctx) -> Result<Tensor> {
        let (d, reverse) = (&self.weights[i], i % self.config.dirs() == 1);
        let (n, t, f) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let xw = x.reshape(&[n * t, f])?.linear(&d.w_ih, d.b_ih.as_ref())?;
        let xw = xw.reshape(&[n, t, d.w_hh.shape()[0]])?;
        let norms = ctx.record_outputs.then(|| {
            let norms = HiddenGradNorms::default();
            ctx.hidden_grads.push(HiddenGradSlot {
                layer: ctx.outputs.len(),
                name: self.suffix(i),
                reverse,
                norms: norms.clone(),
            });
            norms
        });
        xw.recurrence_observed(&d.w_hh, d.b_hh.as_ref(), self.config.cell, reverse, norms.as_ref())
    }

    /// The last step of each direction of the top layer's output `y` `[N, T, H·dirs]`.
    fn last(&self, y: &Tensor) -> Result<Tensor> {
        let (t, h) = (y.shape()[1], self.config.hidden_size);
        let fwd = y.narrow(1, t - 1, 1)?.squeeze(1)?.narrow(1, 0, h)?;
        if !self.config.bidirectional {
            return Ok(fwd);
        }
        let bwd = y.narrow(1, 0, 1)?.squeeze(1)?.narrow(1, h, h)?;
        Tensor::cat(&[&fwd, &bwd], 1)
    }
}

impl Module for Recurrent {
    fn kind(&self) -> &'static str {
        match self.config.cell {
            Cell::RnnTanh | Cell::RnnRelu => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let c = &self.config;
        let mut y = x.clone();
        for layer in 0..c.num_layers {
            if layer > 0 && c.dropout > 0.0 {
                y = y.dropout(c.dropout, ctx.training, &mut ctx.rng)?;
            }
            let outs = (layer * c.dirs()..(layer + 1) * c.dirs())
                .map(|i| self.run_direction(&y, i, ctx))
                .collect::<Result<Vec<_>>>()?;
            y = if outs.len() == 1 {
                outs[0].clone()
            } else {
                Tensor::cat(&[&outs[0], &outs[1]], 2)?
            };
        }
        match c.output {
            RecurrentOutput::Sequence => Ok(y),
            RecurrentOutput::Last => self.last(&y),
        }
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        let c = &self.config;
        let width = c.hidden_size * c.dirs();
        match input {
            [t, f] if *f == c.input_size => Ok(match c.output {
                RecurrentOutput::Sequence => vec![*t, width],
                RecurrentOutput::Last => vec![width],
            }),
            [_, f] => crate::error::bad_shape(format!("expects {} features per step, gets {f}", c.input_size)),
            _ => crate::error::bad_shape(format!(
                "expects a sequence [steps, {}], gets shape {input:?} (declare input = [T, F])",
                c.input_size
            )),
        }
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        let mut v = Vec::new();
        for (i, d) in self.weights.iter().enumerate() {
            let suffix = self.suffix(i);
            let mut push = |name: &str, t: &Tensor| {
                v.push(NamedTensor {
                    name: format!("{name}_{suffix}"),
                    tensor: t.clone(),
                })
            };
            push("weight_ih", &d.w_ih);
            push("weight_hh", &d.w_hh);
            d.b_ih.iter().for_each(|b| push("bias_ih", b));
            d.b_hh.iter().for_each(|b| push("bias_hh", b));
        }
        v
    }
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{}({} → {}, layers {}{}{}, {})",
            self.kind(),
            c.input_size,
            c.hidden_size,
            c.num_layers,
            if c.bidirectional { ", bidirectional" } else { "" },
            if c.bias { "" } else { ", no bias" },
            c.output.name()
        )
    }
}

/// `nn.RNN`, `nn.LSTM` or `nn.GRU` in a model file: the input size is inferred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentSpec {
    /// The cell: RNN (tanh or relu), LSTM or GRU.
    pub cell: Cell,
    /// Hidden units per direction.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Whether to learn biases.
    pub bias: bool,
    /// Whether to add a reverse direction.
    pub bidirectional: bool,
    /// Dropout between layers.
    pub dropout: f64,
    /// `sequence` or `last`.
    pub output: RecurrentOutput,
}

impl RecurrentSpec {
    /// The layer's constructor arguments on `input_size` features per step.
    pub fn config(&self, input_size: usize) -> RecurrentConfig {
        RecurrentConfig {
            cell: self.cell,
            input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bias: self.bias,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
            output: self.output,
        }
    }
}

/// The cell a `type` names; an RNN's comes from its `nonlinearity` key.
fn read_cell(ty: &str, k: &mut Keys<'_>) -> crate::Result<Cell> {
    if ty.eq_ignore_ascii_case("LSTM") {
        return Ok(Cell::Lstm);
    }
    if ty.eq_ignore_ascii_case("GRU") {
        return Ok(Cell::Gru);
    }
    match k.get("nonlinearity") {
        None => Ok(Cell::RnnTanh),
        Some(toml::Value::String(s)) if s == "tanh" => Ok(Cell::RnnTanh),
        Some(toml::Value::String(s)) if s == "relu" => Ok(Cell::RnnRelu),
        Some(v) => k.err(format!("'nonlinearity' must be \"tanh\" or \"relu\", got {v}")),
    }
}

fn read_output(k: &mut Keys<'_>) -> crate::Result<RecurrentOutput> {
    match k.get("output") {
        None => Ok(RecurrentOutput::Sequence),
        Some(toml::Value::String(s)) if s == "sequence" => Ok(RecurrentOutput::Sequence),
        Some(toml::Value::String(s)) if s == "last" => Ok(RecurrentOutput::Last),
        Some(v) => k.err(format!("'output' must be \"sequence\" or \"last\", got {v}")),
    }
}

impl LayerDecl for RecurrentSpec {
    fn types() -> Vec<&'static str> {
        vec!["RNN", "LSTM", "GRU"]
    }
    fn description() -> &'static str {
        "recurrent layers over [steps, features] sequences (batch_first)"
    }
    fn read(ty: &str, k: &mut Keys<'_>) -> crate::Result<RecurrentSpec> {
        let cell = read_cell(ty, k)?;
        let output = read_output(k)?;
        let spec = RecurrentSpec {
            cell,
            hidden_size: k.usize("hidden_size", None)?,
            num_layers: k.usize("num_layers", Some(1))?,
            bias: k.bool("bias", true)?,
            bidirectional: k.bool("bidirectional", false)?,
            dropout: k.float("dropout", 0.0)?,
            output,
        };
        if !(0.0..1.0).contains(&spec.dropout) {
            return k.err(format!("'dropout' must be in [0, 1), got {}", spec.dropout));
        }
        Ok(spec)
    }
    fn kind(&self) -> &'static str {
        match self.cell {
            Cell::RnnTanh | Cell::RnnRelu => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
    fn write(&self, s: &mut String) {
        if self.cell == Cell::RnnRelu {
            s.push_str("nonlinearity = \"relu\"\n");
        }
        let _ = writeln!(
            s,
            "hidden_size = {}\nnum_layers = {}\nbias = {}\nbidirectional = {}\ndropout = {:?}\noutput = \"{}\"",
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.bidirectional,
            self.dropout,
            self.output.name()
        );
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("hidden_size", self.hidden_size), ("num_layers", self.num_layers)]
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        if shape.len() != 2 {
            return crate::error::bad_shape(format!(
                "expects a sequence [steps, features], gets shape {shape:?} (declare input = [T, F])"
            ));
        }
        Ok(())
    }
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        let (h, dirs, input_size) = (self.hidden_size, 1 + usize::from(self.bidirectional), shape[1]);
        let biases = if self.bias { 2 } else { 0 };
        let gh = self.cell.gates().checked_mul(h)?;
        let first = gh.checked_mul(input_size.checked_add(h)?.checked_add(biases)?)?;
        let upper = gh.checked_mul(h.checked_mul(dirs + 1)?.checked_add(biases)?)?;
        first
            .checked_add(upper.checked_mul(self.num_layers - 1)?)?
            .checked_mul(dirs)
    }
    fn gain_before(&self) -> Option<f64> {
        Some(1.0)
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let dtype = cx.dtype();
        Ok(Box::new(self.config(shape[1]).build(dtype, cx.rng())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow::{gradcheck, GradcheckOptions};

    fn config(cell: Cell, output: RecurrentOutput) -> RecurrentConfig {
        RecurrentConfig {
            cell,
            input_size: 2,
            hidden_size: 2,
            num_layers: 2,
            bias: true,
            bidirectional: true,
            dropout: 0.0,
            output,
        }
    }

    /// The layer with its weights replaced by `w` (in parameter order).
    fn with_weights(c: RecurrentConfig, w: &[Tensor]) -> Recurrent {
        let weights = w
            .chunks(4)
            .map(|d| Direction {
                w_ih: d[0].clone(),
                w_hh: d[1].clone(),
                b_ih: Some(d[2].clone()),
                b_hh: Some(d[3].clone()),
            })
            .collect();
        Recurrent { config: c, weights }
    }

    #[test]
    fn whole_layer_gradchecks_two_layers_both_directions() {
        for cell in [Cell::RnnTanh, Cell::RnnRelu, Cell::Lstm, Cell::Gru] {
            for output in [RecurrentOutput::Sequence, RecurrentOutput::Last] {
                let c = config(cell, output);
                let layer = c.build(DType::F64, &mut gradflow::seeded_rng(1));
                let mut inputs = vec![Tensor::rand_normal(
                    &[2, 3, 2],
                    0.0,
                    1.0,
                    DType::F64,
                    &mut gradflow::seeded_rng(2),
                )];
                inputs.extend(layer.parameters().into_iter().map(|p| p.tensor.detach()));
                let f = |v: &[Tensor]| with_weights(c, &v[1..]).forward(&v[0], &mut Ctx::eval());
                if let Err(e) = gradcheck(f, &inputs, GradcheckOptions::default()) {
                    panic!("{cell:?} {output:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn names_shapes_and_output_shapes_follow_pytorch() {
        let layer = config(Cell::Lstm, RecurrentOutput::Last).build(DType::F32, &mut gradflow::seeded_rng(0));
        let names: Vec<String> = layer.parameters().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names[..4], ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]);
        assert_eq!(names[4], "weight_ih_l0_reverse");
        assert_eq!(names[8], "weight_ih_l1");
        assert_eq!(layer.parameters()[8].tensor.shape(), &[8, 4]);
        assert_eq!(layer.output_shape(&[5, 2]).unwrap(), vec![4]);
        assert!(layer.output_shape(&[5, 3]).is_err());
        assert!(layer.output_shape(&[10]).is_err());
        let y = layer
            .forward(&Tensor::zeros(&[3, 5, 2], DType::F32), &mut Ctx::eval())
            .unwrap();
        assert_eq!(y.shape(), &[3, 4]);
    }
}
