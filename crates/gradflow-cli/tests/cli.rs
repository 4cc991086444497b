//! The `gradflow` binary end to end: training on a subset, resume, eval,
//! predict, grad, and every user error path (non-zero exit, one-line cause,
//! never a panic).

use assert_cmd::Command;
use std::path::Path;

fn gradflow() -> Command {
    Command::cargo_bin("gradflow").unwrap()
}

fn repo_data() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist")
        .display()
        .to_string()
}

fn quick_train(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    let mut cmd = gradflow();
    cmd.args([
        "train",
        "--limit-train",
        "2000",
        "--limit-test",
        "500",
        "--threads",
        "2",
        "--data",
        &repo_data(),
    ])
    .arg("--out")
    .arg(out)
    .args(extra);
    cmd.assert()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn trains_a_subset_to_85_percent_and_writes_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    quick_train(&out, &["--epochs", "3"]).success();
    for f in [
        "metrics.jsonl",
        "summary.json",
        "model.toml",
        "checkpoint.safetensors",
        "model.safetensors",
        "diagnostics.jsonl",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let s = summary(&out);
    assert!(s["test_accuracy"].as_f64().unwrap() >= 0.85, "{s}");
    for key in [
        "test_loss",
        "epochs",
        "train_seconds",
        "samples_per_second",
        "best_epoch",
        "parameters",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}");
    }
    assert_eq!(s["parameters"].as_u64().unwrap(), 636_010);
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    // eval reproduces the test accuracy from the run directory.
    let o = gradflow()
        .args(["eval"])
        .arg(&out)
        .args(["--data", &repo_data(), "--limit", "500"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&o.get_output().stdout).to_string();
    let acc = format!("accuracy {:.2}%", s["test_accuracy"].as_f64().unwrap() * 100.0);
    assert!(text.contains(&acc), "{text}\nwanted {acc}");
    assert!(text.contains("confusion matrix"));
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let args = ["--val-split", "0.1", "--dropout", "0.2", "--schedule", "cosine"];
    quick_train(&a, &[&["--epochs", "3"][..], &args[..]].concat()).success();
    quick_train(
        &b,
        &[&["--epochs", "3"][..], &args[..], &["--epochs", "1"][..]].concat(),
    )
    .success();
    gradflow()
        .args([
            "train",
            "--threads",
            "2",
            "--data",
            &repo_data(),
            "--epochs",
            "3",
            "--resume",
        ])
        .arg(&b)
        .assert()
        .success();
    let (ma, mb) = (
        std::fs::read_to_string(a.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(b.join("metrics.jsonl")).unwrap(),
    );
    let strip = |s: &str| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v.as_object_mut().unwrap().remove("samples_per_second");
                v
            })
            .collect()
    };
    assert_eq!(strip(&ma), strip(&mb));
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
}

#[test]
fn weights_load_back_for_predict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    quick_train(&out, &["--epochs", "1"]).success();
    // A black 28×28 PGM with a white vertical bar: a "1".
    let mut pgm = b"P5 28 28 255\n".to_vec();
    for r in 0..28 {
        for c in 0..28 {
            pgm.push(if (13..16).contains(&c) && (4..24).contains(&r) {
                255
            } else {
                0
            });
        }
    }
    let img = dir.path().join("one.pgm");
    std::fs::write(&img, pgm).unwrap();
    let o = gradflow().arg("predict").arg(&out).arg(&img).assert().success();
    let text = String::from_utf8_lossy(&o.get_output().stdout).to_string();
    assert!(text.contains("top-3"), "{text}");
    // The same weights through --model/--weights.
    gradflow()
        .args(["predict", "--model", "mlp", "--weights"])
        .arg(out.join("model.safetensors"))
        .arg(&img)
        .assert()
        .success();
}

fn assert_user_error(args: &[&str], code: i32, needle: &str) {
    let o = gradflow().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.contains(needle), "{args:?}: expected '{needle}' in: {err}");
}

#[test]
fn user_errors_exit_nonzero_with_a_cause() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad_model = d.join("bad.toml");
    std::fs::write(
        &bad_model,
        "input = [1, 28, 28]\n[[layer]]\ntype = \"Linear\"\nout_features = 10\n",
    )
    .unwrap();
    let unknown_layer = d.join("unknown.toml");
    std::fs::write(&unknown_layer, "input = [784]\n[[layer]]\ntype = \"Dense\"\n").unwrap();
    let not_toml = d.join("x.toml");
    std::fs::write(&not_toml, "input = [").unwrap();
    let bad_lstm = d.join("lstm.toml");
    std::fs::write(
        &bad_lstm,
        "input = [28, 28]\n[[layer]]\ntype = \"LSTM\"\nhidden_size = 8\noutput = \"all\"\n",
    )
    .unwrap();
    let flat_gru = d.join("gru.toml");
    std::fs::write(&flat_gru, "input = [784]\n[[layer]]\ntype = \"GRU\"\nhidden_size = 8\n").unwrap();
    let corrupt = d.join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(corrupt.join(f), [0u8, 0, 8, 1, 0, 0, 0, 1]).unwrap();
    }
    let file_as_dir = d.join("file");
    std::fs::write(&file_as_dir, "x").unwrap();
    let data = repo_data();
    let s = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["train".into(), "--bogus".into()], 2, "--bogus"),
        (vec!["train".into(), "--epochs".into(), "-1".into()], 2, "--epochs"),
        (
            vec!["train".into(), "--epochs".into(), "0".into()],
            1,
            "--epochs must be at least 1",
        ),
        (
            vec!["train".into(), "--batch-size".into(), "0".into()],
            1,
            "--batch-size must be at least 1",
        ),
        (
            vec!["train".into(), "--lr".into(), "NaN".into()],
            1,
            "--lr must be a positive number",
        ),
        (vec!["train".into(), "--lr".into(), "1e9".into()], 1, "--lr"),
        (vec!["train".into(), "--optimizer".into(), "adamax".into()], 1, "adamax"),
        (
            vec!["train".into(), "--activation".into(), "swishy".into()],
            1,
            "--activation swishy",
        ),
        (
            vec!["train".into(), "--init".into(), "magic".into()],
            1,
            "unknown initializer 'magic'",
        ),
        (
            vec!["train".into(), "--schedule".into(), "zigzag".into()],
            1,
            "--schedule",
        ),
        (
            vec!["train".into(), "--dropout".into(), "1.5".into()],
            1,
            "--dropout must be in [0, 1)",
        ),
        (vec!["train".into(), "--val-split".into(), "1".into()], 1, "--val-split"),
        (
            vec!["train".into(), "--early-stopping".into(), "3".into()],
            1,
            "--early-stopping needs a validation set",
        ),
        (
            vec!["train".into(), "--model".into(), "resnet".into()],
            1,
            "--model resnet: no such preset",
        ),
        (
            vec![
                "train".into(),
                "--model".into(),
                s(&bad_model),
                "--data".into(),
                data.clone(),
            ],
            1,
            "layer 0 (Linear): expects a flat input",
        ),
        (
            vec!["train".into(), "--model".into(), s(&unknown_layer)],
            1,
            "unknown layer type 'Dense'",
        ),
        (vec!["train".into(), "--model".into(), s(&not_toml)], 1, "invalid TOML"),
        (
            vec!["train".into(), "--model".into(), s(&bad_lstm)],
            1,
            "layer 0 (LSTM): 'output' must be \"sequence\" or \"last\"",
        ),
        (
            vec![
                "train".into(),
                "--model".into(),
                s(&flat_gru),
                "--data".into(),
                data.clone(),
            ],
            1,
            "layer 0 (GRU): expects a sequence [steps, features]",
        ),
        (
            vec!["train".into(), "--data".into(), s(&empty)],
            1,
            "train-images-idx3-ubyte",
        ),
        (vec!["train".into(), "--data".into(), s(&corrupt)], 1, "magic"),
        (
            vec![
                "train".into(),
                "--data".into(),
                data.clone(),
                "--limit-train".into(),
                "100".into(),
                "--out".into(),
                s(&file_as_dir.join("run")),
            ],
            1,
            "run directory",
        ),
        (
            vec!["train".into(), "--resume".into(), s(&empty)],
            1,
            "no checkpoint.safetensors",
        ),
        (
            vec!["train".into(), "--threads".into(), "0".into()],
            1,
            "--threads must be at least 1",
        ),
        (vec!["eval".into(), s(&empty)], 1, "not a run directory"),
        (
            vec!["eval".into(), "--model".into(), "mlp".into()],
            1,
            "--model needs --weights",
        ),
        (
            vec![
                "eval".into(),
                "--model".into(),
                "mlp".into(),
                "--weights".into(),
                s(&not_toml),
            ],
            1,
            "not a valid safetensors file",
        ),
        (vec!["predict".into()], 2, "required"),
        (vec!["grad".into(), "--model".into(), "mlp".into()], 2, "--weights"),
    ];
    for (args, code, needle) in cases {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        assert_user_error(&refs, code, needle);
    }
}

#[test]
fn damaged_checkpoint_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    quick_train(&out, &["--epochs", "1"]).success();
    let ck = out.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x55;
    std::fs::write(&ck, &bytes).unwrap();
    assert_user_error(
        &[
            "train",
            "--epochs",
            "2",
            "--resume",
            out.to_str().unwrap(),
            "--data",
            &repo_data(),
        ],
        1,
        "checksum mismatch",
    );
    std::fs::write(&ck, &bytes[..n / 2]).unwrap();
    assert_user_error(
        &[
            "train",
            "--epochs",
            "2",
            "--resume",
            out.to_str().unwrap(),
            "--data",
            &repo_data(),
        ],
        1,
        "checkpoint.safetensors",
    );
}

#[test]
fn divergence_stops_at_the_first_non_finite_loss() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = quick_train(
        &out,
        &[
            "--epochs",
            "2",
            "--lr",
            "900",
            "--optimizer",
            "sgd",
            "--schedule",
            "constant",
        ],
    )
    .failure();
    let err = String::from_utf8_lossy(&o.get_output().stderr).to_string();
    assert!(err.contains("non-finite loss"), "{err}");
    assert!(!err.contains("panicked"));
    let s = summary(&out);
    assert_eq!(s["stopped"], "non_finite_loss");
}
