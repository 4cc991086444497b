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
