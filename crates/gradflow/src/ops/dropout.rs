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
