//! Shapes, strides and offsets: how a tensor's logical indices map onto its
//! flat storage. Views (transpose, narrow, broadcast) change only this.

use crate::error::{shape_err, Result};

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i];
    }
    strides
}

/// Format a shape the way error messages print it: `[32, 784]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// The logical shape and the map to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
}

impl Layout {
    /// A fresh row-major layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            offset: 0,
        }
    }
    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Element strides per dimension (0 for broadcast dimensions).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// Offset of element `[0, …, 0]` in storage.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the elements are laid out row-major without gaps, so kernels can use a flat slice.
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 && self.strides[i] != acc {
                return false;
            }
            acc *= self.shape[i];
        }
        true
    }
    /// The storage range of a contiguous layout.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.numel())
    }
    /// This layout viewed with `shape`, repeating size-1 or missing leading dimensions with stride 0.
    pub fn broadcast_to(&self, op: &'static str, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.shape.len() {
            return shape_err(
                op,
                format!("cannot broadcast {} to {}", fmt_shape(&self.shape), fmt_shape(shape)),
            );
        }
        let lead = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for (i, &d) in shape.iter().enumerate() {
            if i < lead {
                continue;
            }
            let s = self.shape[i - lead];
            if s == d {
                strides[i] = self.strides[i - lead];
            } else if s == 1 {
                strides[i] = 0;
            } else {
                return shape_err(
                    op,
                    format!("cannot broadcast {} to {}", fmt_shape(&self.shape), fmt_shape(shape)),
                );
            }
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }
}

/// NumPy's broadcasting rule: align trailing dimensions; each pair must be equal or contain a 1.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return shape_err(
                op,
                format!(
                    "shapes {} and {} do not broadcast (dimension {i}: {da} vs {db})",
                    fmt_shape(a),
                    fmt_shape(b)
                ),
            );
        };
    }
    Ok(out)
}

/// Resolve a possibly negative axis against `ndim`.
pub fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        return Err(crate::Error::Argument {
            op,
            msg: format!("axis {axis} out of range for a tensor with {ndim} dimensions"),
        });
    }
    Ok(a as usize)
}

/// Call `f` with the storage offset of every element of (shape, strides, offset), in row-major order.
#[inline]
pub fn for_each_offset(shape: &[usize], strides: &[usize], offset: usize, mut f: impl FnMut(usize)) {
    let nd = shape.len();
    if nd == 0 {
        f(offset);
        return;
    }
    if shape.contains(&0) {
        return;
    }
    let inner = shape[nd - 1];
    let istride = strides[nd - 1];
    let mut idx = vec![0usize; nd - 1];
    let mut base = offset;
    loop {
        if istride == 1 {
            for i in base..base + inner {
                f(i);
            }
        } else {
            for i in 0..inner {
                f(base + i * istride);
            }
        }
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Like [`for_each_offset`], walking two layouts of the same shape in lockstep.
#[inline]
pub fn for_each_offset2(
    shape: &[usize],
    sa: &[usize],
    oa: usize,
    sb: &[usize],
    ob: usize,
    mut f: impl FnMut(usize, usize),
) {
    let nd = shape.len();
    if nd == 0 {
        f(oa, ob);
        return;
    }
    if shape.contains(&0) {
        return;
    }
    let inner = shape[nd - 1];
    let (ia, ib) = (sa[nd - 1], sb[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    let (mut ba, mut bb) = (oa, ob);
    loop {
        for i in 0..inner {
            f(ba + i * ia, bb + i * ib);
        }
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            ba += sa[d];
            bb += sb[d];
            if idx[d] < shape[d] {
                break;
            }
            ba -= sa[d] * shape[d];
            bb -= sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes("t", &[], &[2, 2]).unwrap(), vec![2, 2]);
        let e = broadcast_shapes("add", &[3, 2], &[4]).unwrap_err();
        assert!(e.to_string().starts_with("add: shapes [3, 2] and [4]"));
    }

    #[test]
    fn offsets_of_transpose() {
        let l = Layout::contiguous(&[2, 3]);
        let t = Layout {
            shape: vec![3, 2],
            strides: vec![l.strides[1], l.strides[0]],
            offset: 0,
        };
        let mut v = vec![];
        for_each_offset(&t.shape, &t.strides, t.offset, |o| v.push(o));
        assert_eq!(v, vec![0, 3, 1, 4, 2, 5]);
        assert!(!t.is_contiguous());
        assert!(l.is_contiguous());
    }

    #[test]
    fn axis_normalization() {
        assert_eq!(normalize_axis("t", -1, 3).unwrap(), 2);
        assert!(normalize_axis("t", 3, 3).is_err());
        assert!(normalize_axis("t", -4, 3).is_err());
    }
}
