//! Shape ops. Where the layout allows, the result is a view (only strides
//! change); the backward rule maps the gradient back to the input's shape.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::layout::{fmt_shape, normalize_axis, Layout};
use crate::storage::CpuStorage;
use crate::{Element, Tensor};

/// Backward of a reshape: reshape the gradient back.
struct ReshapeBackward {
    x: Tensor,
}
impl GradFn for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(self.x.shape())?)])
    }
}

/// Backward of a permutation: apply the inverse permutation.
struct PermuteBackward {
    x: Tensor,
    inverse: Vec<usize>,
}
impl GradFn for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.permute(&self.inverse)?)])
    }
}

/// Backward of narrow: the gradient lands in its slot of a zero tensor.
struct NarrowBackward {
    x: Tensor,
    axis: usize,
    start: usize,
}
impl GradFn for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let full = self.x.shape();
        let before = self.start;
        let after = full[self.axis] - self.start - g.shape()[self.axis];
        let mut parts = Vec::new();
        let mut zshape = full.to_vec();
        if before > 0 {
            zshape[self.axis] = before;
            parts.push(Tensor::zeros(&zshape, g.dtype()));
        }
        parts.push(g.clone());
        if after > 0 {
            zshape[self.axis] = after;
            parts.push(Tensor::zeros(&zshape, g.dtype()));
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        Ok(vec![Some(Tensor::cat(&refs, self.axis as isize)?)])
    }
}

/// Backward of broadcast_to: sum over the broadcast dimensions.
struct BroadcastBackward {
    x: Tensor,
}
impl GradFn for BroadcastBackward {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(self.x.shape())?)])
    }
}

/// Backward of a copy: identity.
struct CopyBackward {
    x: Tensor,
}
impl GradFn for CopyBackward {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

/// Backward of concatenation: each input gets its slice of the gradient.
struct CatBackward {
    xs: Vec<Tensor>,
    axis: usize,
}
impl GradFn for CatBackward {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn inputs(&self) -> Vec<Tensor> {
        self.xs.clone()
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.xs.len());
        for (x, &need) in self.xs.iter().zip(needs) {
            let len = x.shape()[self.axis];
            out.push(if need {
                Some(g.narrow(self.axis as isize, start, len)?)
            } else {
                None
            });
            start += len;
        }
        Ok(out)
    }
}

impl Tensor {
    /// The same elements with a new shape; a view when the tensor is
    /// contiguous, a copy otherwise. See [`reshape_infer`](Self::reshape_infer) for a -1 entry.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return shape_err(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) into {} ({} elements)",
                    fmt_shape(self.shape()),
                    self.numel(),
                    fmt_shape(shape),
                    n
                ),
            );
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let base = if self.is_contiguous() {
            let mut l = Layout::contiguous(shape);
            l.offset = self.layout().offset;
            self.view_with(l)
        } else {
            Tensor::from_storage(self.contiguous_storage(), shape)
        };
        Ok(base.attach(&[self], || node(ReshapeBackward { x: self.clone() })))
    }

    /// Reshape where one entry may be -1, inferred from the others (like PyTorch's `view(-1, 784)`).
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let holes = shape.iter().filter(|&&d| d < 0).count();
        if holes > 1 || (holes == 1 && (known == 0 || !self.numel().is_multiple_of(known))) {
            return shape_err(
                "reshape",
                format!("cannot reshape {} into {:?}", fmt_shape(self.shape()), shape),
            );
        }
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| if d < 0 { self.numel() / known } else { d as usize })
            .collect();
        self.reshape(&dims)
    }

    /// Flatten dimensions `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.ndim() == 0 {
            return self.reshape(&[1]);
        }
        let s = normalize_axis("flatten", start, self.ndim())?;
        let e = normalize_axis("flatten", end, self.ndim())?;
        if s > e {
            return arg_err("flatten", format!("start {start} is after end {end}"));
        }
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// Reorder dimensions: result dimension i is input dimension `perm[i]`. Always a view.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let nd = self.ndim();
        let mut seen = vec![false; nd];
        if perm.len() != nd || perm.iter().any(|&p| p >= nd || std::mem::replace(&mut seen[p], true)) {
            return arg_err(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {nd} dimensions of {}",
                    fmt_shape(self.shape())
                ),
            );
        }
        let l = self.layout();
        let layout = Layout {
            shape: perm.iter().map(|&p| l.shape[p]).collect(),
            strides: perm.iter().map(|&p| l.strides[p]).collect(),
            offset: l.offset,
        };
        let mut inverse = vec![0; nd];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(self.view_with(layout).attach(&[self], || {
            node(PermuteBackward {
                x: self.clone(),
                inverse,
            })
        }))
    }

    /// Swap two dimensions (a view).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let nd = self.ndim();
        let a = normalize_axis("transpose", a, nd)?;
        let b = normalize_axis("transpose", b, nd)?;
        let mut perm: Vec<usize> = (0..nd).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The matrix transpose of the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        if self.ndim() < 2 {
            return shape_err(
                "t",
                format!("needs at least 2 dimensions, got {}", fmt_shape(self.shape())),
            );
        }
        self.transpose(-2, -1)
    }

    /// `len` entries of dimension `axis` starting at `start` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = normalize_axis("narrow", axis, self.ndim())?;
        let dim = self.shape()[a];
        if start.checked_add(len).is_none_or(|e| e > dim) {
            return shape_err(
                "narrow",
                format!(
                    "range {start}..{} out of bounds for dimension {a} of {}",
                    start.saturating_add(len),
                    fmt_shape(self.shape())
                ),
            );
        }
        let l = self.layout();
        let mut layout = l.clone();
        layout.shape[a] = len;
        layout.offset = l.offset + start * l.strides[a];
        Ok(self.view_with(layout).attach(&[self], || {
            node(NarrowBackward {
                x: self.clone(),
                axis: a,
                start,
            })
        }))
    }

    /// View with size-1 or missing leading dimensions repeated to `shape` (stride 0, no copy).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to("broadcast_to", shape)?;
        Ok(self
            .view_with(layout)
            .attach(&[self], || node(BroadcastBackward { x: self.clone() })))
    }

    /// Sum a broadcast result back down to `shape`: the gradient rule of broadcasting.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let nd = self.ndim();
        if shape.len() > nd {
            return shape_err(
                "sum_to",
                format!("cannot sum {} to {}", fmt_shape(self.shape()), fmt_shape(shape)),
            );
        }
        let lead = nd - shape.len();
        let mut axes: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.iter().enumerate() {
            let s = self.shape()[lead + i];
            if d == 1 && s != 1 {
                axes.push((lead + i) as isize);
            } else if d != s {
                return shape_err(
                    "sum_to",
                    format!("cannot sum {} to {}", fmt_shape(self.shape()), fmt_shape(shape)),
                );
            }
        }
        self.sum(&axes, true)?.reshape(shape)
    }

    /// Insert a size-1 dimension at `axis` (a view).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let nd = self.ndim() as isize;
        let a = if axis < 0 { axis + nd + 1 } else { axis };
        if a < 0 || a > nd {
            return arg_err("unsqueeze", format!("axis {axis} out of range for {} dimensions", nd));
        }
        let mut shape = self.shape().to_vec();
        shape.insert(a as usize, 1);
        self.reshape_view(&shape)
    }

    /// Remove dimension `axis`, which must have size 1 (a view).
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = normalize_axis("squeeze", axis, self.ndim())?;
        if self.shape()[a] != 1 {
            return shape_err(
                "squeeze",
                format!("dimension {a} of {} is not 1", fmt_shape(self.shape())),
            );
        }
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.reshape_view(&shape)
    }

    /// Reshape that only adds or drops size-1 dimensions: always a view, even on strided data.
    fn reshape_view(&self, shape: &[usize]) -> Result<Tensor> {
        if self.is_contiguous() {
            return self.reshape(shape);
        }
        // Keep the strides of the non-unit dimensions, in order.
        let l = self.layout();
        let mut src = l.shape.iter().zip(&l.strides).filter(|(&d, _)| d != 1).map(|(_, &s)| s);
        let strides: Vec<usize> = shape
            .iter()
            .map(|&d| if d == 1 { 0 } else { src.next().unwrap_or(0) })
            .collect();
        let layout = Layout {
            shape: shape.to_vec(),
            strides,
            offset: l.offset,
        };
        Ok(self
            .view_with(layout)
            .attach(&[self], || node(ReshapeBackward { x: self.clone() })))
    }

    /// A row-major copy if the tensor is a strided view; itself otherwise.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        Tensor::from_storage(self.contiguous_storage(), self.shape())
            .attach(&[self], || node(CopyBackward { x: self.clone() }))
    }

    /// Join tensors along an existing dimension.
    pub fn cat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            return arg_err("cat", "needs at least one tensor");
        };
        let a = normalize_axis("cat", axis, first.ndim())?;
        for t in tensors {
            first.same_dtype("cat", t)?;
            let ok = t.ndim() == first.ndim()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (x, y))| i == a || x == y);
            if !ok {
                return shape_err(
                    "cat",
                    format!(
                        "shapes {} and {} differ outside dimension {a}",
                        fmt_shape(first.shape()),
                        fmt_shape(t.shape())
                    ),
                );
            }
        }
        let mut shape = first.shape().to_vec();
        shape[a] = tensors.iter().map(|t| t.shape()[a]).sum();
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let storages: Vec<CpuStorage> = tensors.iter().map(|t| t.contiguous_storage()).collect();
        let out = match first.dtype() {
            crate::DType::F32 => CpuStorage::F32(cat_kernel::<f32>(&storages, tensors, a, outer, inner)),
            crate::DType::F64 => CpuStorage::F64(cat_kernel::<f64>(&storages, tensors, a, outer, inner)),
        };
        let t = Tensor::from_storage(out, &shape);
        Ok(t.attach(tensors, || {
            node(CatBackward {
                xs: tensors.iter().map(|t| (*t).clone()).collect(),
                axis: a,
            })
        }))
    }

    /// Join tensors along a new dimension.
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            return arg_err("stack", "needs at least one tensor");
        };
        let nd = first.ndim() as isize + 1;
        let a = if axis < 0 { axis + nd } else { axis };
        if a < 0 || a >= nd {
            return arg_err(
                "stack",
                format!("axis {axis} out of range for stacking tensors of {} dimensions", nd - 1),
            );
        }
        if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
            return shape_err(
                "stack",
                format!(
                    "shapes {} and {} differ (stack needs equal shapes)",
                    fmt_shape(first.shape()),
                    fmt_shape(t.shape())
                ),
            );
        }
        let expanded: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(a)).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = expanded.iter().collect();
        Tensor::cat(&refs, a)
    }
}

fn cat_kernel<T: Element>(
    storages: &[CpuStorage],
    tensors: &[&Tensor],
    a: usize,
    outer: usize,
    inner: usize,
) -> Vec<T> {
    let total: usize = tensors.iter().map(|t| t.numel()).sum();
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (s, t) in storages.iter().zip(tensors) {
            let block = t.shape()[a] * inner;
            let v = T::slice(s).expect("dtype checked");
            out.extend_from_slice(&v[o * block..(o + 1) * block]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_vec::<f64>().unwrap()
    }

    fn err(r: crate::Result<Tensor>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn reshape_of_contiguous_is_a_view() {
        let x = rand64(&[2, 3, 4], 1);
        let y = x.reshape(&[6, 4]).unwrap();
        assert!(y.same_storage(&x));
        assert_eq!(vals(&y), vals(&x));
        // A narrowed, still contiguous block keeps its offset.
        let n = x.narrow(0, 1, 1).unwrap();
        assert!(n.is_contiguous());
        let r = n.reshape(&[12]).unwrap();
        assert!(r.same_storage(&x));
        assert_eq!(vals(&r), vals(&x)[12..].to_vec());
        check(|t| t[0].reshape(&[4, 6]), &[x.clone()]);
        check(|t| t[0].reshape(&[24]), &[x.clone()]);
        check(|t| t[0].narrow(0, 1, 1)?.reshape(&[3, 4]), &[x]);
    }

    #[test]
    fn reshape_of_transposed_copies() {
        let x = Tensor::from_vec(vec![0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3]).unwrap();
        let xt = x.t().unwrap();
        assert!(!xt.is_contiguous());
        let y = xt.reshape(&[6]).unwrap();
        assert!(!y.same_storage(&x));
        assert!(y.is_contiguous());
        assert_eq!(vals(&y), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let x = rand64(&[3, 4], 2);
        check(|t| t[0].t()?.reshape(&[2, 6]), &[x.clone()]);
        check(|t| t[0].narrow(1, 1, 2)?.reshape(&[6]), &[x]);
    }

    #[test]
    fn reshape_infer_and_flatten() {
        let x = rand64(&[2, 3, 4], 3);
        assert_eq!(x.reshape_infer(&[-1, 4]).unwrap().shape(), &[6, 4]);
        assert_eq!(x.reshape_infer(&[2, -1]).unwrap().shape(), &[2, 12]);
        assert_eq!(x.reshape_infer(&[24]).unwrap().shape(), &[24]);
        check(|t| t[0].reshape_infer(&[3, -1]), &[x.clone()]);
        assert!(err(x.reshape_infer(&[-1, -1])).starts_with("reshape: cannot reshape [2, 3, 4]"));
        assert!(err(x.reshape_infer(&[5, -1])).starts_with("reshape:"));
        assert!(err(x.reshape_infer(&[0, -1])).starts_with("reshape:"));
        assert!(err(x.reshape_infer(&[5, 5])).starts_with("reshape:"));

        assert_eq!(x.flatten(0, -1).unwrap().shape(), &[24]);
        assert_eq!(x.flatten(1, 2).unwrap().shape(), &[2, 12]);
        assert_eq!(x.flatten(0, 1).unwrap().shape(), &[6, 4]);
        assert_eq!(x.flatten(1, 1).unwrap().shape(), &[2, 3, 4]);
        assert_eq!(Tensor::scalar(1.0f64).flatten(0, 0).unwrap().shape(), &[1]);
        check(|t| t[0].flatten(1, -1), &[x.clone()]);
        check(|t| t[0].permute(&[2, 0, 1])?.flatten(0, 1), &[x.clone()]);
        assert!(err(x.flatten(2, 1)).starts_with("flatten: start 2 is after end 1"));
        assert!(err(x.flatten(0, 3)).starts_with("flatten: axis 3 out of range"));
    }

    #[test]
    fn reshape_errors_name_the_op_and_shapes() {
        let x = rand64(&[2, 3], 0);
        assert_eq!(
            err(x.reshape(&[4, 2])),
            "reshape: cannot reshape [2, 3] (6 elements) into [4, 2] (8 elements)"
        );
    }

    fn permutation(n: usize) -> impl Strategy<Value = Vec<usize>> {
        Just((0..n).collect::<Vec<usize>>()).prop_shuffle()
    }

    fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        proptest::collection::vec(1usize..4, 0..5).prop_flat_map(|shape| {
            let n = shape.len();
            (Just(shape), permutation(n))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn permute_moves_elements_and_gradients((shape, perm) in shape_and_perm(), seed in 0u64..1000) {
            let x = rand64(&shape, seed);
            let y = x.permute(&perm).unwrap();
            prop_assert!(y.same_storage(&x));
            let expect_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            prop_assert_eq!(y.shape(), &expect_shape[..]);
            // y[i] = x[j] with j[perm[d]] = i[d].
            let xv = vals(&x);
            let yv = vals(&y);
            let xs = crate::layout::contiguous_strides(&shape);
            for (flat, &v) in yv.iter().enumerate() {
                let mut rem = flat;
                let mut off = 0;
                for d in (0..expect_shape.len()).rev() {
                    off += (rem % expect_shape[d]) * xs[perm[d]];
                    rem /= expect_shape[d];
                }
                prop_assert_eq!(v, xv[off]);
            }
            check(|t| t[0].permute(&perm), &[x.clone()]);
            // A permuted view reshaped (a copy) and reduced still routes gradient right.
            check(|t| t[0].permute(&perm)?.reshape(&[x.numel()])?.mul_scalar(2.0).sum(&[], false), &[x.clone()]);
        }

        #[test]
        fn squeeze_unsqueeze_round_trip_on_views((shape, perm) in shape_and_perm(), axis in 0usize..5, seed in 0u64..1000) {
            let x = rand64(&shape, seed);
            let v = x.permute(&perm).unwrap();
            let a = (axis % (v.ndim() + 1)) as isize;
            let u = v.unsqueeze(a).unwrap();
            prop_assert!(u.same_storage(&x));
            prop_assert_eq!(u.shape()[a as usize], 1);
            prop_assert_eq!(vals(&u), vals(&v));
            let back = u.squeeze(a).unwrap();
            prop_assert!(back.same_storage(&x));
            prop_assert_eq!(back.shape(), v.shape());
            prop_assert_eq!(vals(&back), vals(&v));
            check(|t| Ok(t[0].permute(&perm)?.unsqueeze(a)?.mul_scalar(3.0)), &[x.clone()]);
            check(|t| t[0].permute(&perm)?.unsqueeze(a)?.squeeze(a), &[x.clone()]);
        }
    }

    #[test]
    fn transpose_and_t() {
        let x = rand64(&[2, 3, 4], 4);
        let y = x.transpose(0, 2).unwrap();
        assert_eq!(y.shape(), &[4, 3, 2]);
        assert!(y.same_storage(&x));
        assert_eq!(x.t().unwrap().shape(), &[2, 4, 3]);
        check(|t| t[0].transpose(0, -1), &[x.clone()]);
        check(|t| t[0].transpose(1, 1), &[x.clone()]);
        check(|t| t[0].t()?.t(), &[x.clone()]);
        assert!(err(rand64(&[3], 0).t()).starts_with("t: needs at least 2 dimensions, got [3]"));
        assert!(err(x.transpose(0, 3)).starts_with("transpose: axis 3 out of range"));
        assert!(err(x.permute(&[0, 0, 1])).starts_with("permute: [0, 0, 1] is not a permutation"));
        assert!(err(x.permute(&[0, 1])).starts_with("permute:"));
        assert!(err(x.permute(&[0, 1, 3])).starts_with("permute:"));
    }

    #[test]
    fn narrow_views_and_gradients() {
        let x = Tensor::arange(0.0, 12.0, 1.0, DType::F64)
            .unwrap()
            .reshape(&[3, 4])
            .unwrap();
        let n = x.narrow(1, 1, 2).unwrap();
        assert!(n.same_storage(&x));
        assert_eq!(vals(&n), vec![1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
        assert_eq!(vals(&x.narrow(0, 2, 1).unwrap()), vec![8.0, 9.0, 10.0, 11.0]);
        assert_eq!(x.narrow(0, 3, 0).unwrap().numel(), 0);
        let x = rand64(&[3, 5, 2], 5);
        check(|t| t[0].narrow(1, 0, 2), &[x.clone()]);
        check(|t| t[0].narrow(1, 3, 2), &[x.clone()]);
        check(|t| t[0].narrow(1, 1, 3), &[x.clone()]);
        check(|t| t[0].narrow(-1, 1, 1)?.narrow(0, 1, 2), &[x.clone()]);
        check(|t| t[0].t()?.narrow(2, 2, 3), &[x.clone()]);
        // Gradient outside the window is zero.
        let xg = x.clone().requires_grad_(true);
        let g = xg.narrow(1, 1, 3).unwrap().sum_all().backward().unwrap();
        let gv = vals(g.get(&xg).unwrap());
        for (i, &v) in gv.iter().enumerate() {
            let j = (i / 2) % 5;
            assert_eq!(v, if (1..4).contains(&j) { 1.0 } else { 0.0 });
        }
        assert_eq!(
            err(x.narrow(1, 4, 2)),
            "narrow: range 4..6 out of bounds for dimension 1 of [3, 5, 2]"
        );
        // An overflowing range is an error, not a panic.
        assert!(err(x.narrow(1, usize::MAX, 2)).starts_with("narrow: range"));
        assert!(err(x.narrow(3, 0, 1)).starts_with("narrow: axis 3 out of range"));
    }

    #[test]
    fn broadcast_to_and_sum_to() {
        let x = rand64(&[3, 1], 6);
        let b = x.broadcast_to(&[2, 3, 4]).unwrap();
        assert!(b.same_storage(&x));
        assert_eq!(b.strides(), &[0, 1, 0]);
        let xv = vals(&x);
        let bv = vals(&b);
        for (i, &v) in bv.iter().enumerate() {
            assert_eq!(v, xv[(i / 4) % 3]);
        }
        check(|t| t[0].broadcast_to(&[2, 3, 4]), &[x.clone()]);
        check(|t| t[0].broadcast_to(&[3, 5]), &[x.clone()]);
        check(|t| t[0].broadcast_to(&[3, 1]), &[x.clone()]);
        check(|t| t[0].t()?.broadcast_to(&[2, 1, 3]), &[x.clone()]);
        check(|t| t[0].broadcast_to(&[4]), &[rand64(&[], 1)]);
        assert_eq!(
            err(x.broadcast_to(&[3, 2, 2])),
            "broadcast_to: cannot broadcast [3, 1] to [3, 2, 2]"
        );
        assert!(err(x.broadcast_to(&[3])).starts_with("broadcast_to: cannot broadcast"));

        let y = Tensor::arange(0.0, 24.0, 1.0, DType::F64)
            .unwrap()
            .reshape(&[2, 3, 4])
            .unwrap();
        let s = y.sum_to(&[3, 1]).unwrap();
        assert_eq!(s.shape(), &[3, 1]);
        let yv = vals(&y);
        for r in 0..3 {
            let expect: f64 = (0..2)
                .flat_map(|a| (0..4).map(move |c| (a, c)))
                .map(|(a, c)| yv[a * 12 + r * 4 + c])
                .sum();
            assert_eq!(vals(&s)[r], expect);
        }
        assert_eq!(y.sum_to(&[]).unwrap().item().unwrap(), 276.0);
        assert_eq!(y.sum_to(&[1, 1, 4]).unwrap().shape(), &[1, 1, 4]);
        assert_eq!(vals(&y.sum_to(&[2, 3, 4]).unwrap()), yv);
        let z = rand64(&[2, 3, 4], 7);
        check(|t| t[0].sum_to(&[3, 1]), &[z.clone()]);
        check(|t| t[0].sum_to(&[4]), &[z.clone()]);
        check(|t| t[0].sum_to(&[2, 1, 4]), &[z.clone()]);
        check(|t| t[0].permute(&[2, 0, 1])?.sum_to(&[1, 3]), &[z]);
        assert_eq!(err(y.sum_to(&[3, 2])), "sum_to: cannot sum [2, 3, 4] to [3, 2]");
        assert!(err(y.sum_to(&[1, 2, 3, 4])).starts_with("sum_to:"));
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let x = rand64(&[2, 1, 3], 8);
        assert_eq!(x.squeeze(1).unwrap().shape(), &[2, 3]);
        assert_eq!(x.unsqueeze(0).unwrap().shape(), &[1, 2, 1, 3]);
        assert_eq!(x.unsqueeze(-1).unwrap().shape(), &[2, 1, 3, 1]);
        assert_eq!(x.unsqueeze(3).unwrap().shape(), &[2, 1, 3, 1]);
        assert!(x.squeeze(1).unwrap().same_storage(&x));
        check(|t| t[0].squeeze(-2), &[x.clone()]);
        check(|t| t[0].unsqueeze(2), &[x.clone()]);
        // Strided inputs: a transposed view and a narrowed view stay views.
        let y = rand64(&[3, 4], 9);
        let yt = y.t().unwrap().unsqueeze(1).unwrap();
        assert!(yt.same_storage(&y));
        assert_eq!(yt.shape(), &[4, 1, 3]);
        assert_eq!(vals(&yt), vals(&y.t().unwrap()));
        let yn = y.narrow(1, 1, 1).unwrap(); // [3, 1], stride 4
        let sq = yn.squeeze(1).unwrap();
        assert!(sq.same_storage(&y));
        assert_eq!(vals(&sq), vals(&yn));
        check(|t| t[0].t()?.unsqueeze(1), &[y.clone()]);
        check(|t| t[0].narrow(1, 1, 1)?.squeeze(-1), &[y.clone()]);
        check(|t| t[0].narrow(1, 1, 1)?.t()?.squeeze(0)?.unsqueeze(0), &[y.clone()]);
        assert_eq!(err(x.squeeze(0)), "squeeze: dimension 0 of [2, 1, 3] is not 1");
        assert!(err(x.squeeze(3)).starts_with("squeeze: axis 3 out of range"));
        assert!(err(x.unsqueeze(4)).starts_with("unsqueeze: axis 4 out of range"));
        assert!(err(x.unsqueeze(-5)).starts_with("unsqueeze:"));
    }

    #[test]
    fn contiguous_copies_only_strided_views() {
        let x = rand64(&[3, 4], 10);
        assert!(x.contiguous().same_storage(&x));
        let xt = x.t().unwrap();
        let c = xt.contiguous();
        assert!(c.is_contiguous());
        assert!(!c.same_storage(&x));
        assert_eq!(vals(&c), vals(&xt));
        check(|t| Ok(t[0].t()?.contiguous()), &[x.clone()]);
        check(|t| Ok(t[0].narrow(1, 1, 2)?.contiguous()), &[x.clone()]);
        check(|t| Ok(t[0].broadcast_to(&[2, 3, 4])?.contiguous()), &[x]);
    }

    #[test]
    fn cat_joins_and_splits_gradient() {
        let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![5.0f64, 6.0], &[2, 1]).unwrap();
        let c = Tensor::cat(&[&a, &b], 1).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(vals(&c), vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        let c0 = Tensor::cat(&[&a, &a.t().unwrap()], 0).unwrap();
        assert_eq!(vals(&c0), vec![1.0, 2.0, 3.0, 4.0, 1.0, 3.0, 2.0, 4.0]);

        let x = rand64(&[2, 3, 4], 11);
        let y = rand64(&[2, 1, 4], 12);
        let z = rand64(&[4, 2, 2], 13); // permuted to [2, 2, 4] inside
        check(
            |t| Tensor::cat(&[&t[0], &t[1], &t[2].permute(&[1, 2, 0])?], 1),
            &[x.clone(), y.clone(), z.clone()],
        );
        check(|t| Tensor::cat(&[&t[0], &t[0].narrow(2, 1, 2)?], -1), &[x.clone()]);
        check(
            |t| Tensor::cat(&[&t[0], &t[1]], 0),
            &[x.clone(), rand64(&[1, 3, 4], 14)],
        );
        // Only the input that needs a gradient gets one.
        let xg = x.clone().requires_grad_(true);
        let g = Tensor::cat(&[&xg, &y], 1).unwrap().sum_all().backward().unwrap();
        assert_eq!(vals(g.get(&xg).unwrap()), vec![1.0; 24]);
        assert!(g.get(&y).is_none());

        assert_eq!(
            err(Tensor::cat(&[&x, &y], 0)),
            "cat: shapes [2, 3, 4] and [2, 1, 4] differ outside dimension 0"
        );
        assert!(err(Tensor::cat(&[&x, &rand64(&[2, 3], 0)], 0)).starts_with("cat:"));
        assert!(err(Tensor::cat(&[], 0)).starts_with("cat: needs at least one tensor"));
        assert!(err(Tensor::cat(&[&x], 3)).starts_with("cat: axis 3 out of range"));
        assert!(err(Tensor::cat(&[&x, &x.to_dtype(DType::F32)], 0)).starts_with("cat: dtype mismatch"));
    }

    #[test]
    fn stack_adds_a_dimension() {
        let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap();
        let b = Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap();
        let s0 = Tensor::stack(&[&a, &b], 0).unwrap();
        assert_eq!(s0.shape(), &[2, 2]);
        assert_eq!(vals(&s0), vec![1.0, 2.0, 3.0, 4.0]);
        let s1 = Tensor::stack(&[&a, &b], -1).unwrap();
        assert_eq!(s1.shape(), &[2, 2]);
        assert_eq!(vals(&s1), vec![1.0, 3.0, 2.0, 4.0]);
        let x = rand64(&[3, 2], 15);
        let y = rand64(&[2, 3], 16);
        check(
            |t| Tensor::stack(&[&t[0], &t[1].t()?, &t[0]], 1),
            &[x.clone(), y.clone()],
        );
        check(|t| Tensor::stack(&[&t[0], &t[1].t()?], 2), &[x.clone(), y.clone()]);
        assert!(Tensor::stack(&[], 0).unwrap_err().to_string().starts_with("stack:"));
        assert_eq!(
            Tensor::stack(&[&x, &y], 0).unwrap_err().to_string(),
            "stack: shapes [3, 2] and [2, 3] differ (stack needs equal shapes)"
        );
        assert_eq!(
            Tensor::stack(&[&x, &x], 3).unwrap_err().to_string(),
            "stack: axis 3 out of range for stacking tensors of 2 dimensions"
        );
        assert!(Tensor::stack(&[&x, &x], -4)
            .unwrap_err()
            .to_string()
            .starts_with("stack: axis -4"));
        assert_eq!(Tensor::stack(&[&x, &x], -3).unwrap().shape(), &[2, 3, 2]);
    }
}
