//! Whole networks built from the public API: gradient checks of composed
//! layers, and a small training run that exercises backward together with
//! in-place parameter updates.

use gradflow::{gradcheck, seeded_rng, Conv2dParams, DType, GradcheckOptions, Pool2dParams, Result, Tensor};

/// Uniform f64 values in [-1, 1) from a seed.
fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F64, &mut seeded_rng(seed))
}

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    if let Err(e) = gradcheck(f, inputs, GradcheckOptions::default()) {
        panic!("{e}");
    }
}

#[test]
fn gradcheck_three_layer_mlp_with_cross_entropy() {
    let targets = [0usize, 2, 1, 2];
    let inputs = [
        rand(&[4, 3], 1),              // x
        rand(&[5, 3], 2),              // w1
        rand(&[5], 3),                 // b1
        rand(&[4, 5], 4),              // w2
        rand(&[4], 5).add_scalar(0.5), // b2 (keeps most ReLUs active)
        rand(&[3, 4], 6),              // w3
        rand(&[3], 7),                 // b3
    ];
    let mlp = |t: &[Tensor]| -> Result<Tensor> {
        t[0].linear(&t[1], Some(&t[2]))?
            .tanh()
            .linear(&t[3], Some(&t[4]))?
            .relu()
            .linear(&t[5], Some(&t[6]))?
            .cross_entropy(&targets, 0.0)
    };
    check(mlp, &inputs);
    // With label smoothing, and with the second weight used as a transposed view.
    check(
        |t| {
            t[0].linear(&t[1], Some(&t[2]))?
                .tanh()
                .matmul(&t[3].t()?)?
                .add(&t[4])?
                .relu()
                .linear(&t[5], Some(&t[6]))?
                .cross_entropy(&targets, 0.1)
        },
        &inputs,
    );
}

#[test]
fn gradcheck_small_cnn_with_gather_nll() {
    let targets = [3usize, 1];
    let conv = Conv2dParams {
        padding: (1, 1),
        ..Conv2dParams::default()
    };
    let cnn = |t: &[Tensor]| -> Result<Tensor> {
        let h = t[0].conv2d(&t[1], Some(&t[2]), conv)?.relu(); // [2, 3, 6, 6]
        let h = h.max_pool2d(Pool2dParams::square(2))?; // [2, 3, 3, 3]
        let logits = h.flatten(1, -1)?.linear(&t[3], Some(&t[4]))?; // [2, 4]
        let logp = logits.log_softmax(-1)?;
        Ok(logp.gather(1, &targets, &[2, 1])?.mean_all().neg())
    };
    let inputs = [
        rand(&[2, 1, 6, 6], 11),
        rand(&[3, 1, 3, 3], 12),
        rand(&[3], 13),
        rand(&[4, 27], 14),
        rand(&[4], 15),
    ];
    check(cnn, &inputs);
    // The NLL built from gather agrees with the fused cross-entropy.
    let nll = cnn(&inputs).unwrap().item().unwrap();
    let h = inputs[0]
        .conv2d(&inputs[1], Some(&inputs[2]), conv)
        .unwrap()
        .relu()
        .max_pool2d(Pool2dParams::square(2))
        .unwrap();
    let ce = h
        .flatten(1, -1)
        .unwrap()
        .linear(&inputs[3], Some(&inputs[4]))
        .unwrap()
        .cross_entropy(&targets, 0.0)
        .unwrap()
        .item()
        .unwrap();
    assert!((nll - ce).abs() < 1e-12, "{nll} vs {ce}");
}

#[test]
fn trains_xor_with_plain_gradient_descent() {
    let x = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]).unwrap();
    let targets = [0usize, 1, 1, 0];
    let mut rng = seeded_rng(42);
    let params = [
        Tensor::rand_normal(&[8, 2], 0.0, 1.0, DType::F32, &mut rng).requires_grad_(true), // w1
        Tensor::zeros(&[8], DType::F32).requires_grad_(true),                              // b1
        Tensor::rand_normal(&[2, 8], 0.0, 0.5, DType::F32, &mut rng).requires_grad_(true), // w2
        Tensor::zeros(&[2], DType::F32).requires_grad_(true),                              // b2
    ];
    let forward = |p: &[Tensor]| -> Result<Tensor> { x.linear(&p[0], Some(&p[1]))?.tanh().linear(&p[2], Some(&p[3])) };
    let lr = 0.5f32;
    let mut loss_value = f64::INFINITY;
    for _ in 0..2_000 {
        let loss = forward(&params).unwrap().cross_entropy(&targets, 0.0).unwrap();
        loss_value = loss.item().unwrap();
        let grads = loss.backward().unwrap();
        for p in &params {
            let g = grads
                .get(p)
                .expect("every parameter gets a gradient")
                .to_vec::<f32>()
                .unwrap();
            p.with_slice_mut::<f32, _>(|v| {
                for (v, g) in v.iter_mut().zip(&g) {
                    *v -= lr * g;
                }
            })
            .unwrap();
        }
    }
    assert!(loss_value < 0.05, "final loss {loss_value}");
    let logits = gradflow::no_grad_scope(|| forward(&params)).unwrap();
    assert_eq!(logits.argmax(1).unwrap(), targets.to_vec());
}
