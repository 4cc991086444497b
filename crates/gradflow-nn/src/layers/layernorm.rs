//! Layer normalization (Ba, Kiros & Hinton 2016): each sample normalized over
//! its trailing `normalized_shape` dimensions, as `nn.LayerNorm` does, with
//! the same statistics in training and evaluation (no running buffers). The
//! whole layer is one op, [`Tensor::layer_norm`], forward and backward.

use crate::module::{Ctx, Module, NamedTensor};
use crate::spec::keys::too_large;
use crate::spec::{elements, BuildContext, Keys, LayerDecl, MAX_DIM};
use gradflow::{DType, Result, Tensor};
use std::fmt::Write as _;

/// Normalizes over the trailing dimensions, then scales by γ and shifts by β.
pub struct LayerNorm {
    /// The trailing dimensions normalized over.
    pub normalized_shape: Vec<usize>,
    /// γ, of `normalized_shape`, when `elementwise_affine`.
    pub weight: Option<Tensor>,
    /// β, of `normalized_shape`, when `elementwise_affine`.
    pub bias: Option<Tensor>,
    /// Added to the variance for stability.
    pub eps: f64,
}

impl LayerNorm {
    /// `nn.LayerNorm(normalized_shape)`: γ = 1, β = 0, PyTorch's eps 1e-5, f32.
    pub fn new(normalized_shape: &[usize]) -> LayerNorm {
        LayerNorm::fresh(normalized_shape, true, DType::F32)
    }

    fn fresh(shape: &[usize], affine: bool, dtype: DType) -> LayerNorm {
        LayerNorm {
            normalized_shape: shape.to_vec(),
            weight: affine.then(|| Tensor::ones(shape, dtype).requires_grad_(true)),
            bias: affine.then(|| Tensor::zeros(shape, dtype).requires_grad_(true)),
            eps: 1e-5,
        }
    }

    /// Added to the variance for stability (default 1e-5).
    pub fn eps(self, eps: f64) -> LayerNorm {
        LayerNorm { eps, ..self }
    }

    /// Whether to learn γ and β (default true): a fresh layer otherwise equal.
    pub fn elementwise_affine(self, affine: bool) -> LayerNorm {
        let dtype = self.weight.as_ref().map_or(DType::F32, Tensor::dtype);
        LayerNorm {
            eps: self.eps,
            ..LayerNorm::fresh(&self.normalized_shape, affine, dtype)
        }
    }

    /// A fresh layer of the same shape in another element type (default f32).
    pub fn dtype(self, dtype: DType) -> LayerNorm {
        LayerNorm {
            eps: self.eps,
            ..LayerNorm::fresh(&self.normalized_shape, self.weight.is_some(), dtype)
        }
    }
}

impl Module for LayerNorm {
    fn kind(&self) -> &'static str {
        "LayerNorm"
    }

    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        x.layer_norm(
            &self.normalized_shape,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
        )
    }

    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        if !input.ends_with(&self.normalized_shape) {
            return crate::error::bad_shape(format!(
                "normalized_shape {:?} is not the trailing part of input shape {input:?}",
                self.normalized_shape
            ));
        }
        Ok(input.to_vec())
    }

    fn parameters(&self) -> Vec<NamedTensor> {
        let named = |name: &str, t: &Option<Tensor>| {
            t.as_ref().map(|t| NamedTensor {
                name: name.into(),
                tensor: t.clone(),
            })
        };
        named("weight", &self.weight)
            .into_iter()
            .chain(named("bias", &self.bias))
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "LayerNorm({:?}{})",
            self.normalized_shape,
            if self.weight.is_some() { "" } else { ", no affine" }
        )
    }
}

/// `nn.LayerNorm` in a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormSpec {
    /// The trailing dimensions normalized over; `None` for the last one of the input.
    pub normalized_shape: Option<Vec<usize>>,
    /// ε.
    pub eps: f64,
    /// Whether to learn γ and β.
    pub elementwise_affine: bool,
}

impl LayerNormSpec {
    /// The normalized shape on input `shape`: its own, or the last dimension.
    fn shape_on(&self, shape: &[usize]) -> Vec<usize> {
        match &self.normalized_shape {
            Some(dims) => dims.clone(),
            None => shape[shape.len() - 1..].to_vec(),
        }
    }
}

/// `normalized_shape` as an integer or a non-empty list of them.
fn read_normalized_shape(k: &mut Keys<'_>) -> crate::Result<Option<Vec<usize>>> {
    match k.get("normalized_shape") {
        None => Ok(None),
        Some(toml::Value::Integer(_)) => Ok(Some(vec![k.usize("normalized_shape", None)?])),
        Some(toml::Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| match v.as_integer() {
                Some(i) if i > MAX_DIM as i64 => k.err(too_large("normalized_shape", i)),
                Some(i) if i > 0 => Ok(i as usize),
                _ => k.err("'normalized_shape' must be a positive integer or a list of them"),
            })
            .collect::<crate::Result<Vec<usize>>>()
            .map(Some),
        Some(v) => k.err(format!(
            "'normalized_shape' must be a positive integer or a list of them, got {v}"
        )),
    }
}

impl LayerDecl for LayerNormSpec {
    fn types() -> Vec<&'static str> {
        vec!["LayerNorm"]
    }
    fn description() -> &'static str {
        "normalizes each sample over its trailing dimensions"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<LayerNormSpec> {
        let normalized_shape = read_normalized_shape(k)?;
        let eps = k.float("eps", 1e-5)?;
        if eps <= 0.0 {
            return k.err("'eps' must be positive");
        }
        Ok(LayerNormSpec {
            normalized_shape,
            eps,
            elementwise_affine: k.bool("elementwise_affine", true)?,
        })
    }
    fn kind(&self) -> &'static str {
        "LayerNorm"
    }
    fn write(&self, s: &mut String) {
        if let Some(dims) = &self.normalized_shape {
            let _ = writeln!(s, "normalized_shape = {dims:?}");
        }
        let _ = writeln!(
            s,
            "eps = {:?}\nelementwise_affine = {}",
            self.eps, self.elementwise_affine
        );
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        let dims = self.normalized_shape.as_deref().unwrap_or_default();
        dims.iter().map(|&d| ("normalized_shape", d)).collect()
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        match &self.normalized_shape {
            Some(dims) if !shape.ends_with(dims) => crate::error::bad_shape(format!(
                "normalized_shape {dims:?} is not the trailing part of input shape {shape:?}"
            )),
            _ => Ok(()),
        }
    }
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        if self.elementwise_affine {
            elements(&self.shape_on(shape))?.checked_mul(2)
        } else {
            Some(0)
        }
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let layer = LayerNorm::new(&self.shape_on(shape))
            .eps(self.eps)
            .elementwise_affine(self.elementwise_affine)
            .dtype(cx.dtype());
        Ok(Box::new(layer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;
    use gradflow::{gradcheck, seeded_rng, GradcheckOptions};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        Tensor::rand_uniform(shape, -1.0, 1.0, DType::F64, &mut seeded_rng(seed))
    }

    fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
        if let Err(e) = gradcheck(f, inputs, GradcheckOptions::default()) {
            panic!("{e}");
        }
    }

    /// LayerNorm over the last one and the last two dimensions of `[N, T, F]`,
    /// with and without γ and β, against finite differences in f64.
    #[test]
    fn gradcheck_layernorm_over_trailing_dims() {
        for dims in [vec![4], vec![3, 4]] {
            let f = |t: &[Tensor]| {
                let mut ln = LayerNorm::new(&dims).eps(1e-3).dtype(DType::F64);
                (ln.weight, ln.bias) = (Some(t[1].clone()), Some(t[2].clone()));
                ln.forward(&t[0], &mut Ctx::eval())
            };
            let affine = [rand(&dims, 2).add_scalar(1.0), rand(&dims, 3)];
            check(f, &[rand(&[2, 3, 4], 1), affine[0].clone(), affine[1].clone()]);
            let plain = LayerNorm::new(&dims).elementwise_affine(false).dtype(DType::F64);
            assert!(plain.parameters().is_empty());
            check(|t| plain.forward(&t[0], &mut Ctx::eval()), &[rand(&[2, 3, 4], 4)]);
        }
    }

    /// Linear on `[N, T, F]` acts on the last dimension.
    #[test]
    fn gradcheck_linear_over_last_dim() {
        let f = |t: &[Tensor]| {
            let mut lin = Linear::new(4, 5).dtype(DType::F64).build(&mut seeded_rng(0));
            (lin.weight, lin.bias) = (t[1].clone(), Some(t[2].clone()));
            lin.forward(&t[0], &mut Ctx::eval())
        };
        check(f, &[rand(&[2, 3, 4], 5), rand(&[5, 4], 6), rand(&[5], 7)]);
        let lin = Linear::new(4, 5).build(&mut seeded_rng(0));
        assert_eq!(lin.output_shape(&[3, 4]).unwrap(), vec![3, 5]);
        assert!(lin
            .output_shape(&[2, 3, 4])
            .unwrap_err()
            .to_string()
            .contains("Flatten"));
        let y = lin
            .forward(&Tensor::zeros(&[2, 3, 4], DType::F32), &mut Ctx::eval())
            .unwrap();
        assert_eq!(y.shape(), &[2, 3, 5]);
    }
}
