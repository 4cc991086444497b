//! softmax and log_softmax along an axis, each with its fused backward rule.
//! Both subtract the row maximum first, so finite logits (even ±1e4) never
//! overflow.

use crate::autograd::{node, GradFn};
use crate::error::Result;
use crate::layout::normalize_axis;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;

const ROWS_PAR: usize = 1 << 14;

fn rows_map<T: Element>(x: &[T], c: usize, f: impl Fn(&[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if c == 0 {
        return out;
    }
    if x.len() >= ROWS_PAR {
        out.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, r)| f(r, o));
    } else {
        out.chunks_mut(c).zip(x.chunks(c)).for_each(|(o, r)| f(r, o));
    }
    out
}

/// softmax of one row, numerically stable.
pub(crate) fn softmax_row<T: Element>(r: &[T], o: &mut [T]) {
    let m = r.iter().copied().fold(T::neg_infinity(), T::max);
    let mut s = T::zero();
    for (o, &x) in o.iter_mut().zip(r) {
        *o = (x - m).exp();
        s += *o;
    }
    let inv = s.recip();
    o.iter_mut().for_each(|o| *o *= inv);
}

/// log_softmax of one row: (x − max) − log Σ e^{x − max}.
///
/// The shift is subtracted first: forming `max + log Σ` and subtracting that
/// would round it to the precision of `max` (about 1e-3 at 1e4 in f32).
pub(crate) fn log_softmax_row<T: Element>(r: &[T], o: &mut [T]) {
    let m = r.iter().copied().fold(T::neg_infinity(), T::max);
    let s: T = r.iter().map(|&x| (x - m).exp()).sum();
    let ls = s.ln();
    for (o, &x) in o.iter_mut().zip(r) {
        *o = (x - m) - ls;
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Softmax,
    LogSoftmax,
}

struct SoftmaxBackward {
    x: Tensor,
    kind: Kind,
}
impl GradFn for SoftmaxBackward {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Softmax => "softmax",
            Kind::LogSoftmax => "log_softmax",
        }
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, out: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let c = *out.shape().last().unwrap_or(&1);
        let (ys, gs) = (out.contiguous_storage(), g.contiguous_storage());
        let kind = self.kind;
        let res = match (&ys, &gs) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(backward_rows(y, g, c, kind)),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(backward_rows(y, g, c, kind)),
            _ => unreachable!("same dtype"),
        };
        Ok(vec![Some(Tensor::from_storage(res, out.shape()))])
    }
}

fn backward_rows<T: Element>(y: &[T], g: &[T], c: usize, kind: Kind) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    if c == 0 {
        return out;
    }
    let body = |(o, (y, g)): (&mut [T], (&[T], &[T]))| match kind {
        // softmax: dx = y ⊙ (g − Σ g⊙y)
        Kind::Softmax => {
            let dot: T = y.iter().zip(g).map(|(&a, &b)| a * b).sum();
            for i in 0..c {
                o[i] = y[i] * (g[i] - dot);
            }
        }
        // log_softmax: dx = g − softmax ⊙ Σ g
        Kind::LogSoftmax => {
            let s: T = g.iter().copied().sum();
            for i in 0..c {
                o[i] = g[i] - y[i].exp() * s;
            }
        }
    };
    if y.len() >= ROWS_PAR {
        out.par_chunks_mut(c)
            .zip(y.par_chunks(c).zip(g.par_chunks(c)))
            .for_each(body);
    } else {
        out.chunks_mut(c).zip(y.chunks(c).zip(g.chunks(c))).for_each(body);
    }
    out
}

impl Tensor {
    fn softmax_kind(&self, axis: isize, kind: Kind) -> Result<Tensor> {
        let a = normalize_axis("softmax", axis, self.ndim())?;
        if a + 1 != self.ndim() {
            // Move the axis last, work on rows, move it back: all differentiable views.
            let last = self.ndim() as isize - 1;
            let moved = self.transpose(a as isize, last)?;
            return moved.softmax_kind(-1, kind)?.transpose(a as isize, last);
        }
        let c = self.shape()[a];
        let xs = self.contiguous_storage();
        let out = match (&xs, kind) {
            (CpuStorage::F32(x), Kind::Softmax) => CpuStorage::F32(rows_map(x, c, softmax_row)),
            (CpuStorage::F64(x), Kind::Softmax) => CpuStorage::F64(rows_map(x, c, softmax_row)),
            (CpuStorage::F32(x), Kind::LogSoftmax) => CpuStorage::F32(rows_map(x, c, log_softmax_row)),
            (CpuStorage::F64(x), Kind::LogSoftmax) => CpuStorage::F64(rows_map(x, c, log_softmax_row)),
        };
        Ok(Tensor::from_storage(out, self.shape()).attach(&[self], || node(SoftmaxBackward { x: self.clone(), kind })))
    }

    /// softmax along `axis`: positive entries summing to 1.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_kind(axis, Kind::Softmax)
    }

    /// log of softmax along `axis`, computed without forming the softmax (stable for large logits).
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_kind(axis, Kind::LogSoftmax)
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn softmax_gradcheck_on_any_axis(
            shape in proptest::collection::vec(1usize..4, 1..4),
            axis in 0usize..3,
            transposed in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let nd = shape.len();
            let axis = (axis % nd) as isize;
            let x = rand64(&shape, seed).mul_scalar(2.0);
            // Optionally feed a reversed-axes (non-contiguous) view.
            let rev: Vec<usize> = (0..nd).rev().collect();
            let view = |t: &Tensor| if transposed { t.permute(&rev) } else { Ok(t.clone()) };
            let v = view(&x).unwrap();
            let s = v.softmax(axis).unwrap();
            prop_assert_eq!(s.shape(), v.shape());
            // Entries along the axis are positive and sum to 1.
            let sums = s.sum(&[axis], false).unwrap();
            for v in vals(&sums) {
                prop_assert!((v - 1.0).abs() < 1e-12);
            }
            prop_assert!(vals(&s).iter().all(|&v| v > 0.0));
            // log_softmax = log(softmax).
            let ls = view(&x).unwrap().log_softmax(axis).unwrap();
            for (a, b) in vals(&ls).iter().zip(vals(&s.log())) {
                prop_assert!((a - b).abs() < 1e-12);
            }
            check(|t| view(&t[0])?.softmax(axis), &[x.clone()]);
            check(|t| view(&t[0])?.log_softmax(axis), &[x.clone()]);
            check(|t| view(&t[0])?.log_softmax(axis - nd as isize), &[x.clone()]);
        }
    }

    #[test]
    fn known_values() {
        let x = Tensor::from_vec(vec![0.0f64, 0.0, 1.0, 2.0], &[2, 2]).unwrap();
        let s = vals(&x.softmax(1).unwrap());
        let e = std::f64::consts::E;
        let expect = [0.5, 0.5, 1.0 / (1.0 + e), e / (1.0 + e)];
        for (a, b) in s.iter().zip(expect) {
            assert!((a - b).abs() < 1e-15);
        }
        let s0 = vals(&x.softmax(0).unwrap());
        assert!((s0[0] - 1.0 / (1.0 + e)).abs() < 1e-15);
        assert!((s0[3] - e * e / (1.0 + e * e)).abs() < 1e-15);
        // A single class: softmax is 1, log_softmax is 0, both with zero gradient.
        let one = rand64(&[3, 1], 1);
        assert_eq!(vals(&one.softmax(-1).unwrap()), vec![1.0; 3]);
        assert_eq!(vals(&one.log_softmax(-1).unwrap()), vec![0.0; 3]);
        check(|t| t[0].log_softmax(-1), &[one]);
    }

    #[test]
    fn rows_sum_to_one_in_f32_including_the_threaded_path() {
        let mut rng = seeded_rng(1);
        // 300 x 100 = 30 000 elements: above the threading threshold.
        let x = Tensor::rand_normal(&[300, 100], 0.0, 5.0, DType::F32, &mut rng);
        for axis in [1, 0] {
            let s = x.softmax(axis).unwrap();
            for v in s.sum(&[axis], false).unwrap().to_vec::<f32>().unwrap() {
                assert!((v - 1.0).abs() < 1e-5, "{v}");
            }
        }
        // The threaded backward agrees with the f64 result.
        let x64 = x.to_dtype(DType::F64).requires_grad_(true);
        let x32 = x.requires_grad_(true);
        let w = Tensor::rand_normal(&[300, 100], 0.0, 1.0, DType::F64, &mut rng);
        let g64 = x64
            .log_softmax(1)
            .unwrap()
            .mul(&w)
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        let g32 = x32
            .log_softmax(1)
            .unwrap()
            .mul(&w.to_dtype(DType::F32))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        let (a, b) = (vals(g64.get(&x64).unwrap()), vals(g32.get(&x32).unwrap()));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn stable_for_huge_logits_in_f32() {
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, 1e4, 1e4, -1e4], &[2, 3])
            .unwrap()
            .requires_grad_(true);
        let ls = x.log_softmax(1).unwrap();
        let v = ls.to_vec::<f32>().unwrap();
        assert!(v.iter().all(|v| v.is_finite()), "{v:?}");
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], -2e4);
        assert!((v[3] - (-std::f32::consts::LN_2)).abs() < 1e-6);
        let s = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert!(s.iter().all(|v| v.is_finite()));
        assert_eq!(s[0], 1.0);
        assert_eq!(s[3], 0.5);
        // Along axis 0 too, and the gradients stay finite.
        let ls0 = x.log_softmax(0).unwrap();
        assert!(ls0.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
        let g = ls
            .sum_all()
            .add(&x.softmax(0).unwrap().mul_scalar(3.0).sum_all())
            .unwrap()
            .backward()
            .unwrap();
        assert!(g
            .get(&x)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
    }

    #[test]
    fn bad_axis_is_an_error() {
        let x = rand64(&[2, 3], 0);
        assert!(x
            .softmax(2)
            .unwrap_err()
            .to_string()
            .starts_with("softmax: axis 2 out of range"));
        assert!(x
            .log_softmax(-3)
            .unwrap_err()
            .to_string()
            .starts_with("softmax: axis -3"));
        assert!(Tensor::scalar(1.0f64).softmax(0).is_err());
    }
}
