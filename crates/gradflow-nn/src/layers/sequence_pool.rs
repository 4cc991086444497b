//! From a sequence to one vector per sample, so that a classifier can follow
//! a sequence model: `[N, T, E]` → `[N, E]` by the mean over the steps (the
//! usual choice after a transformer encoder), or by the first step (a class
//! token) or the last (what a forward recurrent pass has seen all of).

use crate::module::{Ctx, Module};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{Result, Tensor};
use std::fmt::Write as _;

/// How [`SequencePool`] reduces the steps of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// The mean over the steps (PyTorch: `x.mean(dim=1)`).
    Mean,
    /// The first step (PyTorch: `x[:, 0]`).
    First,
    /// The last step (PyTorch: `x[:, -1]`).
    Last,
}

impl PoolMode {
    /// Every mode, in the order a model file's error message lists them.
    pub const ALL: [PoolMode; 3] = [PoolMode::Mean, PoolMode::First, PoolMode::Last];

    /// The name a model file uses (`mode = "mean"`).
    pub fn name(self) -> &'static str {
        match self {
            PoolMode::Mean => "mean",
            PoolMode::First => "first",
            PoolMode::Last => "last",
        }
    }

    /// The mode a model file names, if any.
    pub fn parse(name: &str) -> Option<PoolMode> {
        PoolMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Reduces `[N, T, E]` to `[N, E]` over the steps `T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencePool(pub PoolMode);

impl Module for SequencePool {
    fn kind(&self) -> &'static str {
        "SequencePool"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        if x.ndim() != 3 {
            return Err(gradflow::Error::Shape {
                op: "SequencePool",
                msg: format!("expects a batch of sequences [N, T, E], gets shape {:?}", x.shape()),
            });
        }
        let steps = x.shape()[1];
        match self.0 {
            PoolMode::Mean => x.mean(&[1], false),
            PoolMode::First => x.narrow(1, 0, 1)?.squeeze(1),
            PoolMode::Last => x.narrow(1, steps.saturating_sub(1), 1)?.squeeze(1),
        }
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        match input {
            [t, e] if *t > 0 => Ok(vec![*e]),
            _ => crate::error::bad_shape(format!("expects a sequence [steps, features], gets shape {input:?}")),
        }
    }
    fn describe(&self) -> String {
        format!("SequencePool({})", self.0.name())
    }
}

/// `SequencePool(mode)` in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequencePoolSpec {
    /// How the steps are reduced (default the mean).
    pub mode: PoolMode,
}

impl LayerDecl for SequencePoolSpec {
    fn types() -> Vec<&'static str> {
        vec!["SequencePool"]
    }
    fn description() -> &'static str {
        "[T, E] -> [E]: the mean over the steps, or the first or last step"
    }
    fn read(_ty: &str, k: &mut Keys<'_>) -> crate::Result<SequencePoolSpec> {
        let mode = match k.get("mode") {
            None => Some(PoolMode::Mean),
            Some(toml::Value::String(s)) => PoolMode::parse(s),
            Some(_) => None,
        };
        match mode {
            Some(mode) => Ok(SequencePoolSpec { mode }),
            None => {
                let names: Vec<String> = PoolMode::ALL.iter().map(|m| format!("\"{}\"", m.name())).collect();
                let got = k.get("mode").map(ToString::to_string).unwrap_or_default();
                k.err(format!("'mode' must be one of {}, got {got}", names.join(", ")))
            }
        }
    }
    fn kind(&self) -> &'static str {
        "SequencePool"
    }
    fn write(&self, s: &mut String) {
        let _ = writeln!(s, "mode = \"{}\"", self.mode.name());
    }
    fn check_input(&self, shape: &[usize]) -> crate::Result<()> {
        if shape.len() != 2 {
            return crate::error::bad_shape(format!(
                "expects a sequence [steps, features], gets shape {shape:?} (declare input = [T, F])"
            ));
        }
        Ok(())
    }
    fn build(&self, _shape: &[usize], _cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        Ok(Box::new(SequencePool(self.mode)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow::{gradcheck, seeded_rng, DType, GradcheckOptions};

    #[test]
    fn each_mode_picks_or_averages_the_steps() {
        let x = Tensor::arange(0.0, 12.0, 1.0, DType::F32)
            .unwrap()
            .reshape(&[2, 3, 2])
            .unwrap();
        let pool = |m| {
            SequencePool(m)
                .forward(&x, &mut Ctx::eval())
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(pool(PoolMode::Mean), vec![2.0, 3.0, 8.0, 9.0]);
        assert_eq!(pool(PoolMode::First), vec![0.0, 1.0, 6.0, 7.0]);
        assert_eq!(pool(PoolMode::Last), vec![4.0, 5.0, 10.0, 11.0]);
        assert_eq!(SequencePool(PoolMode::Mean).output_shape(&[3, 2]).unwrap(), vec![2]);
        assert_eq!(PoolMode::parse("last"), Some(PoolMode::Last));
        assert_eq!(PoolMode::parse("max"), None);
    }

    #[test]
    fn gradcheck_every_mode() {
        let x = Tensor::rand_uniform(&[2, 4, 3], -1.0, 1.0, DType::F64, &mut seeded_rng(0));
        for mode in PoolMode::ALL {
            let f = |t: &[Tensor]| Ok(SequencePool(mode).forward(&t[0], &mut Ctx::eval())?.tanh());
            if let Err(e) = gradcheck(f, std::slice::from_ref(&x), GradcheckOptions::default()) {
                panic!("{mode:?}: {e}");
            }
        }
    }

    #[test]
    fn inputs_that_are_no_sequence_are_refused() {
        let pool = SequencePool(PoolMode::Mean);
        assert_eq!(
            pool.output_shape(&[6]).unwrap_err().to_string(),
            "expects a sequence [steps, features], gets shape [6]"
        );
        assert!(pool.output_shape(&[1, 4, 4]).is_err());
        let e = pool
            .forward(&Tensor::zeros(&[2, 6], DType::F32), &mut Ctx::eval())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SequencePool: expects a batch of sequences [N, T, E], gets shape [2, 6]"
        );
    }
}
