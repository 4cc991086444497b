//! Reductions over one or several axes, with `keepdim` as in PyTorch.
//!
//! max and min send the whole gradient to the **first** arg-max (or arg-min)
//! in row-major order when several elements tie; PyTorch's `amax` splits it
//! among ties instead. Both are valid subgradients; the first-index rule
//! matches `torch.max(x, dim)` and max-pooling.

use crate::autograd::{node, GradFn};
use crate::error::Result;
use crate::kernels::reduce as kr;
use crate::layout::normalize_axis;
use crate::ops::with_typed;
use crate::{Element, Tensor};

fn resolve_axes(op: &'static str, axes: &[isize], ndim: usize) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..ndim).collect());
    }
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = normalize_axis(op, a, ndim)?;
        if out.contains(&a) {
            return crate::error::arg_err(op, format!("axis {a} given twice"));
        }
        out.push(a);
    }
    out.sort_unstable();
    Ok(out)
}

fn final_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keepdim.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

struct SumBackward {
    x: Tensor,
    kept: Vec<usize>,
}
impl GradFn for SumBackward {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // Every input element contributed once: the gradient is the output's, repeated.
        Ok(vec![Some(g.reshape(&self.kept)?.broadcast_to(self.x.shape())?)])
    }
}

struct ExtremumBackward {
    x: Tensor,
    args: Vec<usize>,
    name: &'static str,
}
impl GradFn for ExtremumBackward {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gs = g.contiguous_storage();
        let n = self.x.numel();
        let out = with_typed!(&gs, gv => {
            let mut out = vec![Element::of(0.0); n];
            scatter_add(&mut out, &self.args, gv);
            Element::into_storage(out)
        });
        Ok(vec![Some(Tensor::from_storage(out, self.x.shape()))])
    }
}

fn scatter_add<T: Element>(out: &mut [T], args: &[usize], g: &[T]) {
    for (&a, &v) in args.iter().zip(g) {
        if a != usize::MAX {
            out[a] += v;
        }
    }
}

impl Tensor {
    /// Sum over `axes` (all axes when empty); `keepdim` keeps them as size 1.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let ax = resolve_axes("sum", axes, self.ndim())?;
        let (kept, _) = kr::reduced_shape(self.shape(), &ax);
        let out = {
            let st = self.storage();
            with_typed!(st.cpu(), v => Element::into_storage(kr::sum(v, self.layout(), &ax)))
        };
        let t = Tensor::from_storage(out, &final_shape(self.shape(), &ax, keepdim));
        Ok(t.attach(&[self], || node(SumBackward { x: self.clone(), kept })))
    }

    /// Sum of every element, as a 0-dimensional tensor.
    pub fn sum_all(&self) -> Tensor {
        self.sum(&[], false).expect("reducing all axes cannot fail")
    }

    /// Mean over `axes` (all when empty).
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let ax = resolve_axes("mean", axes, self.ndim())?;
        let count: usize = ax.iter().map(|&a| self.shape()[a]).product();
        Ok(self.sum(axes, keepdim)?.div_scalar(count.max(1) as f64))
    }

    /// Mean of every element.
    pub fn mean_all(&self) -> Tensor {
        self.mean(&[], false).expect("reducing all axes cannot fail")
    }

    /// Variance over `axes` with Bessel's `correction` (1 = unbiased, PyTorch's default; 0 = population).
    pub fn var(&self, axes: &[isize], keepdim: bool, correction: usize) -> Result<Tensor> {
        let ax = resolve_axes("var", axes, self.ndim())?;
        let count: usize = ax.iter().map(|&a| self.shape()[a]).product();
        let mean = self.mean(axes, true)?;
        let centered = self.sub(&mean)?;
        let denom = count.saturating_sub(correction).max(1);
        Ok(centered.square().sum(axes, keepdim)?.div_scalar(denom as f64))
    }

    fn extremum(&self, axes: &[isize], keepdim: bool, take_max: bool) -> Result<(Tensor, Vec<usize>)> {
        let name = if take_max { "max" } else { "min" };
        if self.numel() == 0 {
            return crate::error::shape_err(name, "cannot reduce an empty tensor");
        }
        let ax = resolve_axes(name, axes, self.ndim())?;
        let (out, args) = {
            let st = self.storage();
            with_typed!(st.cpu(), v => {
                let (b, a) = kr::extremum(v, self.layout(), &ax, take_max);
                (Element::into_storage(b), a)
            })
        };
        let t = Tensor::from_storage(out, &final_shape(self.shape(), &ax, keepdim));
        let t = t.attach(&[self], || {
            node(ExtremumBackward {
                x: self.clone(),
                args: args.clone(),
                name,
            })
        });
        Ok((t, args))
    }

    /// Maximum over `axes`; the gradient goes to the first arg-max.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        Ok(self.extremum(axes, keepdim, true)?.0)
    }

    /// Minimum over `axes`; the gradient goes to the first arg-min.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        Ok(self.extremum(axes, keepdim, false)?.0)
    }

    fn arg_extremum(&self, axis: isize, take_max: bool) -> Result<Vec<usize>> {
        let a = normalize_axis(if take_max { "argmax" } else { "argmin" }, axis, self.ndim())?;
        let (_, flat) = crate::autograd::no_grad_scope(|| self.extremum(&[a as isize], false, take_max))?;
        // Convert row-major flat positions to indices along `a`.
        let inner: usize = self.shape()[a + 1..].iter().product();
        let d = self.shape()[a];
        Ok(flat.into_iter().map(|p| (p / inner) % d).collect())
    }

    /// Index of the maximum along `axis` for every other position (no gradient), row-major.
    pub fn argmax(&self, axis: isize) -> Result<Vec<usize>> {
        self.arg_extremum(axis, true)
    }

    /// Index of the minimum along `axis` (no gradient).
    pub fn argmin(&self, axis: isize) -> Result<Vec<usize>> {
        self.arg_extremum(axis, false)
    }
}
