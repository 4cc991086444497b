//! Dropout: zero each element with probability p and scale the survivors by
//! 1/(1−p) (inverted dropout), so evaluation needs no rescaling.

use crate::error::{arg_err, Result};
use crate::{DType, Tensor};
use rand::Rng;

impl Tensor {
    /// Dropout with probability `p`, drawing the mask from `rng`; identity when `train` is false.
    pub fn dropout(&self, p: f64, train: bool, rng: &mut impl Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) && p != 1.0 {
            return arg_err("dropout", format!("p = {p} is not in [0, 1]"));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        if p == 1.0 {
            return self.mul(&Tensor::zeros(self.shape(), self.dtype()));
        }
        let keep = 1.0 - p;
        let scale = 1.0 / keep;
        let n = self.numel();
        let mask = match self.dtype() {
            DType::F32 => {
                let s = scale as f32;
                let k = keep as f32;
                Tensor::from_vec(
                    (0..n)
                        .map(|_| if rng.gen::<f32>() < k { s } else { 0.0 })
                        .collect::<Vec<f32>>(),
                    self.shape(),
                )?
            }
            DType::F64 => Tensor::from_vec(
                (0..n)
                    .map(|_| if rng.gen::<f64>() < keep { scale } else { 0.0 })
                    .collect::<Vec<f64>>(),
                self.shape(),
            )?,
        };
        self.mul(&mask)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::rand64;
    use crate::{seeded_rng, DType, Tensor};

    #[test]
    fn eval_mode_and_p_zero_are_identity() {
        let x = rand64(&[4, 5], 1).requires_grad_(true);
        let mut rng = seeded_rng(0);
        let y = x.dropout(0.5, false, &mut rng).unwrap();
        assert!(y.same_storage(&x));
        assert_eq!(y.id(), x.id());
        let y = x.dropout(0.0, true, &mut rng).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), x.to_vec::<f64>().unwrap());
        let g = y.sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 20]);
    }

    #[test]
    fn train_mode_zeroes_about_p_and_scales_survivors() {
        for dtype in [DType::F32, DType::F64] {
            for p in [0.1, 0.3, 0.5, 0.9] {
                let n = 20_000;
                let x = rand64(&[n], 7).abs().add_scalar(0.5).to_dtype(dtype); // no zeros in x
                let y = x.dropout(p, true, &mut seeded_rng(11)).unwrap();
                assert_eq!(y.dtype(), dtype);
                let (xv, yv) = (x.to_vec_f64(), y.to_vec_f64());
                let zeros = yv.iter().filter(|&&v| v == 0.0).count();
                let frac = zeros as f64 / n as f64;
                // Binomial standard deviation is below 0.0036 here; allow 5 of them.
                assert!((frac - p).abs() < 0.018, "{dtype} p = {p}: dropped {frac}");
                for (a, b) in xv.iter().zip(&yv) {
                    if *b != 0.0 {
                        let want = a / (1.0 - p);
                        assert!((b - want).abs() <= 1e-6 * want, "{b} vs {want}");
                    }
                }
                // The mean is preserved in expectation: within 5 standard deviations of the sample mean.
                let (mx, my) = (xv.iter().sum::<f64>() / n as f64, yv.iter().sum::<f64>() / n as f64);
                let ex2 = xv.iter().map(|v| v * v).sum::<f64>() / n as f64;
                let sd = (ex2 * p / (1.0 - p) / n as f64).sqrt();
                assert!((mx - my).abs() < 5.0 * sd, "{mx} vs {my} (sd {sd})");
            }
        }
    }

    #[test]
    fn same_seed_same_mask() {
        let x = Tensor::ones(&[1000], DType::F32);
        let a = x
            .dropout(0.4, true, &mut seeded_rng(3))
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let b = x
            .dropout(0.4, true, &mut seeded_rng(3))
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let c = x
            .dropout(0.4, true, &mut seeded_rng(4))
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // One generator advances: two calls draw different masks.
        let mut rng = seeded_rng(3);
        let d = x.dropout(0.4, true, &mut rng).unwrap().to_vec::<f32>().unwrap();
        let e = x.dropout(0.4, true, &mut rng).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a, d);
        assert_ne!(d, e);
    }

    #[test]
    fn gradient_equals_the_mask() {
        let p = 0.25;
        let x = rand64(&[6, 7], 5).requires_grad_(true);
        let y = x.dropout(p, true, &mut seeded_rng(9)).unwrap();
        // The same draw on ones is the mask itself: 0 or 1/(1 − p).
        let mask = Tensor::ones(&[6, 7], DType::F64)
            .dropout(p, true, &mut seeded_rng(9))
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        assert!(mask.iter().all(|&m| m == 0.0 || m == 1.0 / (1.0 - p)));
        let g = y.sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), mask);
        // With a non-uniform upstream gradient: dL/dx = mask · dL/dy.
        let w = rand64(&[6, 7], 6);
        let y = x.dropout(p, true, &mut seeded_rng(9)).unwrap();
        let g = y.mul(&w).unwrap().sum_all().backward().unwrap();
        let expect: Vec<f64> = mask
            .iter()
            .zip(w.to_vec::<f64>().unwrap())
            .map(|(m, w)| m * w)
            .collect();
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), expect);
        // On a transposed view, the mask follows the view's shape.
        let y = x.t().unwrap().dropout(p, true, &mut seeded_rng(9)).unwrap();
        assert_eq!(y.shape(), &[7, 6]);
    }

    #[test]
    fn p_one_and_invalid_p() {
        let x = rand64(&[3, 3], 1).requires_grad_(true);
        let y = x.dropout(1.0, true, &mut seeded_rng(0)).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), vec![0.0; 9]);
        let g = y.sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 9]);
        for p in [-0.1, 1.5, f64::NAN] {
            let e = x.dropout(p, true, &mut seeded_rng(0)).unwrap_err().to_string();
            assert!(e.starts_with("dropout: p = "), "{e}");
        }
    }
}
