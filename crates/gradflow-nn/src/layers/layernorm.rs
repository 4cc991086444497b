//! Layer normalization (Ba, Kiros & Hinton 2016): each sample normalized over
//! its trailing `normalized_shape` dimensions, as `nn.LayerNorm` does, with
//! the same statistics in training and evaluation (no running buffers).

use crate::module::{Ctx, Module, NamedTensor};
use gradflow::{DType, Result, Tensor};

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
        let (nd, k) = (x.ndim() as isize, self.normalized_shape.len() as isize);
        let axes: Vec<isize> = (nd - k..nd).collect();
        let xhat = x.normalize(&axes, self.eps)?.xhat;
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => xhat.mul(w)?.add(b),
            _ => Ok(xhat),
        }
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
