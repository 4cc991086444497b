//! Reverse-mode automatic differentiation: the backpropagation of the seed
//! article, at tensor scale.
//!
//! Every op that needs a gradient leaves a [`GradFn`] on its output: the rule
//! that turns the gradient of the output into gradients of its inputs (a
//! vector-Jacobian product). [`Tensor::backward`] sorts the recorded graph
//! topologically and walks it once in reverse, summing the gradients of tensors
//! used more than once. The walk is a loop, not a recursion, so a chain of any
//! length fits on the stack; and each node's rule is dropped right after it
//! runs, releasing the activations it saved.

use crate::error::{Error, Result};
use crate::layout::fmt_shape;
use crate::tensor::{Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The backward rule of one recorded op.
pub trait GradFn: Send + Sync {
    /// The op's name, for diagnostics and error messages.
    fn name(&self) -> &'static str;
    /// The tensors the op read, in the order `backward` returns their gradients.
    fn inputs(&self) -> Vec<Tensor>;
    /// Given the op's output `out` and the gradient `grad` of the loss with
    /// respect to it, return the gradient for each input. `needs[i]` is false
    /// for inputs that lead to no parameter: return `None` there and skip the work.
    fn backward(&self, out: &Tensor, grad: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>>;
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread currently record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops on this thread record nothing (inference, parameter
/// updates, and backward itself). Restores the previous state on drop.
pub struct NoGradGuard {
    previous: bool,
}

/// Turn graph recording off until the returned guard is dropped.
pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Run `f` with graph recording off.
pub fn no_grad_scope<R>(f: impl FnOnce() -> R) -> R {
    let _guard = no_grad();
    f()
}

/// Gradients from one backward pass, keyed by tensor.
#[derive(Default, Clone)]
pub struct GradStore {
    grads: HashMap<TensorId, Tensor>,
}

impl GradStore {
    /// The gradient of the loss with respect to `t`, if `t` took part and requires grad.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }
    /// The gradient by id.
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor> {
        self.grads.get(&id)
    }
    /// Take a gradient out of the store.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id())
    }
    /// Replace a gradient (used by gradient clipping and regularizers).
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.grads.insert(t.id(), g);
    }
    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.grads.len()
    }
    /// True when no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// Post-order of the graph below `root`, by an explicit stack (no recursion).
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited: HashSet<TensorId> = HashSet::new();
    // (node, children already pushed?)
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        let gf = node.grad_fn();
        stack.push((node, true));
        if let Some(gf) = gf {
            for input in gf.inputs() {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input, false));
                }
            }
        }
    }
    order
}

impl Tensor {
    /// Backpropagate from this scalar: returns d(self)/d(t) for every leaf `t`
    /// that requires grad and took part in computing `self`.
    pub fn backward(&self) -> Result<GradStore> {
        if self.numel() != 1 {
            return Err(Error::Backward(format!(
                "the root must be a scalar (one element), got shape {}; pass a seed gradient with backward_with",
                fmt_shape(self.shape())
            )));
        }
        self.backward_with(&self.ones_like().detach())
    }

    /// Backpropagate with an explicit seed gradient of this tensor's shape.
    pub fn backward_with(&self, seed: &Tensor) -> Result<GradStore> {
        self.run_backward(seed, false)
    }

    /// Like [`backward`](Self::backward), but keeps the gradient of every
    /// intermediate tensor too, so a person can read the chain rule step by step.
    pub fn backward_retain_all(&self) -> Result<GradStore> {
        let seed = self.ones_like();
        self.run_backward(&seed, true)
    }

    fn run_backward(&self, seed: &Tensor, retain_all: bool) -> Result<GradStore> {
        if seed.shape() != self.shape() {
            return Err(Error::Backward(format!(
                "seed gradient has shape {}, root has shape {}",
                fmt_shape(seed.shape()),
                fmt_shape(self.shape())
            )));
        }
        if !self.requires_grad() {
            return Err(Error::Backward(
                "the root does not require grad: no parameter took part in computing it".into(),
            ));
        }
        let _guard = no_grad();
        let order = topological_order(self);
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), seed.to_dtype(self.dtype()));
        let mut store = GradStore::default();
        for node in order.into_iter().rev() {
            let Some(grad) = pending.remove(&node.id()) else {
                continue;
            };
            // Take the rule out of the node: after it runs, the saved inputs are released.
            let gf = node.0.grad_fn.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(gf) = gf else {
                store.grads.insert(node.id(), grad);
                continue;
            };
            let inputs = gf.inputs();
            let needs: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
            let input_grads = gf.backward(&node, &grad, &needs)?;
            debug_assert_eq!(input_grads.len(), inputs.len(), "{}", gf.name());
            for (input, g) in inputs.iter().zip(input_grads) {
                let Some(g) = g else { continue };
                if !input.requires_grad() {
                    continue;
                }
                if g.shape() != input.shape() {
                    return Err(Error::Backward(format!(
                        "{} produced a gradient of shape {} for an input of shape {}",
                        gf.name(),
                        fmt_shape(g.shape()),
                        fmt_shape(input.shape())
                    )));
                }
                let acc = match pending.remove(&input.id()) {
                    Some(prev) => prev.add(&g)?,
                    None => g,
                };
                pending.insert(input.id(), acc);
            }
            if retain_all {
                store.grads.insert(node.id(), grad);
            }
            drop(gf);
        }
        Ok(store)
    }
}

/// Shorthand used by ops: wrap a backward rule.
pub(crate) fn node(g: impl GradFn + 'static) -> Arc<dyn GradFn> {
    Arc::new(g)
}
