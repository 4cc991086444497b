//! Reductions over one or several axes, with `keepdim` as in PyTorch.
//!
//! When several elements tie for the maximum (or minimum), the gradient goes where
//! PyTorch sends it: `max` along one axis is `torch.max(x, dim)`, which gives it all to
//! the index it returns, the first in row-major order (as max-pooling does); `max` over
//! several axes or all of them is `torch.amax(x, dims)` or `torch.max(x)`, which split
//! it evenly among the ties.

use crate::autograd::{node, GradFn};
use crate::error::Result;
use crate::kernels::reduce as kr;
use crate::layout::normalize_axis;
use crate::ops::with_typed;
use crate::{Element, Tensor};

pub(crate) fn resolve_axes(op: &'static str, axes: &[isize], ndim: usize) -> Result<Vec<usize>> {
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

/// Backward of max or min over several axes (or all): tied extrema share the gradient.
struct TiedExtremumBackward {
    x: Tensor,
    axes: Vec<usize>,
    name: &'static str,
}
impl GradFn for TiedExtremumBackward {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, out: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (xs, best, gs) = (self.x.storage(), out.contiguous_storage(), g.contiguous_storage());
        let dx = with_typed!(xs.cpu(), x => {
            let best = Element::slice(&best).expect("the output has the input's dtype");
            let g = Element::slice(&gs).expect("the gradient has the output's dtype");
            Element::into_storage(kr::tied_extremum_backward(x, self.x.layout(), &self.axes, best, g))
        });
        Ok(vec![Some(Tensor::from_storage(dx, self.x.shape()))])
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
        // One axis named: torch.max(x, dim), whose gradient goes to the index it returns.
        let t = match axes.len() {
            1 => t.attach(&[self], || {
                node(ExtremumBackward {
                    x: self.clone(),
                    args: args.clone(),
                    name,
                })
            }),
            _ => t.attach(&[self], || {
                node(TiedExtremumBackward {
                    x: self.clone(),
                    axes: ax,
                    name,
                })
            }),
        };
        Ok((t, args))
    }

    /// Maximum over `axes` (all when empty). Along one axis, as `torch.max(x, dim)`, the
    /// gradient goes to the first arg-max; over several or all, as `torch.amax`, tied
    /// maxima share it evenly.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        Ok(self.extremum(axes, keepdim, true)?.0)
    }

    /// Minimum over `axes` (all when empty), with ties treated as in [`max`](Self::max).
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

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    #[test]
    fn ties_over_several_axes_share_the_gradient_evenly_as_in_torch_amax() {
        #[rustfmt::skip]
        let values = vec![1.0, 3.0, 3.0, 0.0, 3.0, -1.0,   2.0, 2.0, 0.0, 2.0, -4.0, -4.0];
        let x = Tensor::from_vec(values, &[2, 2, 3]).unwrap().requires_grad_(true);
        let grad = |y: Tensor| y.sum_all().backward().unwrap().get(&x).unwrap().to_vec_f64();
        let third = 1.0 / 3.0;
        // All axes: the three 3s.
        let all = [0.0, third, third, 0.0, third, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(grad(x.max(&[], false).unwrap()), all);
        // Per sample: the three 3s of the first, the three 2s of the second.
        let per_sample = [0.0, third, third, 0.0, third, 0.0, third, third, 0.0, third, 0.0, 0.0];
        assert_eq!(grad(x.max(&[1, 2], false).unwrap()), per_sample);
        // Minimum over axes 0 and 2, kept: a single 0 in the first row, two −4s in the second.
        let rows = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.5];
        assert_eq!(grad(x.min(&[0, 2], true).unwrap()), rows);
        // Along one axis (torch.max(x, dim)): all of it to the first of the tied values.
        let first = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(grad(x.max(&[2], false).unwrap()), first);
        // A strided view, in f32; and NaN maxima, which tie with each other.
        let xt = Tensor::from_vec(vec![2.0f32, 5.0, 5.0, 1.0], &[2, 2])
            .unwrap()
            .requires_grad_(true);
        let g = xt.t().unwrap().max(&[0, 1], false).unwrap().backward().unwrap();
        assert_eq!(g.get(&xt).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.5, 0.5, 0.0]);
        let xn = Tensor::from_vec(vec![f64::NAN, 1.0, f64::NAN], &[3])
            .unwrap()
            .requires_grad_(true);
        let g = xn.max(&[], false).unwrap().backward().unwrap();
        assert_eq!(g.get(&xn).unwrap().to_vec_f64(), [0.5, 0.0, 0.5]);
    }

    /// Row-major multi-index of flat position `i`.
    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    }

    /// Reference reduction: fold every element into the output slot of its
    /// multi-index with the reduced axes dropped. Empty `axes` means all.
    fn naive_reduce(x: &[f64], shape: &[usize], axes: &[usize], init: f64, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        let all: Vec<usize> = (0..shape.len()).collect();
        let axes = if axes.is_empty() { &all[..] } else { axes };
        let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
        let n_out: usize = kept.iter().map(|&d| shape[d]).product();
        let mut out = vec![init; n_out];
        for (i, &v) in x.iter().enumerate() {
            let idx = unravel(i, shape);
            let mut o = 0;
            for &d in &kept {
                o = o * shape[d] + idx[d];
            }
            out[o] = f(out[o], v);
        }
        out
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    /// A shape (dims 1..=3, up to 4 of them), which dims to reduce, keepdim, and whether
    /// to feed a transposed (non-contiguous) view.
    fn reduce_case() -> impl Strategy<Value = (Vec<usize>, Vec<bool>, bool, bool)> {
        proptest::collection::vec((1usize..4, any::<bool>()), 0..5).prop_flat_map(|dims| {
            let shape: Vec<usize> = dims.iter().map(|&(d, _)| d).collect();
            let mask: Vec<bool> = dims.iter().map(|&(_, r)| r).collect();
            (Just(shape), Just(mask), any::<bool>(), any::<bool>())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn reductions_match_reference_and_finite_differences(
            (shape, mask, keepdim, transposed) in reduce_case(),
            seed in 0u64..1000,
        ) {
            let nd = shape.len();
            // Reduced axes, odd ones written as negative axes.
            let axes: Vec<usize> = (0..nd).filter(|&d| mask[d]).collect();
            let signed: Vec<isize> =
                axes.iter().map(|&a| if a % 2 == 1 { a as isize - nd as isize } else { a as isize }).collect();
            // The input seen by the op has `shape`; when `transposed` it is a permuted view.
            let rev: Vec<usize> = (0..nd).rev().collect();
            let stored: Vec<usize> = if transposed { shape.iter().rev().copied().collect() } else { shape.clone() };
            let x = rand64(&stored, seed);
            let view = |t: &Tensor| if transposed { t.permute(&rev) } else { Ok(t.clone()) };
            let logical = view(&x).unwrap().to_vec::<f64>().unwrap();

            let expect_shape: Vec<usize> = (0..nd)
                .filter_map(|d| if axes.is_empty() || axes.contains(&d) { keepdim.then_some(1) } else { Some(shape[d]) })
                .collect();
            let count: usize =
                (0..nd).filter(|d| axes.is_empty() || axes.contains(d)).map(|d| shape[d]).product();

            let s = view(&x).unwrap().sum(&signed, keepdim).unwrap();
            prop_assert_eq!(s.shape(), &expect_shape[..]);
            assert_close(&s.to_vec::<f64>().unwrap(), &naive_reduce(&logical, &shape, &axes, 0.0, |a, b| a + b), 1e-12);
            let m = view(&x).unwrap().mean(&signed, keepdim).unwrap();
            let mref: Vec<f64> =
                naive_reduce(&logical, &shape, &axes, 0.0, |a, b| a + b).iter().map(|v| v / count as f64).collect();
            assert_close(&m.to_vec::<f64>().unwrap(), &mref, 1e-12);
            let mx = view(&x).unwrap().max(&signed, keepdim).unwrap();
            prop_assert_eq!(mx.shape(), &expect_shape[..]);
            prop_assert_eq!(mx.to_vec::<f64>().unwrap(), naive_reduce(&logical, &shape, &axes, f64::NEG_INFINITY, f64::max));
            let mn = view(&x).unwrap().min(&signed, keepdim).unwrap();
            prop_assert_eq!(mn.to_vec::<f64>().unwrap(), naive_reduce(&logical, &shape, &axes, f64::INFINITY, f64::min));

            check(|t| view(&t[0])?.sum(&signed, keepdim), &[x.clone()]);
            check(|t| view(&t[0])?.mean(&signed, keepdim), &[x.clone()]);
            check(|t| view(&t[0])?.max(&signed, keepdim), &[x.clone()]);
            check(|t| view(&t[0])?.min(&signed, keepdim), &[x.clone()]);
        }
    }

    #[test]
    fn reductions_of_broadcast_and_narrowed_views() {
        // A stride-0 (broadcast) view and an offset (narrowed) view both take the strided path.
        let x = rand64(&[3, 1], 1);
        check(|t| t[0].broadcast_to(&[2, 3, 4])?.sum(&[0, 2], false), &[x.clone()]);
        check(|t| t[0].broadcast_to(&[2, 3, 4])?.max(&[1], true), &[x.clone()]);
        let y = rand64(&[4, 6], 2);
        check(|t| t[0].narrow(1, 2, 3)?.sum(&[1], true), &[y.clone()]);
        check(|t| t[0].narrow(0, 1, 2)?.mean(&[0], false), &[y.clone()]);
        check(|t| t[0].narrow(1, 1, 4)?.min(&[-1], false), &[y.clone()]);
        check(|t| t[0].t()?.max(&[0], false), &[y]);
    }

    #[test]
    fn sum_all_and_mean_all() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        assert_eq!(x.sum_all().shape(), &[] as &[usize]);
        assert_eq!(x.sum_all().item().unwrap(), 21.0);
        assert_eq!(x.mean_all().item().unwrap(), 3.5);
        assert_eq!(x.sum(&[], true).unwrap().shape(), &[1, 1]);
        assert_eq!(
            x.sum(&[0], false).unwrap().to_vec::<f64>().unwrap(),
            vec![5.0, 7.0, 9.0]
        );
        assert_eq!(x.sum(&[1], true).unwrap().to_vec::<f64>().unwrap(), vec![6.0, 15.0]);
        // A 0-d tensor reduces to itself.
        let s = Tensor::scalar(2.5f64);
        assert_eq!(s.sum_all().item().unwrap(), 2.5);
        assert_eq!(s.max(&[], false).unwrap().item().unwrap(), 2.5);
        check(|t| Ok(t[0].sum_all()), &[rand64(&[], 3)]);
        check(|t| Ok(t[0].mean_all()), &[rand64(&[2, 3, 2], 3)]);
    }

    #[test]
    fn reductions_over_an_empty_dimension() {
        // Summing over a length-0 axis gives zeros (PyTorch agrees).
        let x = Tensor::zeros(&[3, 0], DType::F64);
        let s = x.sum(&[1], false).unwrap();
        assert_eq!(s.to_vec::<f64>().unwrap(), vec![0.0; 3]);
        let s = x.sum(&[0], false).unwrap();
        assert_eq!(s.shape(), &[0]);
        let x = Tensor::zeros(&[2, 0, 3], DType::F32);
        assert_eq!(x.sum(&[1, 2], true).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 2]);
        assert!(x.max(&[1], false).unwrap_err().to_string().starts_with("max:"));
    }

    #[test]
    fn large_reductions_take_the_threaded_paths() {
        // Beyond PAR_THRESHOLD elements: trailing (row sums) and leading (column sums) fast paths.
        let x = Tensor::arange(0.0, 70_000.0, 1.0, DType::F64)
            .unwrap()
            .reshape(&[700, 100])
            .unwrap();
        let v = x.to_vec::<f64>().unwrap();
        let rows = x.sum(&[1], false).unwrap().to_vec::<f64>().unwrap();
        let cols = x.sum(&[0], false).unwrap().to_vec::<f64>().unwrap();
        for (r, &got) in rows.iter().enumerate() {
            assert_eq!(got, v[r * 100..(r + 1) * 100].iter().sum::<f64>());
        }
        for (c, &got) in cols.iter().enumerate() {
            assert_eq!(got, (0..700).map(|r| v[r * 100 + c]).sum::<f64>());
        }
        let t = x.t().unwrap().sum(&[1], false).unwrap().to_vec::<f64>().unwrap();
        assert_eq!(t, cols);
    }

    #[test]
    fn variance_with_and_without_bessel_correction() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 4.0, 7.0, 0.0, -1.0], &[2, 3]).unwrap();
        // Row 0: mean 7/3, squared deviations sum 42/9; row 1: mean 2, sum 38.
        let v0 = x.var(&[1], false, 0).unwrap().to_vec::<f64>().unwrap();
        let v1 = x.var(&[1], false, 1).unwrap().to_vec::<f64>().unwrap();
        assert_close(&v0, &[42.0 / 27.0, 38.0 / 3.0], 1e-12);
        assert_close(&v1, &[42.0 / 18.0, 38.0 / 2.0], 1e-12);
        assert_eq!(x.var(&[0], true, 1).unwrap().shape(), &[1, 3]);
        let all = x.var(&[], false, 1).unwrap().item().unwrap();
        let vals = x.to_vec::<f64>().unwrap();
        let mean = vals.iter().sum::<f64>() / 6.0;
        let expect = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((all - expect).abs() < 1e-12);

        let y = rand64(&[3, 4, 2], 5);
        for correction in [0, 1] {
            check(|t| t[0].var(&[1], false, correction), &[y.clone()]);
            check(|t| t[0].var(&[0, 2], true, correction), &[y.clone()]);
            check(|t| t[0].var(&[], false, correction), &[y.clone()]);
            check(|t| t[0].permute(&[2, 0, 1])?.var(&[-1], true, correction), &[y.clone()]);
        }
    }

    #[test]
    fn argmax_and_argmin_values() {
        // Ties go to the first index: 5, 5 in row 0; -2, -2 in row 1 and in column 3.
        let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, -2.0, -2.0, 3.0, 9.0, -2.0], &[2, 4]).unwrap();
        assert_eq!(x.argmax(1).unwrap(), vec![1, 2]);
        assert_eq!(x.argmin(-1).unwrap(), vec![3, 0]);
        assert_eq!(x.argmax(0).unwrap(), vec![0, 0, 1, 0]);
        assert_eq!(x.argmin(-2).unwrap(), vec![1, 1, 0, 0]);
        // 3-D along the middle axis, on a transposed view.
        let y = Tensor::arange(0.0, 24.0, 1.0, DType::F64)
            .unwrap()
            .reshape(&[2, 3, 4])
            .unwrap();
        assert_eq!(y.argmax(1).unwrap(), vec![2; 8]);
        assert_eq!(y.argmin(1).unwrap(), vec![0; 8]);
        let yt = y.permute(&[2, 1, 0]).unwrap(); // [4, 3, 2], yt[i, j, k] = y[k, j, i]
        assert_eq!(yt.argmax(2).unwrap(), vec![1; 12]);
        assert_eq!(yt.argmax(0).unwrap(), vec![3; 6]);
        // No gradient is recorded by argmax.
        let z = rand64(&[3], 1).requires_grad_(true);
        assert_eq!(z.argmax(0).unwrap().len(), 1);
        assert!(x.argmax(2).unwrap_err().to_string().starts_with("argmax:"));
        assert!(x.argmin(-3).unwrap_err().to_string().starts_with("argmin:"));
    }

    #[test]
    fn max_along_one_axis_gives_a_tie_gradient_to_the_first_argmax() {
        let x = Tensor::from_vec(vec![1.0f64, 3.0, 3.0, 2.0, 3.0, 3.0], &[2, 3])
            .unwrap()
            .requires_grad_(true);
        // Over all elements, as torch.max(x): the four tied 3s share it (issue 18, item 6).
        let g = x.max(&[], false).unwrap().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec::<f64>().unwrap(),
            vec![0.0, 0.25, 0.25, 0.0, 0.25, 0.25]
        );
        let g = x.max(&[1], false).unwrap().sum_all().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec::<f64>().unwrap(),
            vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
        );
        let g = x.max(&[0], true).unwrap().sum_all().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec::<f64>().unwrap(),
            vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
        );
        let g = x.min(&[1], false).unwrap().sum_all().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec::<f64>().unwrap(),
            vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        );
        // On a transposed view, "first" is in the view's row-major order.
        let xt = Tensor::from_vec(vec![2.0f64, 2.0, 2.0, 2.0], &[2, 2])
            .unwrap()
            .requires_grad_(true);
        let g = xt.t().unwrap().max(&[1], false).unwrap().sum_all().backward().unwrap();
        // view row 0 = (x00, x10) -> x00; view row 1 = (x01, x11) -> x01.
        assert_eq!(g.get(&xt).unwrap().to_vec::<f64>().unwrap(), vec![1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn bad_axes_name_the_op() {
        let x = rand64(&[2, 3], 0);
        assert!(x
            .sum(&[2], false)
            .unwrap_err()
            .to_string()
            .starts_with("sum: axis 2 out of range"));
        assert!(x
            .sum(&[1, -1], false)
            .unwrap_err()
            .to_string()
            .starts_with("sum: axis 1 given twice"));
        assert!(x.mean(&[-3], false).unwrap_err().to_string().starts_with("mean:"));
        assert!(x.var(&[5], false, 1).unwrap_err().to_string().starts_with("var:"));
        assert!(x.max(&[3], false).unwrap_err().to_string().starts_with("max:"));
        assert!(x.min(&[3], false).unwrap_err().to_string().starts_with("min:"));
    }

    #[test]
    fn f32_reductions() {
        let x = Tensor::from_vec(vec![1.5f32, -2.0, 0.25, 4.0], &[2, 2]).unwrap();
        assert_eq!(x.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![1.75, 2.0]);
        assert_eq!(x.max(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![1.5, 4.0]);
        assert_eq!(x.min(&[], false).unwrap().to_vec::<f32>().unwrap(), vec![-2.0]);
        assert_eq!(x.mean(&[1], true).unwrap().to_vec::<f32>().unwrap(), vec![-0.25, 2.125]);
    }
}
