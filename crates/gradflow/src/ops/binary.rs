//! Elementwise ops of two tensors, with NumPy broadcasting. A gradient that
//! flows into a broadcast operand is summed back to that operand's shape.

use crate::autograd::{node, GradFn};
use crate::error::Result;
use crate::kernels::elementwise as ew;
use crate::layout::broadcast_shapes;
use crate::storage::CpuStorage;
use crate::{Element, Tensor};

/// A scalar function of two arguments, generic over the element type.
pub trait BinaryFn: Send + Sync + 'static {
    /// Name in errors and in the graph.
    const NAME: &'static str;
    /// f(a, b).
    fn f<T: Element>(a: T, b: T) -> T;
}

/// Forward kernel shared by every binary op: broadcast, then map.
pub(crate) fn binary_map<F: BinaryFn>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.same_dtype(F::NAME, b)?;
    let shape = broadcast_shapes(F::NAME, a.shape(), b.shape())?;
    let la = a.layout().broadcast_to(F::NAME, &shape)?;
    let lb = b.layout().broadcast_to(F::NAME, &shape)?;
    let sa = a.storage();
    let sb = b.storage();
    let out = match (sa.cpu(), sb.cpu()) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(ew::zip(x, &la, y, &lb, F::f)),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(ew::zip(x, &la, y, &lb, F::f)),
        _ => unreachable!("dtype checked"),
    };
    Ok(Tensor::from_storage(out, &shape))
}

macro_rules! binary_fn {
    ($ty:ident, $name:literal, |$a:ident, $b:ident| $e:expr) => {
        #[doc = concat!("Kernel of `", $name, "`.")]
        pub struct $ty;
        impl BinaryFn for $ty {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn f<T: Element>($a: T, $b: T) -> T {
                $e
            }
        }
    };
}

binary_fn!(AddFn, "add", |a, b| a + b);
binary_fn!(SubFn, "sub", |a, b| a - b);
binary_fn!(MulFn, "mul", |a, b| a * b);
binary_fn!(DivFn, "div", |a, b| a / b);
binary_fn!(MaxFn, "maximum", |a, b| if a.is_nan() || a > b {
    a
} else if b.is_nan() || b > a {
    b
} else {
    a
});
binary_fn!(MinFn, "minimum", |a, b| if a.is_nan() || a < b {
    a
} else if b.is_nan() || b < a {
    b
} else {
    a
});
// Share of the gradient that goes to `a` in maximum/minimum: ties split evenly, as in PyTorch.
binary_fn!(MaxShareFn, "maximum_share", |a, b| if a > b {
    T::one()
} else if a == b {
    T::of(0.5)
} else {
    T::zero()
});
binary_fn!(MinShareFn, "minimum_share", |a, b| if a < b {
    T::one()
} else if a == b {
    T::of(0.5)
} else {
    T::zero()
});
binary_fn!(NonzeroSelectFn, "where_mask", |m, g| if m != T::zero() {
    g
} else {
    T::zero()
});

/// Which binary op a backward node belongs to.
#[derive(Clone, Copy)]
enum Kind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

struct BinaryBackward {
    kind: Kind,
    a: Tensor,
    b: Tensor,
}

impl GradFn for BinaryBackward {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Add => "add",
            Kind::Sub => "sub",
            Kind::Mul => "mul",
            Kind::Div => "div",
            Kind::Max => "maximum",
            Kind::Min => "minimum",
        }
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.a.clone(), self.b.clone()]
    }
    fn backward(&self, out: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&self.a, &self.b);
        let (ga, gb) = match self.kind {
            Kind::Add => (needs[0].then(|| g.clone()), needs[1].then(|| g.clone())),
            Kind::Sub => (needs[0].then(|| g.clone()), needs[1].then(|| g.neg())),
            Kind::Mul => (
                if needs[0] { Some(g.mul(b)?) } else { None },
                if needs[1] { Some(g.mul(a)?) } else { None },
            ),
            Kind::Div => (
                if needs[0] { Some(g.div(b)?) } else { None },
                // d(a/b)/db = -a/b² = -out/b
                if needs[1] {
                    Some(g.mul(out)?.div(b)?.neg())
                } else {
                    None
                },
            ),
            Kind::Max | Kind::Min => {
                let share = if matches!(self.kind, Kind::Max) {
                    binary_map::<MaxShareFn>(a, b)?
                } else {
                    binary_map::<MinShareFn>(a, b)?
                };
                let ga = g.mul(&share)?;
                let gb = if needs[1] { Some(g.sub(&ga)?) } else { None };
                (needs[0].then_some(ga), gb)
            }
        };
        Ok(vec![
            ga.map(|t| t.sum_to(a.shape())).transpose()?,
            gb.map(|t| t.sum_to(b.shape())).transpose()?,
        ])
    }
}

impl Tensor {
    fn binary(&self, other: &Tensor, kind: Kind) -> Result<Tensor> {
        let out = match kind {
            Kind::Add => binary_map::<AddFn>(self, other)?,
            Kind::Sub => binary_map::<SubFn>(self, other)?,
            Kind::Mul => binary_map::<MulFn>(self, other)?,
            Kind::Div => binary_map::<DivFn>(self, other)?,
            Kind::Max => binary_map::<MaxFn>(self, other)?,
            Kind::Min => binary_map::<MinFn>(self, other)?,
        };
        Ok(out.attach(&[self, other], || {
            node(BinaryBackward {
                kind,
                a: self.clone(),
                b: other.clone(),
            })
        }))
    }
    /// a + b, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, Kind::Add)
    }
    /// a − b, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, Kind::Sub)
    }
    /// a · b elementwise, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, Kind::Mul)
    }
    /// a / b elementwise, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, Kind::Div)
    }
    /// Elementwise maximum; at ties the gradient is split evenly (PyTorch's rule).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, Kind::Max)
    }
    /// Elementwise minimum; at ties the gradient is split evenly.
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, Kind::Min)
    }

    /// `mask ≠ 0 ? self : other`, broadcasting all three. The mask gets no gradient.
    pub fn where_mask(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        // a·m + b·(1−m) with m ∈ {0,1} would be wrong for infinities; select explicitly instead.
        let m = crate::ops::unary::Sign;
        let m = mask.detach().abs().apply_unary(m);
        let shape = broadcast_shapes("where", &broadcast_shapes("where", mask.shape(), a.shape())?, b.shape())?;
        let m = m.broadcast_to(&shape)?.detach();
        let a_b = a.broadcast_to(&shape)?;
        let b_b = b.broadcast_to(&shape)?;
        let pick_a = binary_map::<NonzeroSelectFn>(&m, &a_b.detach())?;
        let inv = m.neg().add_scalar(1.0);
        let pick_b = binary_map::<NonzeroSelectFn>(&inv, &b_b.detach())?;
        let out = binary_map::<AddFn>(&pick_a, &pick_b)?;
        Ok(out.attach(&[a, b], || {
            node(WhereBackward {
                mask: m,
                a: a.clone(),
                b: b.clone(),
            })
        }))
    }
}

struct WhereBackward {
    mask: Tensor,
    a: Tensor,
    b: Tensor,
}

impl GradFn for WhereBackward {
    fn name(&self) -> &'static str {
        "where"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.a.clone(), self.b.clone()]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let ga = if needs[0] {
            Some(binary_map::<NonzeroSelectFn>(&self.mask, g)?.sum_to(self.a.shape())?)
        } else {
            None
        };
        let gb = if needs[1] {
            let inv = self.mask.neg().add_scalar(1.0);
            Some(binary_map::<NonzeroSelectFn>(&inv, g)?.sum_to(self.b.shape())?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64, rand_pos};
    use crate::Tensor;
    use proptest::prelude::*;

    #[test]
    fn gradcheck_binary_with_broadcasting() {
        let a = rand64(&[3, 1, 4], 1);
        let b = rand64(&[5, 4], 2);
        check(|t| t[0].add(&t[1]), &[a.clone(), b.clone()]);
        check(|t| t[0].sub(&t[1]), &[a.clone(), b.clone()]);
        check(|t| t[0].mul(&t[1]), &[a.clone(), b.clone()]);
        check(|t| t[0].div(&t[1]), &[a.clone(), rand_pos(&[5, 4], 3)]);
        check(|t| t[0].maximum(&t[1]), &[a.clone(), b.clone()]);
        check(|t| t[0].minimum(&t[1]), &[a.clone(), b.clone()]);
        // Scalar (0-d) operand and a transposed operand.
        check(|t| t[0].mul(&t[1]), &[a.clone(), rand64(&[], 4)]);
        check(|t| t[0].t()?.mul(&t[1]), &[rand64(&[4, 5], 5), b]);
    }

    #[test]
    fn where_mask_selects_and_routes_gradient() {
        let mask = Tensor::from_vec(vec![1.0f64, 0.0, 1.0], &[3]).unwrap();
        let a = rand64(&[2, 3], 1);
        let b = rand64(&[3], 2);
        check(|t| Tensor::where_mask(&mask, &t[0], &t[1]), &[a.clone(), b.clone()]);
        let y = Tensor::where_mask(&mask, &a, &b).unwrap().to_vec::<f64>().unwrap();
        let (av, bv) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        assert_eq!(y[1], bv[1]);
        assert_eq!(y[3], av[3]);
    }

    #[test]
    fn maximum_splits_ties_evenly() {
        let a = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_(true);
        let b = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_(true);
        let g = a.maximum(&b).unwrap().sum_all().backward().unwrap();
        assert_eq!(g.get(&a).unwrap().item().unwrap(), 0.5);
        assert_eq!(g.get(&b).unwrap().item().unwrap(), 0.5);
    }

    #[test]
    fn mismatched_shapes_name_the_op() {
        let e = rand64(&[3, 2], 0).add(&rand64(&[4], 0)).unwrap_err().to_string();
        assert!(e.starts_with("add: shapes [3, 2] and [4] do not broadcast"), "{e}");
        let e = rand64(&[2], 0)
            .mul(&rand64(&[2], 0).to_dtype(crate::DType::F32))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "mul: dtype mismatch: f64 and f32");
    }

    fn broadcastable_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        proptest::collection::vec((1usize..4, 0u8..3), 0..4).prop_map(|dims| {
            let a: Vec<usize> = dims.iter().map(|&(d, m)| if m == 1 { 1 } else { d }).collect();
            let b: Vec<usize> = dims.iter().map(|&(d, m)| if m == 2 { 1 } else { d }).collect();
            let drop = if b.len() > 1 { 1 } else { 0 };
            (a, b[drop..].to_vec())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn broadcast_gradients_match_finite_differences((sa, sb) in broadcastable_pair(), seed in 0u64..1000) {
            let a = rand64(&sa, seed);
            let b = rand64(&sb, seed + 1);
            let y = a.mul(&b).unwrap();
            // Output shape follows NumPy's rule.
            let expect = crate::layout::broadcast_shapes("t", &sa, &sb).unwrap();
            prop_assert_eq!(y.shape(), &expect[..]);
            check(|t| t[0].mul(&t[1])?.add(&t[1]), &[a, b]);
        }
    }
}
