//! Multi-head self-attention (Vaswani et al. 2017), batch first, as
//! `nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)` called with
//! the same tensor as query, key and value: `[N, T, E]` → `[N, T, E]`.
//!
//! The heads are strided views of the projections, never copies: q, k and v each
//! come from one product with their third of `in_proj_weight`, seen as
//! `[N, H, T, d]`, and the batched products `q·kᵀ` and `weights·v` read them in
//! place. The scale 1/√d and the causal mask are folded into one softmax op.

use crate::error::{bad_shape, Error};
use crate::init::{init_weight, Init};
use crate::layers::Linear;
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{DType, Result, Tensor};
use rand::Rng;
use std::fmt::Write as _;

/// Self-attention over the steps of a sequence.
pub struct MultiheadAttention {
    /// Heads the embedding is split into.
    pub num_heads: usize,
    /// Dropout probability on the attention weights (training only).
    pub dropout: f64,
    /// Query `i` attends to steps `0..=i` only.
    pub causal: bool,
    /// `[3E, E]`: the query, key and value projections stacked, PyTorch's layout.
    pub in_proj_weight: Tensor,
    /// `[3E]`, if the layer has biases.
    pub in_proj_bias: Option<Tensor>,
    /// The output projection `[E, E]` (PyTorch's `out_proj`).
    pub out_proj: Linear,
}

/// How to build a [`MultiheadAttention`]: PyTorch's defaults (no dropout, biases,
/// f32) and gradflow's `causal` (default false), drawn with [`build`](Self::build).
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a config builds nothing until .build(&mut rng)"]
pub struct MultiheadAttentionConfig {
    embed_dim: usize,
    num_heads: usize,
    dropout: f64,
    bias: bool,
    causal: bool,
    dtype: DType,
}

impl MultiheadAttentionConfig {
    /// Dropout on the attention weights (default 0).
    pub fn dropout(self, dropout: f64) -> Self {
        MultiheadAttentionConfig { dropout, ..self }
    }
    /// Whether the projections learn biases (default true).
    pub fn bias(self, bias: bool) -> Self {
        MultiheadAttentionConfig { bias, ..self }
    }
    /// Mask the future: step `i` sees steps `0..=i` (default false).
    pub fn causal(self, causal: bool) -> Self {
        MultiheadAttentionConfig { causal, ..self }
    }
    /// The element type (default f32).
    pub fn dtype(self, dtype: DType) -> Self {
        MultiheadAttentionConfig { dtype, ..self }
    }

    /// Draw the weights as `_reset_parameters` does: Xavier-uniform `in_proj_weight`,
    /// `out_proj.weight` as a Linear's, all biases 0. Errors when `num_heads` does not
    /// divide `embed_dim` or the dropout is not a probability.
    pub fn build(self, rng: &mut impl Rng) -> crate::Result<MultiheadAttention> {
        let (e, h) = (self.embed_dim, self.num_heads);
        if h == 0 || e == 0 || e % h != 0 {
            return Err(Error::Hyperparameter(format!(
                "MultiheadAttention: embed_dim {e} must be a positive multiple of num_heads {h}"
            )));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::Hyperparameter(format!(
                "MultiheadAttention: dropout {} is not in [0, 1]",
                self.dropout
            )));
        }
        let in_proj_weight = init_weight(&[3 * e, e], Init::XavierUniform, 1.0, self.dtype, rng).requires_grad_(true);
        let mut out_proj = Linear::new(e, e).bias(self.bias).dtype(self.dtype).build(rng);
        let zeros = |n: usize| Tensor::zeros(&[n], self.dtype).requires_grad_(true);
        out_proj.bias = self.bias.then(|| zeros(e));
        Ok(MultiheadAttention {
            num_heads: h,
            dropout: self.dropout,
            causal: self.causal,
            in_proj_weight,
            in_proj_bias: self.bias.then(|| zeros(3 * e)),
            out_proj,
        })
    }
}

impl MultiheadAttention {
    /// `nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)`; options by the
    /// config's builder methods, weights drawn by `.build(&mut rng)`.
    #[allow(clippy::new_ret_no_self)] // PyTorch's spelling; weights are drawn by `.build(&mut rng)`.
    pub fn new(embed_dim: usize, num_heads: usize) -> MultiheadAttentionConfig {
        MultiheadAttentionConfig {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            causal: false,
            dtype: DType::F32,
        }
    }

    /// The width of the embedding, E.
    pub fn embed_dim(&self) -> usize {
        self.in_proj_weight.shape()[1]
    }

    /// Projection `i` (0 query, 1 key, 2 value) of the rows `x2` `[N·T, E]`, as heads `[N, H, T, d]`.
    fn heads(&self, x2: &Tensor, i: usize, (n, t): (usize, usize)) -> Result<Tensor> {
        let (e, h) = (self.embed_dim(), self.num_heads);
        let w = self.in_proj_weight.narrow(0, i * e, e)?;
        let b = self.in_proj_bias.as_ref().map(|b| b.narrow(0, i * e, e)).transpose()?;
        x2.linear(&w, b.as_ref())?
            .reshape(&[n, t, h, e / h])?
            .permute(&[0, 2, 1, 3])
    }
}

impl Module for MultiheadAttention {
    fn kind(&self) -> &'static str {
        "MultiheadAttention"
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let e = self.embed_dim();
        let &[n, t, xe] = x.shape() else {
            return Err(gradflow::Error::Shape {
                op: "MultiheadAttention",
                msg: format!("expects [N, T, E] input, got {:?}", x.shape()),
            });
        };
        let x2 = x.reshape(&[n * t, xe])?;
        let [q, k, v] = [0, 1, 2].map(|i| self.heads(&x2, i, (n, t)));
        let (q, k, v) = (q?, k?, v?);
        let scale = 1.0 / ((e / self.num_heads) as f64).sqrt();
        let weights = q.matmul(&k.t()?)?.attention_softmax(scale, self.causal)?;
        let weights = weights.dropout(self.dropout, ctx.training, &mut ctx.rng)?;
        // [N, H, T, d] → [N, T, H, d] → [N·T, E]: the one copy, where the heads join.
        let joined = weights.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[n * t, e])?;
        joined
            .linear(&self.out_proj.weight, self.out_proj.bias.as_ref())?
            .reshape(&[n, t, e])
    }

    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        match input {
            [_, e] if *e == self.embed_dim() => Ok(input.to_vec()),
            [_, e] => bad_shape(format!(
                "embed_dim is {} but the input has {e} features per step",
                self.embed_dim()
            )),
            _ => bad_shape(format!(
                "needs a sequence input [T, E] per sample, got {input:?} (declare input = [T, F])"
            )),
        }
    }

    fn parameters(&self) -> Vec<NamedTensor> {
        let named = |name: &str, t: &Tensor| NamedTensor {
            name: name.into(),
            tensor: t.clone(),
        };
        let mut out = vec![named("in_proj_weight", &self.in_proj_weight)];
        out.extend(self.in_proj_bias.iter().map(|b| named("in_proj_bias", b)));
        out.push(named("out_proj.weight", &self.out_proj.weight));
        out.extend(self.out_proj.bias.iter().map(|b| named("out_proj.bias", b)));
        out
    }

    /// Both projection matrices, as the weights of the Linear layers they are.
    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        [
            ("in_proj_weight", &self.in_proj_weight),
            ("out_proj.weight", &self.out_proj.weight),
        ]
        .map(|(name, t)| PenaltyTarget {
            name: name.into(),
            tensor: t.clone(),
            l1: None,
            l2: None,
        })
        .to_vec()
    }

    fn describe(&self) -> String {
        format!(
            "MultiheadAttention(E {}, {} heads{}{})",
            self.embed_dim(),
            self.num_heads,
            if self.causal { ", causal" } else { "" },
            if self.dropout > 0.0 {
                format!(", dropout {}", self.dropout)
            } else {
                String::new()
            }
        )
    }
}

/// `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first=True)` as
/// self-attention in a model file (`embed_dim` is the input's last dimension),
/// with a causal mask if asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiheadAttentionSpec {
    /// Heads; they must divide embed_dim.
    pub num_heads: usize,
    /// Dropout on the attention weights.
    pub dropout: f64,
    /// Whether the projections learn biases.
    pub bias: bool,
    /// Step i attends to steps 0..=i only.
    pub causal: bool,
}

/// A probability key in [0, 1) (PyTorch's dropout arguments).
pub(crate) fn read_probability(k: &mut Keys<'_>, key: &'static str, default: f64) -> crate::Result<f64> {
    let p = k.float(key, default)?;
    if !(0.0..1.0).contains(&p) {
        return k.err(format!("'{key}' must be in [0, 1), got {p}"));
    }
    Ok(p)
}

/// What attention needs of its per-sample input: a sequence `[T, E]` whose
/// width the heads divide, and (for specs built in code, which skip the
/// reader) a dropout PyTorch would accept.
pub(crate) fn check_attention_input(shape: &[usize], heads: usize, dropout: f64) -> crate::Result<()> {
    if shape.len() != 2 {
        return bad_shape(format!(
            "expects a sequence [steps, features], gets shape {shape:?} (declare input = [T, F])"
        ));
    }
    if !shape[1].is_multiple_of(heads) {
        return bad_shape(format!(
            "the embedding width {} (the input's last dimension) is not divisible by {heads} heads",
            shape[1]
        ));
    }
    if !(0.0..1.0).contains(&dropout) {
        return bad_shape(format!("'dropout' must be in [0, 1), got {dropout}"));
    }
    Ok(())
}

/// Parameters of self-attention over `e` features (four `[e, e]` projections), or `None` on overflow.
pub(crate) fn attention_parameters(e: usize, bias: bool) -> Option<usize> {
    e.checked_add(usize::from(bias))?.checked_mul(e)?.checked_mul(4)
}

impl LayerDecl for MultiheadAttentionSpec {
    fn types() -> Vec<&'static str> {
        vec!["MultiheadAttention"]
    }
    fn description() -> &'static str {
        "multi-head self-attention over the steps of [T, E] (optionally causal)"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<MultiheadAttentionSpec> {
        Ok(MultiheadAttentionSpec {
            num_heads: k.usize("num_heads", None)?,
            dropout: read_probability(k, "dropout", 0.0)?,
            bias: k.bool("bias", true)?,
            causal: k.bool("causal", false)?,
        })
    }
    fn kind(&self) -> &'static str {
        "MultiheadAttention"
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "num_heads = {}\ndropout = {:?}\nbias = {}\ncausal = {}",
            self.num_heads, self.dropout, self.bias, self.causal
        );
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("num_heads", self.num_heads)]
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        check_attention_input(shape, self.num_heads, self.dropout)
    }
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        attention_parameters(shape[1], self.bias)
    }
    fn gain_before(&self) -> Option<f64> {
        Some(1.0)
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let config = MultiheadAttention::new(shape[1], self.num_heads)
            .dropout(self.dropout)
            .bias(self.bias)
            .causal(self.causal)
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

    /// The layer with its four parameters taken from `t[1..]`, as gradcheck varies them.
    fn with_params(t: &[Tensor], heads: usize, causal: bool) -> MultiheadAttention {
        let e = t[0].shape()[2];
        let mut m = MultiheadAttention::new(e, heads)
            .causal(causal)
            .dtype(DType::F64)
            .build(&mut seeded_rng(0))
            .unwrap();
        m.in_proj_weight = t[1].clone();
        m.in_proj_bias = Some(t[2].clone());
        m.out_proj.weight = t[3].clone();
        m.out_proj.bias = Some(t[4].clone());
        m
    }

    #[test]
    fn gradcheck_one_and_two_heads_causal_or_not() {
        let (n, t, e) = (2, 3, 4);
        let inputs = [
            rand(&[n, t, e], 1),
            rand(&[3 * e, e], 2),
            rand(&[3 * e], 3),
            rand(&[e, e], 4),
            rand(&[e], 5),
        ];
        for heads in [1, 2] {
            for causal in [false, true] {
                let f = |t: &[Tensor]| with_params(t, heads, causal).forward(&t[0], &mut Ctx::eval());
                if let Err(err) = gradcheck(f, &inputs, GradcheckOptions::default()) {
                    panic!("{heads} heads, causal {causal}: {err}");
                }
            }
        }
    }

    #[test]
    fn causal_outputs_ignore_later_steps_and_dropout_acts_in_training_only() {
        let x = rand(&[1, 4, 6], 7);
        let m = MultiheadAttention::new(6, 3)
            .causal(true)
            .dropout(0.5)
            .dtype(DType::F64)
            .build(&mut seeded_rng(1))
            .unwrap();
        let y = m.forward(&x, &mut Ctx::eval()).unwrap().to_vec_f64();
        // Changing the last step leaves the first three outputs as they were.
        let mut changed = x.to_vec_f64();
        changed[18..].iter_mut().for_each(|v| *v += 1.0);
        let x2 = Tensor::from_vec(changed, &[1, 4, 6]).unwrap();
        let y2 = m.forward(&x2, &mut Ctx::eval()).unwrap().to_vec_f64();
        assert_eq!(y[..18], y2[..18]);
        assert_ne!(y[18..], y2[18..]);
        // Evaluation is deterministic; training drops attention weights.
        assert_eq!(y, m.forward(&x, &mut Ctx::eval()).unwrap().to_vec_f64());
        assert_ne!(y, m.forward(&x, &mut Ctx::train(3)).unwrap().to_vec_f64());
    }

    #[test]
    fn pytorch_names_layouts_and_initial_values() {
        let m = MultiheadAttention::new(8, 2).build(&mut seeded_rng(0)).unwrap();
        let p: Vec<(String, Vec<usize>)> = m
            .parameters()
            .into_iter()
            .map(|p| (p.name, p.tensor.shape().to_vec()))
            .collect();
        let want = [
            ("in_proj_weight", vec![24, 8]),
            ("in_proj_bias", vec![24]),
            ("out_proj.weight", vec![8, 8]),
            ("out_proj.bias", vec![8]),
        ];
        assert_eq!(p, want.map(|(n, s)| (n.to_string(), s)));
        // Xavier-uniform in_proj (bound √(6/(8+24)) = 0.433), zero biases.
        let w = m.in_proj_weight.to_vec_f64();
        assert!(w.iter().all(|v| v.abs() <= 0.433) && w.iter().any(|v| v.abs() > 0.35));
        assert!(m.in_proj_bias.unwrap().to_vec_f64().iter().all(|&v| v == 0.0));
        assert!(m.out_proj.bias.unwrap().to_vec_f64().iter().all(|&v| v == 0.0));
        let nobias = MultiheadAttention::new(8, 2)
            .bias(false)
            .build(&mut seeded_rng(0))
            .unwrap();
        assert_eq!(nobias.parameters().len(), 2);
    }

    #[test]
    fn errors_say_what_does_not_fit() {
        let e = MultiheadAttention::new(6, 4)
            .build(&mut seeded_rng(0))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "MultiheadAttention: embed_dim 6 must be a positive multiple of num_heads 4"
        );
        let e = MultiheadAttention::new(6, 2)
            .dropout(1.5)
            .build(&mut seeded_rng(0))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "MultiheadAttention: dropout 1.5 is not in [0, 1]");
        let m = MultiheadAttention::new(6, 2).build(&mut seeded_rng(0)).unwrap();
        let e = m
            .forward(&Tensor::zeros(&[2, 6], DType::F32), &mut Ctx::eval())
            .unwrap_err();
        assert_eq!(e.to_string(), "MultiheadAttention: expects [N, T, E] input, got [2, 6]");
        assert_eq!(
            m.output_shape(&[6]).unwrap_err().to_string(),
            "needs a sequence input [T, E] per sample, got [6] (declare input = [T, F])"
        );
        assert_eq!(
            m.output_shape(&[3, 5]).unwrap_err().to_string(),
            "embed_dim is 6 but the input has 5 features per step"
        );
        assert_eq!(m.output_shape(&[3, 6]).unwrap(), vec![3, 6]);
    }
}
