//! The loss and every gradient of a model on one batch, under the
//! parameters' own names (what `gradflow grad` writes), so anyone can compare
//! gradflow's backprop with another framework on their own model.

use crate::error::{Error, Result};
use crate::step::Objective;
use crate::trainer::resolve_model;
use gradflow::{DType, Tensor};
use gradflow_nn::serialize::{dominant_dtype, from_safetensors, load_into, to_safetensors};
use gradflow_nn::{BuildOptions, Ctx, Loss, ModelSpec, Module, NamedTensor, Penalty, Sequential, Target};
use std::path::Path;

/// How the gradients are computed.
#[derive(Debug, Clone, PartialEq)]
pub struct GradOptions {
    /// The data loss (cross-entropy carries its label smoothing).
    pub loss: Loss,
    /// L1/L2 penalty added to the loss.
    pub penalty: Penalty,
    /// Train mode (dropout on, batch statistics) rather than eval mode.
    pub training: bool,
    /// Dropout seed in train mode.
    pub seed: u64,
}

impl GradOptions {
    /// Refuse penalties and label smoothing no one can mean; the message names the flag.
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [("l1", self.penalty.l1), ("l2", self.penalty.l2)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Setting(format!(
                    "--{flag} must be a non-negative number, got {v}"
                )));
            }
        }
        if let Loss::CrossEntropy { label_smoothing: s } = self.loss {
            if !(s.is_finite() && s >= 0.0) {
                return Err(Error::Setting(format!(
                    "--label-smoothing must be a non-negative number, got {s}"
                )));
            }
            if s > 1.0 {
                return Err(Error::Setting("--label-smoothing must be at most 1".into()));
            }
        }
        Ok(())
    }
}

/// A batch to differentiate on: `input` `[N, ...]` and `target` (class indices, or values for regression losses).
pub struct Batch {
    /// The model's input.
    pub input: Tensor,
    /// Class indices (as numbers) or target values.
    pub target: Tensor,
    /// Where the batch came from, for messages.
    pub source: String,
}

impl Batch {
    /// Read `input` and `target` from a safetensors file.
    pub fn load(path: &Path) -> Result<Batch> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read batch", e))?;
        let (mut tensors, _) = from_safetensors(&bytes, &source)?;
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| Error::Input(format!("{source}: no tensor named '{name}'")))
        };
        let (input, target) = (take("input")?, take("target")?);
        Ok(Batch { input, target, source })
    }
}

/// The loss and the gradients of one forward and backward pass.
pub struct Gradients {
    /// Data loss plus penalty, in the model's precision.
    pub loss: Tensor,
    /// Each parameter's gradient under its `state_dict` name (zeros where the loss does not depend on it).
    pub parameters: Vec<NamedTensor>,
    /// The gradient with respect to the input; `None` for token ids (a model
    /// that starts with an Embedding), which have none, as in PyTorch.
    pub input: Option<Tensor>,
}

impl Gradients {
    /// `loss`, every parameter's gradient, then `input` (unless the input is token ids): the layout `gradflow grad` writes.
    pub fn to_named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = vec![NamedTensor {
            name: "loss".into(),
            tensor: self.loss.clone(),
        }];
        out.extend(self.parameters.iter().cloned());
        out.extend(self.input.iter().map(|t| NamedTensor {
            name: "input".into(),
            tensor: t.clone(),
        }));
        out
    }

    /// Write [`to_named_tensors`](Self::to_named_tensors) to a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = to_safetensors(&self.to_named_tensors(), None)?;
        crate::checkpoint::atomic_write(path, &bytes).map_err(|e| Error::io(path, "cannot write", e))
    }
}

/// Build `model` (a preset or TOML file) in the precision of the weights file and load the weights.
pub fn load_model_for_grad(model: &str, weights: &Path) -> Result<(ModelSpec, Sequential)> {
    let spec = resolve_model(model)?;
    let shown = weights.display().to_string();
    let bytes = std::fs::read(weights).map_err(|e| Error::io(weights, "cannot read weights", e))?;
    let (loaded, _) = from_safetensors(&bytes, &shown)?;
    let net = spec
        .build(BuildOptions {
            dtype: dominant_dtype(&loaded),
            ..Default::default()
        })
        .map_err(|e| Error::Model(format!("{model}: {e}")))?;
    load_into(&net.state_dict(), &loaded, &shown, false)?;
    Ok((spec, net))
}

/// The loss and every gradient of `net` (built from `spec`) on `batch`.
pub fn grad(spec: &ModelSpec, net: &Sequential, batch: &Batch, options: &GradOptions) -> Result<Gradients> {
    options.validate()?;
    let dtype = net.parameters().first().map_or(DType::F32, |p| p.tensor.dtype());
    check_input(spec, batch)?;
    let tokens = spec.takes_token_ids();
    let x = batch.input.to_dtype(dtype).copy().requires_grad_(!tokens);
    let classes: Vec<usize>;
    let values: Tensor;
    let target = if options.loss.wants_classes() {
        classes = class_targets(batch, x.shape()[0])?;
        Target::Classes(&classes)
    } else {
        values = value_targets(spec, batch, x.shape()[0], dtype)?;
        Target::Values(&values)
    };
    let penalty_targets = net.named_penalty_targets();
    let objective = Objective {
        loss: &options.loss,
        penalty: options.penalty,
        penalty_targets: &penalty_targets,
    };
    let mut ctx = if options.training {
        Ctx::train(options.seed)
    } else {
        Ctx::eval()
    };
    let evaluated = objective.evaluate(net, &x, target, &mut ctx)?;
    let grads = evaluated.total.backward()?;
    let gradient = |t: &Tensor| grads.get(t).cloned().unwrap_or_else(|| t.zeros_like()).contiguous();
    Ok(Gradients {
        loss: evaluated.total.detach(),
        parameters: net
            .parameters()
            .into_iter()
            .map(|p| NamedTensor {
                tensor: gradient(&p.tensor),
                name: p.name,
            })
            .collect(),
        input: (!tokens).then(|| gradient(&x)),
    })
}

fn check_input(spec: &ModelSpec, batch: &Batch) -> Result<()> {
    let input = &batch.input;
    if input.ndim() < 1 || input.shape()[1..] != spec.input[..] {
        return Err(Error::Input(format!(
            "{}: 'input' has shape {:?}, the model takes [N, {}]",
            batch.source,
            input.shape(),
            spec.input.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

fn class_targets(batch: &Batch, n: usize) -> Result<Vec<usize>> {
    let v = batch.target.to_vec_f64();
    if v.len() != n || v.iter().any(|&c| c < 0.0 || c.fract() != 0.0) {
        return Err(Error::Input(format!(
            "{}: 'target' must hold {n} non-negative class indices",
            batch.source
        )));
    }
    Ok(v.iter().map(|&c| c as usize).collect())
}

fn value_targets(spec: &ModelSpec, batch: &Batch, n: usize, dtype: DType) -> Result<Tensor> {
    let values = batch.target.to_dtype(dtype);
    let out: Vec<usize> = std::iter::once(n)
        .chain(spec.output_shape().map_err(|e| Error::Model(e.to_string()))?)
        .collect();
    if values.shape() != out {
        return Err(Error::Input(format!(
            "{}: 'target' has shape {:?} but the model outputs {:?}",
            batch.source,
            values.shape(),
            out
        )));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "input = [3]\n[[layer]]\ntype = \"Linear\"\nout_features = 2\n";

    #[test]
    fn grad_writes_the_loss_every_parameter_and_the_input_by_name() {
        let spec = ModelSpec::parse(TINY, "tiny").unwrap();
        let net = spec
            .build(BuildOptions {
                dtype: DType::F64,
                ..Default::default()
            })
            .unwrap();
        let batch = Batch {
            input: Tensor::from_vec(vec![1.0, -2.0, 0.5, 0.3, 0.8, -1.0], &[2, 3]).unwrap(),
            target: Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap(),
            source: "batch".into(),
        };
        let options = GradOptions {
            loss: Loss::CrossEntropy { label_smoothing: 0.1 },
            penalty: Penalty { l1: 0.0, l2: 0.5 },
            training: false,
            seed: 0,
        };
        let g = grad(&spec, &net, &batch, &options).unwrap();
        let names: Vec<String> = g.to_named_tensors().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["loss", "0.weight", "0.bias", "input"]);
        assert_eq!(g.input.as_ref().unwrap().shape(), &[2, 3]);
        // The L2 term is in the loss: half its weight gradient is λ₂·2w.
        let unpenalized = grad(
            &spec,
            &net,
            &batch,
            &GradOptions {
                penalty: Penalty::default(),
                ..options.clone()
            },
        )
        .unwrap();
        let w = net.parameters()[0].tensor.to_vec_f64();
        let (a, b) = (
            g.parameters[0].tensor.to_vec_f64(),
            unpenalized.parameters[0].tensor.to_vec_f64(),
        );
        for i in 0..w.len() {
            assert!((a[i] - b[i] - 2.0 * 0.5 * w[i]).abs() < 1e-12);
        }
    }

    /// A model that starts with an Embedding reads int64 token ids (f64 once
    /// read) and writes no input gradient, as PyTorch has none; a value that is
    /// no id is named.
    #[test]
    fn token_ids_have_no_input_gradient() {
        let text = "input = [3]\n[[layer]]\ntype = \"Embedding\"\nnum_embeddings = 5\nembedding_dim = 2\n\
                    [[layer]]\ntype = \"SequencePool\"\n[[layer]]\ntype = \"Linear\"\nout_features = 2\n";
        let spec = ModelSpec::parse(text, "tokens").unwrap();
        let net = spec.build(BuildOptions::default()).unwrap();
        let batch = |ids: Vec<f64>| Batch {
            input: Tensor::from_vec(ids, &[2, 3]).unwrap(),
            target: Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap(),
            source: "batch".into(),
        };
        let options = GradOptions {
            loss: Loss::CrossEntropy { label_smoothing: 0.0 },
            penalty: Penalty::default(),
            training: false,
            seed: 0,
        };
        let g = grad(&spec, &net, &batch(vec![0.0, 1.0, 4.0, 2.0, 2.0, 3.0]), &options).unwrap();
        let names: Vec<String> = g.to_named_tensors().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["loss", "0.weight", "2.weight", "2.bias"]);
        let e = grad(&spec, &net, &batch(vec![0.0, 1.0, 5.0, 2.0, 2.0, 3.0]), &options)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("Embedding: input value 5 at [0, 2] is not a token id"),
            "{e}"
        );
    }

    #[test]
    fn bad_batches_and_options_are_named() {
        let spec = ModelSpec::parse(TINY, "tiny").unwrap();
        let net = spec.build(BuildOptions::default()).unwrap();
        let options = GradOptions {
            loss: Loss::CrossEntropy { label_smoothing: 0.0 },
            penalty: Penalty::default(),
            training: false,
            seed: 0,
        };
        let batch = |input: Vec<f32>, shape: &[usize], target: Vec<f32>| Batch {
            input: Tensor::from_vec(input, shape).unwrap(),
            target: Tensor::from_vec(target.clone(), &[target.len()]).unwrap(),
            source: "b.safetensors".into(),
        };
        let wrong_width = batch(vec![0.0; 4], &[2, 2], vec![0.0, 1.0]);
        assert_eq!(
            grad(&spec, &net, &wrong_width, &options).err().unwrap().to_string(),
            "b.safetensors: 'input' has shape [2, 2], the model takes [N, 3]"
        );
        let fractional = batch(vec![0.0; 6], &[2, 3], vec![0.5, 1.0]);
        assert_eq!(
            grad(&spec, &net, &fractional, &options).err().unwrap().to_string(),
            "b.safetensors: 'target' must hold 2 non-negative class indices"
        );
        let negative_l1 = GradOptions {
            penalty: Penalty { l1: -1.0, l2: 0.0 },
            ..options
        };
        assert_eq!(
            negative_l1.validate().unwrap_err().to_string(),
            "--l1 must be a non-negative number, got -1"
        );
    }
}
