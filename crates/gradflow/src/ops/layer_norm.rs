//! Layer normalization as one op, `F.layer_norm` in PyTorch: each sample
//! normalized over its trailing `normalized_shape` dimensions, then scaled by
//! γ and shifted by β (both optional), with the fused backward rule
//!
//! ```text
//! y  = x̂·γ + β,                x̂ = (x − mean)·rstd,   rstd = 1/√(var + ε)
//! dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)),   ĝ = g·γ
//! dγ = Σ_rows g·x̂,   dβ = Σ_rows g
//! ```
//!
//! Composed as `normalize(…).xhat.mul(γ).add(β)` it took three passes forward
//! and three backward, the broadcast product's backward reducing dγ over every
//! row apart; fused, it is one pass forward and one backward. Statistics and
//! the backward's reductions are accumulated in f64, as in
//! [`Tensor::normalize`]. The row loops are in `kernels/layer_norm.rs`.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::kernels::layer_norm::{NormRows, RowStats, Wanted};
use crate::kernels::Contiguous;
use crate::layout::fmt_shape;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};

struct LayerNormBackward {
    x: Tensor,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    rows: NormRows,
    stats: RowStats,
}

impl GradFn for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn inputs(&self) -> Vec<Tensor> {
        [Some(&self.x), self.weight.as_ref(), self.bias.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let want = Wanted {
            x: needs[0],
            weight: self.weight.is_some() && needs[1],
            bias: self.bias.is_some() && needs[needs.len() - 1],
        };
        let [dx, dw, db] = {
            let (xs, gs) = (Contiguous::of(&self.x), Contiguous::of(g));
            let ws = self.weight.as_ref().map(Contiguous::of);
            self.grads::<f32>(&xs, &gs, ws.as_ref(), want)
                .or_else(|| self.grads::<f64>(&xs, &gs, ws.as_ref(), want))
                .expect("the gradient has the input's dtype")
        };
        let param_shape = &self.x.shape()[self.x.ndim() - self.param_ndim()..];
        let wrap = |s: Option<CpuStorage>, shape: &[usize]| s.map(|s| Tensor::from_storage(s, shape));
        let mut out = vec![wrap(dx, self.x.shape())];
        if self.weight.is_some() {
            out.push(wrap(dw, param_shape));
        }
        if self.bias.is_some() {
            out.push(wrap(db, param_shape));
        }
        Ok(out)
    }
}

impl LayerNormBackward {
    /// The number of normalized trailing dimensions (γ's and β's rank).
    fn param_ndim(&self) -> usize {
        self.weight.as_ref().or(self.bias.as_ref()).map_or(0, Tensor::ndim)
    }

    /// The wanted gradients of x, γ and β, when the operands are of element type `T`.
    fn grads<T: Element>(
        &self,
        x: &Contiguous,
        g: &Contiguous,
        w: Option<&Contiguous>,
        want: Wanted,
    ) -> Option<[Option<CpuStorage>; 3]> {
        let grads = self
            .rows
            .backward(x.slice::<T>()?, g.slice::<T>()?, w.map(param_slice), &self.stats, want);
        Some([grads.x, grads.weight, grads.bias].map(|v| v.map(T::into_storage)))
    }
}

/// γ or β, if given, must have the normalized shape and the input's dtype.
fn check_param(x: &Tensor, name: &str, p: Option<&Tensor>, normalized_shape: &[usize]) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    x.same_dtype("layer_norm", p)?;
    if p.shape() != normalized_shape {
        return shape_err(
            "layer_norm",
            format!(
                "{name} {} does not match normalized_shape {}",
                fmt_shape(p.shape()),
                fmt_shape(normalized_shape)
            ),
        );
    }
    Ok(())
}

fn check_args(x: &Tensor, normalized_shape: &[usize], w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<()> {
    if normalized_shape.is_empty() {
        return shape_err("layer_norm", "normalized_shape must have at least one dimension");
    }
    if !x.shape().ends_with(normalized_shape) {
        return shape_err(
            "layer_norm",
            format!(
                "normalized_shape {} is not the trailing part of input shape {}",
                fmt_shape(normalized_shape),
                fmt_shape(x.shape())
            ),
        );
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return arg_err("layer_norm", format!("eps {eps} must be finite and not negative"));
    }
    check_param(x, "weight", w, normalized_shape)?;
    check_param(x, "bias", b, normalized_shape)
}

/// γ's or β's elements, whose dtype was checked to be the input's.
fn param_slice<'a, T: Element>(p: &'a Contiguous<'_>) -> &'a [T] {
    p.slice::<T>().expect("dtype checked")
}

/// [`NormRows::forward`] when the operands are of element type `T`.
fn forward_storage<T: Element>(
    rows: NormRows,
    x: &Contiguous,
    w: Option<&Contiguous>,
    b: Option<&Contiguous>,
) -> Option<(CpuStorage, RowStats)> {
    let x = x.slice::<T>()?;
    let (w, b) = (w.map(param_slice), b.map(param_slice));
    let (y, stats) = rows.forward(x, w, b);
    Some((T::into_storage(y), stats))
}

impl Tensor {
    /// Normalizes each sample over its trailing `normalized_shape` dimensions, then
    /// multiplies by `weight` (γ) and adds `bias` (β), each of `normalized_shape` and
    /// each optional, as `torch.nn.functional.layer_norm` does. `eps` is added to the
    /// (biased) variance. Statistics and the backward's reductions are accumulated in f64.
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        check_args(self, normalized_shape, weight, bias, eps)?;
        let rows = NormRows {
            len: normalized_shape.iter().product(),
            eps,
        };
        let (out, stats) = {
            let xs = Contiguous::of(self);
            let (ws, bs) = (weight.map(Contiguous::of), bias.map(Contiguous::of));
            forward_storage::<f32>(rows, &xs, ws.as_ref(), bs.as_ref())
                .or_else(|| forward_storage::<f64>(rows, &xs, ws.as_ref(), bs.as_ref()))
                .expect("one of the two dtypes")
        };
        let inputs: Vec<&Tensor> = [Some(self), weight, bias].into_iter().flatten().collect();
        Ok(Tensor::from_storage(out, self.shape()).attach(&inputs, || {
            node(LayerNormBackward {
                x: self.clone(),
                weight: weight.cloned(),
                bias: bias.cloned(),
                rows,
                stats,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};

    #[test]
    fn gradcheck_x_weight_and_bias_with_and_without_affine() {
        for (shape, norm) in [
            (vec![2, 3, 4], vec![4]),
            (vec![2, 3, 4], vec![3, 4]),
            (vec![3, 9], vec![9]),
        ] {
            let (w, b) = (rand64(&norm, 2).add_scalar(1.0), rand64(&norm, 3));
            let x = rand64(&shape, 1);
            check(
                |t| t[0].layer_norm(&norm, Some(&t[1]), Some(&t[2]), 1e-5),
                &[x.clone(), w.clone(), b.clone()],
            );
            check(
                |t| t[0].layer_norm(&norm, Some(&t[1]), None, 1e-5),
                &[x.clone(), w.clone()],
            );
            check(
                |t| t[0].layer_norm(&norm, None, Some(&t[1]), 1e-5),
                &[x.clone(), b.clone()],
            );
            check(|t| t[0].layer_norm(&norm, None, None, 1e-5), &[x.clone()]);
        }
    }

    /// A row of one element has x̂ = 0 whatever x: only ε keeps rstd finite, and dx is 0.
    #[test]
    fn gradcheck_rows_of_one_element() {
        let (w, b) = (rand64(&[1], 5), rand64(&[1], 6));
        check(
            |t| t[0].layer_norm(&[1], Some(&t[1]), Some(&t[2]), 1e-3),
            &[rand64(&[4, 1], 4), w, b],
        );
    }

    /// A transposed (strided) input and parameters used twice reach the same gradients.
    #[test]
    fn gradcheck_strided_input_and_shared_parameters() {
        check(
            |t| t[0].t()?.layer_norm(&[3], Some(&t[1]), Some(&t[1]), 1e-5),
            &[rand64(&[3, 5], 7), rand64(&[3], 8)],
        );
    }

    #[test]
    fn equals_the_composed_normalize_mul_add() {
        let (x, w, b) = (rand64(&[4, 6, 8], 1), rand64(&[6, 8], 2), rand64(&[6, 8], 3));
        let fused = x.layer_norm(&[6, 8], Some(&w), Some(&b), 1e-5).unwrap().to_vec_f64();
        let xhat = x.normalize(&[1, 2], 1e-5).unwrap().xhat;
        let composed = xhat.mul(&w).unwrap().add(&b).unwrap().to_vec_f64();
        for (a, b) in fused.iter().zip(&composed) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn errors_name_the_op_and_cause() {
        let x = rand64(&[2, 3, 4], 0);
        let err = |r: crate::Result<Tensor>| match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err(x.layer_norm(&[3], None, None, 1e-5)),
            "layer_norm: normalized_shape [3] is not the trailing part of input shape [2, 3, 4]"
        );
        assert_eq!(
            err(x.layer_norm(&[], None, None, 1e-5)),
            "layer_norm: normalized_shape must have at least one dimension"
        );
        assert_eq!(
            err(x.layer_norm(&[3, 4], Some(&rand64(&[4], 1)), None, 1e-5)),
            "layer_norm: weight [4] does not match normalized_shape [3, 4]"
        );
        assert_eq!(
            err(x.layer_norm(&[4], None, Some(&rand64(&[1, 4], 1)), 1e-5)),
            "layer_norm: bias [1, 4] does not match normalized_shape [4]"
        );
        let w32 = rand64(&[4], 1).to_dtype(DType::F32);
        assert!(err(x.layer_norm(&[4], Some(&w32), None, 1e-5)).contains("dtype mismatch"));
        for eps in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(err(x.layer_norm(&[4], None, None, eps)).contains("must be finite and not negative"));
        }
    }

    /// Samples with a large mean and a small spread: in f32 the gradients must stay
    /// as close to the f64 ones (from the same, f32-rounded, values) as f64 sums allow.
    #[test]
    fn f32_gradients_of_ill_conditioned_rows_stay_close_to_f64() {
        let round = |t: Tensor| t.to_dtype(DType::F32).to_dtype(DType::F64);
        let x64 = round(rand64(&[6, 64], 3).mul_scalar(0.01).add_scalar(50.0));
        let (w64, r64) = (round(rand64(&[64], 4)), round(rand64(&[6, 64], 5)));
        let grads = |dtype: DType| -> Vec<f64> {
            let (x, w) = (
                x64.to_dtype(dtype).requires_grad_(true),
                w64.to_dtype(dtype).requires_grad_(true),
            );
            let y = x.layer_norm(&[64], Some(&w), None, 1e-5).unwrap();
            let g = y.mul(&r64.to_dtype(dtype)).unwrap().sum_all().backward().unwrap();
            [&x, &w].iter().flat_map(|t| g.get(t).unwrap().to_vec_f64()).collect()
        };
        let (want, got) = (grads(DType::F64), grads(DType::F32));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-5, "relative error {err:.2e}");
    }
}
