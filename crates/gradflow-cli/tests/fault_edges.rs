//! Issue 18's fault edges: non-finite weights without a non-finite loss,
//! hyperparameters no one can mean, a run directory whose two weight files a
//! kill left one epoch apart, and non-finite metrics.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn gradflow() -> Command {
    Command::cargo_bin("gradflow").unwrap()
}

fn repo_data() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist")
        .display()
        .to_string()
}

fn train(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    gradflow()
        .args(["train", "--limit-train", "500", "--limit-test", "200", "--threads", "1"])
        .args(["--data", &repo_data()])
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).to_string()
}

#[test]
fn a_weight_decay_that_overflows_the_weights_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let a = train(
        &out,
        &["--epochs", "1", "--optimizer", "adamw", "--weight-decay", "1e308"],
    )
    .code(1);
    let err = stderr_of(&a);
    // The parameters are scanned every 16 steps and before each checkpoint, the
    // loss every step: here the next step's loss is the first to see the NaN
    // weights, and the message names the parameter that holds them.
    assert!(err.contains("parameter '1.weight'"), "{err}");
    assert!(err.contains("non-finite"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let stopped = summary["stopped"].as_str().unwrap();
    assert!(
        ["non_finite_loss", "non_finite_parameter"].contains(&stopped),
        "{stopped}"
    );
    // It diverged in its first step: no epoch ended, so no weights were written.
    assert!(!out.join("model.safetensors").exists());
    assert!(!out.join("checkpoint.safetensors").exists());
}

#[test]
fn impossible_hyperparameters_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (flag, value, message) in [
        ("--lr", "-1", "--lr must be a positive number, got -1"),
        ("--lr", "NaN", "--lr must be a positive number, got NaN"),
        (
            "--weight-decay",
            "-0.1",
            "--weight-decay must be a non-negative number, got -0.1",
        ),
        (
            "--weight-decay",
            "inf",
            "--weight-decay must be a non-negative number, got inf",
        ),
        (
            "--momentum",
            "-0.5",
            "--momentum must be a non-negative number, got -0.5",
        ),
        ("--momentum", "NaN", "--momentum must be a non-negative number, got NaN"),
    ] {
        let a = train(&out, &[flag, value]).code(1);
        let err = stderr_of(&a);
        assert!(err.contains(message), "{flag} {value}: {err}");
        assert!(!out.exists(), "{flag} {value}: a run directory was created");
    }
}

#[test]
fn eval_uses_the_checkpoints_epoch_when_a_kill_left_the_weights_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    train(&out, &["--epochs", "1"]).success();
    let epoch_one = std::fs::read(out.join("model.safetensors")).unwrap();
    gradflow()
        .args([
            "train",
            "--threads",
            "1",
            "--data",
            &repo_data(),
            "--epochs",
            "2",
            "--resume",
        ])
        .arg(&out)
        .assert()
        .success();
    let eval = || {
        gradflow()
            .args(["eval", "--threads", "1", "--limit", "200", "--data", &repo_data()])
            .arg(&out)
            .assert()
            .success()
    };
    let intact = eval();
    // What a kill between the checkpoint's write and the weights file's leaves.
    std::fs::write(out.join("model.safetensors"), epoch_one).unwrap();
    let behind = eval();
    assert_eq!(stdout_of(&behind), stdout_of(&intact));
    let note = stderr_of(&behind);
    assert!(
        note.contains("model.safetensors holds the weights of epoch 1 but checkpoint.safetensors those of epoch 2"),
        "{note}"
    );
    assert!(stderr_of(&intact).is_empty(), "{}", stderr_of(&intact));
}

#[test]
fn eval_prints_non_finite_losses_as_nan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    train(&out, &["--epochs", "1"]).success();
    // Poison one weight of the finished run.
    let path = out.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (mut tensors, _) = gradflow_nn::serialize::from_safetensors(&bytes, "w").unwrap();
    let w = tensors.get_mut("3.bias").unwrap();
    let mut v = w.to_vec::<f32>().unwrap();
    v[0] = f32::NAN;
    *w = gradflow::Tensor::from_vec(v, w.shape()).unwrap();
    let named: Vec<gradflow_nn::NamedTensor> = tensors
        .into_iter()
        .map(|(name, tensor)| gradflow_nn::NamedTensor { name, tensor })
        .collect();
    let weights = dir.path().join("poisoned.safetensors");
    std::fs::write(&weights, gradflow_nn::serialize::to_safetensors(&named, None).unwrap()).unwrap();
    let a = gradflow()
        .args([
            "eval",
            "--threads",
            "1",
            "--limit",
            "50",
            "--data",
            &repo_data(),
            "--model",
            "mlp",
        ])
        .arg("--weights")
        .arg(&weights)
        .assert()
        .success();
    let text = stdout_of(&a);
    assert!(text.starts_with("test loss NaN "), "{text}");
}

#[test]
fn grad_refuses_label_smoothing_it_cannot_apply() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity");
    let dir = tempfile::tempdir().unwrap();
    let f = |ext: &str| fixtures.join(format!("mlp_tanh_ls_f64.{ext}"));
    for (extra, message) in [
        (vec!["--label-smoothing", "1.5"], "--label-smoothing must be at most 1"),
        (
            vec!["--label-smoothing=-0.1"],
            "--label-smoothing must be a non-negative number, got -0.1",
        ),
        (
            vec!["--label-smoothing", "0.1", "--loss", "mse"],
            "--label-smoothing applies to the cross_entropy loss only",
        ),
    ] {
        let a = gradflow()
            .arg("grad")
            .arg("--model")
            .arg(f("toml"))
            .arg("--weights")
            .arg(f("weights.safetensors"))
            .arg("--batch")
            .arg(f("batch.safetensors"))
            .arg("--out")
            .arg(dir.path().join("g.safetensors"))
            .args(&extra)
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(message), "{extra:?}: {err}");
        assert!(!dir.path().join("g.safetensors").exists());
    }
}
