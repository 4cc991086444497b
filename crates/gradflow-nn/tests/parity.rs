//! Parity with PyTorch: every core op, whole models (MLPs with each activation,
//! a LeNet-5-style CNN, BatchNorm in train and eval mode, L1/L2 penalties), the
//! optimizers and the lr schedules, compared with reference values that PyTorch
//! computed (`tools/parity/make_fixtures.py`, committed under
//! `tests/fixtures/parity/`, so no PyTorch is needed here).
//!
//! Error measure: max |gradflow − torch| / max |torch| over a tensor. Tolerances:
//! 1e-9 in f64, 1e-4 in f32. Run with `--nocapture` to see the worst error of
//! every group.

use gradflow::ops::activation::Softplus;
use gradflow::{Conv2dParams, DType, GradStore, Pool2dParams, Tensor};
use gradflow_nn::optim::{self, OptimizerSpec, Param};
use gradflow_nn::schedule::{LrSchedule, PlateauConfig, PlateauMode, ReduceLrOnPlateau, ScheduleSpec, ThresholdMode};
use gradflow_nn::serialize::{from_safetensors, load_into, to_safetensors};
use gradflow_nn::{BuildOptions, Ctx, LayerSpec, Loss, ModelSpec, Module, Penalty, Target};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

const TOL_F64: f64 = 1e-9;
const TOL_F32: f64 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity")
}

fn read(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (regenerate with tools/parity/make_fixtures.py)", p.display()))
}

type Tensors = BTreeMap<String, Tensor>;

fn load(name: &str) -> (Tensors, HashMap<String, String>) {
    from_safetensors(&read(name), name).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest() -> Value {
    serde_json::from_slice(&read("manifest.json")).unwrap()
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => TOL_F64,
        DType::F32 => TOL_F32,
    }
}

fn dtype_of(name: &str) -> DType {
    match name {
        "f64" => DType::F64,
        "f32" => DType::F32,
        other => panic!("unknown dtype {other}"),
    }
}

/// max |got − want| / max |want| (the absolute error when `want` is all zeros);
/// infinite on a shape mismatch or a NaN.
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    rel_err_vec(&got.to_vec_f64(), &want.to_vec_f64())
}

/// max |got − want| (infinite on a shape mismatch or a NaN).
fn abs_err(got: &Tensor, want: &Tensor) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    got.to_vec_f64()
        .iter()
        .zip(want.to_vec_f64())
        .map(|(g, w)| (g - w).abs())
        .map(|e| if e.is_nan() { f64::INFINITY } else { e })
        .fold(0.0, f64::max)
}

fn rel_err_vec(got: &[f64], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let mut err: f64 = 0.0;
    let mut scale: f64 = 0.0;
    for (g, w) in got.iter().zip(want) {
        let e = (g - w).abs();
        if e.is_nan() {
            return f64::INFINITY;
        }
        err = err.max(e);
        scale = scale.max(w.abs());
    }
    if scale > 0.0 {
        err / scale
    } else {
        err
    }
}

/// Worst errors of one fixture group, printed as a table; fails listing every case over its tolerance.
struct Report {
    title: &'static str,
    rows: BTreeMap<String, Row>,
    failures: Vec<String>,
}

struct Row {
    cases: usize,
    worst: f64,
    at: String,
    tol: f64,
}

impl Report {
    fn new(title: &'static str) -> Report {
        Report {
            title,
            rows: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Record one comparison of `what` (case/tensor) under table row `row`.
    fn check(&mut self, row: &str, what: &str, err: f64, tol: f64) {
        let r = self.rows.entry(row.to_string()).or_insert(Row {
            cases: 0,
            worst: 0.0,
            at: String::new(),
            tol,
        });
        r.cases += 1;
        r.tol = r.tol.max(tol);
        if err > r.worst || r.at.is_empty() {
            r.worst = r.worst.max(err);
            r.at = what.to_string();
        }
        if err.is_nan() || err > tol {
            self.failures
                .push(format!("{what}: relative error {err:.3e} > {tol:.0e}"));
        }
    }

    fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    fn finish(self) {
        let mut s = format!(
            "\n== parity: {} ==\n{:<28} {:>5}  {:>10}  {:>6}  worst at\n",
            self.title, "group", "n", "worst err", "tol"
        );
        for (name, r) in &self.rows {
            s.push_str(&format!(
                "{name:<28} {:>5}  {:>10.2e}  {:>6.0e}  {}\n",
                r.cases, r.worst, r.tol, r.at
            ));
        }
        println!("{s}");
        assert!(
            self.failures.is_empty(),
            "{}: {} mismatch(es) with PyTorch:\n  {}",
            self.title,
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

// ------------------------------------------------------------------ ops

fn axes(a: &Value) -> Vec<isize> {
    a["axes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as isize)
        .collect()
}
fn int(a: &Value, k: &str) -> isize {
    a[k].as_i64().unwrap_or_else(|| panic!("argument {k}")) as isize
}
fn float(a: &Value, k: &str) -> f64 {
    a[k].as_f64().unwrap_or_else(|| panic!("argument {k}"))
}
fn boolean(a: &Value, k: &str) -> bool {
    a[k].as_bool().unwrap_or_else(|| panic!("argument {k}"))
}
fn pair(a: &Value, k: &str) -> (usize, usize) {
    let v = a[k].as_array().unwrap_or_else(|| panic!("argument {k}"));
    (v[0].as_u64().unwrap() as usize, v[1].as_u64().unwrap() as usize)
}

/// The gradflow op a fixture case names, applied to its inputs.
fn apply(op: &str, a: &Value, x: &[Tensor], idx: Option<(&[usize], &[usize])>) -> gradflow::Result<Tensor> {
    let idx_vals = || idx.expect("case has indices").0;
    Ok(match op {
        "add" => x[0].add(&x[1])?,
        "sub" => x[0].sub(&x[1])?,
        "mul" => x[0].mul(&x[1])?,
        "div" => x[0].div(&x[1])?,
        "maximum" => x[0].maximum(&x[1])?,
        "minimum" => x[0].minimum(&x[1])?,
        "neg" => x[0].neg(),
        "exp" => x[0].exp(),
        "log" => x[0].log(),
        "sqrt" => x[0].sqrt(),
        "abs" => x[0].abs(),
        "powf" => x[0].powf(float(a, "p")),
        "clamp" => x[0].clamp(float(a, "min"), float(a, "max")),
        "relu" => x[0].relu(),
        "leaky_relu" => x[0].leaky_relu(float(a, "negative_slope")),
        "elu" => x[0].elu(float(a, "alpha")),
        "selu" => x[0].selu(),
        "gelu" => x[0].gelu(),
        "gelu_tanh" => x[0].gelu_tanh(),
        "silu" => x[0].silu(),
        "sigmoid" => x[0].sigmoid(),
        "tanh" => x[0].tanh(),
        "softplus" => {
            let (beta, threshold) = (float(a, "beta"), float(a, "threshold"));
            if beta == 1.0 && threshold == 20.0 {
                x[0].softplus()
            } else {
                x[0].apply_unary(Softplus { beta, threshold })
            }
        }
        "softsign" => x[0].softsign(),
        "hardtanh" => x[0].hardtanh(float(a, "min"), float(a, "max")),
        "matmul" => x[0].matmul(&x[1])?,
        "linear" => x[0].linear(&x[1], x.get(2))?,
        "sum" => x[0].sum(&axes(a), boolean(a, "keepdim"))?,
        "mean" => x[0].mean(&axes(a), boolean(a, "keepdim"))?,
        "max" => x[0].max(&axes(a), boolean(a, "keepdim"))?,
        "min" => x[0].min(&axes(a), boolean(a, "keepdim"))?,
        "max_dim" => x[0].max(&[int(a, "axis")], boolean(a, "keepdim"))?,
        "min_dim" => x[0].min(&[int(a, "axis")], boolean(a, "keepdim"))?,
        "var" => x[0].var(&axes(a), boolean(a, "keepdim"), int(a, "correction") as usize)?,
        "reshape" => {
            let shape: Vec<usize> = a["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            x[0].reshape(&shape)?
        }
        "transpose" => x[0].transpose(int(a, "a"), int(a, "b"))?,
        "transpose_matmul" => x[0].t()?.matmul(&x[1])?,
        "narrow" => x[0].narrow(int(a, "axis"), int(a, "start") as usize, int(a, "len") as usize)?,
        "cat" => Tensor::cat(&x.iter().collect::<Vec<_>>(), int(a, "axis"))?,
        "stack" => Tensor::stack(&x.iter().collect::<Vec<_>>(), int(a, "axis"))?,
        "index_select" => x[0].index_select(int(a, "axis"), idx_vals())?,
        "gather" => {
            let (v, shape) = idx.expect("gather has indices");
            x[0].gather(int(a, "axis"), v, shape)?
        }
        "softmax" => x[0].softmax(int(a, "axis"))?,
        "log_softmax" => x[0].log_softmax(int(a, "axis"))?,
        "conv2d" => x[0].conv2d(
            &x[1],
            x.get(2),
            Conv2dParams {
                stride: pair(a, "stride"),
                padding: pair(a, "padding"),
                dilation: pair(a, "dilation"),
                groups: int(a, "groups") as usize,
            },
        )?,
        "max_pool2d" | "avg_pool2d" => {
            let p = Pool2dParams {
                kernel: pair(a, "kernel"),
                stride: pair(a, "stride"),
                padding: pair(a, "padding"),
            };
            if op == "max_pool2d" {
                x[0].max_pool2d(p)?
            } else {
                x[0].avg_pool2d(p)?
            }
        }
        "cross_entropy" => x[0].cross_entropy(idx_vals(), float(a, "label_smoothing"))?,
        other => panic!("fixture op '{other}' has no gradflow counterpart in this test"),
    })
}

fn to_indices(t: &Tensor) -> Vec<usize> {
    t.to_vec_f64().iter().map(|&v| v as usize).collect()
}

fn check_ops(dtype: DType, file: &str, min_cases: usize, title: &'static str) {
    let (t, meta) = load(file);
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).unwrap();
    assert!(cases.len() >= min_cases, "{file}: only {} cases", cases.len());
    let tol = tol(dtype);
    let mut rep = Report::new(title);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let op = c["op"].as_str().unwrap();
        let n = c["inputs"].as_u64().unwrap() as usize;
        let get = |k: &str| -> &Tensor { t.get(&format!("{name}/{k}")).unwrap_or_else(|| panic!("{name}/{k}")) };
        let xs: Vec<Tensor> = (0..n)
            .map(|i| get(&format!("x{i}")).copy().requires_grad_(true))
            .collect();
        assert!(xs.iter().all(|x| x.dtype() == dtype), "{name}: fixture dtype");
        let idx_t = c["has_idx"].as_bool().unwrap().then(|| get("idx"));
        let idx = idx_t.map(|i| (to_indices(i), i.shape().to_vec()));
        let out = match apply(op, &c["args"], &xs, idx.as_ref().map(|(v, s)| (&v[..], &s[..]))) {
            Ok(o) => o,
            Err(e) => {
                rep.fail(format!("{name}: gradflow error: {e}"));
                continue;
            }
        };
        rep.check(op, &format!("{name}/out"), rel_err(&out, get("out")), tol);
        let grads = out.mul(get("w")).and_then(|l| l.sum_all().backward());
        let grads = match grads {
            Ok(g) => g,
            Err(e) => {
                rep.fail(format!("{name}: backward error: {e}"));
                continue;
            }
        };
        for (i, x) in xs.iter().enumerate() {
            let want = get(&format!("g{i}"));
            let err = match grads.get(x) {
                Some(g) => rel_err(g, want),
                None if want.to_vec_f64().iter().all(|&v| v == 0.0) => 0.0,
                None => f64::INFINITY,
            };
            rep.check(op, &format!("{name}/grad{i}"), err, tol);
        }
    }
    rep.finish();
}

#[test]
fn ops_f64_match_pytorch() {
    check_ops(
        DType::F64,
        "ops_f64.safetensors",
        101,
        "ops, f64 (output and gradients)",
    );
}

#[test]
fn ops_f32_match_pytorch() {
    check_ops(
        DType::F32,
        "ops_f32.safetensors",
        101,
        "ops, f32 (output and gradients)",
    );
}

#[test]
fn tied_extrema_over_several_axes_match_pytorch() {
    check_ops(
        DType::F64,
        "ops_ties_f64.safetensors",
        10,
        "max/min with ties over several axes, f64 (torch.amax splits the gradient evenly)",
    );
}

// ------------------------------------------------------------------ models

struct ModelCase {
    name: String,
    dtype: DType,
    train: bool,
    label_smoothing: f64,
    l1: f64,
    l2: f64,
    accuracy: f64,
}

fn model_cases() -> Vec<ModelCase> {
    manifest()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ModelCase {
            name: m["name"].as_str().unwrap().to_string(),
            dtype: dtype_of(m["dtype"].as_str().unwrap()),
            train: m["mode"] == "train",
            label_smoothing: m["label_smoothing"].as_f64().unwrap(),
            l1: m["l1"].as_f64().unwrap(),
            l2: m["l2"].as_f64().unwrap(),
            accuracy: m["accuracy"].as_f64().unwrap(),
        })
        .collect()
}

fn spec(name: &str) -> ModelSpec {
    let file = format!("{name}.toml");
    let text = String::from_utf8(read(&file)).unwrap();
    ModelSpec::parse(&text, &file).unwrap_or_else(|e| panic!("{e}"))
}

fn build(name: &str, dtype: DType) -> gradflow_nn::Sequential {
    spec(name)
        .build(BuildOptions {
            dtype,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Parameters whose gradient is exactly zero by construction: the bias of a layer
/// followed by a train-mode BatchNorm, which subtracts it again with the batch mean.
/// Both frameworks return rounding noise there (1e-17 in f64), so those are
/// compared in absolute terms against the largest gradient of the model.
fn zero_by_construction(spec: &ModelSpec, train: bool) -> BTreeSet<String> {
    let bn = |l: &LayerSpec| matches!(l, LayerSpec::BatchNorm(_));
    spec.layers
        .windows(2)
        .enumerate()
        .filter(|(_, w)| train && bn(&w[1]))
        .map(|(i, _)| format!("{i}.bias"))
        .collect()
}

#[test]
fn models_match_pytorch() {
    let cases = model_cases();
    assert!(cases.len() >= 20);
    let mut rep = Report::new("models: output, loss, every gradient, BatchNorm running stats");
    for m in &cases {
        let tol = tol(m.dtype);
        let net = build(&m.name, m.dtype);
        let wfile = format!("{}.weights.safetensors", m.name);
        let (weights, _) = load(&wfile);
        load_into(&net.state_dict(), &weights, &wfile, false).unwrap_or_else(|e| panic!("{e}"));
        let (batch, _) = load(&format!("{}.batch.safetensors", m.name));
        let (want, _) = load(&format!("{}.expected.safetensors", m.name));
        let x = batch["input"].copy().requires_grad_(true);
        let labels = to_indices(&batch["target"]);
        let mut ctx = if m.train { Ctx::train(0) } else { Ctx::eval() };
        let out = net.forward(&x, &mut ctx).unwrap();
        let data_loss = Loss::CrossEntropy {
            label_smoothing: m.label_smoothing,
        }
        .compute(&out, Target::Classes(&labels))
        .unwrap();
        let loss = match (Penalty { l1: m.l1, l2: m.l2 })
            .term(&net.named_penalty_targets())
            .unwrap()
        {
            Some(p) => data_loss.add(&p).unwrap(),
            None => data_loss.clone(),
        };
        let grads = loss.backward().unwrap();
        let row = format!(
            "{} {} {}",
            m.name.split('_').next().unwrap(),
            if m.train { "train" } else { "eval" },
            m.dtype
        );
        let mut worst = (0.0f64, String::new());
        let mut check = |rep: &mut Report, what: &str, err: f64| {
            if err > worst.0 || worst.1.is_empty() {
                worst = (err.max(worst.0), what.to_string());
            }
            rep.check(&row, &format!("{}/{what}", m.name), err, tol);
        };
        check(&mut rep, "out", rel_err(&out, &want["out"]));
        check(&mut rep, "data_loss", rel_err(&data_loss, &want["data_loss"]));
        check(&mut rep, "loss", rel_err(&loss, &want["loss"]));
        let mut expected_grads: BTreeSet<&str> = want
            .keys()
            .filter_map(|k| k.strip_prefix("grad/"))
            .filter(|k| *k != "input")
            .collect();
        let zero = zero_by_construction(&spec(&m.name), m.train);
        let scale = want
            .iter()
            .filter(|(k, _)| k.starts_with("grad/") && *k != "grad/input")
            .flat_map(|(_, t)| t.to_vec_f64())
            .fold(0.0f64, |a, v| a.max(v.abs()));
        for p in net.parameters() {
            assert!(
                expected_grads.remove(p.name.as_str()),
                "{}: parameter {} not in PyTorch's model",
                m.name,
                p.name
            );
            let reference = &want[&format!("grad/{}", p.name)];
            let err = match grads.get(&p.tensor) {
                None => f64::INFINITY,
                Some(g) if zero.contains(&p.name) => abs_err(g, reference) / scale,
                Some(g) => rel_err(g, reference),
            };
            check(&mut rep, &format!("grad/{}", p.name), err);
        }
        assert!(
            expected_grads.is_empty(),
            "{}: gradflow lacks {expected_grads:?}",
            m.name
        );
        let gx = grads.get(&x).map_or(f64::INFINITY, |g| rel_err(g, &want["grad/input"]));
        check(&mut rep, "grad/input", gx);
        for b in net.buffers() {
            let err = rel_err(&b.tensor, &want[&format!("state/{}", b.name)]);
            check(&mut rep, &format!("state/{}", b.name), err);
        }
        // Same predictions as PyTorch on this batch.
        let pred = out.argmax(1).unwrap();
        let acc = pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64;
        if acc != m.accuracy {
            rep.fail(format!("{}: accuracy {acc} but PyTorch's is {}", m.name, m.accuracy));
        }
        println!("  {:<26} worst {:.2e} at {}", m.name, worst.0, worst.1);
    }
    rep.finish();
}

/// The safetensors header entries (name → dtype, shape) of a file.
fn header(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (format!("{:?}", v.dtype()), v.shape().to_vec())))
        .collect()
}

/// gradflow writes the names, shapes and dtypes that PyTorch's `state_dict` has
/// (the weights files were written by `save_file(model.state_dict())`), so a
/// gradflow file loads with `load_state_dict(strict=True)`.
#[test]
fn state_dicts_have_pytorch_names_shapes_and_dtypes() {
    for m in model_cases() {
        let net = build(&m.name, m.dtype);
        let ours = header(&to_safetensors(&net.state_dict(), None).unwrap());
        let torch = header(&read(&format!("{}.weights.safetensors", m.name)));
        assert_eq!(ours, torch, "{}: gradflow's state_dict differs from PyTorch's", m.name);
    }
}

// ------------------------------------------------------------------ gradflow -> PyTorch

const FROM_GRADFLOW: &str = "from_gradflow_mlp";

fn from_gradflow_net() -> gradflow_nn::Sequential {
    build(FROM_GRADFLOW, DType::F64)
}

/// Writes `from_gradflow_mlp.safetensors` (a gradflow state_dict after one
/// training-mode forward, so the BatchNorm statistics are not the defaults) and
/// `from_gradflow_mlp.check.safetensors` (an input and gradflow's eval output).
/// `make_fixtures.py` loads the first into PyTorch with `strict=True` and
/// compares outputs. Run once after changing the format, then rerun the script:
/// `cargo test -p gradflow-nn --test parity -- --ignored write_from_gradflow_fixture`
#[test]
#[ignore = "writes fixtures; run by hand, then rerun tools/parity/make_fixtures.py"]
fn write_from_gradflow_fixture() {
    let net = from_gradflow_net();
    let mut rng = gradflow::seeded_rng(7);
    let warm = Tensor::rand_normal(&[16, 12], 0.5, 2.0, DType::F64, &mut rng);
    net.forward(&warm, &mut Ctx::train(0)).unwrap();
    let x = Tensor::rand_normal(&[6, 12], 0.0, 1.5, DType::F64, &mut rng);
    let y = net.forward(&x, &mut Ctx::eval()).unwrap();
    let dir = fixtures();
    std::fs::write(
        dir.join(format!("{FROM_GRADFLOW}.safetensors")),
        to_safetensors(&net.state_dict(), None).unwrap(),
    )
    .unwrap();
    let check = [("input", x), ("output", y.detach())].map(|(n, t)| gradflow_nn::NamedTensor {
        name: n.into(),
        tensor: t,
    });
    std::fs::write(
        dir.join(format!("{FROM_GRADFLOW}.check.safetensors")),
        to_safetensors(&check, None).unwrap(),
    )
    .unwrap();
}

/// The committed gradflow-written file: PyTorch loaded it with strict=True and
/// reproduced gradflow's outputs (recorded in manifest.json by make_fixtures.py),
/// and gradflow still writes the same names, shapes and dtypes today.
#[test]
fn gradflow_weights_load_into_pytorch() {
    let fg = &manifest()["from_gradflow"];
    assert!(
        fg.is_object(),
        "manifest.json has no from_gradflow check: run the ignored write_from_gradflow_fixture test, then make_fixtures.py"
    );
    let err = fg["rel_err"].as_f64().unwrap();
    assert!(err < 1e-12, "PyTorch's outputs differed by {err}");
    let file = read(&format!("{FROM_GRADFLOW}.safetensors"));
    let committed = header(&file);
    let torch_names: BTreeSet<String> = fg["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(committed.keys().cloned().collect::<BTreeSet<_>>(), torch_names);
    let net = from_gradflow_net();
    assert_eq!(header(&to_safetensors(&net.state_dict(), None).unwrap()), committed);
    // And it reads back into gradflow with the same outputs.
    let (w, _) = from_safetensors(&file, FROM_GRADFLOW).unwrap();
    load_into(&net.state_dict(), &w, FROM_GRADFLOW, false).unwrap();
    let (chk, _) = load(&format!("{FROM_GRADFLOW}.check.safetensors"));
    let y = net.forward(&chk["input"], &mut Ctx::eval()).unwrap();
    assert!(rel_err(&y, &chk["output"]) < 1e-14);
}

// ------------------------------------------------------------------ optimizers

#[test]
fn optimizers_match_pytorch() {
    let (t, meta) = load("optim.safetensors");
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).unwrap();
    assert!(cases.len() >= 12);
    let mut rep = Report::new("optimizers: parameters after each of 5 steps");
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let spec: OptimizerSpec = serde_json::from_value(c["spec"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        spec.validate().unwrap();
        let steps = c["steps"].as_u64().unwrap() as usize;
        let lrs: Option<Vec<f64>> = serde_json::from_value(c["lrs"].clone()).unwrap();
        for dt in ["f64", "f32"] {
            let dtype = dtype_of(dt);
            let params: Vec<Param> = ["w", "b"]
                .iter()
                .map(|k| Param::new(*k, t[&format!("{name}/{dt}/init/{k}")].copy().requires_grad_(true)))
                .collect();
            let mut opt = optim::build(&spec);
            let mut worst = 0.0f64;
            for step in 0..steps {
                if let Some(lrs) = &lrs {
                    opt.set_lr(lrs[step]);
                }
                let mut grads = GradStore::default();
                for p in &params {
                    grads.insert(&p.tensor, t[&format!("{name}/grad{step}/{}", p.name)].to_dtype(dtype));
                }
                opt.step(&params, &grads).unwrap();
                for p in &params {
                    let err = rel_err(&p.tensor, &t[&format!("{name}/{dt}/step{step}/{}", p.name)]);
                    worst = worst.max(err);
                    rep.check(
                        &format!("{} {dt}", spec.name()),
                        &format!("{name} {dt} step {} {}", step + 1, p.name),
                        err,
                        tol(dtype),
                    );
                }
            }
            println!("  {name:<34} {dt} worst {worst:.2e}");
        }
    }
    rep.finish();
}

// ------------------------------------------------------------------ schedules

#[test]
fn schedules_match_pytorch() {
    let doc: Value = serde_json::from_slice(&read("schedules.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut rep = Report::new("lr schedules: lr after every step");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let base = c["base_lr"].as_f64().unwrap();
        let mut sched: Box<dyn LrSchedule> = if c["spec"].is_null() {
            let p = &c["plateau"];
            Box::new(ReduceLrOnPlateau::new(
                base,
                PlateauConfig {
                    mode: if p["mode"] == "max" {
                        PlateauMode::Max
                    } else {
                        PlateauMode::Min
                    },
                    factor: p["factor"].as_f64().unwrap(),
                    patience: p["patience"].as_u64().unwrap() as usize,
                    threshold: p["threshold"].as_f64().unwrap(),
                    threshold_mode: if p["threshold_mode"] == "abs" {
                        ThresholdMode::Abs
                    } else {
                        ThresholdMode::Rel
                    },
                    cooldown: p["cooldown"].as_u64().unwrap() as usize,
                    min_lr: p["min_lr"].as_f64().unwrap(),
                    eps: 1e-8,
                },
            ))
        } else {
            let spec: ScheduleSpec =
                serde_json::from_value(c["spec"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            spec.validate().unwrap();
            spec.build(base)
        };
        let want: Vec<f64> = serde_json::from_value(c["lrs"].clone()).unwrap();
        let metrics: Option<Vec<f64>> = serde_json::from_value(c["metrics"].clone()).unwrap();
        let mut got = vec![sched.lr()];
        for i in 0..want.len() - 1 {
            got.push(sched.step(metrics.as_ref().map(|m| m[i])));
        }
        // Per step, relative to that step's lr: a late small lr must match too.
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| rel_err_vec(&[*g], &[*w]))
            .fold(0.0, f64::max);
        if err > TOL_F64 {
            rep.fail(format!("{name}: gradflow {got:?}\n    torch    {want:?}"));
        }
        rep.check(sched.name(), name, err, TOL_F64);
    }
    rep.finish();
}

/// Small, ill-conditioned batches through two train-mode BatchNorms (2d then
/// 1d) in f32: a batch of 2, and a batch with a large mean and a small spread.
/// Measured against f64 gradients from the same rounded weights and batch,
/// gradflow must be as close as PyTorch, which accumulates BatchNorm's sums in
/// double: within 2× of PyTorch's own error.
#[test]
fn ill_conditioned_batchnorm_f32_is_as_close_to_f64_as_pytorch() {
    let cases = manifest()["ill_conditioned"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (e_ours, e_torch) = f32_error_against_f64(name);
        println!("{name}: f32 gradients vs f64: gradflow {e_ours:.2e}, PyTorch {e_torch:.2e}");
        assert!(
            e_ours <= 2.0 * e_torch.max(1e-6),
            "{name}: gradflow {e_ours:.2e} vs PyTorch {e_torch:.2e}"
        );
    }
}

/// (gradflow's, PyTorch's) relative error of all f32 parameter gradients
/// against the fixture's f64 reference.
fn f32_error_against_f64(name: &str) -> (f64, f64) {
    let net = build(name, DType::F32);
    let wfile = format!("{name}.weights.safetensors");
    let (weights, _) = load(&wfile);
    load_into(&net.state_dict(), &weights, &wfile, false).unwrap();
    let (batch, _) = load(&format!("{name}.batch.safetensors"));
    let (want, _) = load(&format!("{name}.expected.safetensors"));
    let labels = to_indices(&batch["target"]);
    let out = net.forward(&batch["input"], &mut Ctx::train(0)).unwrap();
    let loss = Loss::CrossEntropy { label_smoothing: 0.0 }
        .compute(&out, Target::Classes(&labels))
        .unwrap();
    let grads = loss.backward().unwrap();
    let (mut ours, mut theirs, mut refs) = (Vec::new(), Vec::new(), Vec::new());
    for p in net.parameters() {
        ours.extend(grads.get(&p.tensor).unwrap().to_vec_f64());
        theirs.extend(want[&format!("grad/{}", p.name)].to_vec_f64());
        refs.extend(want[&format!("ref64/grad/{}", p.name)].to_vec_f64());
    }
    (rel_err_vec(&ours, &refs), rel_err_vec(&theirs, &refs))
}
