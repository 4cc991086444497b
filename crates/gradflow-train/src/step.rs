//! One training step, written once for the trainer, the playground and
//! `gradflow grad`: forward, data loss plus penalty, backward, clipping, the
//! optimizer's update and the max-norm constraint, in PyTorch's order.

use crate::collective::Shard;
use crate::error::Result;
use gradflow::{DType, GradStore, Tensor};
use gradflow_nn::optim::{self, Optimizer, Param};
use gradflow_nn::{regularize, Ctx, Loss, Module, Penalty, PenaltyTarget, Sequential, Target};

/// What is minimized: the data loss plus the L1/L2 penalty on the penalty targets.
#[derive(Clone, Copy)]
pub struct Objective<'a> {
    /// The data loss, averaged over the batch.
    pub loss: &'a Loss,
    /// Global λ₁ and λ₂ (a target's own λ overrides them).
    pub penalty: Penalty,
    /// The tensors the penalty and the max-norm constraint apply to.
    pub penalty_targets: &'a [PenaltyTarget],
}

/// The forward pass and the objective's parts, still differentiable.
pub struct Evaluated {
    /// The model's output.
    pub output: Tensor,
    /// The data loss alone.
    pub data_loss: Tensor,
    /// Data loss plus penalty: what `backward` starts from.
    pub total: Tensor,
}

impl Objective<'_> {
    /// Forward `x` through `model` and compute the objective against `target`.
    pub fn evaluate(&self, model: &Sequential, x: &Tensor, target: Target<'_>, ctx: &mut Ctx) -> Result<Evaluated> {
        let output = model.forward(x, ctx)?;
        let data_loss = self.loss.compute(&output, target)?;
        let total = match self.penalty.term(self.penalty_targets)? {
            Some(p) => data_loss.add(&p)?,
            None => data_loss.clone(),
        };
        Ok(Evaluated {
            output,
            data_loss,
            total,
        })
    }
}

/// How the parameters change once the gradients are known.
pub struct Update<'a> {
    /// The optimizer that owns the update rule and its state.
    pub optimizer: &'a mut dyn Optimizer,
    /// The parameters it updates.
    pub params: &'a [Param],
    /// Rescale all gradients together so their global L2 norm is at most this.
    pub clip_norm: Option<f64>,
    /// Clamp each gradient element to ±this.
    pub clip_value: Option<f64>,
    /// After the update, cap each unit's incoming weight norm (on the penalty targets).
    pub max_norm: Option<f64>,
    /// Scan every parameter for NaN and infinity after the update. The scan
    /// reads all the weights again (a tenth of a small MLP's step), so a
    /// training loop asks for it every few steps and always before it saves
    /// a checkpoint; a non-finite weight almost always shows in the next
    /// step's loss anyway.
    pub check_parameters: bool,
}

/// A step that ran to the end.
pub struct Step {
    /// The model's output on the batch (before the update).
    pub output: Tensor,
    /// The objective's value: data loss plus penalty.
    pub loss: f64,
    /// The data loss alone.
    pub data_loss: f64,
    /// The gradients the optimizer used (after clipping).
    pub grads: GradStore,
}

/// How a step ended.
pub enum StepOutcome {
    /// The parameters were updated and all are finite.
    Updated(Step),
    /// The objective was NaN or infinite: nothing was updated.
    NonFiniteLoss {
        /// The objective's value.
        loss: f64,
    },
    /// A gradient was NaN or infinite where clipping each element would have
    /// hidden it: nothing was updated. (Without `clip_value` a non-finite
    /// gradient makes its parameter non-finite, which the next variant reports.)
    NonFiniteGradient {
        /// The objective's value.
        loss: f64,
        /// The `state_dict` name of the first parameter with a non-finite gradient.
        parameter: String,
    },
    /// The update left a parameter NaN or infinite (the step did run).
    NonFiniteParameter {
        /// The step, for its loss and gradients.
        step: Step,
        /// The `state_dict` name of the first non-finite parameter.
        parameter: String,
        /// Whether that parameter's gradient was already non-finite.
        gradient_non_finite: bool,
    },
}

/// One step on the batch `x`: forward, objective, backward, clip, update, max-norm.
/// Stops before `backward` when the objective is not finite, and, when asked,
/// checks every parameter after the update, so a run never saves NaN weights.
pub fn train_step(
    model: &Sequential,
    x: &Tensor,
    target: Target<'_>,
    objective: &Objective<'_>,
    update: &mut Update<'_>,
    ctx: &mut Ctx,
) -> Result<StepOutcome> {
    train_step_sharded(model, x, target, objective, update, ctx, Shard::WHOLE)
}

/// [`train_step`] on this process's shard `x` of a batch spread over processes:
/// the losses and gradients become the whole batch's before anything is
/// decided, so clipping, the penalties' gradients and the update see exactly
/// what one process would, and every process takes the same branch.
pub fn train_step_sharded(
    model: &Sequential,
    x: &Tensor,
    target: Target<'_>,
    objective: &Objective<'_>,
    update: &mut Update<'_>,
    ctx: &mut Ctx,
    shard: Shard<'_>,
) -> Result<StepOutcome> {
    let evaluated = objective.evaluate(model, x, target, ctx)?;
    let [loss, data_loss] = shard.batch_losses([evaluated.total.item()?, evaluated.data_loss.item()?]);
    if !loss.is_finite() {
        return Ok(StepOutcome::NonFiniteLoss { loss });
    }
    let mut grads = evaluated.total.backward()?;
    shard.all_reduce_gradients(update.params, &mut grads)?;
    if update.clip_value.is_some() {
        if let Some(parameter) = first_non_finite_gradient(update.params, &grads)? {
            return Ok(StepOutcome::NonFiniteGradient { loss, parameter });
        }
    }
    if let Some(c) = update.clip_norm {
        optim::clip_grad_norm(update.params, &mut grads, c)?;
    }
    if let Some(c) = update.clip_value {
        optim::clip_grad_value(update.params, &mut grads, c)?;
    }
    update.optimizer.step(update.params, &grads)?;
    if let Some(m) = update.max_norm {
        regularize::apply_max_norm(objective.penalty_targets, m)?;
    }
    let step = Step {
        output: evaluated.output,
        loss,
        data_loss,
        grads,
    };
    let non_finite = match update.check_parameters {
        true => first_non_finite(update.params)?,
        false => None,
    };
    let Some(p) = non_finite else {
        return Ok(StepOutcome::Updated(step));
    };
    let gradient_non_finite = match step.grads.get(&p.tensor) {
        Some(g) => !all_finite(g)?,
        None => false,
    };
    Ok(StepOutcome::NonFiniteParameter {
        parameter: p.name.clone(),
        step,
        gradient_non_finite,
    })
}

/// The first parameter holding a NaN or an infinity, in the given order.
pub fn first_non_finite(params: &[Param]) -> Result<Option<&Param>> {
    for p in params {
        if !all_finite(&p.tensor)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The first parameter whose gradient holds a NaN or an infinity.
fn first_non_finite_gradient(params: &[Param], grads: &GradStore) -> Result<Option<String>> {
    for p in params {
        if let Some(g) = grads.get(&p.tensor) {
            if !all_finite(g)? {
                return Ok(Some(p.name.clone()));
            }
        }
    }
    Ok(None)
}

/// Whether every element is finite. It runs after every step, over every
/// parameter, so it splits large tensors over the kernel threads and compares
/// exponent bits with integer maxima, which vectorize, where an early-exit
/// `is_finite` loop does not.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(match t.dtype() {
        DType::F32 => t.with_slice::<f32, _>(|d| all_below(d, |v| v.to_bits(), 0x7f80_0000))?,
        DType::F64 => t.with_slice::<f64, _>(|d| all_below(d, |v| v.to_bits(), 0x7ff0_0000_0000_0000))?,
    })
}

/// Whether no element has all exponent bits set (the encoding of NaN and ±infinity).
fn all_below<T, B>(d: &[T], bits: impl Fn(&T) -> B + Sync, exponent: B) -> bool
where
    T: Sync,
    B: Copy + Ord + Default + std::ops::BitAnd<Output = B> + Send + Sync,
{
    const CHUNK: usize = 4096;
    let finite = std::sync::atomic::AtomicBool::new(true);
    gradflow::kernels::for_each_range(d.len(), 1 << 16, |range| {
        let ok = d[range]
            .chunks(CHUNK)
            .all(|c| c.iter().fold(B::default(), |m, v| m.max(bits(v) & exponent)) != exponent);
        if !ok {
            finite.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    });
    finite.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradflow_nn::optim::OptimizerSpec;
    use gradflow_nn::{BuildOptions, ModelSpec};

    const TINY: &str = "input = [3]\n[[layer]]\ntype = \"Linear\"\nout_features = 2\n";

    struct Setup {
        model: Sequential,
        params: Vec<Param>,
        targets: Vec<PenaltyTarget>,
        loss: Loss,
    }

    fn setup() -> Setup {
        let model = ModelSpec::parse(TINY, "tiny")
            .unwrap()
            .build(BuildOptions {
                dtype: DType::F64,
                ..Default::default()
            })
            .unwrap();
        Setup {
            params: model
                .parameters()
                .into_iter()
                .map(|p| Param::new(p.name, p.tensor))
                .collect(),
            targets: model.named_penalty_targets(),
            model,
            loss: Loss::CrossEntropy { label_smoothing: 0.0 },
        }
    }

    fn batch(first: f64) -> Tensor {
        Tensor::from_vec(vec![first, -2.0, 0.5, 0.3, 0.8, -1.0], &[2, 3]).unwrap()
    }

    fn step_with(s: &Setup, optimizer: &mut dyn Optimizer, x: &Tensor, clip_norm: Option<f64>) -> StepOutcome {
        let objective = Objective {
            loss: &s.loss,
            penalty: Penalty { l1: 0.0, l2: 0.01 },
            penalty_targets: &s.targets,
        };
        let mut update = Update {
            optimizer,
            params: &s.params,
            clip_norm,
            clip_value: None,
            max_norm: None,
            check_parameters: true,
        };
        train_step(
            &s.model,
            x,
            Target::Classes(&[0, 1]),
            &objective,
            &mut update,
            &mut Ctx::eval(),
        )
        .unwrap()
    }

    fn values(params: &[Param]) -> Vec<Vec<f64>> {
        params.iter().map(|p| p.tensor.to_vec_f64()).collect()
    }

    #[test]
    fn an_sgd_step_moves_each_weight_against_its_gradient_and_lowers_the_loss() {
        let s = setup();
        let before = values(&s.params);
        let mut sgd = optim::build(&OptimizerSpec::sgd(0.1));
        let StepOutcome::Updated(step) = step_with(&s, sgd.as_mut(), &batch(1.0), None) else {
            panic!("the step did not update");
        };
        assert!(
            (step.loss - step.data_loss) > 0.0,
            "the L2 penalty is part of the objective"
        );
        for (p, old) in s.params.iter().zip(&before) {
            let g = step.grads.get(&p.tensor).unwrap().to_vec_f64();
            for ((new, old), g) in p.tensor.to_vec_f64().iter().zip(old).zip(&g) {
                assert!(
                    (new - (old - 0.1 * g)).abs() < 1e-15,
                    "{}: {new} vs {old} - 0.1·{g}",
                    p.name
                );
            }
        }
        let second = step_with(&s, sgd.as_mut(), &batch(1.0), None);
        let StepOutcome::Updated(second) = second else { panic!() };
        assert!(second.loss < step.loss, "{} then {}", step.loss, second.loss);
    }

    #[test]
    fn clipping_caps_the_global_gradient_norm_the_optimizer_sees() {
        let s = setup();
        let mut sgd = optim::build(&OptimizerSpec::sgd(0.1));
        let StepOutcome::Updated(step) = step_with(&s, sgd.as_mut(), &batch(50.0), Some(0.01)) else {
            panic!()
        };
        let norm: f64 = s
            .params
            .iter()
            .flat_map(|p| step.grads.get(&p.tensor).unwrap().to_vec_f64())
            .map(|g| g * g)
            .sum::<f64>()
            .sqrt();
        // PyTorch's rule: scale by max_norm / (norm + 1e-6), a hair under the cap.
        assert!(norm <= 0.01 && norm > 0.01 * (1.0 - 1e-5), "{norm}");
    }

    #[test]
    fn a_non_finite_loss_updates_nothing() {
        let s = setup();
        let before = values(&s.params);
        let mut sgd = optim::build(&OptimizerSpec::sgd(0.1));
        let outcome = step_with(&s, sgd.as_mut(), &batch(f64::NAN), None);
        assert!(matches!(outcome, StepOutcome::NonFiniteLoss { loss } if loss.is_nan()));
        assert_eq!(values(&s.params), before);
    }

    #[test]
    fn an_update_that_overflows_a_weight_names_it() {
        let s = setup();
        // lr·weight_decay overflows f64: the decoupled decay multiplies every weight by −inf.
        let mut spec = OptimizerSpec::parse("adamw", 10.0).unwrap();
        spec.set("weight_decay", 1e308).unwrap();
        let mut adamw = optim::build(&spec);
        let outcome = step_with(&s, adamw.as_mut(), &batch(1.0), None);
        let StepOutcome::NonFiniteParameter {
            parameter,
            gradient_non_finite,
            ..
        } = outcome
        else {
            panic!("the overflow went unnoticed");
        };
        assert_eq!(parameter, "0.weight");
        assert!(!gradient_non_finite);
    }

    #[test]
    fn an_infinite_gradient_that_clipping_would_hide_updates_nothing() {
        let s = setup();
        let mut sgd = optim::build(&OptimizerSpec::sgd(0.1));
        // λ₂·Σw² stays finite (1e308 · 0.95²) while its gradient 2λ₂·0.95 does not.
        let w = Tensor::from_vec(vec![0.95, 0.0, 0.0, 0.0, 0.0, 0.0], &[2, 3]).unwrap();
        s.params[0].tensor.assign(&w).unwrap();
        let before = values(&s.params);
        let objective = Objective {
            loss: &s.loss,
            penalty: Penalty { l1: 0.0, l2: 1e308 },
            penalty_targets: &s.targets,
        };
        let mut update = Update {
            optimizer: sgd.as_mut(),
            params: &s.params,
            clip_norm: None,
            clip_value: Some(1.0),
            max_norm: None,
            check_parameters: true,
        };
        let x = batch(1.0);
        let outcome = train_step(
            &s.model,
            &x,
            Target::Classes(&[0, 1]),
            &objective,
            &mut update,
            &mut Ctx::eval(),
        );
        match outcome.unwrap() {
            StepOutcome::NonFiniteGradient { parameter, .. } => assert_eq!(parameter, "0.weight"),
            StepOutcome::NonFiniteLoss { loss } => panic!("the loss overflowed first ({loss}): pick another input"),
            _ => panic!("the infinite gradient went unnoticed"),
        }
        assert_eq!(values(&s.params), before);
    }

    #[test]
    fn all_finite_sees_every_kind_of_non_finite_value_anywhere() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 4095, 4096, 9999] {
                let mut v = vec![1.5f32; 10_000];
                v[at] = bad;
                assert!(!all_finite(&Tensor::from_vec(v, &[10_000]).unwrap()).unwrap());
            }
        }
        // Long enough to be split over the kernel threads.
        let mut long = vec![0.5f32; 300_000];
        long[299_999] = f32::NAN;
        assert!(!all_finite(&Tensor::from_vec(long, &[300_000]).unwrap()).unwrap());
        assert!(all_finite(&Tensor::from_vec(vec![0.5f32; 300_000], &[300_000]).unwrap()).unwrap());
        let edge = vec![f64::MAX, f64::MIN, f64::MIN_POSITIVE, -0.0];
        assert!(all_finite(&Tensor::from_vec(edge, &[4]).unwrap()).unwrap());
        assert!(all_finite(&Tensor::from_vec(vec![f32::MAX, f32::MIN], &[2]).unwrap()).unwrap());
    }
}
