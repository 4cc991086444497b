//! Golden runs: short seeded trainings whose metrics were recorded from the
//! code before the trainer was reshaped (issue 12). The same seed and thread
//! count must keep giving exactly these numbers, so any refactor of the fit
//! loop, the training step or the penalties that changes the arithmetic fails
//! here. (Re-recorded once, after main summed whole tensors in f64 for issue
//! 18.1: that moved only the reported penalty and weight norm in their last
//! digits; the trained weights stayed bit-identical.)

use gradflow_data::{Dataset, Targets};
use gradflow_nn::ModelSpec;
use gradflow_train::{DataSource, EpochMetrics, Silent, StopReason, Summary, TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

const MNIST_MODEL: &str = "input = [784]
[[layer]]
type = \"Linear\"
out_features = 32
[[layer]]
type = \"ReLU\"
[[layer]]
type = \"Linear\"
out_features = 10
";

const TINY_MODEL: &str = "input = [4]
[[layer]]
type = \"Linear\"
out_features = 8
[[layer]]
type = \"Tanh\"
[[layer]]
type = \"Linear\"
out_features = 3
";

fn one_thread() {
    // Reductions split over threads sum in a different order: the recorded
    // numbers are for one thread.
    gradflow::set_num_threads(1);
}

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

/// Every metric that does not depend on the clock, with full precision.
fn fingerprint(history: &[EpochMetrics], summary: &Summary, weights: &[f64]) -> String {
    let mut s = String::new();
    for m in history {
        s += &format!(
            "epoch {} loss {:?} data {:?} pen {:?} acc {:?} val {:?} {:?} lr {:?} sparsity {:?} norm {:?}\n",
            m.epoch,
            m.train_loss,
            m.train_data_loss,
            m.train_penalty,
            m.train_accuracy,
            m.val_loss,
            m.val_accuracy,
            m.lr,
            m.weight_sparsity,
            m.weight_norm
        );
    }
    let sum: f64 = weights.iter().sum();
    let sum_sq: f64 = weights.iter().map(|w| w * w).sum();
    s += &format!(
        "test {:?} {:?} best {} stopped {} weights {:?} {:?}",
        summary.test_loss, summary.test_accuracy, summary.best_epoch, summary.stopped, sum, sum_sq
    );
    s
}

fn weights_of(t: &Trainer) -> Vec<f64> {
    t.model
        .state_dict()
        .iter()
        .flat_map(|p| p.tensor.to_vec_f64())
        .collect()
}

fn mnist_config() -> TrainConfig {
    TrainConfig {
        model: "golden.toml".into(),
        epochs: 2,
        batch_size: 64,
        lr: 1e-3,
        optimizer: "adam".into(),
        l1: 1e-5,
        l2: 1e-4,
        dropout: Some(0.2),
        val_split: 0.1,
        max_norm: Some(3.0),
        clip_norm: Some(1.0),
        limit_train: Some(2000),
        limit_test: Some(500),
        diagnostics_every: 10,
        seed: 7,
        ..TrainConfig::default()
    }
}

const MNIST_GOLDEN: &str = "\
epoch 1 loss 1.631516514153316 data 1.625143723241214 pen 0.006372790912102009 acc 0.49166666666666664 val Some(0.9007581472396851) Some(0.82) lr 0.001 sparsity 0.027629093198992444 norm 4.0792606277996\n\
epoch 2 loss 0.9238936058406172 data 0.916949514685006 pen 0.006944091155611235 acc 0.7416666666666667 val Some(0.64432692527771) Some(0.855) lr 0.0005 sparsity 0.028849181360201512 norm 4.276128113678575\n\
test 0.8082323670387268 0.796 best 2 stopped completed weights -59.67813880072163 18.425001348828552";

#[test]
fn mnist_adam_l1_l2_dropout_run_keeps_its_recorded_metrics() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let config = mnist_config();
    let spec = ModelSpec::parse(MNIST_MODEL, "golden.toml").unwrap().with_dropout(0.2);
    let mut t = Trainer::new(config, spec, DataSource::Mnist(mnist_dir()), dir.path()).unwrap();
    let summary = t.fit(&mut Silent, &AtomicBool::new(false)).unwrap();
    let got = fingerprint(t.history(), &summary, &weights_of(&t));
    assert_eq!(got, MNIST_GOLDEN, "\nactual:\n{got}\n");
}

/// Four Gaussian-ish blobs in 4-d, three classes, from a fixed LCG.
pub fn tiny_data(n: usize, seed: u64) -> Dataset {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
    };
    let mut features = Vec::with_capacity(n * 4);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 3;
        for d in 0..4 {
            let centre = if d == c { 1.5 } else { 0.0 };
            features.push(centre + next());
        }
        labels.push(c);
    }
    Dataset::new(features, vec![4], Targets::Classes { labels, num_classes: 3 }).unwrap()
}

fn tiny_source() -> DataSource {
    DataSource::Datasets {
        train: tiny_data(90, 1),
        val: Some(tiny_data(30, 2)),
        test: tiny_data(30, 3),
    }
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        model: "tiny.toml".into(),
        epochs: 3,
        batch_size: 16,
        lr: 0.05,
        optimizer: "sgd".into(),
        momentum: 0.9,
        nesterov: true,
        l1: 1e-3,
        l2: 1e-3,
        dropout: Some(0.1),
        schedule: "cosine".into(),
        early_stopping: Some(5),
        clip_value: Some(0.5),
        diagnostics_every: 2,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn tiny_spec() -> ModelSpec {
    ModelSpec::parse(TINY_MODEL, "tiny.toml").unwrap().with_dropout(0.1)
}

const TINY_GOLDEN: &str = "\
epoch 1 loss 1.069991131623586 data 1.0547950267791748 pen 0.015196104844411215 acc 0.4 val Some(0.8235161304473877) Some(1.0) lr 0.05 sparsity 0.0 norm 1.8928246273605156\n\
epoch 2 loss 0.7234815160433451 data 0.7062528232733408 pen 0.017228692770004272 acc 1.0 val Some(0.5109502077102661) Some(1.0) lr 0.037500000000000006 sparsity 0.0 norm 2.287477354552529\n\
epoch 3 loss 0.4945424596468608 data 0.4738890677690506 pen 0.02065339187781016 acc 1.0 val Some(0.414390504360199) Some(1.0) lr 0.012500000000000006 sparsity 0.0 norm 2.4812076939740426\n\
test 0.3958893120288849 1.0 best 3 stopped completed weights 0.01502853143028915 6.641521691092991";

#[test]
fn tiny_sgd_run_interrupted_and_resumed_keeps_its_recorded_metrics() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(tiny_config(), tiny_spec(), tiny_source(), dir.path()).unwrap();
    // Stop after the first step: the checkpoint then holds a partial epoch.
    let first = t.fit(&mut Silent, &AtomicBool::new(true)).unwrap();
    assert_eq!(first.stopped, StopReason::Interrupted);
    let mut t = Trainer::resume(dir.path(), tiny_source(), None).unwrap();
    let summary = t.fit(&mut Silent, &AtomicBool::new(false)).unwrap();
    let got = fingerprint(t.history(), &summary, &weights_of(&t));
    assert_eq!(got, TINY_GOLDEN, "\nactual:\n{got}\n");
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interrupted_run_v1")
}

/// The fixture is the run directory [`tiny_config`]'s run left when stopped
/// after its first step, written by the code of commit c8400a0, before the
/// checkpoint's partial-epoch sums became a struct: it must keep resuming to
/// the same numbers as a run started today.
#[test]
fn checkpoint_written_by_the_first_format_still_resumes() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    for f in ["checkpoint.safetensors", "model.safetensors", "model.toml"] {
        std::fs::copy(fixture_dir().join(f), dir.path().join(f)).unwrap();
    }
    let mut t = Trainer::resume(dir.path(), tiny_source(), None).unwrap();
    let summary = t.fit(&mut Silent, &AtomicBool::new(false)).unwrap();
    let got = fingerprint(t.history(), &summary, &weights_of(&t));
    assert_eq!(got, TINY_GOLDEN, "\nactual:\n{got}\n");
}
