//! Regression tests for checkpoints: each case here once lost a run (a
//! checkpoint written fine that could not be read back, damage that went
//! unnoticed, partial files left behind) or crashed the loader (found by the
//! fuzz targets in `fuzz/` and the CLI reliability tests).

use gradflow::{DType, Tensor};
use gradflow_nn::optim::OptimizerState;
use gradflow_nn::schedule::ScheduleState;
use gradflow_nn::{BuildOptions, ModelSpec};
use gradflow_train::checkpoint::{self, CheckpointMeta, CHECKPOINT_FILE};
use gradflow_train::{EpochMetrics, EpochSums, TrainConfig};
use std::collections::BTreeMap;
use std::path::Path;

const MODEL: &str = "input = [2]\n[[layer]]\ntype = \"Linear\"\nout_features = 3\n";

fn meta(history: Vec<EpochMetrics>, best: Option<(f64, usize)>) -> CheckpointMeta {
    CheckpointMeta {
        version: 1,
        epoch: history.len(),
        step_in_epoch: 0,
        global_step: 7,
        rng_word_pos: 0,
        model_toml: MODEL.into(),
        config: TrainConfig::default(),
        optimizer_kind: String::new(),
        optimizer_step: 0,
        optimizer_scalars: BTreeMap::new(),
        schedule: ScheduleState {
            kind: "constant".into(),
            last_epoch: 1,
            scalars: BTreeMap::from([("base_lr".into(), 0.01)]),
            inner: None,
        },
        history,
        best,
        partial: EpochSums::default(),
        checksum: 0,
    }
}

fn save(dir: &Path, meta: CheckpointMeta) {
    let net = ModelSpec::parse(MODEL, "m")
        .unwrap()
        .build(BuildOptions::default())
        .unwrap();
    let opt = OptimizerState {
        kind: "sgd".into(),
        step: 7,
        scalars: BTreeMap::from([("lr".into(), 0.01)]),
        buffers: BTreeMap::from([("momentum_buffer/0.bias".into(), Tensor::zeros(&[3], DType::F32))]),
    };
    checkpoint::save(dir, &net.state_dict(), &opt, meta).unwrap();
}

fn diverged_epoch() -> EpochMetrics {
    EpochMetrics {
        epoch: 1,
        train_loss: 3.7e19,
        train_data_loss: f64::INFINITY,
        train_accuracy: 0.1,
        val_loss: Some(f64::NAN),
        lr: 90.0,
        weight_norm: f64::INFINITY,
        samples_per_second: f64::NAN,
        ..Default::default()
    }
}

#[test]
fn non_finite_metrics_do_not_make_the_checkpoint_unreadable() {
    // A diverging-but-finite epoch has an infinite weight norm; serde_json
    // writes it as null, and the checkpoint then failed to load with
    // "invalid type: null, expected f64", losing the run.
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), meta(vec![diverged_epoch()], Some((f64::INFINITY, 1))));
    let ck = checkpoint::load(&dir.path().join(CHECKPOINT_FILE)).unwrap();
    let h = &ck.meta.history[0];
    assert_eq!(h.train_loss, 3.7e19);
    assert_eq!(h.train_data_loss, f64::MAX);
    assert_eq!(h.weight_norm, f64::MAX);
    assert_eq!(h.samples_per_second, f64::MAX);
    assert_eq!(h.val_loss, None, "an optional NaN reads back as absent");
    assert_eq!(ck.meta.best, Some((f64::MAX, 1)));
    // The checksums still hold.
    let net = ModelSpec::parse(MODEL, "m")
        .unwrap()
        .build(BuildOptions::default())
        .unwrap();
    gradflow_nn::serialize::load_into(&net.state_dict(), &ck.model, "ck", false).unwrap();
    checkpoint::verify(&ck.meta, &net.state_dict(), &ck.optimizer, "ck").unwrap();
}

/// Rewrites the `gradflow` metadata of a checkpoint file; `crc` false drops
/// the metadata checksum (as checkpoints written before it existed).
fn rewrite_meta(path: &Path, edit: impl Fn(&str) -> String, crc: bool) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let md = header["__metadata__"].as_object_mut().unwrap();
    let json = edit(md["gradflow"].as_str().unwrap());
    md.insert("gradflow".into(), json.into());
    if !crc {
        md.remove("gradflow_crc32");
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn older_checkpoints_with_null_metrics_load() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), meta(vec![diverged_epoch()], None));
    let path = dir.path().join(CHECKPOINT_FILE);
    // What the previous version wrote: null for the infinite values, no
    // metadata checksum.
    rewrite_meta(&path, |j| j.replace("1.7976931348623157e308", "null"), false);
    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
    assert!(text.contains("\\\"weight_norm\\\":null"), "{text}");
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(ck.meta.history[0].weight_norm, f64::MAX);
    // A null where an integer belongs is still damage.
    rewrite_meta(&path, |j| j.replace("\"global_step\":7", "\"global_step\":null"), false);
    let e = checkpoint::load(&path).err().unwrap().to_string();
    assert!(
        e.contains("damaged checkpoint metadata: invalid type: null, expected u64"),
        "{e}"
    );
}

#[test]
fn damaged_metadata_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), meta(vec![EpochMetrics::default()], None));
    let path = dir.path().join(CHECKPOINT_FILE);
    // Still valid JSON, still a valid checkpoint shape: only the checksum
    // of the metadata can tell.
    rewrite_meta(&path, |j| j.replace("\"global_step\":7", "\"global_step\":8"), true);
    let e = checkpoint::load(&path).err().unwrap().to_string();
    assert!(
        e.contains("metadata checksum mismatch") && e.contains("the checkpoint is damaged"),
        "{e}"
    );
}

#[test]
fn failed_writes_leave_no_temporary_and_stale_ones_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("checkpoint.safetensors");
    // The rename fails: the destination is a non-empty directory.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("x"), b"x").unwrap();
    let e = checkpoint::atomic_write(&target, b"data").unwrap_err();
    assert!(e.kind() != std::io::ErrorKind::NotFound, "{e}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["checkpoint.safetensors".to_string()]);
    std::fs::remove_dir_all(&target).unwrap();

    // Temporaries of killed writers (no such process) are removed by the
    // next successful write; those of live processes are not.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let dead = dir.path().join(".checkpoint.safetensors.tmp-4294967295");
    let other = dir.path().join(".model.safetensors.tmp-4294967294");
    let init = dir.path().join(".checkpoint.safetensors.tmp-1");
    for p in [&dead, &other, &init] {
        std::fs::write(p, b"partial").unwrap();
    }
    checkpoint::atomic_write(&target, b"data").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"data");
    assert!(!dead.exists(), "a dead writer's temporary must be swept");
    assert!(other.exists(), "only temporaries of the file written are touched");
    assert!(init.exists(), "pid 1 is alive");
}

#[test]
fn fuzz_seed_checkpoints_stay_loadable() {
    // The seeds of fuzz/corpus/checkpoint follow the format by hand
    // (fuzz/make_seeds.py); if the format changes, they must be regenerated.
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/checkpoint");
    for name in ["adam_cosine", "sgd_constant"] {
        let bytes = std::fs::read(seeds.join(name)).unwrap();
        let ck = checkpoint::load_bytes(&bytes, name).unwrap_or_else(|e| panic!("{e}"));
        let net = ModelSpec::parse(&ck.meta.model_toml, name)
            .unwrap()
            .build(BuildOptions::default())
            .unwrap();
        gradflow_nn::serialize::load_into(&net.state_dict(), &ck.model, name, false).unwrap();
        checkpoint::verify(&ck.meta, &net.state_dict(), &ck.optimizer, name).unwrap();
        ck.meta.config.validate().unwrap();
    }
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    // The checkpoint target's first steps on every committed input.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/checkpoint");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        if let Ok(ck) = checkpoint::load_bytes(&bytes, &name) {
            if let Ok(spec) = ModelSpec::parse(&ck.meta.model_toml, &name) {
                if let Ok(net) = spec.build_with_limit(BuildOptions::default(), 1 << 16) {
                    if gradflow_nn::serialize::load_into(&net.state_dict(), &ck.model, &name, false).is_ok() {
                        let _ = checkpoint::verify(&ck.meta, &net.state_dict(), &ck.optimizer, &name);
                    }
                }
            }
        }
    }
}
