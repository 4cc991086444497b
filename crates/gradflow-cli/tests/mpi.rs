//! `gradflow train` under `mpirun -np 2` (built with `--features mpi`; `.ci/run` runs these):
//! two processes train the same weights as one, only rank 0 writes, a killed
//! rank stops the run within 30 s with the checkpoint intact and resumable
//! at another process count, and bad combinations are refused before training.
#![cfg(feature = "mpi")]

use gradflow_nn::serialize::from_safetensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gradflow");

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/tables/iris.csv")
}

/// `mpirun` as CI runs it: as root, two processes on a machine with two cores or fewer.
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", &np.to_string()]);
    c
}

/// The flags of a small, deterministic iris run: SGD with momentum, L2 and clipping.
fn flags(out: &Path, epochs: usize) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--target",
        "species",
        "--threads",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--l2",
        "1e-3",
        "--clip-norm",
        "5",
        "--batch-size",
        "16",
        "--diagnostics-every",
        "0",
        // Each process draws its own dropout masks: no dropout, for the same weights.
        "--dropout",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend([
        "--epochs".into(),
        epochs.to_string(),
        "--data".into(),
        iris().display().to_string(),
    ]);
    v.extend(["--out".into(), out.display().to_string()]);
    v
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn weights(dir: &Path) -> Vec<(String, Vec<f64>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (w, _) = from_safetensors(&bytes, "weights").unwrap();
    let mut v: Vec<(String, Vec<f64>)> = w.into_iter().map(|(k, t)| (k, t.to_vec_f64())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn two_processes_with_half_a_batch_each_train_the_weights_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let o = Command::new(BIN).args(flags(&one, 4)).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = mpirun(2).arg(BIN).args(flags(&two, 4)).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("test accuracy").count(), 1, "rank 0 alone prints:\n{out}");
    assert!(out.contains("data-parallel over 2 processes"), "{out}");
    let mut worst = 0.0f64;
    for ((name, a), (other, b)) in weights(&one).iter().zip(weights(&two)) {
        assert_eq!(name, &other);
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
        }
    }
    // f32: the two halves' gradients are summed in another order than the
    // whole batch's, a few ulps a step that 32 steps of momentum carry into
    // the weights (measured 6e-8 on weights of order 0.1-1).
    assert!(worst < 1e-6, "weights differ by {worst}");
}

#[test]
fn only_rank_0_writes_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("rank0"), dir.path().join("rank1"));
    // One process per program (MPMD): same settings, each told another --out.
    let mut c = mpirun(1);
    c.arg(BIN)
        .args(flags(&a, 2))
        .args([":", "-np", "1", BIN])
        .args(flags(&b, 2));
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(a.join("checkpoint.safetensors").exists() && a.join("summary.json").exists());
    assert!(!b.exists(), "rank 1 wrote {}", b.display());
}

#[test]
fn bad_combinations_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut f = flags(&out, 1);
    f.extend(["--batch-size".into(), "1".into()]);
    let o = mpirun(2).arg(BIN).args(&f).output().unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("2 processes share each batch of 1 samples (--batch-size)"),
        "{}",
        text(&o)
    );
    assert!(!out.join("checkpoint.safetensors").exists());
    // 120 training rows in batches of 119 leave a last batch of one sample.
    let mut f = flags(&out, 1);
    f.extend(["--batch-size".into(), "119".into()]);
    let o = mpirun(2).arg(BIN).args(&f).output().unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the last batch of each epoch has 1 samples"),
        "{}",
        text(&o)
    );
}

/// The process of rank `rank` among `launcher`'s children.
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1));
        if ppid != Some(&launcher.to_string()) {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        if env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_stops_the_run_within_30_s_and_the_checkpoint_resumes_on_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut f = flags(&out, 100_000);
    f.extend(["--batch-size".into(), "2".into()]);
    let mut child = mpirun(2)
        .arg(BIN)
        .args(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let t0 = Instant::now();
    while !checkpoint.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let victim = rank_pid(child.id(), 1).expect("rank 1's process");
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let killed = Instant::now();
    let o = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if killed.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the run was still going 30 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("rank 1"), "the message names the rank:\n{err}");
    let ck = gradflow_train::checkpoint::load(&checkpoint).expect("the last checkpoint loads");
    let done = ck.meta.epoch;
    let more = (done + 2).to_string();
    let o = Command::new(BIN)
        .args(["train", "--threads", "1", "--resume"])
        .arg(&out)
        .args(["--epochs", &more])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let ck = gradflow_train::checkpoint::load(&checkpoint).unwrap();
    assert_eq!(ck.meta.epoch, done + 2);
}
