//! One transformer encoder block, as `nn.TransformerEncoderLayer(batch_first=True)`:
//! self-attention and a two-layer feed-forward network, each in a residual branch
//! with a LayerNorm after it (post-norm, the paper's order) or before it
//! (`norm_first`, which trains deep stacks more stably). Built from the
//! [`MultiheadAttention`], [`Linear`] and [`LayerNorm`] modules it holds, so its
//! parameter names nest as PyTorch's (`self_attn.in_proj_weight`, `linear1.weight`, `norm2.bias`).

use crate::error::Error;
use crate::layers::attention::{attention_parameters, check_attention_input, read_probability};
use crate::layers::{Activation, LayerNorm, Linear, MultiheadAttention};
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{DType, Result, Tensor};
use rand::Rng;
use std::fmt::Write as _;

/// The feed-forward activations `nn.TransformerEncoderLayer` accepts by name.
pub const ENCODER_ACTIVATIONS: &[&str] = &["relu", "gelu"];

/// A transformer encoder block over `[N, T, d_model]`.
pub struct TransformerEncoderLayer {
    /// Self-attention (`self_attn.*`).
    pub self_attn: MultiheadAttention,
    /// d_model → dim_feedforward.
    pub linear1: Linear,
    /// dim_feedforward → d_model.
    pub linear2: Linear,
    /// After (or, with `norm_first`, before) the attention branch.
    pub norm1: LayerNorm,
    /// After (or before) the feed-forward branch.
    pub norm2: LayerNorm,
    /// ReLU or exact GELU between the two Linear layers.
    pub activation: Activation,
    /// Dropout inside the feed-forward branch and on each branch's output (training only).
    pub dropout: f64,
    /// Pre-norm (`x + f(norm(x))`) rather than post-norm (`norm(x + f(x))`).
    pub norm_first: bool,
}

/// How to build a [`TransformerEncoderLayer`]: PyTorch's defaults (dim_feedforward 2048,
/// dropout 0.1, ReLU, post-norm, eps 1e-5, f32), drawn with [`build`](Self::build).
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a config builds nothing until .build(&mut rng)"]
pub struct TransformerEncoderLayerConfig {
    d_model: usize,
    nhead: usize,
    dim_feedforward: usize,
    dropout: f64,
    activation: String,
    norm_first: bool,
    layer_norm_eps: f64,
    dtype: DType,
}

impl TransformerEncoderLayerConfig {
    /// Width of the feed-forward network (default 2048).
    pub fn dim_feedforward(self, dim_feedforward: usize) -> Self {
        TransformerEncoderLayerConfig {
            dim_feedforward,
            ..self
        }
    }
    /// Dropout probability everywhere in the block, the attention weights included (default 0.1).
    pub fn dropout(self, dropout: f64) -> Self {
        TransformerEncoderLayerConfig { dropout, ..self }
    }
    /// `"relu"` (default) or `"gelu"`.
    pub fn activation(self, activation: &str) -> Self {
        TransformerEncoderLayerConfig {
            activation: activation.to_string(),
            ..self
        }
    }
    /// Normalize before each branch instead of after the sum (default false).
    pub fn norm_first(self, norm_first: bool) -> Self {
        TransformerEncoderLayerConfig { norm_first, ..self }
    }
    /// The LayerNorms' eps (default 1e-5).
    pub fn layer_norm_eps(self, layer_norm_eps: f64) -> Self {
        TransformerEncoderLayerConfig { layer_norm_eps, ..self }
    }
    /// The element type (default f32).
    pub fn dtype(self, dtype: DType) -> Self {
        TransformerEncoderLayerConfig { dtype, ..self }
    }

    /// Draw the children's weights in PyTorch's order (attention, linear1, linear2).
    /// Errors name the bad activation, a d_model that nhead does not divide, or a dropout outside [0, 1].
    pub fn build(self, rng: &mut impl Rng) -> crate::Result<TransformerEncoderLayer> {
        let activation = match self.activation.as_str() {
            "relu" => Activation::ReLU,
            "gelu" => Activation::GELU(crate::layers::Approximate::None),
            other => {
                return Err(Error::Hyperparameter(format!(
                    "TransformerEncoderLayer: activation '{other}' is not one of {}",
                    crate::error::one_of(ENCODER_ACTIVATIONS)
                )))
            }
        };
        let (d, f, dt) = (self.d_model, self.dim_feedforward, self.dtype);
        let self_attn = MultiheadAttention::new(d, self.nhead)
            .dropout(self.dropout)
            .dtype(dt)
            .build(rng)
            .map_err(|e| {
                Error::Hyperparameter(
                    e.to_string()
                        .replacen("MultiheadAttention", "TransformerEncoderLayer", 1),
                )
            })?;
        let linear1 = Linear::new(d, f).dtype(dt).build(rng);
        let linear2 = Linear::new(f, d).dtype(dt).build(rng);
        let norm = || LayerNorm::new(&[d]).dtype(dt).eps(self.layer_norm_eps);
        Ok(TransformerEncoderLayer {
            self_attn,
            linear1,
            linear2,
            norm1: norm(),
            norm2: norm(),
            activation,
            dropout: self.dropout,
            norm_first: self.norm_first,
        })
    }
}

impl TransformerEncoderLayer {
    /// `nn.TransformerEncoderLayer(d_model, nhead, batch_first=True)`; options by the
    /// config's builder methods, weights drawn by `.build(&mut rng)`.
    #[allow(clippy::new_ret_no_self)] // PyTorch's spelling; weights are drawn by `.build(&mut rng)`.
    pub fn new(d_model: usize, nhead: usize) -> TransformerEncoderLayerConfig {
        TransformerEncoderLayerConfig {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: "relu".into(),
            norm_first: false,
            layer_norm_eps: 1e-5,
            dtype: DType::F32,
        }
    }

    /// The attention branch: attention, then dropout.
    fn attention_branch(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.self_attn
            .forward(x, ctx)?
            .dropout(self.dropout, ctx.training, &mut ctx.rng)
    }

    /// The feed-forward branch: linear2(dropout(act(linear1(x)))), then dropout.
    fn feed_forward_branch(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.activation.forward(&self.linear1.forward(x, ctx)?, ctx)?;
        let h = h.dropout(self.dropout, ctx.training, &mut ctx.rng)?;
        self.linear2
            .forward(&h, ctx)?
            .dropout(self.dropout, ctx.training, &mut ctx.rng)
    }

    /// Each child's items, under `{child}.{name}`, in PyTorch's state_dict order.
    fn nested<T>(&self, get: impl Fn(&dyn Module) -> Vec<T>, name: impl Fn(&mut T) -> &mut String) -> Vec<T> {
        let children: [(&str, &dyn Module); 5] = [
            ("self_attn", &self.self_attn),
            ("linear1", &self.linear1),
            ("linear2", &self.linear2),
            ("norm1", &self.norm1),
            ("norm2", &self.norm2),
        ];
        let mut out = Vec::new();
        for (prefix, child) in children {
            for mut t in get(child) {
                let n = name(&mut t);
                *n = format!("{prefix}.{n}");
                out.push(t);
            }
        }
        out
    }
}

impl Module for TransformerEncoderLayer {
    fn kind(&self) -> &'static str {
        "TransformerEncoderLayer"
    }

    /// Its children's outputs are not recorded: diagnostics see one output per block.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let record = std::mem::replace(&mut ctx.record_outputs, false);
        let out = (|| {
            if self.norm_first {
                let x = x.add(&self.attention_branch(&self.norm1.forward(x, ctx)?, ctx)?)?;
                x.add(&self.feed_forward_branch(&self.norm2.forward(&x, ctx)?, ctx)?)
            } else {
                let x = self.norm1.forward(&x.add(&self.attention_branch(x, ctx)?)?, ctx)?;
                self.norm2.forward(&x.add(&self.feed_forward_branch(&x, ctx)?)?, ctx)
            }
        })();
        ctx.record_outputs = record;
        out
    }

    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        self.self_attn.output_shape(input)
    }

    fn parameters(&self) -> Vec<NamedTensor> {
        self.nested(|m| m.parameters(), |t| &mut t.name)
    }

    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        self.nested(|m| m.penalty_targets(), |t| &mut t.name)
    }

    fn describe(&self) -> String {
        format!(
            "TransformerEncoderLayer(d_model {}, {} heads, feed-forward {}, {}{})",
            self.self_attn.embed_dim(),
            self.self_attn.num_heads,
            self.linear1.out_features(),
            self.activation.describe(),
            if self.norm_first { ", norm first" } else { "" }
        )
    }
}

/// `nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
/// layer_norm_eps, batch_first=True, norm_first)` in a model file (`d_model` is
/// the input's last dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerEncoderLayerSpec {
    /// Attention heads; they must divide d_model.
    pub nhead: usize,
    /// Width of the feed-forward network.
    pub dim_feedforward: usize,
    /// Dropout everywhere in the block.
    pub dropout: f64,
    /// `relu` or `gelu`.
    pub activation: String,
    /// The LayerNorms' ε.
    pub layer_norm_eps: f64,
    /// Pre-norm instead of post-norm.
    pub norm_first: bool,
}

fn bad_activation(got: &str) -> String {
    format!("'activation' must be \"relu\" or \"gelu\", got {got}")
}

impl LayerDecl for TransformerEncoderLayerSpec {
    fn types() -> Vec<&'static str> {
        vec!["TransformerEncoderLayer"]
    }
    fn description() -> &'static str {
        "self-attention and a feed-forward network, each in a residual branch with a LayerNorm"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<TransformerEncoderLayerSpec> {
        let activation = match k.get("activation") {
            None => "relu".to_string(),
            Some(toml::Value::String(s)) if ENCODER_ACTIVATIONS.contains(&s.as_str()) => s.clone(),
            Some(v) => return k.err(bad_activation(&v.to_string())),
        };
        let spec = TransformerEncoderLayerSpec {
            nhead: k.usize("nhead", None)?,
            dim_feedforward: k.usize("dim_feedforward", Some(2048))?,
            dropout: read_probability(k, "dropout", 0.1)?,
            activation,
            layer_norm_eps: k.float("layer_norm_eps", 1e-5)?,
            norm_first: k.bool("norm_first", false)?,
        };
        if spec.layer_norm_eps <= 0.0 {
            return k.err("'layer_norm_eps' must be positive");
        }
        Ok(spec)
    }
    fn kind(&self) -> &'static str {
        "TransformerEncoderLayer"
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "nhead = {}\ndim_feedforward = {}\ndropout = {:?}\nactivation = \"{}\"\nlayer_norm_eps = {:?}\nnorm_first = {}",
            self.nhead, self.dim_feedforward, self.dropout, self.activation, self.layer_norm_eps, self.norm_first
        );
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("nhead", self.nhead), ("dim_feedforward", self.dim_feedforward)]
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        check_attention_input(shape, self.nhead, self.dropout)?;
        if !ENCODER_ACTIVATIONS.contains(&self.activation.as_str()) {
            return crate::error::bad_shape(bad_activation(&format!("\"{}\"", self.activation)));
        }
        Ok(())
    }
    /// Attention, linear1 and linear2 with biases, two LayerNorms.
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        let (e, f) = (shape[1], self.dim_feedforward);
        let ff = e.checked_mul(f)?.checked_mul(2)?.checked_add(f)?.checked_add(e)?;
        attention_parameters(e, true)?
            .checked_add(ff)?
            .checked_add(e.checked_mul(4)?)
    }
    fn gain_before(&self) -> Option<f64> {
        Some(1.0)
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let config = TransformerEncoderLayer::new(shape[1], self.nhead)
            .dim_feedforward(self.dim_feedforward)
            .dropout(self.dropout)
            .activation(&self.activation)
            .layer_norm_eps(self.layer_norm_eps)
            .norm_first(self.norm_first)
            .dtype(cx.dtype());
        Ok(Box::new(config.build(cx.rng())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow::{gradcheck, seeded_rng, GradcheckOptions};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        Tensor::rand_uniform(shape, -1.0, 1.0, DType::F64, &mut seeded_rng(seed))
    }

    /// The block's twelve parameters, in state_dict order, as gradcheck inputs after x.
    fn inputs(e: usize, f: usize) -> Vec<Tensor> {
        let shapes: [&[usize]; 12] = [
            &[3 * e, e],
            &[3 * e],
            &[e, e],
            &[e],
            &[f, e],
            &[f],
            &[e, f],
            &[e],
            &[e],
            &[e],
            &[e],
            &[e],
        ];
        let mut t = vec![rand(&[2, 3, e], 1)];
        t.extend(shapes.iter().enumerate().map(|(i, s)| rand(s, 10 + i as u64)));
        // LayerNorm γ near 1.
        for i in [9, 11] {
            t[i] = t[i].add_scalar(1.0);
        }
        t
    }

    fn with_params(t: &[Tensor], activation: &str, norm_first: bool) -> TransformerEncoderLayer {
        let (e, f) = (t[0].shape()[2], t[5].shape()[0]);
        let mut m = TransformerEncoderLayer::new(e, 2)
            .dim_feedforward(f)
            .activation(activation)
            .norm_first(norm_first)
            .dtype(DType::F64)
            .build(&mut seeded_rng(0))
            .unwrap();
        let p = |i: usize| t[i].clone();
        (m.self_attn.in_proj_weight, m.self_attn.in_proj_bias) = (p(1), Some(p(2)));
        (m.self_attn.out_proj.weight, m.self_attn.out_proj.bias) = (p(3), Some(p(4)));
        (m.linear1.weight, m.linear1.bias, m.linear2.weight, m.linear2.bias) = (p(5), Some(p(6)), p(7), Some(p(8)));
        (m.norm1.weight, m.norm1.bias, m.norm2.weight, m.norm2.bias) =
            (Some(p(9)), Some(p(10)), Some(p(11)), Some(p(12)));
        m
    }

    #[test]
    fn gradcheck_post_and_pre_norm_with_relu_and_gelu() {
        let t = inputs(4, 6);
        for (activation, norm_first) in [("relu", false), ("gelu", true), ("gelu", false)] {
            let f = |t: &[Tensor]| with_params(t, activation, norm_first).forward(&t[0], &mut Ctx::eval());
            if let Err(err) = gradcheck(f, &t, GradcheckOptions::default()) {
                panic!("{activation}, norm_first {norm_first}: {err}");
            }
        }
    }

    #[test]
    fn parameter_names_nest_as_pytorch_and_defaults_match() {
        let m = TransformerEncoderLayer::new(8, 2).build(&mut seeded_rng(0)).unwrap();
        let names: Vec<String> = m.parameters().into_iter().map(|p| p.name).collect();
        let want = [
            "self_attn.in_proj_weight",
            "self_attn.in_proj_bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias",
        ];
        assert_eq!(names, want);
        assert_eq!(m.linear1.out_features(), 2048);
        assert_eq!((m.dropout, m.norm_first, m.self_attn.dropout), (0.1, false, 0.1));
        assert_eq!(m.norm1.eps, 1e-5);
        assert_eq!(m.output_shape(&[5, 8]).unwrap(), vec![5, 8]);
        // Training mode drops; evaluation does not.
        let x = Tensor::rand_uniform(&[2, 5, 8], -1.0, 1.0, DType::F32, &mut seeded_rng(1));
        let eval = m.forward(&x, &mut Ctx::eval()).unwrap().to_vec_f64();
        assert_eq!(eval, m.forward(&x, &mut Ctx::eval()).unwrap().to_vec_f64());
        assert_ne!(eval, m.forward(&x, &mut Ctx::train(2)).unwrap().to_vec_f64());
    }

    #[test]
    fn bad_activation_and_heads_are_errors() {
        let e = TransformerEncoderLayer::new(8, 2)
            .activation("tanh")
            .build(&mut seeded_rng(0));
        assert_eq!(
            e.err().unwrap().to_string(),
            "TransformerEncoderLayer: activation 'tanh' is not one of relu or gelu"
        );
        let e = TransformerEncoderLayer::new(8, 3).build(&mut seeded_rng(0));
        assert_eq!(
            e.err().unwrap().to_string(),
            "TransformerEncoderLayer: embed_dim 8 must be a positive multiple of num_heads 3"
        );
    }
}
