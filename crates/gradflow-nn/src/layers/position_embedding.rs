//! A learned position embedding, as in BERT and ViT: one vector per position
//! added to the input, so that attention, which is blind to order, can tell
//! the steps apart.

use crate::module::{Ctx, Module, NamedTensor};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{DType, Result, Tensor};
use rand::Rng;

/// `y = x + weight` on `[N, T, E]`, with a learned `weight` of `[T, E]`.
pub struct PositionEmbedding {
    /// `[T, E]`: one row per position.
    pub weight: Tensor,
}

impl PositionEmbedding {
    /// For sequences of `steps` positions of `dim` values: weight drawn from
    /// N(0, 0.02²), as ViT does.
    pub fn new(steps: usize, dim: usize, dtype: DType, rng: &mut impl Rng) -> PositionEmbedding {
        let weight = Tensor::rand_normal(&[steps, dim], 0.0, 0.02, DType::F64, rng).to_dtype(dtype);
        PositionEmbedding {
            weight: weight.requires_grad_(true),
        }
    }
}

impl Module for PositionEmbedding {
    fn kind(&self) -> &'static str {
        "PositionEmbedding"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        if x.ndim() != 3 || x.shape()[1..] != *self.weight.shape() {
            return Err(gradflow::Error::Shape {
                op: "PositionEmbedding",
                msg: format!("expects [N, {:?}], gets shape {:?}", self.weight.shape(), x.shape()),
            });
        }
        x.add(&self.weight)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        if input != self.weight.shape() {
            return crate::error::bad_shape(format!(
                "expects a sequence of shape {:?} [steps, features], gets shape {input:?}",
                self.weight.shape()
            ));
        }
        Ok(input.to_vec())
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        vec![NamedTensor {
            name: "weight".into(),
            tensor: self.weight.clone(),
        }]
    }
    fn describe(&self) -> String {
        format!("PositionEmbedding({:?})", self.weight.shape())
    }
}

/// A learned position embedding in a model file; its `[T, E]` is the input's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionEmbeddingSpec;

impl LayerDecl for PositionEmbeddingSpec {
    fn types() -> Vec<&'static str> {
        vec!["PositionEmbedding"]
    }
    fn description() -> &'static str {
        "x + a learned [T, E], one vector per position of a sequence"
    }
    fn read(_ty: &str, _k: &mut Keys<'_>) -> crate::Result<PositionEmbeddingSpec> {
        Ok(PositionEmbeddingSpec)
    }
    fn kind(&self) -> &'static str {
        "PositionEmbedding"
    }
    fn write(&self, _s: &mut String) {}
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        if shape.len() != 2 {
            return crate::error::bad_shape(format!(
                "expects a sequence [steps, features], gets shape {shape:?} (declare input = [T, F])"
            ));
        }
        Ok(())
    }
    fn parameter_count(&self, shape: &[usize]) -> Option<usize> {
        shape[0].checked_mul(shape[1])
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let dtype = cx.dtype();
        Ok(Box::new(PositionEmbedding::new(shape[0], shape[1], dtype, cx.rng())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow::{gradcheck, seeded_rng, GradcheckOptions};

    #[test]
    fn adds_one_learned_row_per_position() {
        let pe = PositionEmbedding::new(3, 2, DType::F32, &mut seeded_rng(0));
        let w = pe.weight.to_vec_f64();
        let std = (w.iter().map(|v| v * v).sum::<f64>() / 6.0).sqrt();
        assert!(std > 0.002 && std < 0.06, "{std}");
        let x = Tensor::ones(&[2, 3, 2], DType::F32);
        let y = pe.forward(&x, &mut Ctx::eval()).unwrap().to_vec_f64();
        for (i, v) in y.iter().enumerate() {
            assert!((v - 1.0 - w[i % 6]).abs() < 1e-6);
        }
        assert_eq!(pe.parameters()[0].name, "weight");
    }

    /// Gradients of the input and the weight against finite differences, in f64.
    #[test]
    fn gradcheck_input_and_weight() {
        let f = |t: &[Tensor]| {
            let pe = PositionEmbedding { weight: t[1].clone() };
            Ok(pe.forward(&t[0], &mut Ctx::eval())?.tanh())
        };
        let rng = &mut seeded_rng(1);
        let x = Tensor::rand_uniform(&[2, 3, 4], -1.0, 1.0, DType::F64, rng);
        let w = Tensor::rand_uniform(&[3, 4], -1.0, 1.0, DType::F64, rng);
        if let Err(e) = gradcheck(f, &[x, w], GradcheckOptions::default()) {
            panic!("{e}");
        }
    }

    #[test]
    fn other_shapes_are_refused() {
        let pe = PositionEmbedding::new(3, 2, DType::F32, &mut seeded_rng(0));
        assert_eq!(
            pe.output_shape(&[4, 2]).unwrap_err().to_string(),
            "expects a sequence of shape [3, 2] [steps, features], gets shape [4, 2]"
        );
        let e = pe
            .forward(&Tensor::zeros(&[2, 6], DType::F32), &mut Ctx::eval())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "PositionEmbedding: expects [N, [3, 2]], gets shape [2, 6]"
        );
    }
}
