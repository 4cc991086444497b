//! One training step, written once for the trainer, the playground and
//! `gradflow grad`: forward, data loss plus penalty, backward, clipping, the
//! optimizer's update and the max-norm constraint, in PyTorch's order.

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
/// Stops before `backward` when the objective is not finite, and checks every
/// parameter after the update, so a run never trains on from NaN weights.
pub fn train_step(
    model: &Sequential,
    x: &Tensor,
    target: Target<'_>,
    objective: &Objective<'_>,
    update: &mut Update<'_>,
    ctx: &mut Ctx,
) -> Result<StepOutcome> {
    let evaluated = objective.evaluate(model, x, target, ctx)?;
    let (loss, data_loss) = (evaluated.total.item()?, evaluated.data_loss.item()?);
    if !loss.is_finite() {
        return Ok(StepOutcome::NonFiniteLoss { loss });
    }
    let mut grads = evaluated.total.backward()?;
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
    let Some(p) = first_non_finite(update.params)? else {
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

/// Whether every element is finite. It runs after every step, so it compares
/// exponent bits with integer maxima, which vectorize, instead of an
/// early-exit `is_finite` loop, which does not.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    const CHUNK: usize = 4096;
    Ok(match t.dtype() {
        DType::F32 => t.with_slice::<f32, _>(|d| {
            const EXP: u32 = 0x7f80_0000;
            d.chunks(CHUNK)
                .all(|c| c.iter().fold(0, |m, v| m.max(v.to_bits() & EXP)) != EXP)
        })?,
        DType::F64 => t.with_slice::<f64, _>(|d| {
            const EXP: u64 = 0x7ff0_0000_0000_0000;
            d.chunks(CHUNK)
                .all(|c| c.iter().fold(0, |m, v| m.max(v.to_bits() & EXP)) != EXP)
        })?,
    })
}
