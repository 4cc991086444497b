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

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_vec_f64()
    }

    #[test]
    fn index_select_values_and_gradient() {
        let x = Tensor::arange(0.0, 12.0, 1.0, DType::F64)
            .unwrap()
            .reshape(&[3, 4])
            .unwrap();
        let r = x.index_select(0, &[2, 0, 2]).unwrap();
        assert_eq!(r.shape(), &[3, 4]);
        assert_eq!(
            vals(&r),
            vec![8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0]
        );
        let c = x.index_select(-1, &[3, 1]).unwrap();
        assert_eq!(vals(&c), vec![3.0, 1.0, 7.0, 5.0, 11.0, 9.0]);
        // On a transposed view: columns of x become rows.
        let t = x.t().unwrap().index_select(0, &[1]).unwrap();
        assert_eq!(vals(&t), vec![1.0, 5.0, 9.0]);
        // Empty selection.
        assert_eq!(x.index_select(1, &[]).unwrap().shape(), &[3, 0]);

        let y = rand64(&[4, 3, 2], 1);
        check(|t| t[0].index_select(0, &[3, 1, 1, 0, 3]), &[y.clone()]);
        check(|t| t[0].index_select(1, &[2, 2, 0]), &[y.clone()]);
        check(|t| t[0].index_select(2, &[1]), &[y.clone()]);
        check(|t| t[0].permute(&[2, 0, 1])?.index_select(1, &[0, 0, 2]), &[y.clone()]);
        check(|t| t[0].narrow(0, 1, 2)?.index_select(0, &[1, 0, 1]), &[y]);
    }

    #[test]
    fn repeated_indices_accumulate_gradient() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])
            .unwrap()
            .requires_grad_(true);
        let g = x.index_select(0, &[0, 0, 2, 0]).unwrap().sum_all().backward().unwrap();
        assert_eq!(vals(g.get(&x).unwrap()), vec![3.0, 0.0, 1.0]);
        let x2 = rand64(&[2, 3], 2).requires_grad_(true);
        let g = x2
            .gather(1, &[1, 1, 1, 0, 2, 0], &[2, 3])
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_eq!(vals(g.get(&x2).unwrap()), vec![0.0, 3.0, 0.0, 2.0, 0.0, 1.0]);
    }

    #[test]
    fn gather_values_and_gradient() {
        let x = Tensor::arange(0.0, 12.0, 1.0, DType::F64)
            .unwrap()
            .reshape(&[3, 4])
            .unwrap();
        // Along axis 1: the per-row pick of a loss.
        let g = x.gather(1, &[2, 0, 3], &[3, 1]).unwrap();
        assert_eq!(g.shape(), &[3, 1]);
        assert_eq!(vals(&g), vec![2.0, 4.0, 11.0]);
        // Along axis 0: out[i][j] = x[index[i][j]][j]; a smaller index shape is allowed.
        let g0 = x.gather(0, &[2, 1, 0, 0, 0, 2], &[2, 3]).unwrap();
        assert_eq!(vals(&g0), vec![8.0, 5.0, 2.0, 0.0, 1.0, 10.0]);
        // On a transposed view.
        let gt = x.t().unwrap().gather(1, &[0, 2, 1, 1], &[4, 1]).unwrap();
        assert_eq!(vals(&gt), vec![0.0, 9.0, 6.0, 7.0]);

        let y = rand64(&[3, 4], 3);
        check(|t| t[0].gather(1, &[2, 0, 3], &[3, 1]), &[y.clone()]);
        check(|t| t[0].gather(1, &[0, 0, 1, 3, 3, 3, 2, 1], &[2, 4]), &[y.clone()]);
        check(|t| t[0].gather(0, &[2, 1, 0, 0, 0, 2], &[2, 3]), &[y.clone()]);
        check(
            |t| t[0].t()?.gather(-1, &[0, 2, 1, 1, 2, 0, 0, 0], &[4, 2]),
            &[y.clone()],
        );
        let z = rand64(&[2, 3, 4], 4);
        check(|t| t[0].gather(1, &[0, 2, 2, 1, 1, 1, 0, 0], &[2, 1, 4]), &[z.clone()]);
        check(|t| t[0].gather(2, &[3, 0, 1, 2, 0, 0], &[2, 3, 1]), &[z]);
    }

    #[test]
    fn one_hot_rows() {
        let t = Tensor::one_hot(&[2, 0, 1], 3, DType::F32).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.shape(), &[3, 3]);
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
        assert_eq!(Tensor::one_hot(&[], 4, DType::F64).unwrap().shape(), &[0, 4]);
        assert!(!t.requires_grad());
        assert_eq!(
            Tensor::one_hot(&[0, 3], 3, DType::F64).unwrap_err().to_string(),
            "one_hot: label 3 at position 1 is not below num_classes 3"
        );
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let x = rand64(&[3, 4], 5);
        assert_eq!(
            x.index_select(1, &[0, 4]).unwrap_err().to_string(),
            "index_select: index 4 at position 1 is out of range for dimension 1 of size 4"
        );
        assert!(x
            .index_select(2, &[0])
            .unwrap_err()
            .to_string()
            .starts_with("index_select: axis 2"));
        assert_eq!(
            x.gather(1, &[0, 4, 1], &[3, 1]).unwrap_err().to_string(),
            "gather: index 4 at position 1 is out of range for dimension 1 of size 4"
        );
        assert_eq!(
            x.gather(1, &[0, 1], &[2]).unwrap_err().to_string(),
            "gather: index shape [2] does not fit input [3, 4]"
        );
        assert!(x
            .gather(1, &[0, 1], &[3, 1])
            .unwrap_err()
            .to_string()
            .starts_with("gather: index shape"));
        assert_eq!(
            x.gather(1, &[0; 4], &[4, 1]).unwrap_err().to_string(),
            "gather: index shape [4, 1] exceeds input [3, 4] in dimension 0"
        );
        assert!(x
            .gather(-3, &[0], &[1, 1])
            .unwrap_err()
            .to_string()
            .starts_with("gather: axis -3"));
    }
}
