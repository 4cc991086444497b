//! Token embedding, as `nn.Embedding`: each integer id in the input picks a
//! learned row of the weight. gradflow tensors hold floats, so the ids arrive
//! as whole numbers in an f32/f64 tensor and are checked before the lookup.

use crate::module::{Ctx, Module, NamedTensor};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{DType, Result, Tensor};
use rand::Rng;
use std::fmt::Write as _;

/// A lookup table of `num_embeddings` learned vectors of `embedding_dim` values.
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    /// The id whose row stays zero and learns nothing (e.g. the padding token).
    pub padding_idx: Option<usize>,
}

/// How to build an [`Embedding`]: PyTorch's defaults (no padding row, f32),
/// changed by the builder methods, then drawn with [`build`](Self::build).
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a config builds nothing until .build(&mut rng)"]
pub struct EmbeddingConfig {
    num_embeddings: usize,
    embedding_dim: usize,
    padding_idx: Option<usize>,
    dtype: DType,
}

impl EmbeddingConfig {
    /// The id whose row starts at zero and gets no gradient (default none).
    pub fn padding_idx(self, padding_idx: Option<usize>) -> Self {
        EmbeddingConfig { padding_idx, ..self }
    }
    /// The element type (default f32).
    pub fn dtype(self, dtype: DType) -> Self {
        EmbeddingConfig { dtype, ..self }
    }
    /// Draw the weight from N(0, 1), as PyTorch does, with the padding row zeroed.
    pub fn build(self, rng: &mut impl Rng) -> Embedding {
        let (n, e) = (self.num_embeddings, self.embedding_dim);
        let mut w = Tensor::rand_normal(&[n, e], 0.0, 1.0, DType::F64, rng).to_vec_f64();
        if let Some(p) = self.padding_idx.filter(|&p| p < n) {
            w[p * e..(p + 1) * e].fill(0.0);
        }
        let weight = Tensor::from_vec(w, &[n, e]).expect("n·e values").to_dtype(self.dtype);
        Embedding {
            weight: weight.requires_grad_(true),
            padding_idx: self.padding_idx,
        }
    }
}

impl Embedding {
    /// `nn.Embedding(num_embeddings, embedding_dim)`: options by the config's
    /// builder methods, e.g. `Embedding::new(1000, 64).padding_idx(Some(0)).build(&mut rng)`.
    #[allow(clippy::new_ret_no_self)] // PyTorch's spelling; weights are drawn by `.build(&mut rng)`.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> EmbeddingConfig {
        EmbeddingConfig {
            num_embeddings,
            embedding_dim,
            padding_idx: None,
            dtype: DType::F32,
        }
    }
    /// The number of ids the table has rows for.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }
    /// The width of each row.
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The input's values as row indices, or an error naming the first value that is no id.
    fn token_ids(&self, x: &Tensor) -> Result<Vec<usize>> {
        let n = self.num_embeddings();
        let values = x.to_vec_f64();
        match values
            .iter()
            .position(|&v| !(v >= 0.0 && v.fract() == 0.0 && v < n as f64))
        {
            None => Ok(values.iter().map(|&v| v as usize).collect()),
            Some(i) => Err(gradflow::Error::Argument {
                op: "Embedding",
                msg: format!(
                    "input value {} at {:?} is not a token id: ids are whole numbers from 0 to {} (num_embeddings = {n})",
                    values[i],
                    position(x.shape(), i),
                    n.saturating_sub(1)
                ),
            }),
        }
    }
}

/// The multi-index of row-major offset `i` in `shape`.
fn position(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut pos = vec![0; shape.len()];
    for (p, &d) in pos.iter_mut().zip(shape).rev() {
        (*p, i) = (i % d.max(1), i / d.max(1));
    }
    pos
}

impl Module for Embedding {
    fn kind(&self) -> &'static str {
        "Embedding"
    }
    /// `[N, T]` ids → `[N, T, embedding_dim]` (any input shape gains a last dimension).
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        let ids = self.token_ids(x)?;
        self.weight.embedding(&ids, x.shape(), self.padding_idx)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        Ok(input.iter().copied().chain([self.embedding_dim()]).collect())
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        vec![NamedTensor {
            name: "weight".into(),
            tensor: self.weight.clone(),
        }]
    }
    fn describe(&self) -> String {
        let padding = self
            .padding_idx
            .map(|p| format!(", padding_idx {p}"))
            .unwrap_or_default();
        format!(
            "Embedding({} → {}{padding})",
            self.num_embeddings(),
            self.embedding_dim()
        )
    }
}

/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)` in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbeddingSpec {
    /// Rows of the table: the ids run from 0 to `num_embeddings - 1`.
    pub num_embeddings: usize,
    /// Width of each row.
    pub embedding_dim: usize,
    /// The id whose row stays zero and gets no gradient.
    pub padding_idx: Option<usize>,
}

impl LayerDecl for EmbeddingSpec {
    fn types() -> Vec<&'static str> {
        vec!["Embedding"]
    }
    fn description() -> &'static str {
        "a learned vector per integer token id: [T] ids -> [T, embedding_dim]"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<EmbeddingSpec> {
        let num_embeddings = k.usize("num_embeddings", None)?;
        let embedding_dim = k.usize("embedding_dim", None)?;
        let padding_idx = match k.get("padding_idx") {
            None => None,
            Some(toml::Value::Integer(i)) if (0..num_embeddings as i64).contains(i) => Some(*i as usize),
            Some(v) => {
                return k.err(format!(
                    "'padding_idx' must be an id from 0 to {} (below num_embeddings), got {v}",
                    num_embeddings - 1
                ))
            }
        };
        Ok(EmbeddingSpec {
            num_embeddings,
            embedding_dim,
            padding_idx,
        })
    }
    fn kind(&self) -> &'static str {
        "Embedding"
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "num_embeddings = {}\nembedding_dim = {}",
            self.num_embeddings, self.embedding_dim
        );
        if let Some(p) = self.padding_idx {
            let _ = writeln!(s, "padding_idx = {p}");
        }
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("num_embeddings", self.num_embeddings),
            ("embedding_dim", self.embedding_dim),
        ]
    }
    fn parameter_count(&self, _shape: &[usize]) -> Option<usize> {
        self.num_embeddings.checked_mul(self.embedding_dim)
    }
    fn gain_before(&self) -> Option<f64> {
        Some(1.0)
    }
    fn build(&self, _shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let config = Embedding::new(self.num_embeddings, self.embedding_dim)
            .padding_idx(self.padding_idx)
            .dtype(cx.dtype());
        Ok(Box::new(config.build(cx.rng())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow::{gradcheck, seeded_rng, GradcheckOptions};

    fn ids(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape).unwrap()
    }

    #[test]
    fn lookup_shape_init_and_padding_row() {
        let emb = Embedding::new(5, 3).padding_idx(Some(2)).build(&mut seeded_rng(0));
        assert_eq!(emb.weight.shape(), &[5, 3]);
        assert_eq!(emb.weight.dtype(), DType::F32);
        let w = emb.weight.to_vec_f64();
        assert_eq!(w[6..9], [0.0; 3]);
        assert!(w[..6].iter().all(|&v| v != 0.0));
        let y = emb
            .forward(&ids(&[4.0, 0.0, 2.0, 4.0], &[2, 2]), &mut Ctx::eval())
            .unwrap();
        assert_eq!(y.shape(), &[2, 2, 3]);
        assert_eq!(y.to_vec_f64()[..3], w[12..15]);
        assert_eq!(emb.output_shape(&[7]).unwrap(), vec![7, 3]);
        // The padding row learns nothing.
        let g = y.sum_all().backward().unwrap();
        let gw = g.get(&emb.weight).unwrap().to_vec_f64();
        assert_eq!(gw, [1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 2., 2., 2.]);
    }

    /// The weight's gradient against central finite differences, in f64 (the
    /// padding row, zero by definition rather than by calculus, is tested above).
    #[test]
    fn gradcheck_weight() {
        let x = ids(&[1.0, 3.0, 3.0, 0.0, 2.0, 1.0], &[2, 3]);
        let f = |t: &[Tensor]| {
            let mut emb = Embedding::new(4, 2).dtype(DType::F64).build(&mut seeded_rng(0));
            emb.weight = t[0].clone();
            Ok(emb.forward(&x, &mut Ctx::eval())?.tanh())
        };
        let w = Tensor::rand_uniform(&[4, 2], -1.0, 1.0, DType::F64, &mut seeded_rng(1));
        if let Err(e) = gradcheck(f, &[w], GradcheckOptions::default()) {
            panic!("{e}");
        }
    }

    #[test]
    fn values_that_are_no_token_id_are_named() {
        let emb = Embedding::new(4, 2).build(&mut seeded_rng(0));
        let err = |v: &[f64]| emb.forward(&ids(v, &[2, 2]), &mut Ctx::eval()).unwrap_err().to_string();
        assert_eq!(
            err(&[0.0, 1.0, 4.0, 0.0]),
            "Embedding: input value 4 at [1, 0] is not a token id: ids are whole numbers from 0 to 3 (num_embeddings = 4)"
        );
        assert!(err(&[0.0, 1.5, 2.0, 0.0]).contains("input value 1.5 at [0, 1]"));
        assert!(err(&[-1.0, 1.0, 2.0, 0.0]).contains("input value -1 at [0, 0]"));
        assert!(err(&[0.0, 1.0, 2.0, f64::NAN]).contains("input value NaN at [1, 1]"));
    }
}
