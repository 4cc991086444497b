//! Times one forward and backward pass of a 2-layer transformer encoder
//! (d_model 64, 4 heads, feed-forward 128, 28 steps, batch 64, f32), and of
//! its attention alone, to see where a step's time goes.
//!
//! Run: `cargo run --release -p gradflow-examples --example encoder_timing -- [THREADS] [STEPS]`

use gradflow::{DType, Tensor};
use gradflow_nn::{BuildOptions, Ctx, ModelSpec, Module, MultiheadAttention};
use std::time::Instant;

const ENCODER: &str = r#"
input = [28, 64]

[[layer]]
type = "TransformerEncoderLayer"
nhead = 4
dim_feedforward = 128

[[layer]]
type = "TransformerEncoderLayer"
nhead = 4
dim_feedforward = 128
"#;

/// Median milliseconds of the forward pass and of the backward pass of `net` on `x`.
fn time(net: &dyn Module, x: &Tensor, steps: usize) -> gradflow::Result<(f64, f64)> {
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    let mut ctx = Ctx::train(0);
    for step in 0..steps + 3 {
        let t0 = Instant::now();
        let loss = net.forward(x, &mut ctx)?.square().mean_all();
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        drop(grads);
        // The first steps warm the allocator and the gemm crate's buffers.
        if step >= 3 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t2 - t1).as_secs_f64() * 1e3);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut fwd), median(&mut bwd)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let threads = args.next().transpose()?.unwrap_or(2);
    let steps = args.next().transpose()?.unwrap_or(20);
    gradflow::set_num_threads_on_this_thread(threads);
    gradflow::keep_freed_memory();
    let mut rng = gradflow::seeded_rng(0);
    let x = Tensor::rand_normal(&[64, 28, 64], 0.0, 1.0, DType::F32, &mut rng).requires_grad_(true);
    let encoder = ModelSpec::parse(ENCODER, "encoder")?.build(BuildOptions::default())?;
    let attention = MultiheadAttention::new(64, 4).build(&mut rng)?;
    println!(
        "batch 64, 28 steps, d_model 64, 4 heads, feed-forward 128, f32, {threads} threads, median of {steps} steps"
    );
    for (name, net) in [
        ("2-layer encoder", &encoder as &dyn Module),
        ("one attention", &attention),
    ] {
        let (f, b) = time(net, &x, steps)?;
        println!(
            "{name:<16} forward {f:7.3} ms  backward {b:7.3} ms  total {:7.3} ms",
            f + b
        );
    }
    Ok(())
}
