//! The `Module` trait: a piece of a network with a forward pass and named
//! parameters, under PyTorch's names so that weights travel both ways.

use gradflow::{HiddenGradNorms, Result, Tensor};
use rand_chacha::ChaCha8Rng;

/// A named trainable tensor (`0.weight`, `3.bias`, ...), as in a PyTorch state_dict.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    /// The state_dict name.
    pub name: String,
    /// The tensor (a leaf that requires grad, for parameters).
    pub tensor: Tensor,
}

/// A weight that L1/L2 penalties and max-norm apply to, with per-layer overrides.
#[derive(Debug, Clone)]
pub struct PenaltyTarget {
    /// Local name within its layer (`weight`).
    pub name: String,
    /// The weight tensor.
    pub tensor: Tensor,
    /// Layer-specific λ₁ replacing the global one (Some(0) exempts the layer).
    pub l1: Option<f64>,
    /// Layer-specific λ₂ replacing the global one.
    pub l2: Option<f64>,
}

/// What a forward pass needs besides its input: the mode, the randomness, and
/// (for diagnostics) a place to leave each layer's output.
pub struct Ctx {
    /// Training mode: dropout drops, batch norm uses batch statistics and updates its running ones.
    pub training: bool,
    /// Source of dropout masks; seeded, so a run is reproducible.
    pub rng: ChaCha8Rng,
    /// When true, containers push every layer's output to `outputs`.
    pub record_outputs: bool,
    /// Layer outputs recorded during the last forward pass, in order.
    pub outputs: Vec<Tensor>,
    /// When `record_outputs` is set, recurrent layers leave here one slot per
    /// stacked layer and direction, which the backward pass fills with ‖∂L/∂h_t‖.
    pub hidden_grads: Vec<HiddenGradSlot>,
}

/// ‖∂L/∂h_t‖ of one direction of one stacked layer of a recurrent layer.
#[derive(Debug, Clone)]
pub struct HiddenGradSlot {
    /// The recurrent layer's index among the recorded outputs (its index in the Sequential).
    pub layer: usize,
    /// PyTorch's suffix of that direction's weights: `l0`, `l1_reverse`.
    pub name: String,
    /// Whether the direction runs from the last step back (its first step is then t = T−1).
    pub reverse: bool,
    /// The norms by time step, once backward has run.
    pub norms: HiddenGradNorms,
}

impl Ctx {
    /// A context for training with dropout drawn from `seed`.
    pub fn train(seed: u64) -> Ctx {
        Ctx {
            training: true,
            rng: gradflow::seeded_rng(seed),
            record_outputs: false,
            outputs: Vec::new(),
            hidden_grads: Vec::new(),
        }
    }
    /// A context for evaluation: no dropout, running batch-norm statistics.
    pub fn eval() -> Ctx {
        Ctx {
            training: false,
            ..Ctx::train(0)
        }
    }
}

/// A layer or a network.
pub trait Module: Send + Sync {
    /// PyTorch's class name ("Linear", "Conv2d", ...), shown in messages.
    fn kind(&self) -> &'static str;
    /// The forward pass; ops record the graph that backward will walk.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
    /// Shape of one output sample for an input sample of shape `input` (no batch dimension),
    /// or an error saying why this layer cannot take it.
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>>;
    /// Trainable tensors under local names (`weight`, `bias`).
    fn parameters(&self) -> Vec<NamedTensor> {
        Vec::new()
    }
    /// Non-trainable state saved with the weights (`running_mean`, ...).
    fn buffers(&self) -> Vec<NamedTensor> {
        Vec::new()
    }
    /// Weights subject to L1/L2 penalties and max-norm (by default none).
    fn penalty_targets(&self) -> Vec<PenaltyTarget> {
        Vec::new()
    }
    /// The activation this layer is, if it is one (the diagnostics read its saturation rule).
    fn as_activation(&self) -> Option<crate::layers::Activation> {
        None
    }
    /// A one-line description for summaries (`Linear(784 → 800)`).
    fn describe(&self) -> String {
        self.kind().to_string()
    }
}
