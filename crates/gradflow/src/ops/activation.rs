//! Activation functions: what gives a network its non-linearity, and what
//! decides whether gradients survive the trip back through depth. Sigmoid and
//! tanh saturate (their derivatives vanish for large |x|); ReLU's is 1 wherever
//! the unit is active. Each activation is its value and its derivative, side by side.
//!
//! Kinks follow PyTorch: relu'(0) = 0, hardtanh'(±1) = 0, leaky_relu'(0) = slope.

use super::unary::{unary_op, UnaryOp};
use crate::{Element, Tensor};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// SELU's constants from Klambauer et al. 2017 (as in PyTorch).
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_2;
/// SELU's scale.
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// Logistic sigmoid, computed without overflow for any finite x.
#[inline(always)]
pub fn stable_sigmoid<T: Element>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

unary_op!(
    /// max(0, x).
    Relu, "relu", |x| if x > T::zero() || x.is_nan() { x } else { T::zero() },
    |x, y| if x > T::zero() { T::one() } else { T::zero() });
unary_op!(
    /// 1 / (1 + e⁻ˣ); derivative y(1 − y), at most 1/4: the source of vanishing gradients in deep sigmoid nets.
    Sigmoid, "sigmoid", |x| stable_sigmoid(x), |x, y| y * (T::one() - y));
unary_op!(
    /// tanh x; derivative 1 − y².
    Tanh, "tanh", |x| x.tanh(), |x, y| T::one() - y * y);
unary_op!(
    /// x · σ(x) (also called swish).
    Silu, "silu", |x| x * stable_sigmoid(x),
    |x, y| { let s = stable_sigmoid(x); s * (T::one() + x * (T::one() - s)) });
unary_op!(
    /// x / (1 + |x|).
    Softsign, "softsign", |x| x / (T::one() + x.abs()),
    |x, y| { let d = T::one() + x.abs(); T::one() / (d * d) });
unary_op!(
    /// SELU: scale · (x if x > 0 else α(eˣ − 1)), self-normalizing.
    Selu, "selu",
    |x| T::of(SELU_SCALE) * if x > T::zero() { x } else { T::of(SELU_ALPHA) * x.exp_m1() },
    |x, y| if x > T::zero() { T::of(SELU_SCALE) } else { y + T::of(SELU_SCALE * SELU_ALPHA) });

/// max(0, x) + slope · min(0, x).
#[derive(Clone, Copy, Debug)]
pub struct LeakyRelu(pub f64);
impl UnaryOp for LeakyRelu {
    const NAME: &'static str = "leaky_relu";
    fn forward<T: Element>(&self, x: T) -> T {
        if x > T::zero() {
            x
        } else {
            x * T::of(self.0)
        }
    }
    fn derivative<T: Element>(&self, x: T, _y: T) -> T {
        if x > T::zero() {
            T::one()
        } else {
            T::of(self.0)
        }
    }
}

/// x if x > 0 else α(eˣ − 1).
#[derive(Clone, Copy, Debug)]
pub struct Elu(pub f64);
impl UnaryOp for Elu {
    const NAME: &'static str = "elu";
    fn forward<T: Element>(&self, x: T) -> T {
        if x > T::zero() {
            x
        } else {
            T::of(self.0) * x.exp_m1()
        }
    }
    fn derivative<T: Element>(&self, x: T, y: T) -> T {
        if x > T::zero() {
            T::one()
        } else {
            y + T::of(self.0)
        }
    }
}

/// GELU, x · Φ(x), exact (erf) or with PyTorch's tanh approximation.
#[derive(Clone, Copy, Debug)]
pub struct Gelu {
    /// Use the tanh approximation (`approximate = "tanh"` in PyTorch).
    pub tanh_approx: bool,
}
impl UnaryOp for Gelu {
    const NAME: &'static str = "gelu";
    fn forward<T: Element>(&self, x: T) -> T {
        let half = T::of(0.5);
        if self.tanh_approx {
            let inner = T::of(SQRT_2_OVER_PI) * (x + T::of(0.044715) * x * x * x);
            half * x * (T::one() + inner.tanh())
        } else {
            half * x * (T::one() + (x * T::of(FRAC_1_SQRT_2)).erf())
        }
    }
    fn derivative<T: Element>(&self, x: T, _y: T) -> T {
        let half = T::of(0.5);
        if self.tanh_approx {
            let k = T::of(SQRT_2_OVER_PI);
            let c = T::of(0.044715);
            let inner = k * (x + c * x * x * x);
            let t = inner.tanh();
            half * (T::one() + t) + half * x * (T::one() - t * t) * k * (T::one() + T::of(3.0) * c * x * x)
        } else {
            let cdf = half * (T::one() + (x * T::of(FRAC_1_SQRT_2)).erf());
            let pdf = T::of(INV_SQRT_2PI) * (-half * x * x).exp();
            cdf + x * pdf
        }
    }
}

/// log(1 + e^{βx}) / β, linear above `threshold` as in PyTorch; derivative σ(βx).
#[derive(Clone, Copy, Debug)]
pub struct Softplus {
    /// β.
    pub beta: f64,
    /// Above β·x > threshold the function is taken as x.
    pub threshold: f64,
}
impl Default for Softplus {
    fn default() -> Self {
        Softplus {
            beta: 1.0,
            threshold: 20.0,
        }
    }
}
impl UnaryOp for Softplus {
    const NAME: &'static str = "softplus";
    fn forward<T: Element>(&self, x: T) -> T {
        let bx = x * T::of(self.beta);
        if bx > T::of(self.threshold) {
            x
        } else {
            // log1p(e^{bx}) = max(bx, 0) + log1p(e^{-|bx|}), finite for every finite x.
            (bx.max(T::zero()) + (-bx.abs()).exp().ln_1p()) / T::of(self.beta)
        }
    }
    fn derivative<T: Element>(&self, x: T, _y: T) -> T {
        let bx = x * T::of(self.beta);
        if bx > T::of(self.threshold) {
            T::one()
        } else {
            stable_sigmoid(bx)
        }
    }
}

/// Clamp to [min, max] with gradient 1 strictly inside.
#[derive(Clone, Copy, Debug)]
pub struct Hardtanh {
    /// Lower bound (-1 by default).
    pub min: f64,
    /// Upper bound (1 by default).
    pub max: f64,
}
impl UnaryOp for Hardtanh {
    const NAME: &'static str = "hardtanh";
    fn forward<T: Element>(&self, x: T) -> T {
        if x < T::of(self.min) {
            T::of(self.min)
        } else if x > T::of(self.max) {
            T::of(self.max)
        } else {
            x
        }
    }
    fn derivative<T: Element>(&self, x: T, _y: T) -> T {
        if x > T::of(self.min) && x < T::of(self.max) {
            T::one()
        } else {
            T::zero()
        }
    }
}

impl Tensor {
    /// max(0, x).
    pub fn relu(&self) -> Tensor {
        self.apply_unary(Relu)
    }
    /// Leaky ReLU with the given negative slope (PyTorch's default is 0.01).
    pub fn leaky_relu(&self, negative_slope: f64) -> Tensor {
        self.apply_unary(LeakyRelu(negative_slope))
    }
    /// ELU with the given α (PyTorch's default is 1).
    pub fn elu(&self, alpha: f64) -> Tensor {
        self.apply_unary(Elu(alpha))
    }
    /// SELU.
    pub fn selu(&self) -> Tensor {
        self.apply_unary(Selu)
    }
    /// Exact GELU (erf form).
    pub fn gelu(&self) -> Tensor {
        self.apply_unary(Gelu { tanh_approx: false })
    }
    /// GELU with the tanh approximation.
    pub fn gelu_tanh(&self) -> Tensor {
        self.apply_unary(Gelu { tanh_approx: true })
    }
    /// SiLU / swish.
    pub fn silu(&self) -> Tensor {
        self.apply_unary(Silu)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Tensor {
        self.apply_unary(Sigmoid)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.apply_unary(Tanh)
    }
    /// Softplus with β = 1, threshold 20.
    pub fn softplus(&self) -> Tensor {
        self.apply_unary(Softplus::default())
    }
    /// x / (1 + |x|).
    pub fn softsign(&self) -> Tensor {
        self.apply_unary(Softsign)
    }
    /// Hardtanh on [min, max] (PyTorch's default is [-1, 1]).
    pub fn hardtanh(&self, min: f64, max: f64) -> Tensor {
        self.apply_unary(Hardtanh { min, max })
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};

    #[test]
    fn gradcheck_every_activation() {
        let x = rand64(&[4, 6], 7).mul_scalar(2.0);
        let acts: Vec<(&str, Box<dyn Fn(&Tensor) -> Tensor>)> = vec![
            ("relu", Box::new(|t| t.relu())),
            ("leaky_relu", Box::new(|t| t.leaky_relu(0.1))),
            ("elu", Box::new(|t| t.elu(1.3))),
            ("selu", Box::new(|t| t.selu())),
            ("gelu", Box::new(|t| t.gelu())),
            ("gelu_tanh", Box::new(|t| t.gelu_tanh())),
            ("silu", Box::new(|t| t.silu())),
            ("sigmoid", Box::new(|t| t.sigmoid())),
            ("tanh", Box::new(|t| t.tanh())),
            ("softplus", Box::new(|t| t.softplus())),
            ("softsign", Box::new(|t| t.softsign())),
            ("hardtanh", Box::new(|t| t.hardtanh(-1.0, 1.0))),
        ];
        for (name, f) in &acts {
            eprintln!("checking {name}");
            check(|t| Ok(f(&t[0])), &[x.clone()]);
        }
    }

    #[test]
    fn relu_derivative_at_zero_is_zero() {
        let x = Tensor::zeros(&[3], DType::F64).requires_grad_(true);
        let g = x.relu().sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn saturating_functions_stay_finite_over_f32_range() {
        let x = Tensor::from_vec(vec![-3.0e38f32, -1e4, -88.8, 0.0, 88.8, 1e4, 3.0e38], &[7]).unwrap();
        for y in [x.sigmoid(), x.tanh(), x.softplus(), x.silu(), x.softsign()] {
            assert!(y.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()), "{y:?}");
        }
        let s = x.sigmoid().to_vec::<f32>().unwrap();
        assert_eq!(s[0], 0.0);
        assert_eq!(s[6], 1.0);
        assert_eq!(x.softplus().to_vec::<f32>().unwrap()[5], 1e4);
    }

    #[test]
    fn known_values() {
        let x = Tensor::from_vec(vec![-1.0f64, 0.0, 1.0], &[3]).unwrap();
        let gelu = x.gelu().to_vec::<f64>().unwrap();
        assert!((gelu[2] - 0.841_344_746_068_543).abs() < 1e-12);
        let selu = x.selu().to_vec::<f64>().unwrap();
        assert!((selu[0] - (-1.111_330_737_812_562_7)).abs() < 1e-12);
        assert_eq!(x.leaky_relu(0.01).to_vec::<f64>().unwrap(), vec![-0.01, 0.0, 1.0]);
    }
}
