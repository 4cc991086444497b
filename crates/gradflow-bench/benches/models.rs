//! Whole-model benchmarks: `cargo bench -p gradflow-bench` (about a minute).
//!
//! * `train_step/mlp_784_800_10_b128_adam` — forward, cross-entropy, backward and an Adam
//!   step; throughput in FLOPs of the matrix products, so `Gelem/s` reads as GFLOP/s.
//!
//! Other mode (criterion is skipped):
//! * `-- --step-profile [WIDTHS|PRESET [BATCH]]`: where one training step's time goes,
//!   e.g. `cargo bench -p gradflow-bench --bench models -- --step-profile 784,1024,1024,10 128`.
//! * `-- --peak-drift [ROUNDS]`: does training leave this process's products slower? Each
//!   round times the 2048³ product, trains 784-1024-1024-10 for 300 steps, and times it again.

use criterion::{black_box, Criterion, Throughput};
use gradflow::{seeded_rng, DType, Tensor};
use gradflow_nn::optim::{self, Optimizer, OptimizerSpec, Param};
use gradflow_nn::{BuildOptions, Ctx, Init, Loss, ModelSpec, Module, Target};
use std::time::{Duration, Instant};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F32, &mut seeded_rng(seed))
}

fn mlp_800() -> (gradflow_nn::Sequential, Vec<Param>) {
    preset("mlp")
}

fn preset(name: &str) -> (gradflow_nn::Sequential, Vec<Param>) {
    build(ModelSpec::preset(name).expect("a preset model"))
}

/// The model in f32 with PyTorch's default initialization, and its parameters.
fn build(spec: ModelSpec) -> (gradflow_nn::Sequential, Vec<Param>) {
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

/// Adam at lr 1e-3 with PyTorch's other defaults, built as `gradflow train --optimizer adam` builds it.
fn adam() -> Box<dyn Optimizer> {
    optim::build(&OptimizerSpec::parse("adam", 1e-3).unwrap())
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
    let mut opt = adam();
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

/// An MLP `widths[0]-…-widths[last]` with ReLU between the Linear layers, on `[1, 28, 28]` input.
fn mlp(widths: &[usize]) -> (gradflow_nn::Sequential, Vec<Param>) {
    let mut toml = String::from("input = [1, 28, 28]\n[[layer]]\ntype = \"Flatten\"\n");
    for (i, w) in widths.iter().enumerate().skip(1) {
        toml += &format!("[[layer]]\ntype = \"Linear\"\nout_features = {w}\n");
        if i + 1 < widths.len() {
            toml += "[[layer]]\ntype = \"ReLU\"\n";
        }
    }
    build(ModelSpec::parse(&toml, "bench mlp").unwrap())
}

/// `--step-profile [WIDTHS|PRESET [BATCH]]` (e.g. `784,1024,1024,10 128` or `vit 64`): median time
/// of each phase of an MLP's (or a preset's) Adam training step, to see where a step goes.
/// GFLOP/s are printed for MLPs and LeNet-5.
fn step_profile(widths: &[usize], preset_name: &str, batch: usize) {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    // No widths: a preset (LeNet-5's products are counted as in bench/compare.sh).
    let (model, params, input) = if widths.is_empty() {
        let spec = ModelSpec::preset(preset_name).expect("a preset model");
        let input = spec.input.clone();
        let (model, params) = build(spec);
        (model, params, input)
    } else {
        let (model, params) = mlp(widths);
        (model, params, vec![1, 28, 28])
    };
    let mut opt = adam();
    let x = rand(&[&[batch][..], &input].concat(), 8);
    let y: Vec<usize> = (0..batch).map(|i| (i * 7) % 10).collect();
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 };
    let mut ctx = Ctx::train(0);
    let mut t = vec![Vec::new(); 5];
    for _ in 0..200 {
        let t0 = Instant::now();
        let out = model.forward(&x, &mut ctx).unwrap();
        let t1 = Instant::now();
        let l = loss.compute(&out, Target::Classes(&y)).unwrap();
        let t2 = Instant::now();
        let grads = l.backward().unwrap();
        let t3 = Instant::now();
        opt.step(&params, &grads).unwrap();
        let t4 = Instant::now();
        drop((grads, l, out));
        let t5 = Instant::now();
        for (v, d) in t.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]) {
            v.push(d.as_secs_f64() * 1e3);
        }
    }
    let names = ["forward", "loss", "backward", "adam", "drop"];
    let mut total = 0.0;
    for (n, v) in names.iter().zip(t) {
        let m = median(v);
        total += m;
        println!("{n:>10}: {m:.3} ms");
    }
    let flops: usize = if preset_name != "lenet5" {
        0
    } else if widths.is_empty() {
        batch * (2 * (2 * 6 * 784 * 25) + 3 * (2 * 16 * 100 * 150) + 3 * 2 * (400 * 120 + 120 * 84 + 84 * 10))
    } else {
        (1..widths.len())
            .map(|i| 2 * batch * widths[i - 1] * widths[i] * if i == 1 { 2 } else { 3 })
            .sum()
    };
    // Each layer's forward alone (with the graph recorded, as in training).
    let mut h = x.clone();
    for layer in &model.layers {
        let ms = median(
            (0..50)
                .map(|_| {
                    let t = Instant::now();
                    black_box(layer.forward(&h, &mut ctx).unwrap());
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        );
        h = layer.forward(&h, &mut ctx).unwrap();
        println!("{:>10}  {:<40} {ms:.3} ms", "", layer.describe());
    }
    // Products are counted for MLPs and LeNet-5 only; other presets print no GFLOP/s.
    let rate = match flops {
        0 => String::new(),
        f => format!(", {:.0} GFLOP/s of products", f as f64 / total / 1e6),
    };
    println!(
        "{:>10}: {total:.3} ms = {:.0} samples/s{rate}",
        "step",
        batch as f64 / total * 1e3
    );
}

/// Best GFLOP/s of five N×N×N f32 products.
fn product_gflops(a: &Tensor, b: &Tensor) -> f64 {
    let n = a.shape()[0] as f64;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(a.matmul(b).unwrap());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * n * n * n / best / 1e9
}

/// `--peak-drift [ROUNDS]`: the 2048³ product before and after bursts of training in the same
/// process, to tell state that training leaves behind (thread pool, allocator settings,
/// buffer pool) from a machine that is merely busier later.
fn peak_drift(rounds: usize) {
    let (a, b) = (rand(&[2048, 2048], 1), rand(&[2048, 2048], 2));
    let (model, params) = mlp(&[784, 1024, 1024, 10]);
    let mut opt = adam();
    let x = rand(&[128, 1, 28, 28], 8);
    let y: Vec<usize> = (0..128).map(|i| (i * 7) % 10).collect();
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 };
    let mut ctx = Ctx::train(0);
    for round in 0..rounds {
        let before = product_gflops(&a, &b);
        for _ in 0..300 {
            let l = loss
                .compute(&model.forward(&x, &mut ctx).unwrap(), Target::Classes(&y))
                .unwrap();
            opt.step(&params, &l.backward().unwrap()).unwrap();
        }
        let after = product_gflops(&a, &b);
        println!("round {round}: {before:.1} GFLOP/s before training, {after:.1} after");
    }
}

fn main() {
    // As in the CLI: this thread is one of the kernel threads (RAYON_NUM_THREADS, else all cores).
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    gradflow::set_num_threads_on_this_thread(threads);
    gradflow::keep_freed_memory();
    // As `gradflow train` does while it trains.
    let _awake = gradflow::keep_threads_awake();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--step-profile") {
        let arg = args.get(i + 1).map(String::as_str);
        let preset_name = arg.filter(|a| ModelSpec::preset(a).is_some()).unwrap_or("lenet5");
        let widths: Vec<usize> = match arg {
            Some(a) if ModelSpec::preset(a).is_some() => Vec::new(),
            w => w
                .map(|w| w.split(',').filter_map(|v| v.parse().ok()).collect())
                .filter(|w: &Vec<usize>| w.len() >= 2)
                .unwrap_or_else(|| vec![784, 800, 10]),
        };
        let batch = args.get(i + 2).and_then(|b| b.parse().ok()).unwrap_or(128);
        step_profile(&widths, preset_name, batch);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--peak-drift") {
        peak_drift(args.get(i + 1).and_then(|r| r.parse().ok()).unwrap_or(5));
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_train_step(&mut c);
    c.final_summary();
}
