//! Each example runs to completion (cargo builds examples before tests).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/run_examples-xxx → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "example {name} failed:\n{text}");
    text
}

#[test]
fn xor_learns_and_prints_gradients() {
    let out = run("xor", &[]);
    assert!(out.contains("d loss / d 0.weight"), "{out}");
    assert!(out.contains("after 2000 steps"), "{out}");
}

#[test]
fn custom_module_passes_gradcheck() {
    let out = run("custom_module", &[]);
    assert!(out.contains("0.inner.weight"), "{out}");
    assert!(out.contains("gradcheck passed"), "{out}");
}

#[test]
fn mnist_mlp_quick_trains() {
    let out = run("mnist_mlp", &["--quick"]);
    assert!(out.contains("test accuracy"), "{out}");
}

#[test]
fn encoder_timing_runs() {
    let out = run("encoder_timing", &["1", "1"]);
    assert!(out.contains("2-layer encoder") && out.contains("backward"), "{out}");
}
