//! The tensor: shared storage, a layout that views it, and (when it was made
//! by an op that needs a gradient) the node that knows how to send gradient
//! back to its inputs.

use crate::autograd::{self, GradFn};
use crate::error::{arg_err, shape_err, Error, Result};
use crate::layout::{fmt_shape, for_each_offset, Layout};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Element};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A unique id per tensor node; gradients are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> TensorId {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) struct TensorImpl {
    pub(crate) id: TensorId,
    pub(crate) storage: Arc<RwLock<Storage>>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) requires_grad: bool,
    /// Taken (set to None) by backward once this node's rule has run, which frees
    /// the saved activations it held.
    pub(crate) grad_fn: Mutex<Option<Arc<dyn GradFn>>>,
    /// Set when backward has run this node's rule and released it, so a second
    /// backward through the same graph is an error instead of a silent zero.
    pub(crate) released: AtomicBool,
}

impl Drop for TensorImpl {
    /// Free the graph below this node with a loop, not recursion: dropping the
    /// loss of a 100,000-op chain must not overflow the stack.
    fn drop(&mut self) {
        let Some(first) = self.grad_fn.get_mut().ok().and_then(|g| g.take()) else {
            return;
        };
        let mut stack = vec![first];
        while let Some(gf) = stack.pop() {
            if Arc::strong_count(&gf) != 1 {
                continue; // someone else still uses this node; dropping our handle is shallow
            }
            let inputs = gf.inputs();
            drop(gf);
            for t in inputs {
                if Arc::strong_count(&t.0) == 1 {
                    if let Some(g) = t.0.grad_fn.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        stack.push(g);
                    }
                }
            }
        }
    }
}

/// An n-dimensional array of f32 or f64 that records the ops applied to it
/// (when gradients are wanted), so that [`Tensor::backward`] can run the chain
/// rule in reverse.
///
/// Cloning is cheap: clones share storage and graph node.
///
/// **Errors, not panics.** Every op that can fail on its arguments (shapes,
/// dtypes, axes) returns [`Result`], and the error names the op and the shapes.
/// The only panics left are internal invariants.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorImpl>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor{}({}{}",
            fmt_shape(self.shape()),
            self.dtype(),
            if self.requires_grad() { ", requires_grad" } else { "" }
        )?;
        if self.numel() <= 16 {
            write!(f, ", {:?}", self.to_vec_f64())?;
        }
        write!(f, ")")
    }
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    pub(crate) fn from_parts(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        dtype: DType,
        requires_grad: bool,
        grad_fn: Option<Arc<dyn GradFn>>,
    ) -> Tensor {
        Tensor(Arc::new(TensorImpl {
            id: TensorId::next(),
            storage,
            layout,
            dtype,
            requires_grad,
            grad_fn: Mutex::new(grad_fn),
            released: AtomicBool::new(false),
        }))
    }

    /// A new leaf tensor that owns `storage`, laid out row-major as `shape`.
    pub(crate) fn from_storage(storage: CpuStorage, shape: &[usize]) -> Tensor {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        let dtype = storage.dtype();
        Tensor::from_parts(
            Arc::new(RwLock::new(Storage::Cpu(storage))),
            Layout::contiguous(shape),
            dtype,
            false,
            None,
        )
    }

    /// Give `self` (a fresh result) a node in the graph if any input needs a gradient.
    pub(crate) fn attach(self, inputs: &[&Tensor], grad_fn: impl FnOnce() -> Arc<dyn GradFn>) -> Tensor {
        if autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
            Tensor(Arc::new(TensorImpl {
                id: self.0.id,
                storage: self.0.storage.clone(),
                layout: self.0.layout.clone(),
                dtype: self.0.dtype,
                requires_grad: true,
                grad_fn: Mutex::new(Some(grad_fn())),
                released: AtomicBool::new(false),
            }))
        } else {
            self
        }
    }

    /// A view sharing storage with `self`, with a new layout; recorded in the graph by the caller.
    pub(crate) fn view_with(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), layout, self.dtype(), false, None)
    }

    /// A tensor from a flat row-major buffer. Errors if the length does not match the shape.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return shape_err(
                "from_vec",
                format!(
                    "{} elements cannot have shape {} ({} elements)",
                    data.len(),
                    fmt_shape(shape),
                    n
                ),
            );
        }
        Ok(Tensor::from_storage(T::into_storage(data), shape))
    }

    /// A tensor from a slice, copied.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_storage(T::into_storage(vec![v]), &[])
    }

    /// Every element equal to `value`, in the given dtype.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n = shape.iter().product();
        let s = match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
        };
        Tensor::from_storage(s, shape)
    }

    /// All zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 0.0, dtype)
    }

    /// All ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Zeros with this tensor's shape and dtype.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape(), self.dtype())
    }

    /// Ones with this tensor's shape and dtype.
    pub fn ones_like(&self) -> Tensor {
        Tensor::ones(self.shape(), self.dtype())
    }

    /// `[start, start + step, …]` below `end`, as a 1-D tensor.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return arg_err("arange", format!("invalid range {start}..{end} step {step}"));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Ok(Tensor::from_vec(v, &[n])?.to_dtype(dtype))
    }

    /// The n×n identity matrix.
    pub fn eye(n: usize, dtype: DType) -> Tensor {
        let mut v = vec![0.0f64; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Tensor::from_storage(CpuStorage::F64(v), &[n, n]).to_dtype(dtype)
    }

    /// Uniform samples in `[lo, hi)` from `rng`; pass a seeded generator to reproduce a run.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, dtype: DType, rng: &mut impl Rng) -> Tensor {
        let n: usize = shape.iter().product();
        let s = match dtype {
            DType::F32 => CpuStorage::F32(
                (0..n)
                    .map(|_| lo as f32 + (hi - lo) as f32 * rng.gen::<f32>())
                    .collect(),
            ),
            DType::F64 => CpuStorage::F64((0..n).map(|_| lo + (hi - lo) * rng.gen::<f64>()).collect()),
        };
        Tensor::from_storage(s, shape)
    }

    /// Normal samples with this mean and standard deviation from `rng`.
    pub fn rand_normal(shape: &[usize], mean: f64, std: f64, dtype: DType, rng: &mut impl Rng) -> Tensor {
        let n: usize = shape.iter().product();
        let s = match dtype {
            DType::F32 => CpuStorage::F32(
                (0..n)
                    .map(|_| {
                        let z: f32 = StandardNormal.sample(rng);
                        mean as f32 + std as f32 * z
                    })
                    .collect(),
            ),
            DType::F64 => CpuStorage::F64(
                (0..n)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(rng);
                        mean + std * z
                    })
                    .collect(),
            ),
        };
        Tensor::from_storage(s, shape)
    }

    // ---------------------------------------------------------------- metadata

    /// The node id, used as the key of gradients.
    pub fn id(&self) -> TensorId {
        self.0.id
    }
    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }
    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.0.layout.strides
    }
    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// Device of the storage.
    pub fn device(&self) -> Device {
        Device::Cpu
    }
    /// Whether backward will compute a gradient for this tensor (or through it).
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    /// True for tensors not produced by a recorded op (parameters, inputs).
    pub fn is_leaf(&self) -> bool {
        self.grad_fn().is_none()
    }
    /// Whether the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = crate::layout::normalize_axis("dim", axis, self.ndim())?;
        Ok(self.shape()[a])
    }
    pub(crate) fn grad_fn(&self) -> Option<Arc<dyn GradFn>> {
        self.0.grad_fn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Name of the op that produced this tensor, if recorded (for diagnostics).
    pub fn op_name(&self) -> Option<&'static str> {
        self.grad_fn().map(|g| g.name())
    }
    /// True when `self` and `other` view the same storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    // ---------------------------------------------------------------- graph control

    /// A leaf that shares storage with `self` and asks for gradients: this is a trainable parameter.
    pub fn requires_grad_(self, requires: bool) -> Tensor {
        Tensor::from_parts(
            self.0.storage.clone(),
            self.0.layout.clone(),
            self.dtype(),
            requires,
            None,
        )
    }

    /// The same values, cut off from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), self.dtype(), false, None)
    }

    // ---------------------------------------------------------------- data access

    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the elements as a row-major slice (copying only if the view is not contiguous).
    pub fn with_slice<T: Element, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        self.check_dtype::<T>("with_slice")?;
        let st = self.storage();
        let data = T::slice(st.cpu()).expect("dtype checked");
        match self.0.layout.contiguous_range() {
            Some(r) => Ok(f(&data[r])),
            None => {
                let v = gather_strided(data, &self.0.layout);
                Ok(f(&v))
            }
        }
    }

    /// Run `f` on the elements mutably, in place. This is how optimizers update
    /// parameters without allocating; it requires a contiguous tensor and is not
    /// recorded in the graph.
    pub fn with_slice_mut<T: Element, R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        self.check_dtype::<T>("with_slice_mut")?;
        let Some(r) = self.0.layout.contiguous_range() else {
            return arg_err("with_slice_mut", "in-place access needs a contiguous tensor");
        };
        let mut st = self.storage_mut();
        let data = T::slice_mut(st.cpu_mut()).expect("dtype checked");
        Ok(f(&mut data[r]))
    }

    /// Copy `src`'s values into `self` in place (same shape and dtype); used to load weights.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if self.shape() != src.shape() {
            return shape_err(
                "assign",
                format!("{} from {}", fmt_shape(self.shape()), fmt_shape(src.shape())),
            );
        }
        let src = src.to_dtype(self.dtype());
        match self.dtype() {
            DType::F32 => {
                let v = src.to_vec::<f32>()?;
                self.with_slice_mut::<f32, _>(|d| d.copy_from_slice(&v))
            }
            DType::F64 => {
                let v = src.to_vec::<f64>()?;
                self.with_slice_mut::<f64, _>(|d| d.copy_from_slice(&v))
            }
        }
    }

    fn check_dtype<T: Element>(&self, op: &'static str) -> Result<()> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DType {
                op,
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        Ok(())
    }

    /// The elements in row-major order.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.with_slice(|s: &[T]| s.to_vec())
    }

    /// The elements in row-major order, widened to f64 whatever the dtype.
    pub fn to_vec_f64(&self) -> Vec<f64> {
        match self.dtype() {
            DType::F32 => self
                .with_slice(|s: &[f32]| s.iter().map(|&x| x as f64).collect())
                .unwrap_or_default(),
            DType::F64 => self.to_vec::<f64>().unwrap_or_default(),
        }
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return shape_err(
                "item",
                format!("needs one element, got shape {}", fmt_shape(self.shape())),
            );
        }
        Ok(self.to_vec_f64()[0])
    }

    /// The values converted to another dtype (a copy, cut off from the graph unless the dtype is unchanged).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let st = match (self.dtype(), dtype) {
            (DType::F32, DType::F64) => CpuStorage::F64(
                self.with_slice(|s: &[f32]| s.iter().map(|&x| x as f64).collect())
                    .expect("dtype"),
            ),
            _ => CpuStorage::F32(
                self.with_slice(|s: &[f64]| s.iter().map(|&x| x as f32).collect())
                    .expect("dtype"),
            ),
        };
        Tensor::from_storage(st, self.shape())
    }

    /// A deep copy: new storage with the same values, cut off from the graph.
    pub fn copy(&self) -> Tensor {
        Tensor::from_storage(self.contiguous_storage(), self.shape())
    }

    /// Check that two operands share a dtype.
    pub(crate) fn same_dtype(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DType {
                op,
                lhs: self.dtype(),
                rhs: other.dtype(),
            });
        }
        Ok(())
    }

    /// A contiguous copy of the elements as owned storage (shares nothing).
    pub(crate) fn contiguous_storage(&self) -> CpuStorage {
        let st = self.storage();
        match st.cpu() {
            CpuStorage::F32(v) => CpuStorage::F32(gather_strided(v, &self.0.layout)),
            CpuStorage::F64(v) => CpuStorage::F64(gather_strided(v, &self.0.layout)),
        }
    }
}

/// Copy the elements of a strided view into a new row-major buffer.
pub(crate) fn gather_strided<T: Copy>(data: &[T], layout: &Layout) -> Vec<T> {
    if let Some(r) = layout.contiguous_range() {
        return data[r].to_vec();
    }
    let mut out = Vec::with_capacity(layout.numel());
    let nd = layout.shape.len();
    if nd > 1 && layout.strides[nd - 1] == 1 {
        // Rows still contiguous (permuted or narrowed outer axes, as when attention's
        // heads are joined): a row at a time, not an element at a time, which measured
        // 3% of a transformer step.
        let row = layout.shape[nd - 1];
        let (shape, strides) = (&layout.shape[..nd - 1], &layout.strides[..nd - 1]);
        for_each_offset(shape, strides, layout.offset, |o| {
            out.extend_from_slice(&data[o..o + row])
        });
        return out;
    }
    for_each_offset(&layout.shape, &layout.strides, layout.offset, |o| out.push(data[o]));
    out
}

#[cfg(test)]
mod tests {
    use super::gather_strided;
    use crate::layout::{for_each_offset, Layout};

    #[test]
    fn row_copies_match_the_element_walk() {
        let data: Vec<u32> = (0..240).collect();
        let view = |shape: [usize; 4], strides: [usize; 4], offset| Layout {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        };
        // [2, 3, 4, 5] as stored, permuted to [2, 4, 3, 5] (rows of 5 stay contiguous),
        // that narrowed, and with the last two axes swapped (no contiguous rows).
        let layouts = [
            Layout::contiguous(&[2, 3, 4, 5]),
            view([2, 4, 3, 5], [60, 5, 20, 1], 0),
            view([2, 2, 3, 3], [60, 5, 20, 1], 6),
            view([2, 3, 5, 4], [60, 20, 1, 5], 0),
        ];
        for l in layouts {
            let mut want = Vec::new();
            for_each_offset(&l.shape, &l.strides, l.offset, |o| want.push(data[o]));
            assert_eq!(gather_strided(&data, &l), want, "{:?}", l.shape);
        }
    }
}
