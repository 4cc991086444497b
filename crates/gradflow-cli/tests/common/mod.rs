//! Helpers shared by the CLI tests that train on a user's data (tables, image folders).

use assert_cmd::Command;
use std::path::Path;

pub fn gradflow() -> Command {
    Command::cargo_bin("gradflow").unwrap()
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `gradflow train --data DATA --out OUT --threads 1 EXTRA…`, which must succeed.
pub fn train(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--threads", "1"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}
