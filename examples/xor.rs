//! A 2-2-1 network learns XOR by plain gradient descent, and prints the
//! gradient of every weight at the first step: backpropagation, visible.
//!
//! Run: `cargo run --release -p gradflow-examples --example xor`

use gradflow::{no_grad, Tensor};
use gradflow_nn::{Activation, Ctx, Init, Linear, Module, Sequential};

fn main() -> gradflow::Result<()> {
    let mut rng = gradflow::seeded_rng(1);
    let net = Sequential::new()
        .push(
            Linear::new(2, 4)
                .init(Init::XavierUniform)
                .gain(Activation::Tanh.gain())
                .build(&mut rng),
        )
        .push(Activation::Tanh)
        .push(Linear::new(4, 1).init(Init::XavierUniform).build(&mut rng))
        .push(Activation::Sigmoid);
    let x = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2])?;
    let y = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], &[4, 1])?;
    let mut ctx = Ctx::train(0);
    let lr = 2.0;
    let mut loss_value = f64::NAN;
    for step in 0..2000 {
        let loss = net.forward(&x, &mut ctx)?.sub(&y)?.square().mean_all();
        let grads = loss.backward()?;
        if step == 0 {
            println!("step 0: loss {:.4}; gradients:", loss.item()?);
            for p in net.parameters() {
                println!(
                    "  d loss / d {:<8} = {:?}",
                    p.name,
                    grads.get(&p.tensor).unwrap().to_vec::<f32>()?
                );
            }
        }
        let _g = no_grad();
        for p in net.parameters() {
            let g = grads.get(&p.tensor).unwrap().to_vec::<f32>()?;
            p.tensor
                .with_slice_mut::<f32, _>(|w| w.iter_mut().zip(&g).for_each(|(w, g)| *w -= lr * g))?;
        }
        loss_value = loss.item()?;
    }
    let pred = net.forward(&x, &mut Ctx::eval())?.to_vec::<f32>()?;
    println!("after 2000 steps: loss {loss_value:.5}, predictions {pred:.3?} for targets [0, 1, 1, 0]");
    assert!(loss_value < 0.01, "XOR did not converge");
    Ok(())
}
