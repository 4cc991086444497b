//! Matrix products: `matmul` (2-D and batched, with broadcast batch
//! dimensions) and the fused `linear` of a dense layer. Both go through the
//! `gemm` crate with strides, so transposed operands are never copied.

use crate::autograd::{node, GradFn};
use crate::error::{shape_err, Error, Result};
use crate::kernels::gemm::{batched_kernel, on_one_thread, GEMM_PAR_THRESHOLD};
use crate::kernels::linear::{linear_kernel, Dense};
use crate::layout::{broadcast_shapes, fmt_shape};
use crate::ops::with_typed;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};

/// The two gradients of a product, each if needed. When both are, and the first one's
/// product has at least [`GEMM_PAR_THRESHOLD`] multiply-adds (`macs`; the second's is
/// the same), they run side by side, one unsplit product per thread: that costs less
/// than splitting each over the threads in turn (784-1024-1024-10 at batch 128:
/// backward 1.81 ms against 1.84 ms).
fn side_by_side(
    need_a: bool,
    need_b: bool,
    macs: usize,
    grad_a: impl FnOnce() -> Result<Tensor> + Send,
    grad_b: impl FnOnce() -> Result<Tensor> + Send,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if need_a && need_b && rayon::current_num_threads() > 1 && macs >= GEMM_PAR_THRESHOLD {
        // Graph recording is per thread: the pool thread that takes a closure must
        // record (or not) as this one does.
        let record = crate::autograd::is_grad_enabled();
        let (a, b) = rayon::join(|| as_caller(record, grad_a), || as_caller(record, grad_b));
        return Ok((Some(a?), Some(b?)));
    }
    Ok((need_a.then(grad_a).transpose()?, need_b.then(grad_b).transpose()?))
}

/// Run `f` unsplit on this thread, recording the graph only if `record`.
fn as_caller<R>(record: bool, f: impl FnOnce() -> R) -> R {
    match record {
        true => on_one_thread(f),
        false => crate::autograd::no_grad_scope(|| on_one_thread(f)),
    }
}

struct MatmulBackward {
    a: Tensor,
    b: Tensor,
}
impl GradFn for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.a.clone(), self.b.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // C = A·B  ⇒  dA = dC·Bᵀ, dB = Aᵀ·dC (summed over broadcast batch dimensions).
        let grad_a = || g.matmul(&self.b.t()?)?.sum_to(self.a.shape());
        let grad_b = || self.a.t()?.matmul(g)?.sum_to(self.b.shape());
        // The inner dimension: B's second-to-last, or its only one when B is a vector.
        let sb = self.b.shape();
        let macs = g.numel() * sb.iter().rev().nth(1).or(sb.first()).copied().unwrap_or(1);
        let (ga, gb) = side_by_side(needs[0], needs[1], macs, grad_a, grad_b)?;
        Ok(vec![ga, gb])
    }
}

impl Tensor {
    /// Matrix product of the last two dimensions, broadcasting the others.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.same_dtype("matmul", other)?;
        let (batch, m, k, n) = product_dims(self.shape(), other.shape())?;
        let mut shape_a = batch.clone();
        shape_a.extend([m, k]);
        let mut shape_b = batch.clone();
        shape_b.extend([k, n]);
        let la = self.layout().broadcast_to("matmul", &shape_a)?;
        let lb = other.layout().broadcast_to("matmul", &shape_b)?;
        let (xa, xb) = (self.storage(), other.storage());
        let out = match (xa.cpu(), xb.cpu()) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(batched_kernel(a, &la, b, &lb, &batch, m, n, k))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(batched_kernel(a, &la, b, &lb, &batch, m, n, k))
            }
            _ => unreachable!("dtype checked"),
        };
        let mut shape = batch;
        shape.extend([m, n]);
        Ok(Tensor::from_storage(out, &shape).attach(&[self, other], || {
            node(MatmulBackward {
                a: self.clone(),
                b: other.clone(),
            })
        }))
    }

    /// A dense layer in one op: `x · Wᵀ + b` for x `[N, in]`, W `[out, in]` (PyTorch's layout), b `[out]`.
    /// The bias is written first and the product accumulated onto it, saving a pass;
    /// backward computes exactly the three products it needs.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.same_dtype("linear", weight)?;
        let (sx, sw) = (self.shape(), weight.shape());
        if sx.len() != 2 || sw.len() != 2 || sx[1] != sw[1] {
            return shape_err(
                "linear",
                format!(
                    "input {} and weight {} (expected [N, in] and [out, in] with equal in)",
                    fmt_shape(sx),
                    fmt_shape(sw)
                ),
            );
        }
        let (nrows, nin, nout) = (sx[0], sx[1], sw[0]);
        if let Some(b) = bias {
            self.same_dtype("linear", b)?;
            if b.shape() != [nout] {
                return shape_err(
                    "linear",
                    format!("bias {} does not match weight {}", fmt_shape(b.shape()), fmt_shape(sw)),
                );
            }
        }
        let out = dense_product(self, weight, bias, (nrows, nin, nout));
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(Tensor::from_storage(out, &[nrows, nout]).attach(&inputs, || {
            node(LinearBackward {
                x: self.clone(),
                w: weight.clone(),
                b: bias.cloned(),
            })
        }))
    }
}

/// The broadcast batch shape and (m, k, n) of the product of shapes `sa` and `sb`.
fn product_dims(sa: &[usize], sb: &[usize]) -> Result<(Vec<usize>, usize, usize, usize)> {
    let error = |why: String| Error::Shape {
        op: "matmul",
        msg: format!("{} x {}: {why}", fmt_shape(sa), fmt_shape(sb)),
    };
    if sa.len() < 2 || sb.len() < 2 {
        return Err(error("both operands need at least 2 dimensions".into()));
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != k2 {
        return Err(error(format!("inner dimensions {k} and {k2} differ")));
    }
    let batch = broadcast_shapes("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2])
        .map_err(|_| error("batch dimensions do not broadcast".into()))?;
    Ok((batch, m, k, n))
}

/// `x·Wᵀ + b` of checked operands through [`linear_kernel`], in their dtype.
fn dense_product(x: &Tensor, w: &Tensor, b: Option<&Tensor>, (nrows, nin, nout): (usize, usize, usize)) -> CpuStorage {
    let (xs, ws) = (x.storage(), w.storage());
    let bs = b.map(|b| b.contiguous_storage());
    let (lx, lw) = (x.layout(), w.layout());
    with_typed!(xs.cpu(), x => {
        let w = Element::slice(ws.cpu()).expect("dtype checked");
        let b = bs.as_ref().map(|b| Element::slice(b).expect("dtype checked"));
        Element::into_storage(linear_kernel(Dense { x, lx, w, lw, b, nrows, nin, nout }))
    })
}

struct LinearBackward {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
}
impl GradFn for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.x.clone(), self.w.clone()];
        if let Some(b) = &self.b {
            v.push(b.clone());
        }
        v
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // y = x·Wᵀ + b  ⇒  dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.
        let input_grad = || g.matmul(&self.w);
        let weight_grad = || g.t()?.matmul(&self.x);
        let (gx, gw) = side_by_side(
            needs[0],
            needs[1],
            g.numel() * self.w.shape()[1],
            input_grad,
            weight_grad,
        )?;
        let mut out = vec![gx, gw];
        if self.b.is_some() {
            out.push(if needs[2] { Some(g.sum(&[0], false)?) } else { None });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{seeded_rng, DType, Tensor};
    use proptest::prelude::*;

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_vec_f64()
    }

    /// Naive batched product in f64 of two row-major buffers with equal batch count.
    fn naive(a: &[f64], b: &[f64], nb: usize, m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; nb * m * n];
        for p in 0..nb {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        s += a[p * m * k + i * k + l] * b[p * k * n + l * n + j];
                    }
                    out[p * m * n + i * n + j] = s;
                }
            }
        }
        out
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {i}: {g} vs {w}");
        }
    }

    #[test]
    fn gradcheck_2d_and_transposed_operands() {
        let a = rand64(&[3, 4], 1);
        let b = rand64(&[4, 5], 2);
        check(|t| t[0].matmul(&t[1]), &[a.clone(), b.clone()]);
        // Transposed operands are strided views, not copies.
        let at = a.t().unwrap();
        assert!(at.same_storage(&a));
        assert!(!at.is_contiguous());
        check(
            |t| t[0].t()?.matmul(&t[1].t()?),
            &[rand64(&[4, 3], 3), rand64(&[5, 4], 4)],
        );
        check(|t| t[0].matmul(&t[1].t()?), &[a.clone(), rand64(&[5, 4], 5)]);
        // Narrowed (offset, row-strided) operands.
        check(
            |t| t[0].narrow(1, 1, 4)?.matmul(&t[1].narrow(0, 2, 4)?),
            &[rand64(&[3, 6], 6), rand64(&[7, 2], 7)],
        );
        // Size-1 dimensions: row vector times matrix, matrix times column, outer product.
        check(|t| t[0].matmul(&t[1]), &[rand64(&[1, 4], 8), b.clone()]);
        check(|t| t[0].matmul(&t[1]), &[a.clone(), rand64(&[4, 1], 9)]);
        check(|t| t[0].matmul(&t[1]), &[rand64(&[3, 1], 10), rand64(&[1, 5], 11)]);
        // The same tensor on both sides: x·xᵀ.
        check(|t| t[0].matmul(&t[0].t()?), &[a]);
    }

    #[test]
    fn gradcheck_batched_with_broadcast_batch_dims() {
        let a = rand64(&[2, 1, 3, 4], 1);
        let b = rand64(&[5, 4, 2], 2);
        let y = a.matmul(&b).unwrap();
        assert_eq!(y.shape(), &[2, 5, 3, 2]);
        check(|t| t[0].matmul(&t[1]), &[a.clone(), b.clone()]);
        // 2-D with 3-D on either side.
        check(|t| t[0].matmul(&t[1]), &[rand64(&[3, 4], 3), b.clone()]);
        check(|t| t[0].matmul(&t[1]), &[rand64(&[5, 3, 4], 4), rand64(&[4, 2], 5)]);
        // Permuted batch dimensions and a transposed matrix inside a batch.
        check(
            |t| t[0].permute(&[1, 0, 2])?.matmul(&t[1].t()?),
            &[rand64(&[3, 2, 4], 6), rand64(&[2, 5, 4], 7)],
        );
        // Broadcast view (stride-0 batch) as an operand.
        check(
            |t| t[0].broadcast_to(&[3, 2, 4])?.matmul(&t[1]),
            &[rand64(&[2, 4], 8), rand64(&[3, 4, 2], 9)],
        );
    }

    #[test]
    fn batched_values_match_naive() {
        let a = rand64(&[2, 1, 3, 4], 11);
        let b = rand64(&[5, 4, 2], 12);
        let y = a.matmul(&b).unwrap();
        let ae = a.broadcast_to(&[2, 5, 3, 4]).unwrap().contiguous();
        let be = b.broadcast_to(&[2, 5, 4, 2]).unwrap().contiguous();
        assert_close(&vals(&y), &naive(&vals(&ae), &vals(&be), 10, 3, 4, 2), 1e-12);
    }

    fn dims() -> impl Strategy<Value = (usize, usize, usize, usize)> {
        (1usize..4, 0usize..6, 0usize..6, 0usize..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matmul_matches_naive((nb, m, k, n) in dims(), ta in any::<bool>(), tb in any::<bool>(), seed in 0u64..1000) {
            // Operands optionally stored transposed, so the kernel sees column-major strides.
            let a = if ta { rand64(&[nb, k, m], seed).t().unwrap() } else { rand64(&[nb, m, k], seed) };
            let b = if tb { rand64(&[nb, n, k], seed + 1).t().unwrap() } else { rand64(&[nb, k, n], seed + 1) };
            let y = a.matmul(&b).unwrap();
            prop_assert_eq!(y.shape(), &[nb, m, n][..]);
            assert_close(&vals(&y), &naive(&vals(&a), &vals(&b), nb, m, k, n), 1e-12);
            if m * n * k > 0 {
                check(|t| {
                    let a = if ta { t[0].t()? } else { t[0].clone() };
                    let b = if tb { t[1].t()? } else { t[1].clone() };
                    a.matmul(&b)
                }, &[if ta { a.t().unwrap().contiguous() } else { a.clone() }, if tb { b.t().unwrap().contiguous() } else { b.clone() }]);
            }
        }
    }

    #[test]
    fn f32_matmul_matches_a_naive_triple_loop() {
        let mut rng = seeded_rng(7);
        // (m, k, n): a row vector, a column, K = 0, odd sizes, and sizes above the threading threshold.
        for &(m, k, n) in &[
            (1, 7, 9),
            (1, 1, 1),
            (9, 7, 1),
            (4, 0, 5),
            (0, 3, 4),
            (3, 4, 0),
            (17, 33, 9),
            (64, 70, 65),
            (1, 300, 257),
        ] {
            let a = Tensor::rand_uniform(&[m, k], -1.0, 1.0, DType::F32, &mut rng);
            let b = Tensor::rand_uniform(&[k, n], -1.0, 1.0, DType::F32, &mut rng);
            let y = a.matmul(&b).unwrap();
            assert_eq!(y.dtype(), DType::F32);
            assert_eq!(y.shape(), &[m, n]);
            let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
            let mut want = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    for l in 0..k {
                        want[i * n + j] += av[i * k + l] * bv[l * n + j];
                    }
                }
            }
            let got = y.to_vec::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * (k as f32).sqrt().max(1.0),
                    "{m}x{k}x{n}: {g} vs {w}"
                );
            }
            // K = 0 gives exact zeros (the empty sum).
            if k == 0 {
                assert!(got.iter().all(|&v| v == 0.0));
            }
            // Same through transposed storage.
            let bt = b.t().unwrap().contiguous().t().unwrap();
            let got_t = a.matmul(&bt).unwrap().to_vec::<f32>().unwrap();
            for (g, w) in got_t.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * (k as f32).sqrt().max(1.0));
            }
        }
        // Batched f32 with a batch large enough to run batches in parallel.
        let a = Tensor::rand_uniform(&[6, 5, 3], -1.0, 1.0, DType::F32, &mut rng);
        let b = Tensor::rand_uniform(&[3, 4], -1.0, 1.0, DType::F32, &mut rng);
        let y = a.matmul(&b).unwrap();
        let be = b.broadcast_to(&[6, 3, 4]).unwrap().contiguous();
        let want = naive(&vals(&a), &vals(&be), 6, 5, 3, 4);
        assert_close(&vals(&y), &want, 1e-5);
    }

    #[test]
    fn matmul_errors_name_the_shapes() {
        let a = Tensor::zeros(&[32, 784], DType::F32);
        let b = Tensor::zeros(&[512, 10], DType::F32);
        assert_eq!(
            a.matmul(&b).unwrap_err().to_string(),
            "matmul: [32, 784] x [512, 10]: inner dimensions 784 and 512 differ"
        );
        let e = rand64(&[3], 0).matmul(&rand64(&[3, 2], 0)).unwrap_err().to_string();
        assert_eq!(e, "matmul: [3] x [3, 2]: both operands need at least 2 dimensions");
        let e = rand64(&[2, 3, 4], 0)
            .matmul(&rand64(&[3, 4, 5], 0))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "matmul: [2, 3, 4] x [3, 4, 5]: batch dimensions do not broadcast");
        let e = rand64(&[2, 2], 0)
            .matmul(&rand64(&[2, 2], 0).to_dtype(DType::F32))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "matmul: dtype mismatch: f64 and f32");
    }

    #[test]
    fn linear_with_and_without_bias() {
        let x = rand64(&[4, 3], 1);
        let w = rand64(&[5, 3], 2);
        let b = rand64(&[5], 3);
        // Forward equals x·Wᵀ + b.
        let y = x.linear(&w, Some(&b)).unwrap();
        let r = x.matmul(&w.t().unwrap()).unwrap().add(&b).unwrap();
        assert_close(&vals(&y), &vals(&r), 1e-12);
        let y0 = x.linear(&w, None).unwrap();
        assert_close(&vals(&y0), &vals(&x.matmul(&w.t().unwrap()).unwrap()), 1e-12);

        check(|t| t[0].linear(&t[1], Some(&t[2])), &[x.clone(), w.clone(), b.clone()]);
        check(|t| t[0].linear(&t[1], None), &[x.clone(), w.clone()]);
        // Weight stored as [in, out] and passed as a transposed view; input transposed too.
        check(
            |t| t[0].t()?.linear(&t[1].t()?, Some(&t[2])),
            &[rand64(&[3, 4], 4), rand64(&[3, 5], 5), b.clone()],
        );
        // Bias as a strided view; single-row input; a single output.
        check(
            |t| t[0].linear(&t[1], Some(&t[2].narrow(0, 1, 5)?)),
            &[x.clone(), w.clone(), rand64(&[7], 6)],
        );
        check(
            |t| t[0].linear(&t[1], Some(&t[2])),
            &[rand64(&[1, 3], 7), w.clone(), b.clone()],
        );
        check(
            |t| t[0].linear(&t[1], Some(&t[2])),
            &[x.clone(), rand64(&[1, 3], 8), rand64(&[1], 9)],
        );
        // Only some inputs require a gradient.
        check(|t| x.linear(&t[0], Some(&b)), &[w.clone()]);
        check(|t| t[0].linear(&w, Some(&t[1])), &[x.clone(), b.clone()]);
    }

    #[test]
    fn linear_f32_edges() {
        let mut rng = seeded_rng(3);
        // in = 0: the output is the bias repeated.
        let x = Tensor::zeros(&[3, 0], DType::F32);
        let w = Tensor::zeros(&[2, 0], DType::F32);
        let b = Tensor::from_vec(vec![1.5f32, -2.0], &[2]).unwrap();
        assert_eq!(
            x.linear(&w, Some(&b)).unwrap().to_vec::<f32>().unwrap(),
            vec![1.5, -2.0, 1.5, -2.0, 1.5, -2.0]
        );
        assert_eq!(x.linear(&w, None).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 6]);
        // out = 0 and N = 0: empty results, no panic.
        let x = Tensor::rand_uniform(&[3, 4], -1.0, 1.0, DType::F32, &mut rng);
        let w = Tensor::zeros(&[0, 4], DType::F32);
        let b = Tensor::zeros(&[0], DType::F32);
        assert_eq!(x.linear(&w, Some(&b)).unwrap().shape(), &[3, 0]);
        let x0 = Tensor::zeros(&[0, 4], DType::F32);
        let w = Tensor::rand_uniform(&[2, 4], -1.0, 1.0, DType::F32, &mut rng);
        assert_eq!(
            x0.linear(&w, Some(&Tensor::zeros(&[2], DType::F32))).unwrap().shape(),
            &[0, 2]
        );
        // A larger f32 layer against matmul + add.
        let x = Tensor::rand_uniform(&[64, 100], -1.0, 1.0, DType::F32, &mut rng);
        let w = Tensor::rand_uniform(&[70, 100], -1.0, 1.0, DType::F32, &mut rng);
        let b = Tensor::rand_uniform(&[70], -1.0, 1.0, DType::F32, &mut rng);
        let y = x.linear(&w, Some(&b)).unwrap().to_vec::<f32>().unwrap();
        let r = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .add(&b)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for (a, b) in y.iter().zip(&r) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn linear_paths_agree_with_matmul_for_wide_and_narrow_layers() {
        // At most SMALL_LINEAR_OUT outputs: the direct product; more: the transposed one.
        for nout in [
            crate::kernels::linear::SMALL_LINEAR_OUT,
            crate::kernels::linear::SMALL_LINEAR_OUT + 6,
        ] {
            let x = rand64(&[9, 13], 1);
            let w = rand64(&[nout, 13], 2);
            let b = rand64(&[nout + 3], 3);
            let bv = b.narrow(0, 2, nout).unwrap();
            // Contiguous operands, then a transposed input and a transposed weight view.
            let xt = rand64(&[13, 9], 4).t().unwrap();
            let wt = rand64(&[13, nout], 5).t().unwrap();
            for (x, w) in [(&x, &w), (&xt, &wt)] {
                let want = x.matmul(&w.t().unwrap()).unwrap();
                assert_close(&vals(&x.linear(w, None).unwrap()), &vals(&want), 1e-12);
                let want = want.add(&bv).unwrap();
                assert_close(&vals(&x.linear(w, Some(&bv)).unwrap()), &vals(&want), 1e-12);
            }
            check(
                |t| t[0].linear(&t[1], Some(&t[2])),
                &[x.clone(), w.clone(), rand64(&[nout], 6)],
            );
        }
    }

    #[test]
    fn large_products_backward_side_by_side_match_naive_gradients() {
        // dx and dW of 64×256·1024 multiply-adds each (at least GEMM_PAR_THRESHOLD):
        // with several threads they run one per thread, for linear and matmul alike.
        let x = rand64(&[64, 1024], 11).requires_grad_(true);
        let w = rand64(&[256, 1024], 12).requires_grad_(true);
        let r = rand64(&[64, 256], 13);
        // loss = Σ r ∘ (x·Wᵀ)  ⇒  dx = r·W, dW = rᵀ·x.
        let want_x = naive(&vals(&r), &vals(&w), 1, 64, 256, 1024);
        let rt = vals(&r.t().unwrap().contiguous());
        let want_w = naive(&rt, &vals(&x), 1, 256, 64, 1024);
        for y in [x.linear(&w, None).unwrap(), x.matmul(&w.t().unwrap()).unwrap()] {
            let g = y.mul(&r).unwrap().sum_all().backward().unwrap();
            assert_close(&vals(g.get(&x).unwrap()), &want_x, 1e-12);
            assert_close(&vals(g.get(&w).unwrap()), &want_w, 1e-12);
            // Computed on pool threads, yet not recorded into a graph.
            assert!(!g.get(&x).unwrap().requires_grad() && !g.get(&w).unwrap().requires_grad());
        }
    }

    #[test]
    fn large_linear_split_over_threads_matches_matmul() {
        // Above GEMM_PAR_THRESHOLD, so with several threads the output features are cut
        // into blocks (here 272 + 248 wide); the input once contiguous, once a transposed view.
        let mut rng = seeded_rng(11);
        let (n, nin, nout) = (128, 512, 520);
        assert!(n * nin * nout >= crate::kernels::gemm::GEMM_PAR_THRESHOLD);
        let x = Tensor::rand_uniform(&[n, nin], -1.0, 1.0, DType::F32, &mut rng);
        let xt = Tensor::rand_uniform(&[nin, n], -1.0, 1.0, DType::F32, &mut rng)
            .t()
            .unwrap();
        let w = Tensor::rand_uniform(&[nout, nin], -0.1, 0.1, DType::F32, &mut rng);
        let b = Tensor::rand_uniform(&[nout], -1.0, 1.0, DType::F32, &mut rng);
        for x in [x, xt] {
            let y = x.linear(&w, Some(&b)).unwrap().to_vec::<f32>().unwrap();
            let r = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .add(&b)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(y.len(), n * nout);
            for (a, b) in y.iter().zip(&r) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            let y0 = x.linear(&w, None).unwrap().to_vec::<f32>().unwrap();
            let r0 = x.matmul(&w.t().unwrap()).unwrap().to_vec::<f32>().unwrap();
            for (a, b) in y0.iter().zip(&r0) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn linear_errors() {
        let x = rand64(&[4, 3], 1);
        let e = x.linear(&rand64(&[5, 2], 0), None).unwrap_err().to_string();
        assert_eq!(
            e,
            "linear: input [4, 3] and weight [5, 2] (expected [N, in] and [out, in] with equal in)"
        );
        let e = x
            .linear(&rand64(&[5, 3], 0), Some(&rand64(&[4], 0)))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "linear: bias [4] does not match weight [5, 3]");
        assert!(rand64(&[2, 4, 3], 0)
            .linear(&rand64(&[5, 3], 0), None)
            .unwrap_err()
            .to_string()
            .starts_with("linear:"));
        let e = x
            .linear(&rand64(&[5, 3], 0).to_dtype(DType::F32), None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "linear: dtype mismatch: f64 and f32");
    }
}
