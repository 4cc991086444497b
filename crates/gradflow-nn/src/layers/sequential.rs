//! A stack of layers applied in order, named as PyTorch's `nn.Sequential`
//! names them: `{index}.{name}`, where the index counts every layer.

use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use gradflow::{Result, Tensor};

/// Layers in order.
#[derive(Default)]
pub struct Sequential {
    /// The layers.
    pub layers: Vec<Box<dyn Module>>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.layers.iter().map(|l| l.describe()))
            .finish()
    }
}

impl Sequential {
    /// An empty stack.
    pub fn new() -> Sequential {
        Sequential::default()
    }
    /// Append a layer (builder style).
    pub fn push(mut self, layer: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }
    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    /// True when there is no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
    /// Parameters and buffers together: the state_dict.
    pub fn state_dict(&self) -> Vec<NamedTensor> {
        let mut v = self.parameters();
        v.extend(self.buffers());
        v
    }
    /// Total number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.tensor.numel()).sum()
    }
    /// Penalty targets with their PyTorch names (`0.weight`).
    pub fn named_penalty_targets(&self) -> Vec<PenaltyTarget> {
        self.prefixed(|m| m.penalty_targets(), |t| &mut t.name)
    }

    fn prefixed<T>(&self, get: impl Fn(&dyn Module) -> Vec<T>, name: impl Fn(&mut T) -> &mut String) -> Vec<T> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for mut t in get(l.as_ref()) {
                let n = name(&mut t);
                *n = format!("{i}.{n}");
                out.push(t);
            }
        }
        out
    }

    /// Per-sample output shape after each layer, or the first layer that cannot take its input.
    pub fn infer_shapes(&self, input: &[usize]) -> crate::Result<Vec<Vec<usize>>> {
        let mut shapes = Vec::with_capacity(self.layers.len());
        let mut cur = input.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            cur = l
                .output_shape(&cur)
                .map_err(|e| crate::Error::Shape(format!("layer {i} ({}): {e}", l.kind())))?;
            shapes.push(cur.clone());
        }
        Ok(shapes)
    }
}

impl Module for Sequential {
    fn kind(&self) -> &'static str {
        "Sequential"
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut h = x.clone();
        for (index, l) in self.layers.iter().enumerate() {
            h = l.forward(&h, ctx).map_err(|e| gradflow::Error::InLayer {
                index,
                kind: l.kind(),
                source: Box::new(e),
            })?;
            if ctx.record_outputs {
                ctx.outputs.push(h.clone());
            }
        }
        Ok(h)
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        Ok(self.infer_shapes(input)?.pop().unwrap_or_else(|| input.to_vec()))
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        self.prefixed(|m| m.parameters(), |t| &mut t.name)
    }
    fn buffers(&self) -> Vec<NamedTensor> {
        self.prefixed(|m| m.buffers(), |t| &mut t.name)
    }
    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        self.named_penalty_targets()
    }
}

#[cfg(test)]
mod tests {
    use crate::{BuildOptions, Ctx, Init, ModelSpec, Module};
    use gradflow::{DType, Tensor};

    /// An error raised while a layer runs names the layer's place, nested models a path.
    #[test]
    fn runtime_errors_name_the_layer() {
        let text = "input = [3]\n[[layer]]\ntype = \"Embedding\"\nnum_embeddings = 4\nembedding_dim = 2\n\
                    [[layer]]\ntype = \"Flatten\"\n";
        let model = ModelSpec::parse(text, "test")
            .unwrap()
            .build(BuildOptions {
                init: Init::PytorchDefault,
                dtype: DType::F32,
                seed: 0,
            })
            .unwrap();
        let x = Tensor::from_vec(vec![0.0f32, 1.0, 7.0], &[1, 3]).unwrap();
        let err = model.forward(&x, &mut Ctx::eval()).unwrap_err().to_string();
        assert!(
            err.starts_with("layer 0 (Embedding): Embedding: input value 7 at [0, 2] is not a token id"),
            "{err}"
        );
    }
}
