//! `gradflow grad` against PyTorch: the binary runs on each fixture model of
//! `tests/fixtures/parity/` (PyTorch's weights, batch and model TOML, written by
//! `tools/parity/make_fixtures.py`) and its loss and gradients are compared with
//! the ones PyTorch computed. Error: max |gradflow − torch| / max |torch| per
//! tensor; tolerance 1e-9 in f64, 1e-4 in f32.

use assert_cmd::Command;
use gradflow::{DType, Tensor};
use gradflow_nn::serialize::from_safetensors;
use gradflow_nn::{LayerSpec, ModelSpec};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity")
}

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    from_safetensors(&bytes, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |a, x| a.max(x.abs()))
}

/// max |got − want| / `scale` (max |want| unless given); infinite on a shape mismatch or NaN.
fn err(got: &Tensor, want: &Tensor, scale: Option<f64>) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    let (g, w) = (got.to_vec_f64(), want.to_vec_f64());
    let mut e: f64 = 0.0;
    for (a, b) in g.iter().zip(&w) {
        let d = (a - b).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        e = e.max(d);
    }
    let s = scale.unwrap_or_else(|| max_abs(&w));
    if s > 0.0 {
        e / s
    } else {
        e
    }
}

/// Biases followed by a train-mode BatchNorm have gradient exactly 0; both sides return
/// rounding noise, compared against the model's largest gradient instead.
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
fn gradflow_grad_matches_pytorch() {
    let dir = fixtures();
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut table = String::from("\n== parity: gradflow grad vs PyTorch ==\nmodel                       mode   dtype  worst err   tol    worst at\n");
    let mut ran = BTreeSet::new();
    for m in manifest["models"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let mode = m["mode"].as_str().unwrap();
        let (l1, l2) = (m["l1"].as_f64().unwrap(), m["l2"].as_f64().unwrap());
        let label_smoothing = m["label_smoothing"].as_f64().unwrap();
        let tol = if m["dtype"] == "f64" { 1e-9 } else { 1e-4 };
        let f = |ext: &str| dir.join(format!("{name}.{ext}"));
        let out = tmp.path().join(format!("{name}.grads.safetensors"));
        let mut cmd = Command::cargo_bin("gradflow").unwrap();
        cmd.arg("grad")
            .arg("--model")
            .arg(f("toml"))
            .arg("--weights")
            .arg(f("weights.safetensors"))
            .arg("--batch")
            .arg(f("batch.safetensors"))
            .args(["--loss", "cross_entropy", "--mode", mode])
            .arg("--out")
            .arg(&out);
        if l1 != 0.0 || l2 != 0.0 {
            cmd.args(["--l1", &l1.to_string(), "--l2", &l2.to_string()]);
        }
        if label_smoothing != 0.0 {
            cmd.args(["--label-smoothing", &label_smoothing.to_string()]);
        }
        cmd.assert().success();

        let got = load(&out);
        let want = load(&f("expected.safetensors"));
        let spec = ModelSpec::parse(&std::fs::read_to_string(f("toml")).unwrap(), name).unwrap();
        let zero = zero_by_construction(&spec, mode == "train");
        let grad_scale = want
            .iter()
            .filter(|(k, _)| k.starts_with("grad/") && *k != "grad/input")
            .map(|(_, t)| max_abs(&t.to_vec_f64()))
            .fold(0.0, f64::max);
        // Exactly the names PyTorch has: the loss, every parameter, the input.
        let want_names: BTreeSet<String> = want
            .keys()
            .filter_map(|k| k.strip_prefix("grad/").map(str::to_string))
            .chain(["loss".to_string()])
            .collect();
        let got_names: BTreeSet<String> = got.keys().cloned().collect();
        if got_names != want_names {
            failures.push(format!(
                "{name}: gradflow wrote {got_names:?}, PyTorch has {want_names:?}"
            ));
            continue;
        }
        let mut worst = (0.0f64, String::new());
        for (k, g) in &got {
            let (reference, scale) = match k.as_str() {
                "loss" => (&want["loss"], None),
                p if zero.contains(p) => (&want[&format!("grad/{p}")], Some(grad_scale)),
                p => (&want[&format!("grad/{p}")], None),
            };
            let e = err(g, reference, scale);
            if e > worst.0 || worst.1.is_empty() {
                worst = (e.max(worst.0), k.clone());
            }
            if e.is_nan() || e > tol {
                failures.push(format!("{name}: {k}: relative error {e:.3e} > {tol:.0e}"));
            }
        }
        // The precision follows the weights file, as PyTorch's did.
        let dtype = got["loss"].dtype();
        assert_eq!(
            dtype,
            if m["dtype"] == "f64" { DType::F64 } else { DType::F32 },
            "{name}"
        );
        table.push_str(&format!(
            "{name:<27} {mode:<6} {:<5}  {:>9.2e}  {tol:>5.0e}  {}\n",
            m["dtype"].as_str().unwrap(),
            worst.0,
            worst.1
        ));
        ran.insert(name.to_string());
    }
    println!("{table}");
    for required in [
        "mlp_relu_f64",
        "mlp_penalty_f64",
        "lenet_f32",
        "bn2d_train_f64",
        "bn2d_train_penalty_f32",
        "mlp_tanh_ls_f64",
        "bn2d_train_ls_penalty_f32",
    ] {
        assert!(
            ran.contains(required),
            "fixture model {required} missing from manifest.json"
        );
    }
    assert!(
        failures.is_empty(),
        "gradflow grad disagrees with PyTorch:\n  {}",
        failures.join("\n  ")
    );
}
