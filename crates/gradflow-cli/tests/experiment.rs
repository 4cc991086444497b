//! `gradflow experiment … --quick` writes every artifact and shows the effects it is about.

use assert_cmd::Command;
use std::path::Path;

fn data() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist")
        .display()
        .to_string()
}

#[test]
fn quick_activations_study_writes_table_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("act");
    Command::cargo_bin("gradflow")
        .unwrap()
        .args([
            "experiment",
            "activations",
            "--quick",
            "--threads",
            "2",
            "--data",
            &data(),
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    for f in [
        "activations.csv",
        "activations.json",
        "activations.md",
        "activations_grad_norms.png",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let png = std::fs::read(out.join("activations_grad_norms.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("activations.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    // Sigmoid's gradient shrinks on the way back far more than ReLU's with He init.
    let ratio = |act: &str, init: &str| {
        rows.iter()
            .find(|r| r["activation"] == act && r["init"] == init)
            .unwrap()["grad_ratio_init"]
            .as_f64()
            .unwrap()
    };
    assert!(ratio("Sigmoid", "xavier") < ratio("ReLU", "he") / 10.0, "{rows:?}");
}

#[test]
fn quick_regularization_study_writes_table_and_curves() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reg");
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args([
            "experiment",
            "regularization",
            "--quick",
            "--threads",
            "2",
            "--data",
            &data(),
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&o.get_output().stdout).to_string();
    assert!(text.contains("| L1 (λ₁=1e-4) |"), "{text}");
    for f in [
        "regularization.csv",
        "regularization.json",
        "regularization.md",
        "regularization_val_loss.png",
        "regularization_train_loss.png",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("regularization.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 7);
    let get = |name: &str, key: &str| {
        rows.iter()
            .find(|r| r["name"].as_str().unwrap().starts_with(name))
            .unwrap()[key]
            .as_f64()
            .unwrap()
    };
    // L1 leaves more near-zero weights than no regularization at all.
    assert!(get("L1 (", "sparsity") > get("none", "sparsity"));
}

#[test]
fn quick_depth_study_writes_a_row_per_variant_and_depth() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("depth");
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args([
            "experiment",
            "depth",
            "--quick",
            "--threads",
            "2",
            "--data",
            &data(),
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&o.get_output().stdout).to_string();
    assert!(text.contains("| residual ReLU + BN | 4 |"), "{text}");
    for f in [
        "depth.csv",
        "depth.json",
        "depth.md",
        "depth_train_loss.png",
        "depth_grad_ratio.png",
        "depth_test_accuracy.png",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("depth.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    // Six variants at the quick depths 2 and 4, each trained for the quick 2 epochs to finite numbers.
    assert_eq!(rows.len(), 12);
    for r in rows {
        assert!([2, 4].contains(&r["depth"].as_u64().unwrap()), "{r}");
        assert_eq!(r["train_loss"].as_array().unwrap().len(), 2, "{r}");
        for key in [
            "grad_ratio_init",
            "grad_ratio_trained",
            "train_loss_final",
            "test_accuracy",
        ] {
            assert!(r[key].as_f64().is_some_and(f64::is_finite), "{key} in {r}");
        }
    }
    let get = |variant: &str, depth: u64| {
        rows.iter()
            .find(|r| r["variant"] == variant && r["depth"] == depth)
            .unwrap_or_else(|| panic!("no row for {variant} at depth {depth}"))
    };
    // A plain net and its residual twin have the same parameters; the residual one
    // keeps the first layer's gradient far larger than sigmoid's plain stack does.
    assert_eq!(
        get("plain ReLU", 4)["parameters"],
        get("residual ReLU", 4)["parameters"]
    );
    let ratio = |v: &str| get(v, 4)["grad_ratio_init"].as_f64().unwrap();
    assert!(ratio("residual Sigmoid") > ratio("plain Sigmoid") * 5.0, "{rows:?}");
    let md = std::fs::read_to_string(out.join("depth.md")).unwrap();
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| plain ") || l.starts_with("| residual "))
            .count(),
        12 + 2 * 6
    );
}

#[test]
fn bad_experiment_arguments_fail_cleanly() {
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args(["experiment", "dropout"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args(["experiment", "activations", "--depth", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--depth"));
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args(["experiment", "depth", "--depths", "4,0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--depths"));
}

#[test]
fn quick_memory_study_writes_table_curves_and_gradients_through_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mem");
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args(["experiment", "memory", "--quick", "--threads", "2", "--out"])
        .arg(&out)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&o.get_output().stdout).to_string();
    assert!(text.contains("| LSTM | 10 |"), "{text}");
    for f in [
        "memory.csv",
        "memory.json",
        "memory.md",
        "memory_curves_t5.png",
        "memory_grad_t5.png",
        "memory_curves_t10.png",
        "memory_grad_t10.png",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("memory.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        let steps = r["steps"].as_u64().unwrap() as usize;
        assert_eq!(r["grad_norms_init"].as_array().unwrap().len(), steps);
        assert_eq!(r["grad_norms_trained"].as_array().unwrap().len(), steps);
        assert!((r["baseline_mse"].as_f64().unwrap() - 1.0 / 6.0).abs() < 0.05, "{r}");
    }
}

#[test]
fn memory_study_refuses_a_sequence_too_short_to_hold_both_markers() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("gradflow")
        .unwrap()
        .args(["experiment", "memory", "--quick", "--lengths", "10,1", "--out"])
        .arg(dir.path())
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).to_string();
    assert!(err.contains("--lengths") && err.contains("got 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
