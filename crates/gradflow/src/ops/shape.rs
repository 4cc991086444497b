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
        if holes > 1 || (holes == 1 && (known == 0 || self.numel() % known != 0)) {
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
                    start + len,
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
