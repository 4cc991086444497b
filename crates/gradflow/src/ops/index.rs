//! Picking elements by index: `index_select`, `gather` (how a loss picks the
//! target class), and `one_hot`. Backward scatters the gradient back,
//! adding where an index repeats.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::layout::{contiguous_strides, fmt_shape, normalize_axis};
use crate::storage::CpuStorage;
use crate::{DType, Element, Tensor};

/// For a position in `index_shape` (row-major `pos`), the source position in `src_shape` with the axis coordinate replaced.
fn source_offsets(index_shape: &[usize], src_shape: &[usize], axis: usize, index: &[usize]) -> Vec<usize> {
    let src_strides = contiguous_strides(src_shape);
    let idx_strides = contiguous_strides(index_shape);
    (0..index.len())
        .map(|pos| {
            let mut off = 0;
            for d in 0..index_shape.len() {
                let c = (pos / idx_strides[d]) % index_shape[d];
                let c = if d == axis { index[pos] } else { c };
                off += c * src_strides[d];
            }
            off
        })
        .collect()
}

fn take<T: Element>(src: &[T], offsets: &[usize]) -> Vec<T> {
    offsets.iter().map(|&o| src[o]).collect()
}

fn scatter<T: Element>(n: usize, offsets: &[usize], g: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); n];
    for (&o, &v) in offsets.iter().zip(g) {
        out[o] += v;
    }
    out
}

/// Shared backward of index_select and gather: scatter-add through the recorded offsets.
struct ScatterBackward {
    x: Tensor,
    offsets: Vec<usize>,
    name: &'static str,
}
impl GradFn for ScatterBackward {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gs = g.contiguous_storage();
        let n = self.x.numel();
        let out = match &gs {
            CpuStorage::F32(v) => CpuStorage::F32(scatter(n, &self.offsets, v)),
            CpuStorage::F64(v) => CpuStorage::F64(scatter(n, &self.offsets, v)),
        };
        Ok(vec![Some(Tensor::from_storage(out, self.x.shape()))])
    }
}

impl Tensor {
    fn take_offsets(&self, offsets: Vec<usize>, shape: &[usize], name: &'static str) -> Tensor {
        let src = self.contiguous_storage();
        let out = match &src {
            CpuStorage::F32(v) => CpuStorage::F32(take(v, &offsets)),
            CpuStorage::F64(v) => CpuStorage::F64(take(v, &offsets)),
        };
        Tensor::from_storage(out, shape).attach(&[self], || {
            node(ScatterBackward {
                x: self.clone(),
                offsets,
                name,
            })
        })
    }

    /// The slices at `indices` along `axis`, in that order (indices may repeat).
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Tensor> {
        let a = normalize_axis("index_select", axis, self.ndim())?;
        let d = self.shape()[a];
        if let Some((i, &bad)) = indices.iter().enumerate().find(|(_, &v)| v >= d) {
            return arg_err(
                "index_select",
                format!("index {bad} at position {i} is out of range for dimension {a} of size {d}"),
            );
        }
        let mut shape = self.shape().to_vec();
        shape[a] = indices.len();
        let n: usize = shape.iter().product();
        let strides = contiguous_strides(&shape);
        let expanded: Vec<usize> = (0..n)
            .map(|pos| indices[(pos / strides[a]) % indices.len().max(1)])
            .collect();
        let offsets = source_offsets(&shape, self.shape(), a, &expanded);
        Ok(self.take_offsets(offsets, &shape, "index_select"))
    }

    /// PyTorch's `gather`: `out[i][j] = self[i][index[i][j]]` along `axis` (for 2-D, axis 1).
    /// `index` is row-major with shape `index_shape`.
    pub fn gather(&self, axis: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
        let a = normalize_axis("gather", axis, self.ndim())?;
        if index_shape.len() != self.ndim() || index.len() != index_shape.iter().product::<usize>() {
            return shape_err(
                "gather",
                format!(
                    "index shape {} does not fit input {}",
                    fmt_shape(index_shape),
                    fmt_shape(self.shape())
                ),
            );
        }
        for (d, (&i, &s)) in index_shape.iter().zip(self.shape()).enumerate() {
            if d != a && i > s {
                return shape_err(
                    "gather",
                    format!(
                        "index shape {} exceeds input {} in dimension {d}",
                        fmt_shape(index_shape),
                        fmt_shape(self.shape())
                    ),
                );
            }
        }
        let dim = self.shape()[a];
        if let Some((i, &bad)) = index.iter().enumerate().find(|(_, &v)| v >= dim) {
            return arg_err(
                "gather",
                format!("index {bad} at position {i} is out of range for dimension {a} of size {dim}"),
            );
        }
        let offsets = source_offsets(index_shape, self.shape(), a, index);
        Ok(self.take_offsets(offsets, index_shape, "gather"))
    }

    /// Rows of the identity: `[labels.len(), num_classes]`, 1 at each label.
    pub fn one_hot(labels: &[usize], num_classes: usize, dtype: DType) -> Result<Tensor> {
        if let Some((i, &bad)) = labels.iter().enumerate().find(|(_, &v)| v >= num_classes) {
            return arg_err(
                "one_hot",
                format!("label {bad} at position {i} is not below num_classes {num_classes}"),
            );
        }
        let mut v = vec![0.0f64; labels.len() * num_classes];
        for (i, &l) in labels.iter().enumerate() {
            v[i * num_classes + l] = 1.0;
        }
        Ok(Tensor::from_vec(v, &[labels.len(), num_classes])?.to_dtype(dtype))
    }
}
