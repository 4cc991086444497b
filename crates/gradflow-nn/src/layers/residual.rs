//! A residual block (He et al. 2016): `y = x + body(x)`, or
//! `y = shortcut(x) + body(x)` with a projection shortcut, named as a PyTorch
//! module whose `body` and `shortcut` are `nn.Sequential`
//! (`{i}.body.{j}.weight`, `{i}.shortcut.{j}.weight`).

use crate::layers::Sequential;
use crate::module::{Ctx, Module, NamedTensor, PenaltyTarget};
use crate::spec::{BuildContext, Keys, LayerDecl, LayerSpec};
use gradflow::{Result, Tensor};

/// `body(x)` plus `x` or `shortcut(x)`.
pub struct Residual {
    /// The layers of the main path.
    pub body: Sequential,
    /// The layers of the skip path; `None` for the identity.
    pub shortcut: Option<Sequential>,
}

impl Residual {
    /// `x + body(x)`.
    pub fn new(body: Sequential) -> Residual {
        Residual { body, shortcut: None }
    }

    /// `shortcut(x) + body(x)`, for a body that changes the shape.
    pub fn with_shortcut(self, shortcut: Sequential) -> Residual {
        Residual {
            shortcut: Some(shortcut),
            ..self
        }
    }

    /// `{prefix}.{name}` for each item of `body` and then `shortcut`.
    fn named<T>(&self, get: impl Fn(&Sequential) -> Vec<T>, name: impl Fn(&mut T) -> &mut String) -> Vec<T> {
        let paths = std::iter::once(("body", Some(&self.body))).chain([("shortcut", self.shortcut.as_ref())]);
        let mut out = Vec::new();
        for (prefix, seq) in paths {
            for mut t in seq.map(&get).unwrap_or_default() {
                let n = name(&mut t);
                *n = format!("{prefix}.{n}");
                out.push(t);
            }
        }
        out
    }
}

impl Module for Residual {
    fn kind(&self) -> &'static str {
        "Residual"
    }

    /// The inner layers' outputs are not recorded: diagnostics see one output per block.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let record = std::mem::replace(&mut ctx.record_outputs, false);
        let out = self.body.forward(x, ctx).and_then(|h| match &self.shortcut {
            Some(s) => s.forward(x, ctx)?.add(&h),
            None => x.add(&h),
        });
        ctx.record_outputs = record;
        out
    }

    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        let body = self.body.output_shape(input)?;
        let skip = match &self.shortcut {
            Some(s) => s.output_shape(input)?,
            None => input.to_vec(),
        };
        if body == skip {
            return Ok(body);
        }
        crate::error::bad_shape(match self.shortcut {
            Some(_) => format!("the body maps {input:?} to {body:?} but the shortcut to {skip:?}: they must agree"),
            None => format!(
                "the body maps {input:?} to {body:?}, so x + body(x) does not fit: keep the shape, or add a [[layer.shortcut]] that maps {input:?} to {body:?} (e.g. a Linear or a 1x1 Conv2d)"
            ),
        })
    }

    fn parameters(&self) -> Vec<NamedTensor> {
        self.named(Sequential::parameters, |t| &mut t.name)
    }

    fn buffers(&self) -> Vec<NamedTensor> {
        self.named(Sequential::buffers, |t| &mut t.name)
    }

    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        self.named(Sequential::named_penalty_targets, |t| &mut t.name)
    }

    fn describe(&self) -> String {
        let list = |s: &Sequential| s.layers.iter().map(|l| l.describe()).collect::<Vec<_>>().join(", ");
        match &self.shortcut {
            Some(s) => format!("Residual([{}] + shortcut [{}])", list(&self.body), list(s)),
            None => format!("Residual([{}])", list(&self.body)),
        }
    }
}

/// A residual block in a model file: nested `[[layer.body]]` and
/// `[[layer.shortcut]]` lists.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualSpec {
    /// The main path.
    pub body: Vec<LayerSpec>,
    /// The skip path; `None` for the identity.
    pub shortcut: Option<Vec<LayerSpec>>,
}

impl LayerDecl for ResidualSpec {
    fn types() -> Vec<&'static str> {
        vec!["Residual"]
    }
    fn description() -> &'static str {
        "x + body(x), or shortcut(x) + body(x), over nested layer lists"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<ResidualSpec> {
        let body = k.stack("body")?;
        if body.is_empty() {
            return k.err("needs a non-empty body: [[layer.body]] tables");
        }
        let shortcut = Some(k.stack("shortcut")?).filter(|s| !s.is_empty());
        Ok(ResidualSpec { body, shortcut })
    }
    fn kind(&self) -> &'static str {
        "Residual"
    }
    fn write(&self, _s: &mut String) {}
    fn nested(&self) -> Vec<(&'static str, &[LayerSpec])> {
        vec![
            ("body", &self.body),
            ("shortcut", self.shortcut.as_deref().unwrap_or_default()),
        ]
    }
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        let mut block = Residual::new(cx.nested("body", &self.body, shape)?.0);
        if let Some(shortcut) = &self.shortcut {
            block = block.with_shortcut(cx.nested("shortcut", shortcut, shape)?.0);
        }
        Ok(Box::new(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Activation, Linear};
    use gradflow::{gradcheck, seeded_rng, DType, GradcheckOptions};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        Tensor::rand_uniform(shape, -1.0, 1.0, DType::F64, &mut seeded_rng(seed))
    }

    /// x + body(x) and shortcut(x) + body(x), against finite differences in f64.
    #[test]
    fn gradcheck_residual_with_and_without_shortcut() {
        for projected in [false, true] {
            let f = |t: &[Tensor]| {
                let out = if projected { 3 } else { 4 };
                let mut lin = Linear::new(4, out).dtype(DType::F64).build(&mut seeded_rng(0));
                (lin.weight, lin.bias) = (t[1].clone(), Some(t[2].clone()));
                let mut block = Residual::new(Sequential::new().push(lin).push(Activation::Tanh));
                if projected {
                    let mut sc = Linear::new(4, 3)
                        .bias(false)
                        .dtype(DType::F64)
                        .build(&mut seeded_rng(0));
                    sc.weight = t[3].clone();
                    block = block.with_shortcut(Sequential::new().push(sc));
                }
                let mut ctx = Ctx::eval();
                ctx.record_outputs = true;
                let y = block.forward(&t[0], &mut ctx)?;
                assert!(ctx.outputs.is_empty() && ctx.record_outputs);
                Ok(y)
            };
            let out = if projected { 3 } else { 4 };
            let inputs = [rand(&[2, 4], 1), rand(&[out, 4], 2), rand(&[out], 3), rand(&[3, 4], 4)];
            if let Err(e) = gradcheck(f, &inputs, GradcheckOptions::default()) {
                panic!("{e}");
            }
        }
    }
}
