//! Kernel benchmarks: `cargo bench -p gradflow` (a few minutes).
//!
//! Throughput is reported as "elem/s" where one element is one floating-point
//! operation, so criterion's `Gelem/s` reads directly as GFLOP/s.
//!
//! * `matmul/tensor/N` — `Tensor::matmul` of two f32 N×N tensors (allocates the result).
//! * `matmul/gemm_crate/N` — the raw `gemm::gemm` call on preallocated buffers, with the
//!   same parallelism gradflow chooses: the difference is the wrapper's overhead.
//! * `conv2d/lenet1_b64` — LeNet-5's first layer, input [64, 1, 28, 28], weight [6, 1, 5, 5],
//!   padding 2: forward + backward (dx, dW, db); FLOPs are the three im2col products.
//! * `elementwise/relu_1m`, `elementwise/add_1m` — one op over 2^20 f32 elements (elements/s).
//! * `train_step/mlp_784_800_10_b128` — forward, cross-entropy, backward and an Adam step.
//!
//! `cargo bench -p gradflow --bench kernels -- --peak [N]` skips criterion and prints the best
//! GFLOP/s of gradflow's f32 GEMM at N×N×N (default 2048) as one line of JSON, for
//! `bench/compare.sh`.

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use gradflow::{seeded_rng, Conv2dParams, DType, Tensor};
use gradflow_nn::optim::{Adam, Optimizer, Param};
use gradflow_nn::{BuildOptions, Ctx, Init, Loss, ModelSpec, Module, Target};
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F32, &mut seeded_rng(seed))
}

fn gemm_parallelism(n: usize) -> gemm::Parallelism {
    // What gradflow's wrapper picks for a product this size.
    let t = rayon::current_num_threads();
    if n * n * n >= 48 * 48 * 48 && t > 1 {
        gemm::Parallelism::Rayon(t)
    } else {
        gemm::Parallelism::None
    }
}

/// dst = a·b, all row-major n×n, through the gemm crate directly.
fn raw_gemm(n: usize, dst: &mut [f32], a: &[f32], b: &[f32]) {
    // SAFETY: the three buffers hold n×n elements each.
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm_parallelism(n),
        )
    }
}

fn bench_matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &n in &SIZES {
        let flops = 2 * (n as u64).pow(3);
        g.throughput(Throughput::Elements(flops));
        let (a, b) = (rand(&[n, n], 1), rand(&[n, n], 2));
        g.bench_with_input(BenchmarkId::new("tensor", n), &n, |bch, _| {
            bch.iter(|| black_box(a.matmul(&b).unwrap()))
        });
        let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let mut dst = vec![0.0f32; n * n];
        g.bench_with_input(BenchmarkId::new("gemm_crate", n), &n, |bch, &n| {
            bch.iter(|| raw_gemm(n, black_box(&mut dst), &av, &bv))
        });
    }
    g.finish();
}

fn bench_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (n, o, k, hw) = (64u64, 6u64, 25u64, 28u64 * 28);
    // forward (o × k × L per sample), dW (same), dX (same): 3 products of 2·o·k·L.
    g.throughput(Throughput::Elements(3 * 2 * n * o * k * hw));
    let x = rand(&[64, 1, 28, 28], 3).requires_grad_(true);
    let w = rand(&[6, 1, 5, 5], 4).mul_scalar(0.2).requires_grad_(true);
    let bias = rand(&[6], 5).requires_grad_(true);
    let p = Conv2dParams {
        padding: (2, 2),
        ..Conv2dParams::default()
    };
    g.bench_function("lenet1_b64_fwd_bwd", |bch| {
        bch.iter(|| {
            let y = x.conv2d(&w, Some(&bias), p).unwrap();
            black_box(y.sum_all().backward().unwrap())
        })
    });
    g.throughput(Throughput::Elements(2 * n * o * k * hw));
    let xd = x.detach();
    let (wd, bd) = (w.detach(), bias.detach());
    g.bench_function("lenet1_b64_fwd", |bch| {
        bch.iter(|| black_box(xd.conv2d(&wd, Some(&bd), p).unwrap()))
    });
    g.finish();
}

fn bench_elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let n = 1 << 20;
    g.throughput(Throughput::Elements(n as u64));
    let (a, b) = (rand(&[1024, 1024], 6), rand(&[1024, 1024], 7));
    g.bench_function("relu_1m", |bch| bch.iter(|| black_box(a.relu())));
    g.bench_function("add_1m", |bch| bch.iter(|| black_box(a.add(&b).unwrap())));
    g.finish();
}

fn mlp_800() -> (gradflow_nn::Sequential, Vec<Param>) {
    let spec = ModelSpec::preset("mlp").expect("the mlp preset (784-800-10)");
    let model = spec
        .build(BuildOptions {
            init: Init::PytorchDefault,
            dtype: DType::F32,
            seed: 0,
        })
        .unwrap();
    let params = model
        .parameters()
        .into_iter()
        .map(|p| Param::new(p.name, p.tensor))
        .collect();
    (model, params)
}

fn bench_train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let batch = 128u64;
    // forward 2·N·in·out per Linear, backward dW the same, dX the same except for the first layer.
    let (l1, l2) = (784u64 * 800, 800u64 * 10);
    g.throughput(Throughput::Elements(2 * batch * (2 * l1 + 3 * l2)));
    let (model, params) = mlp_800();
    let mut opt = Adam::new(1e-3, (0.9, 0.999), 1e-8, 0.0, false);
    let x = rand(&[128, 1, 28, 28], 8);
    let y: Vec<usize> = (0..128).map(|i| (i * 7) % 10).collect();
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 };
    let mut ctx = Ctx::train(0);
    g.bench_function("mlp_784_800_10_b128_adam", |bch| {
        bch.iter(|| {
            let out = model.forward(&x, &mut ctx).unwrap();
            let l = loss.compute(&out, Target::Classes(&y)).unwrap();
            let grads = l.backward().unwrap();
            opt.step(&params, &grads).unwrap();
            black_box(l.item().unwrap())
        })
    });
    g.finish();
}

/// `--peak [N]`: best of 7 timed runs of gradflow's N×N×N f32 product (Tensor::matmul).
fn peak(n: usize) {
    let (a, b) = (rand(&[n, n], 1), rand(&[n, n], 2));
    let _ = a.matmul(&b).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        black_box(a.matmul(&b).unwrap());
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gflops = 2.0 * (n as f64).powi(3) / best / 1e9;
    println!(
        "{{\"n\": {n}, \"gradflow_gflops\": {gflops:.2}, \"threads\": {}}}",
        rayon::current_num_threads()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peak") {
        let n = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(2048);
        peak(n);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_matmul(&mut c);
    bench_conv(&mut c);
    bench_elementwise(&mut c);
    bench_train_step(&mut c);
    c.final_summary();
}
