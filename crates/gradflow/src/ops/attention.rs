//! Attention's softmax as one op: `softmax(scale·scores)` over the last axis,
//! with an optional causal mask, forward and fused backward
//! (`dx = scale·y⊙(g − Σ g⊙y)`) side by side. Folding the scale and the mask
//! in saves two passes over the `[N, H, T, T]` scores and the mask tensor
//! itself; the products around it are [`Tensor::matmul`] on strided head views.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::kernels::attention::ScoreRows;
use crate::layout::{fmt_shape, Layout};
use crate::storage::CpuStorage;
use crate::tensor::gather_strided;
use crate::{Element, Tensor};

/// `f` on the tensor's elements in row-major order, borrowed when they already are.
fn on_rows<T: Element, R>(data: &[T], layout: &Layout, f: impl FnOnce(&[T]) -> R) -> R {
    match layout.contiguous_range() {
        Some(r) => f(&data[r]),
        None => f(&gather_strided(data, layout)),
    }
}

fn rows_op(t: &Tensor, f32_op: impl FnOnce(&[f32]) -> Vec<f32>, f64_op: impl FnOnce(&[f64]) -> Vec<f64>) -> CpuStorage {
    let st = t.storage();
    match st.cpu() {
        CpuStorage::F32(v) => CpuStorage::F32(on_rows(v, t.layout(), f32_op)),
        CpuStorage::F64(v) => CpuStorage::F64(on_rows(v, t.layout(), f64_op)),
    }
}

struct AttentionSoftmaxBackward {
    scores: Tensor,
    rows: ScoreRows,
}

impl GradFn for AttentionSoftmaxBackward {
    fn name(&self) -> &'static str {
        "attention_softmax"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.scores.clone()]
    }
    fn backward(&self, out: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // `out` is this op's own contiguous result: borrowed; `g` only gathered if strided.
        let rows = self.rows;
        let ys = out.storage();
        let dx = match ys.cpu() {
            CpuStorage::F32(y) => rows_op(g, |g| rows.backward(y, g), |_| unreachable!("same dtype")),
            CpuStorage::F64(y) => rows_op(g, |_| unreachable!("same dtype"), |g| rows.backward(y, g)),
        };
        Ok(vec![Some(Tensor::from_storage(dx, out.shape()))])
    }
}

impl Tensor {
    /// Attention weights from scores `[..., Tq, Tk]`: `softmax(scale·x)` over the last axis.
    /// With `causal`, query `i` attends to keys `0..=i` only, as a `−inf` mask above the
    /// diagonal does in PyTorch (`is_causal=True`). `scale` must be positive and finite.
    pub fn attention_softmax(&self, scale: f64, causal: bool) -> Result<Tensor> {
        let nd = self.ndim();
        if nd < 2 {
            return shape_err(
                "attention_softmax",
                format!("scores {} need [..., Tq, Tk]", fmt_shape(self.shape())),
            );
        }
        if !(scale.is_finite() && scale > 0.0) {
            return arg_err(
                "attention_softmax",
                format!("scale {scale} must be positive and finite"),
            );
        }
        let rows = ScoreRows {
            tq: self.shape()[nd - 2],
            tk: self.shape()[nd - 1],
            scale,
            causal,
        };
        let out = rows_op(self, |x| rows.forward(x), |x| rows.forward(x));
        Ok(Tensor::from_storage(out, self.shape()).attach(&[self], || {
            node(AttentionSoftmaxBackward {
                scores: self.clone(),
                rows,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::Tensor;

    #[test]
    fn gradcheck_masked_and_not_on_strided_scores() {
        for causal in [false, true] {
            check(|t| t[0].attention_softmax(0.5, causal), &[rand64(&[2, 3, 4, 4], 1)]);
            check(|t| t[0].attention_softmax(1.0, causal), &[rand64(&[3, 2], 2)]);
            // A transposed (non-contiguous) view, and more queries than keys.
            check(|t| t[0].t()?.attention_softmax(0.7, causal), &[rand64(&[2, 3, 5], 3)]);
            // Inside a product, as attention uses it: gradients reach q and k through the weights.
            check(
                |t| t[0].matmul(&t[1].t()?)?.attention_softmax(0.6, causal)?.matmul(&t[1]),
                &[rand64(&[2, 4, 3], 4), rand64(&[2, 4, 3], 5)],
            );
        }
    }

    #[test]
    fn equals_softmax_of_scaled_and_masked_scores() {
        let x = rand64(&[2, 4, 4], 7);
        let plain = x.mul_scalar(0.3).softmax(-1).unwrap().to_vec_f64();
        let fused = x.attention_softmax(0.3, false).unwrap().to_vec_f64();
        for (a, b) in plain.iter().zip(&fused) {
            assert!((a - b).abs() < 1e-15);
        }
        let causal = x.attention_softmax(0.3, true).unwrap().to_vec_f64();
        // First query: all weight on the first key; last query: as without the mask.
        assert_eq!(&causal[..4], &[1.0, 0.0, 0.0, 0.0]);
        for (a, b) in causal[12..16].iter().zip(&fused[12..16]) {
            assert!((a - b).abs() < 1e-15);
        }
    }

    #[test]
    fn errors_name_the_op_and_cause() {
        let e = rand64(&[3], 0).attention_softmax(1.0, false).unwrap_err().to_string();
        assert_eq!(e, "attention_softmax: scores [3] need [..., Tq, Tk]");
        let e = rand64(&[2, 2], 0)
            .attention_softmax(0.0, false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("attention_softmax: scale 0 must be positive"), "{e}");
        assert!(Tensor::scalar(1.0f64).attention_softmax(1.0, true).is_err());
    }
}
