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
    preset("mlp")
}

fn preset(name: &str) -> (gradflow_nn::Sequential, Vec<Param>) {
    let spec = ModelSpec::preset(name).expect("a preset model");
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

/// An MLP `widths[0]-…-widths[last]` with ReLU between the Linear layers, on `[1, 28, 28]` input.
fn mlp(widths: &[usize]) -> (gradflow_nn::Sequential, Vec<Param>) {
    let mut toml = String::from("input = [1, 28, 28]\n[[layer]]\ntype = \"Flatten\"\n");
    for (i, w) in widths.iter().enumerate().skip(1) {
        toml += &format!("[[layer]]\ntype = \"Linear\"\nout_features = {w}\n");
        if i + 1 < widths.len() {
            toml += "[[layer]]\ntype = \"ReLU\"\n";
        }
    }
    let spec = ModelSpec::parse(&toml, "bench mlp").unwrap();
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

/// `--step-profile [WIDTHS|lenet5 [BATCH]]` (e.g. `784,1024,1024,10 128`): median time of each
/// phase of an MLP's (or LeNet-5's) Adam training step, to see where a step goes.
fn step_profile(widths: &[usize], batch: usize) {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    // No widths: LeNet-5 (its products are counted as in bench/compare.sh).
    let (model, params) = if widths.is_empty() {
        preset("lenet5")
    } else {
        mlp(widths)
    };
    let mut opt = Adam::new(1e-3, (0.9, 0.999), 1e-8, 0.0, false);
    let x = rand(&[batch, 1, 28, 28], 8);
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
    let flops: usize = if widths.is_empty() {
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
    println!(
        "{:>10}: {total:.3} ms = {:.0} samples/s, {:.0} GFLOP/s of products",
        "step",
        batch as f64 / total * 1e3,
        flops as f64 / total / 1e6
    );
}

/// A strided operand for [`strategy_gemm`]: buffer, row stride, column stride.
type Operand<'a> = (&'a [f32], isize, isize);

/// dst[m, n] (row-major) = a·b with one of several threading strategies:
/// 0 = the gemm crate's own threads, 1 = one thread, 2 = split dst columns over
/// the threads, 3 = split dst rows over the threads.
fn strategy_gemm(strategy: u8, m: usize, n: usize, k: usize, dst: &mut [f32], a: Operand, b: Operand) {
    let t = rayon::current_num_threads();
    let ld = n as isize;
    let call = |m: usize, n: usize, dst: usize, ao: usize, bo: usize, par: gemm::Parallelism| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst as *mut f32,
            1,
            ld,
            false,
            a.0.as_ptr().add(ao),
            a.2,
            a.1,
            b.0.as_ptr().add(bo),
            b.2,
            b.1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    };
    let d = dst.as_mut_ptr() as usize;
    if strategy >= 6 {
        // Column-major scratch result (the gemm crate then keeps a as its lhs), transposed after.
        let mut ct = vec![0.0f32; m * n];
        let par = if strategy == 6 {
            gemm::Parallelism::Rayon(t)
        } else {
            gemm::Parallelism::None
        };
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                ct.as_mut_ptr(),
                m as isize,
                1,
                false,
                a.0.as_ptr(),
                a.2,
                a.1,
                b.0.as_ptr(),
                b.2,
                b.1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        };
        for j0 in (0..n).step_by(8) {
            for i in 0..m {
                for j in j0..(j0 + 8).min(n) {
                    dst[i * n + j] = ct[j * m + i];
                }
            }
        }
        return;
    }
    if strategy >= 4 {
        // Copy b into a row-major k×n scratch first (tiled transpose), then multiply.
        let mut bt = vec![0.0f32; k * n];
        let tt = Instant::now();
        for i0 in (0..k).step_by(8) {
            for j0 in (0..n).step_by(8) {
                for i in i0..(i0 + 8).min(k) {
                    for j in j0..(j0 + 8).min(n) {
                        bt[i * n + j] = b.0[i * b.1 as usize + j * b.2 as usize];
                    }
                }
            }
        }
        if std::env::var("SHOW_T").is_ok() {
            eprintln!("transpose {k}x{n}: {:.3} ms", tt.elapsed().as_secs_f64() * 1e3);
        }
        let par = if strategy == 4 {
            gemm::Parallelism::Rayon(t)
        } else {
            gemm::Parallelism::None
        };
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                ld,
                false,
                a.0.as_ptr(),
                a.2,
                a.1,
                bt.as_ptr(),
                1,
                n as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        };
        return;
    }
    match strategy {
        0 => call(m, n, d, 0, 0, gemm::Parallelism::Rayon(t)),
        1 => call(m, n, d, 0, 0, gemm::Parallelism::None),
        2 => {
            let cols = n.div_ceil(t).next_multiple_of(16);
            rayon::scope(|s| {
                for j0 in (0..n).step_by(cols) {
                    let w = cols.min(n - j0);
                    s.spawn(move |_| call(m, w, d + 4 * j0, 0, j0 * b.2 as usize, gemm::Parallelism::None));
                }
            });
        }
        _ => {
            let rows = m.div_ceil(t);
            rayon::scope(|s| {
                for i0 in (0..m).step_by(rows) {
                    let h = rows.min(m - i0);
                    s.spawn(move |_| call(h, n, d + 4 * i0 * n, i0 * a.1 as usize, 0, gemm::Parallelism::None));
                }
            });
        }
    }
}

/// `--gemm-shapes`: the products of the benchmark models' Linear layers under each threading strategy.
fn gemm_shapes() {
    fn best(v: Vec<f64>) -> f64 {
        v.into_iter().fold(f64::INFINITY, f64::min)
    }
    // (label, m, n, k, a transposed?, b transposed?)
    let shapes: &[(&str, usize, usize, usize, bool, bool)] = &[
        ("fwd 128x784->800", 128, 800, 784, false, true),
        ("dW 800x784 (N=128)", 800, 784, 128, true, false),
        ("dX 128x800x784", 128, 784, 800, false, false),
        ("fwd 64x784->128", 64, 128, 784, false, true),
        ("dW 128x784 (N=64)", 128, 784, 64, true, false),
        ("fwd 32x784->800", 32, 800, 784, false, true),
        ("dW 800x784 (N=32)", 800, 784, 32, true, false),
        ("fwd 128x1024->1024", 128, 1024, 1024, false, true),
        ("dW 1024x1024 (N=128)", 1024, 1024, 128, true, false),
        ("dX 128x1024x1024", 128, 1024, 1024, false, false),
    ];
    for &(label, m, n, k, ta, tb) in shapes {
        let a = rand(&[m * k], 1).to_vec::<f32>().unwrap();
        let b = rand(&[k * n], 2).to_vec::<f32>().unwrap();
        // a: m×k, stored row-major or as its transpose; same for b.
        let ao: Operand = if ta { (&a, 1, m as isize) } else { (&a, k as isize, 1) };
        let bo: Operand = if tb { (&b, 1, k as isize) } else { (&b, n as isize, 1) };
        let mut dst = vec![0.0f32; m * n];
        let mut line = format!("{label:>22}:");
        for st in 0..8u8 {
            if st >= 4 && !tb {
                continue;
            }
            let ms = best(
                (0..40)
                    .map(|_| {
                        let t = Instant::now();
                        strategy_gemm(st, m, n, k, &mut dst, ao, bo);
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect(),
            );
            line += &format!("  s{st} {:6.1}", 2.0 * (m * n * k) as f64 / ms / 1e6);
        }
        println!("{line}   GFLOP/s ");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--gemm-shapes") {
        gemm_shapes();
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--step-profile") {
        let widths: Vec<usize> = match args.get(i + 1).map(String::as_str) {
            Some("lenet5") => Vec::new(),
            w => w
                .map(|w| w.split(',').filter_map(|v| v.parse().ok()).collect())
                .filter(|w: &Vec<usize>| w.len() >= 2)
                .unwrap_or_else(|| vec![784, 800, 10]),
        };
        let batch = args.get(i + 2).and_then(|b| b.parse().ok()).unwrap_or(128);
        step_profile(&widths, batch);
        return;
    }
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
