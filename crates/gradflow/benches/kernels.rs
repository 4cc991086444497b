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
//! * `linear/IN_OUT_bN` — `Tensor::linear` forward (with bias) of the benchmark MLPs' layers.
//! * `elementwise/relu_1m`, `elementwise/add_1m` — one op over 2^20 f32 elements (elements/s).
//! * `layer_norm/vit_b64` — `Tensor::layer_norm` with γ and β over the last axis of the `vit`
//!   preset's f32 activations [64, 28, 64], forward alone and forward + backward (elements/s).
//!
//! Whole models (a training step, `--step-profile`) are benchmarked above the layers, in
//! `crates/gradflow-bench`: `cargo bench -p gradflow-bench`.
//!
//! Other modes (criterion is skipped):
//! * `-- --peak [N]`: the best GFLOP/s of gradflow's f32 product at N×N×N (default 2048),
//!   as one line of JSON, for `bench/compare.sh`;
//! * `-- --gemm-shapes`: the benchmark MLPs' products in each orientation.

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use gradflow::{seeded_rng, Conv2dParams, DType, Tensor};
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F32, &mut seeded_rng(seed))
}

fn gemm_parallelism(n: usize) -> gemm::Parallelism {
    // What gradflow's wrapper picks for a product this size.
    let t = rayon::current_num_threads();
    if n * n * n >= gradflow::kernels::gemm::GEMM_PAR_THRESHOLD && t > 1 {
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
    // LeNet-5's two convolutions at batch 64: conv1 (1→6, 5×5, padding 2, 28×28; its
    // input needs no gradient) and conv2 (6→16, 5×5, 14×14 → 10×10).
    for (name, c_in, o, hw, pad, input_grad) in [("lenet1", 1, 6, 28, 2, false), ("lenet2", 6, 16, 14, 0, true)] {
        let out_hw = (hw + 2 * pad - 4) as u64;
        let products = 2 * 64 * o as u64 * (c_in * 25) as u64 * out_hw * out_hw;
        let x = rand(&[64, c_in, hw, hw], 3).requires_grad_(input_grad);
        let w = rand(&[o, c_in, 5, 5], 4).mul_scalar(0.2).requires_grad_(true);
        let bias = rand(&[o], 5).requires_grad_(true);
        let p = Conv2dParams {
            padding: (pad, pad),
            ..Conv2dParams::default()
        };
        // forward, dW and (when the input needs it) dX: products of the same size.
        g.throughput(Throughput::Elements(products * if input_grad { 3 } else { 2 }));
        g.bench_function(format!("{name}_b64_fwd_bwd"), |bch| {
            bch.iter(|| {
                let y = x.conv2d(&w, Some(&bias), p).unwrap();
                black_box(y.sum_all().backward().unwrap())
            })
        });
        g.throughput(Throughput::Elements(products));
        let xd = x.detach();
        let (wd, bd) = (w.detach(), bias.detach());
        g.bench_function(format!("{name}_b64_fwd"), |bch| {
            bch.iter(|| black_box(xd.conv2d(&wd, Some(&bd), p).unwrap()))
        });
    }
    g.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    // (batch, in, out): the benchmark MLPs' layers; 800→10 takes the narrow-output path.
    for (nb, nin, nout) in [(128, 784, 800), (32, 784, 800), (128, 1024, 1024), (128, 800, 10)] {
        g.throughput(Throughput::Elements(2 * (nb * nin * nout) as u64));
        let (x, w, b) = (rand(&[nb, nin], 9), rand(&[nout, nin], 10), rand(&[nout], 11));
        g.bench_function(format!("{nin}_{nout}_b{nb}"), |bch| {
            bch.iter(|| black_box(x.linear(&w, Some(&b)).unwrap()))
        });
    }
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

fn bench_layer_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer_norm");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let x = rand(&[64, 28, 64], 8).requires_grad_(true);
    let (w, b) = (
        rand(&[64], 9).requires_grad_(true),
        rand(&[64], 10).requires_grad_(true),
    );
    let seed = rand(&[64, 28, 64], 11);
    g.throughput(Throughput::Elements(x.numel() as u64));
    let forward = || x.layer_norm(&[64], Some(&w), Some(&b), 1e-5).unwrap();
    g.bench_function("vit_b64_forward", |bch| bch.iter(|| black_box(forward())));
    g.bench_function("vit_b64_forward_backward", |bch| {
        bch.iter(|| black_box(forward().backward_with(&seed).unwrap()))
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

/// A strided f32 operand: buffer, row stride, column stride.
type Operand<'a> = (&'a [f32], isize, isize);

/// One product of a layer: name, m, n, k, both operands, and gradflow's op computing it.
type Product<'a> = (
    &'static str,
    usize,
    usize,
    usize,
    Operand<'a>,
    Operand<'a>,
    Box<dyn Fn() + 'a>,
);

/// dst = a·b through the gemm crate on one thread, dst row-major (`col_major = false`,
/// leading dimension n) or column-major (leading dimension m).
fn one_thread_gemm(m: usize, n: usize, k: usize, dst: &mut [f32], col_major: bool, a: Operand, b: Operand) {
    let (dst_cs, dst_rs) = if col_major { (m as isize, 1) } else { (1, n as isize) };
    // SAFETY: the operands address m×k, k×n and m×n elements of live buffers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
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
            gemm::Parallelism::None,
        )
    }
}

/// `--gemm-shapes`: the products of the benchmark MLPs' Linear layers, best of 40, in GFLOP/s:
/// the gemm crate on one thread with a row-major result (how a product `x·Wᵀ` is naturally
/// called: the crate then repacks W, with 4 KiB-strided reads when `in` is a power of two),
/// the same with a column-major result (the orientation `Tensor::linear` uses: W is read in
/// place), and gradflow's op itself (`Tensor::linear` / `Tensor::matmul`, all threads).
fn gemm_shapes() {
    fn best(f: &mut dyn FnMut()) -> f64 {
        (0..40)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }
    // (label, N, in, out): a Linear layer's three products.
    let layers: &[(&str, usize, usize, usize)] = &[
        ("784-128, N=64", 64, 784, 128),
        ("784-800, N=32", 32, 784, 800),
        ("784-800, N=128", 128, 784, 800),
        ("784-1024, N=128", 128, 784, 1024),
        ("1024-1024, N=128", 128, 1024, 1024),
    ];
    println!(
        "{:>18} {:>8} {:>14} {:>14} {:>14}",
        "layer", "product", "1T row-major", "1T col-major", "gradflow op"
    );
    for &(label, nb, nin, nout) in layers {
        let x = rand(&[nb, nin], 1);
        let w = rand(&[nout, nin], 2);
        let g = rand(&[nb, nout], 3);
        let (xv, wv, gv) = (
            x.to_vec::<f32>().unwrap(),
            w.to_vec::<f32>().unwrap(),
            g.to_vec::<f32>().unwrap(),
        );
        let gt = g.t().unwrap();
        // (name, m, n, k, a, b, gradflow's op)
        let products: [Product; 3] = [
            (
                "y=x·Wᵀ",
                nb,
                nout,
                nin,
                (&xv, nin as isize, 1),
                (&wv, 1, nin as isize),
                Box::new(|| drop(black_box(x.linear(&w, None).unwrap()))),
            ),
            (
                "dW=gᵀ·x",
                nout,
                nin,
                nb,
                (&gv, 1, nout as isize),
                (&xv, nin as isize, 1),
                Box::new(|| drop(black_box(gt.matmul(&x).unwrap()))),
            ),
            (
                "dX=g·W",
                nb,
                nin,
                nout,
                (&gv, nout as isize, 1),
                (&wv, nin as isize, 1),
                Box::new(|| drop(black_box(g.matmul(&w).unwrap()))),
            ),
        ];
        for (name, m, n, k, a, b, op) in products {
            let gf = |secs: f64| 2.0 * (m * n * k) as f64 / secs / 1e9;
            let mut dst = vec![0.0f32; m * n];
            let row = best(&mut || one_thread_gemm(m, n, k, &mut dst, false, a, b));
            let col = best(&mut || one_thread_gemm(m, n, k, &mut dst, true, a, b));
            let ours = best(&mut || op());
            println!(
                "{label:>18} {name:>8} {:>14.1} {:>14.1} {:>14.1}",
                gf(row),
                gf(col),
                gf(ours)
            );
        }
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
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--gemm-shapes") {
        gemm_shapes();
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
    bench_linear(&mut c);
    bench_elementwise(&mut c);
    bench_layer_norm(&mut c);
    c.final_summary();
}
