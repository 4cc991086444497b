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
                if node.0.released.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Error::Backward(
                        "this graph was already backpropagated and freed; run the forward pass again".into(),
                    ));
                }
                store.grads.insert(node.id(), grad);
                continue;
            };
            node.0.released.store(true, std::sync::atomic::Ordering::Relaxed);
            pass_to_inputs(gf.as_ref(), &node, &grad, &mut pending)?;
            if retain_all {
                store.grads.insert(node.id(), grad);
            }
            drop(gf);
        }
        Ok(store)
    }
}

/// Run one node's backward rule on its output gradient `grad` and add each input's
/// gradient to what that input has `pending` from its other consumers.
fn pass_to_inputs(
    gf: &dyn GradFn,
    node: &Tensor,
    grad: &Tensor,
    pending: &mut HashMap<TensorId, Tensor>,
) -> Result<()> {
    let inputs = gf.inputs();
    let needs: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let input_grads = gf.backward(node, grad, &needs)?;
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
    Ok(())
}

/// Shorthand used by ops: wrap a backward rule.
pub(crate) fn node(g: impl GradFn + 'static) -> Arc<dyn GradFn> {
    Arc::new(g)
}

#[cfg(test)]
mod tests {
    use super::{is_grad_enabled, no_grad, no_grad_scope, GradStore};
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};
    use std::sync::Arc;

    fn grad(store: &GradStore, t: &Tensor) -> Vec<f64> {
        store.get(t).expect("gradient present").to_vec_f64()
    }

    fn err(r: crate::Result<GradStore>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_tensor_used_twice_accumulates() {
        let x = Tensor::from_vec(vec![1.5f64, -2.0, 0.5], &[3])
            .unwrap()
            .requires_grad_(true);
        let g = x.mul(&x).unwrap().sum_all().backward().unwrap();
        assert_eq!(grad(&g, &x), vec![3.0, -4.0, 1.0]);
        let g = x
            .add(&x)
            .unwrap()
            .add(&x.mul_scalar(3.0))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_eq!(grad(&g, &x), vec![5.0; 3]);
        // A diamond: a = eˣ feeds both sides of y = a·a + a, so dy/dx = (2a + 1)·a.
        let a = x.exp();
        let g = a.mul(&a).unwrap().add(&a).unwrap().sum_all().backward().unwrap();
        let want: Vec<f64> = x
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|v| (2.0 * v.exp() + 1.0) * v.exp())
            .collect();
        for (u, v) in grad(&g, &x).iter().zip(&want) {
            assert!((u - v).abs() < 1e-12);
        }
        // The same through gradcheck, with reuse at several depths.
        check(
            |t| {
                let h = t[0].tanh();
                let z = h.mul(&t[0])?.add(&h.matmul(&t[1])?.sum_all())?;
                z.mul(&h)
            },
            &[rand64(&[3, 3], 1), rand64(&[3, 2], 2)],
        );
    }

    #[test]
    fn no_gradient_for_inputs_that_do_not_require_it() {
        let x = rand64(&[2, 3], 1).requires_grad_(true);
        let c = rand64(&[2, 3], 2);
        let y = x.mul(&c).unwrap().exp().sum_all();
        let g = y.backward().unwrap();
        assert!(g.get(&c).is_none());
        // Only the leaf that asked is stored: no intermediate, no constant.
        assert_eq!(g.len(), 1);
        assert!(!g.is_empty());
        assert!(g.get_id(x.id()).is_some());
        // A detached branch contributes nothing.
        let g = x.detach().mul(&x).unwrap().sum_all().backward().unwrap();
        assert_eq!(grad(&g, &x), x.to_vec::<f64>().unwrap());
        // backward_retain_all keeps intermediates too.
        let h = x.mul_scalar(2.0);
        let y = h.sum_all();
        let g = y.backward_retain_all().unwrap();
        assert_eq!(grad(&g, &h), vec![1.0; 6]);
        assert_eq!(grad(&g, &x), vec![2.0; 6]);
        assert!(g.get(&y).is_some());
    }

    #[test]
    fn grad_store_editing() {
        let x = rand64(&[2], 1).requires_grad_(true);
        let mut g = x.square().sum_all().backward().unwrap();
        let gx = g.remove(&x).unwrap();
        assert!(g.is_empty());
        g.insert(&x, gx.mul_scalar(0.5));
        assert_eq!(grad(&g, &x), x.to_vec::<f64>().unwrap());
        assert_eq!(GradStore::default().len(), 0);
    }

    #[test]
    fn no_grad_records_nothing() {
        let x = rand64(&[3], 1).requires_grad_(true);
        assert!(is_grad_enabled());
        {
            let _g = no_grad();
            assert!(!is_grad_enabled());
            let y = x.mul_scalar(2.0).exp().sum_all();
            assert!(!y.requires_grad());
            assert!(y.op_name().is_none());
            assert!(y.is_leaf());
            assert!(y.backward().is_err());
            {
                // Nested guards restore the state they found.
                let _h = no_grad();
            }
            assert!(!is_grad_enabled());
        }
        assert!(is_grad_enabled());
        let y = no_grad_scope(|| x.unsqueeze(0).unwrap().matmul(&x.unsqueeze(1).unwrap()).unwrap());
        assert!(!y.requires_grad());
        // The switch is per thread.
        let _g = no_grad();
        let recorded = std::thread::spawn(|| {
            let x = rand64(&[2], 1).requires_grad_(true);
            x.exp().op_name()
        })
        .join()
        .unwrap();
        assert_eq!(recorded, Some("exp"));
        assert!(x.exp().op_name().is_none());
    }

    #[test]
    fn backward_errors() {
        let x = rand64(&[3], 1).requires_grad_(true);
        let y = x.mul_scalar(2.0);
        assert_eq!(
            err(y.backward()),
            "backward: the root must be a scalar (one element), got shape [3]; pass a seed gradient with backward_with"
        );
        assert!(err(rand64(&[], 1).backward()).starts_with("backward: the root does not require grad"));
        let e = err(y.backward_with(&rand64(&[2], 0)));
        assert_eq!(e, "backward: seed gradient has shape [2], root has shape [3]");
        // With a seed of the right shape a non-scalar root works.
        let seed = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap();
        let g = y.backward_with(&seed).unwrap();
        assert_eq!(grad(&g, &x), vec![2.0, 4.0, 6.0]);
        // A one-element non-0-d root is a scalar too; a leaf root gets gradient 1.
        let z = x.sum(&[0], true).unwrap();
        assert_eq!(z.shape(), &[1]);
        assert_eq!(grad(&z.backward().unwrap(), &x), vec![1.0; 3]);
        let s = rand64(&[], 3).requires_grad_(true);
        assert_eq!(grad(&s.backward().unwrap(), &s), vec![1.0]);
        // An f32 seed for an f64 root is converted (on a fresh graph: backward consumed the first).
        let y = x.mul_scalar(2.0);
        let g = y.backward_with(&seed.to_dtype(DType::F32)).unwrap();
        assert_eq!(g.get(&x).unwrap().dtype(), DType::F64);
    }

    #[test]
    fn a_chain_of_ten_thousand_ops_fits_a_default_thread_stack() {
        // Spawned threads get 2 MiB of stack unless RUST_MIN_STACK says otherwise: set it explicitly.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let x = Tensor::from_vec(vec![1.0f64, -1.0], &[2]).unwrap().requires_grad_(true);
                let mut y = x.clone();
                for _ in 0..10_000 {
                    y = y.add_scalar(1e-3).mul_scalar(0.999);
                }
                let g = y.sum_all().backward().unwrap();
                grad(&g, &x)
            })
            .unwrap();
        let gx = handle.join().expect("no stack overflow");
        let want = 0.999f64.powi(10_000);
        for v in gx {
            assert!((v - want).abs() < 1e-12 * want.max(1e-300) + 1e-15, "{v} vs {want}");
        }
    }

    #[test]
    fn saved_tensors_are_released_by_backward() {
        let x = rand64(&[4, 3], 1).requires_grad_(true);
        let w = rand64(&[3, 2], 2).requires_grad_(true);
        let h = x.matmul(&w).unwrap().tanh();
        let weak_h = Arc::downgrade(&h.0);
        let y = h.square().sum_all();
        drop(h);
        // Before backward the graph keeps the activation alive ...
        assert!(weak_h.upgrade().is_some());
        assert_eq!(y.op_name(), Some("sum"));
        let g = y.backward().unwrap();
        // ... and backward took every rule, freeing it while `y` still exists.
        assert!(y.op_name().is_none());
        assert!(weak_h.upgrade().is_none());
        assert_eq!(g.len(), 2);
        // Only our own handles (plus none from the graph) point at the parameters now.
        assert_eq!(Arc::strong_count(&w.0), 1);
        assert_eq!(Arc::strong_count(&x.0), 1);
    }

    #[test]
    fn training_steps_do_not_accumulate_memory() {
        // 2,000 steps of a tiny regression with in-place SGD. After every step no graph node may
        // still reference the parameter or any step's activations.
        let x = rand64(&[8, 3], 1);
        let target = rand64(&[8, 1], 2).mul_scalar(0.3);
        let w = Tensor::zeros(&[3, 1], DType::F64).requires_grad_(true);
        let b = Tensor::zeros(&[1], DType::F64).requires_grad_(true);
        let mut first = None;
        let mut last = 0.0;
        let mut weak_prev: Option<std::sync::Weak<crate::tensor::TensorImpl>> = None;
        for step in 0..2_000 {
            let pred = x.matmul(&w).unwrap().add(&b).unwrap().tanh();
            let weak_pred = Arc::downgrade(&pred.0);
            let loss = pred.sub(&target).unwrap().square().mean_all();
            drop(pred);
            let grads = loss.backward().unwrap();
            last = loss.item().unwrap();
            first.get_or_insert(last);
            for p in [&w, &b] {
                let gp = grads.get(p).unwrap().to_vec::<f64>().unwrap();
                p.with_slice_mut::<f64, _>(|v| v.iter_mut().zip(&gp).for_each(|(v, g)| *v -= 0.5 * g))
                    .unwrap();
            }
            drop(grads);
            assert!(weak_pred.upgrade().is_none(), "step {step}: activation still alive");
            if let Some(prev) = &weak_prev {
                assert!(prev.upgrade().is_none());
            }
            weak_prev = Some(weak_pred);
            assert_eq!(Arc::strong_count(&w.0), 1, "step {step}");
            assert_eq!(Arc::strong_count(&b.0), 1, "step {step}");
            assert_eq!(Arc::strong_count(&w.0.storage), 1, "step {step}");
        }
        assert!(last < first.unwrap() * 0.5, "{first:?} -> {last}");
    }

    #[test]
    fn dropping_a_deep_graph_without_backward_does_not_overflow_the_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requires_grad_(true);
                let mut y = x.clone();
                for _ in 0..100_000 {
                    y = y.add_scalar(1e-3).mul_scalar(0.999);
                }
                drop(y);
            })
            .unwrap();
        handle
            .join()
            .expect("dropping a 200,000-node graph overflowed the stack");
    }

    #[test]
    fn a_second_backward_through_a_freed_graph_is_an_error() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requires_grad_(true);
        let loss = x.square().sum_all();
        assert!(loss.backward().is_ok());
        let e = loss.backward().err().expect("second backward must fail").to_string();
        assert!(e.contains("already backpropagated"), "{e}");
    }
}
