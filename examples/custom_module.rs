//! A user-defined layer: a residual block `x + W₂·relu(W₁·x)` written with
//! gradflow ops. It plugs into `Sequential` like any built-in layer, its
//! parameters get PyTorch-style names, and its gradients are checked against
//! finite differences with `gradcheck`.
//!
//! Run: `cargo run --release -p gradflow-examples --example custom_module`

use gradflow::{gradcheck, DType, GradcheckOptions, Result, Tensor};
use gradflow_nn::{Activation, Ctx, Init, Linear, Module, NamedTensor, Sequential};

/// y = x + W₂ · relu(W₁ · x): the skip path gives gradients a direct route back.
struct Residual {
    inner: Linear,
    outer: Linear,
}

impl Residual {
    fn new(width: usize, hidden: usize, dtype: DType, seed: u64) -> Residual {
        let mut rng = gradflow::seeded_rng(seed);
        let he = Init::KaimingUniform { fan_out: false };
        Residual {
            inner: Linear::new(width, hidden)
                .init(he)
                .gain(Activation::ReLU.gain())
                .dtype(dtype)
                .build(&mut rng),
            outer: Linear::new(hidden, width)
                .init(Init::XavierUniform)
                .dtype(dtype)
                .build(&mut rng),
        }
    }
}

impl Module for Residual {
    fn kind(&self) -> &'static str {
        "Residual"
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.inner.forward(x, ctx)?.relu();
        x.add(&self.outer.forward(&h, ctx)?)
    }
    fn output_shape(&self, input: &[usize]) -> gradflow_nn::Result<Vec<usize>> {
        self.inner.output_shape(input).and_then(|h| self.outer.output_shape(&h))
    }
    fn parameters(&self) -> Vec<NamedTensor> {
        let mut v = Vec::new();
        for (prefix, l) in [("inner", &self.inner), ("outer", &self.outer)] {
            for p in l.parameters() {
                v.push(NamedTensor {
                    name: format!("{prefix}.{}", p.name),
                    tensor: p.tensor,
                });
            }
        }
        v
    }
}

fn main() -> Result<()> {
    let net = Sequential::new()
        .push(Residual::new(4, 8, DType::F64, 0))
        .push(Activation::Tanh);
    for p in net.parameters() {
        println!("{:<14} {:?}", p.name, p.tensor.shape());
    }
    let x = Tensor::rand_normal(&[3, 4], 0.0, 1.0, DType::F64, &mut gradflow::seeded_rng(7));
    // Check d(output)/d(input) of the custom block against central differences.
    let report = gradcheck(
        |t| net.forward(&t[0], &mut Ctx::eval()),
        &[x],
        GradcheckOptions::default(),
    )
    .expect("gradients agree");
    println!(
        "gradcheck passed: {} elements, max |analytic - numeric| = {:.2e}",
        report.checked, report.max_abs_error
    );
    Ok(())
}
