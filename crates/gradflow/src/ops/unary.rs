//! Elementwise ops of one tensor. Each is a small type implementing
//! [`UnaryOp`]: its value and its derivative written next to each other. The
//! generic machinery below runs the forward map and the fused backward
//! `grad · f'(x)` for all of them.

use crate::autograd::{node, GradFn};
use crate::error::Result;
use crate::kernels::elementwise as ew;
use crate::ops::with_typed;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};

/// An elementwise function with its derivative.
pub trait UnaryOp: Clone + Send + Sync + 'static {
    /// Name shown in the graph and in error messages.
    const NAME: &'static str;
    /// y = f(x).
    fn forward<T: Element>(&self, x: T) -> T;
    /// dy/dx, given both x and y = f(x) (whichever is cheaper to use).
    fn derivative<T: Element>(&self, x: T, y: T) -> T;
    /// False for ops like `sign` whose gradient is zero everywhere: no node is recorded.
    fn differentiable(&self) -> bool {
        true
    }
}

impl Tensor {
    /// Apply an elementwise op, recording its backward rule when needed.
    pub fn apply_unary<O: UnaryOp>(&self, op: O) -> Tensor {
        let out = {
            let st = self.storage();
            with_typed!(st.cpu(), v => {
                let o = ew::map(v, self.layout(), |x| op.forward(x));
                Element::into_storage(o)
            })
        };
        let out = Tensor::from_storage(out, self.shape());
        if !op.differentiable() {
            return out;
        }
        out.attach(&[self], || node(UnaryBackward { op, x: self.clone() }))
    }
}

struct UnaryBackward<O: UnaryOp> {
    op: O,
    x: Tensor,
}

impl<O: UnaryOp> GradFn for UnaryBackward<O> {
    fn name(&self) -> &'static str {
        O::NAME
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.x.clone()]
    }
    fn backward(&self, out: &Tensor, grad: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if !needs[0] {
            return Ok(vec![None]);
        }
        let op = &self.op;
        let xs = self.x.storage();
        let ys = out.storage();
        let gs = grad.storage();
        let g = match (xs.cpu(), ys.cpu(), gs.cpu()) {
            (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(g)) => {
                CpuStorage::F32(fused_backward(op, (x, &self.x), (y, out), (g, grad)))
            }
            (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(g)) => {
                CpuStorage::F64(fused_backward(op, (x, &self.x), (y, out), (g, grad)))
            }
            _ => {
                return Err(crate::Error::DType {
                    op: O::NAME,
                    lhs: self.x.dtype(),
                    rhs: grad.dtype(),
                })
            }
        };
        Ok(vec![Some(Tensor::from_storage(g, self.x.shape()))])
    }
}

fn fused_backward<T: Element, O: UnaryOp>(
    op: &O,
    x: (&[T], &Tensor),
    y: (&[T], &Tensor),
    g: (&[T], &Tensor),
) -> Vec<T> {
    let xv = ew::contiguous(x.0, x.1.layout());
    let yv = ew::contiguous(y.0, y.1.layout());
    let gv = ew::contiguous(g.0, g.1.layout());
    ew::zip3_slices(&xv, &yv, &gv, |x, y, g| g * op.derivative(x, y))
}

/// Declare a parameterless unary op: `unary_op!(Type, "name", |x| forward, |x, y| derivative)`.
macro_rules! unary_op {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$x:ident| $fwd:expr, |$dx:ident, $dy:ident| $der:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;
        impl UnaryOp for $ty {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn forward<T: Element>(&self, $x: T) -> T {
                $fwd
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn derivative<T: Element>(&self, $dx: T, $dy: T) -> T {
                $der
            }
        }
    };
}
pub(crate) use unary_op;

unary_op!(
    /// -x.
    Neg, "neg", |x| -x, |x, y| -T::one());
unary_op!(
    /// eˣ; its derivative is itself.
    Exp, "exp", |x| x.exp(), |x, y| y);
unary_op!(
    /// Natural logarithm.
    Log, "log", |x| x.ln(), |x, y| x.recip());
unary_op!(
    /// Square root; derivative 1/(2√x).
    Sqrt, "sqrt", |x| x.sqrt(), |x, y| T::of(0.5) / y);
unary_op!(
    /// |x|, with derivative sign(x) and 0 at the kink, as in PyTorch.
    Abs, "abs", |x| x.abs(), |x, y| sign(x));
unary_op!(
    /// x².
    Square, "square", |x| x * x, |x, y| T::of(2.0) * x);

/// sign(x) with sign(0) = 0 (NaN stays NaN).
#[inline(always)]
pub fn sign<T: Element>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else {
        x * T::zero()
    }
}

/// sign(x) ∈ {-1, 0, 1}; piecewise constant, so it records no gradient.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sign;
impl UnaryOp for Sign {
    const NAME: &'static str = "sign";
    fn forward<T: Element>(&self, x: T) -> T {
        sign(x)
    }
    fn derivative<T: Element>(&self, _x: T, _y: T) -> T {
        T::zero()
    }
    fn differentiable(&self) -> bool {
        false
    }
}

/// xᵖ for a scalar exponent p.
#[derive(Clone, Copy, Debug)]
pub struct Powf(pub f64);
impl UnaryOp for Powf {
    const NAME: &'static str = "pow";
    fn forward<T: Element>(&self, x: T) -> T {
        x.powf(T::of(self.0))
    }
    fn derivative<T: Element>(&self, x: T, _y: T) -> T {
        if self.0 == 0.0 {
            return T::zero();
        }
        T::of(self.0) * x.powf(T::of(self.0 - 1.0))
    }
}

/// Clamp into [min, max]; gradient 1 strictly inside, 0 outside and at the bounds
/// themselves (PyTorch ≥ 2.14's minimum-norm subgradient, as hardtanh and relu;
/// PyTorch ≤ 2.13 gave 1 at the bounds).
#[derive(Clone, Copy, Debug)]
pub struct Clamp {
    /// Lower bound (use -inf for none).
    pub min: f64,
    /// Upper bound (use +inf for none).
    pub max: f64,
}
impl UnaryOp for Clamp {
    const NAME: &'static str = "clamp";
    fn forward<T: Element>(&self, x: T) -> T {
        if x.is_nan() {
            return x;
        }
        x.max(T::of(self.min)).min(T::of(self.max))
    }
    fn derivative<T: Element>(&self, x: T, _y: T) -> T {
        if x > T::of(self.min) && x < T::of(self.max) {
            T::one()
        } else {
            T::zero()
        }
    }
}

/// x + c.
#[derive(Clone, Copy, Debug)]
pub struct AddScalar(pub f64);
impl UnaryOp for AddScalar {
    const NAME: &'static str = "add_scalar";
    fn forward<T: Element>(&self, x: T) -> T {
        x + T::of(self.0)
    }
    fn derivative<T: Element>(&self, _x: T, _y: T) -> T {
        T::one()
    }
}

/// x · c.
#[derive(Clone, Copy, Debug)]
pub struct MulScalar(pub f64);
impl UnaryOp for MulScalar {
    const NAME: &'static str = "mul_scalar";
    fn forward<T: Element>(&self, x: T) -> T {
        x * T::of(self.0)
    }
    fn derivative<T: Element>(&self, _x: T, _y: T) -> T {
        T::of(self.0)
    }
}

impl Tensor {
    /// -x.
    pub fn neg(&self) -> Tensor {
        self.apply_unary(Neg)
    }
    /// eˣ.
    pub fn exp(&self) -> Tensor {
        self.apply_unary(Exp)
    }
    /// ln x.
    pub fn log(&self) -> Tensor {
        self.apply_unary(Log)
    }
    /// √x.
    pub fn sqrt(&self) -> Tensor {
        self.apply_unary(Sqrt)
    }
    /// |x| (derivative 0 at 0).
    pub fn abs(&self) -> Tensor {
        self.apply_unary(Abs)
    }
    /// x².
    pub fn square(&self) -> Tensor {
        self.apply_unary(Square)
    }
    /// sign(x), no gradient.
    pub fn sign(&self) -> Tensor {
        self.apply_unary(Sign)
    }
    /// xᵖ.
    pub fn powf(&self, p: f64) -> Tensor {
        self.apply_unary(Powf(p))
    }
    /// Clamp into [min, max].
    pub fn clamp(&self, min: f64, max: f64) -> Tensor {
        self.apply_unary(Clamp { min, max })
    }
    /// x + c.
    pub fn add_scalar(&self, c: f64) -> Tensor {
        self.apply_unary(AddScalar(c))
    }
    /// x − c.
    pub fn sub_scalar(&self, c: f64) -> Tensor {
        self.apply_unary(AddScalar(-c))
    }
    /// x · c.
    pub fn mul_scalar(&self, c: f64) -> Tensor {
        self.apply_unary(MulScalar(c))
    }
    /// x / c.
    pub fn div_scalar(&self, c: f64) -> Tensor {
        self.apply_unary(MulScalar(1.0 / c))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64, rand_pos};
    use crate::Tensor;

    #[test]
    fn gradcheck_elementwise_unary() {
        let x = rand64(&[3, 4], 1);
        check(|t| Ok(t[0].neg()), &[x.clone()]);
        check(|t| Ok(t[0].exp()), &[x.clone()]);
        check(|t| Ok(t[0].abs()), &[x.clone()]);
        check(|t| Ok(t[0].square()), &[x.clone()]);
        check(|t| Ok(t[0].clamp(-0.5, 0.7)), &[x.clone()]);
        check(
            |t| Ok(t[0].add_scalar(3.0).mul_scalar(-2.0).div_scalar(4.0).sub_scalar(1.0)),
            &[x.clone()],
        );
        let p = rand_pos(&[5], 2);
        check(|t| Ok(t[0].log()), &[p.clone()]);
        check(|t| Ok(t[0].sqrt()), &[p.clone()]);
        check(|t| Ok(t[0].powf(2.5)), &[p.clone()]);
        check(|t| Ok(t[0].powf(-1.5)), &[p]);
    }

    #[test]
    fn gradcheck_on_strided_views() {
        // Transposed and narrowed inputs take the strided path of the kernels.
        let x = rand64(&[4, 5], 3);
        check(|t| Ok(t[0].t()?.exp()), &[x.clone()]);
        check(|t| Ok(t[0].narrow(1, 1, 3)?.abs()), &[x]);
    }

    #[test]
    fn kinks_follow_pytorch() {
        let x = Tensor::from_vec(vec![0.0f64, -0.0], &[2]).unwrap().requires_grad_(true);
        let g = x.abs().sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.0]);
        assert_eq!(x.sign().to_vec::<f64>().unwrap(), vec![0.0, 0.0]);
        // sign records no gradient: nothing flows through it.
        assert!(!x.sign().requires_grad());
    }
}
