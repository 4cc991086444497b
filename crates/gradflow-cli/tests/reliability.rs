//! Reliability of the `gradflow` binary: bad input, numerical faults,
//! process kills, full disks and long runs lose nothing and crash nothing.
//!
//! - `bad_invocations_fail_cleanly`: 50+ bad invocations (on top of the ones
//!   in `cli.rs`), each a non-zero exit (2 for usage, 1 for runtime errors)
//!   with a message naming the file, flag or layer and the cause.
//! - `divergence_keeps_the_last_good_checkpoint`: a run that diverges in a
//!   later epoch leaves the last good checkpoint loadable, and a rerun that
//!   diverges again leaves it byte-identical; summary.json says why.
//! - `kill_9_never_leaves_a_partial_checkpoint`: SIGKILL at 24 moments,
//!   half of them while a checkpoint is being written; after each, the
//!   checkpoint loads and verifies and the run resumes.
//! - `full_or_read_only_disk_while_checkpointing`: file-size limit, a full
//!   tmpfs and a tmpfs remounted read-only mid-run (the last two where mount
//!   namespaces are allowed): a clear error, the old checkpoint intact, no
//!   temporary file left.
//! - `long_run_memory_is_flat_and_runs_are_deterministic`.

use gradflow_nn::serialize::{from_safetensors, load_into};
use gradflow_nn::{BuildOptions, ModelSpec};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gradflow");

fn gradflow() -> Command {
    Command::new(BIN)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The first `TRAIN` training and `TEST` test images of the bundled MNIST,
/// written raw (fast to load) once per test binary.
const TRAIN: usize = 3000;
const TEST: usize = 500;

fn subset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reliability-mnist-{TRAIN}-{TEST}"));
        if dir.join("done").exists() {
            return dir;
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        for (prefix, n) in [("train", TRAIN), ("t10k", TEST)] {
            let img = gradflow_data::read_idx_images(src.join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
            let lab = gradflow_data::read_idx_labels(src.join(format!("{prefix}-labels-idx1-ubyte.gz"))).unwrap();
            let per = img.rows * img.cols;
            let img_bytes = idx_images(n as u32, img.rows as u32, img.cols as u32, &img.pixels[..n * per]);
            std::fs::write(tmp.join(format!("{prefix}-images-idx3-ubyte")), img_bytes).unwrap();
            std::fs::write(tmp.join(format!("{prefix}-labels-idx1-ubyte")), idx_labels(&lab[..n])).unwrap();
        }
        std::fs::write(tmp.join("done"), b"").unwrap();
        // Another test binary may have raced us; either copy is complete.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x803u32, count, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = 0x801u32.to_be_bytes().to_vec();
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// `n` synthetic 28×28 images (or `side`×`side`) with labels 0..9.
fn images(n: usize, side: u32) -> Vec<u8> {
    let px: Vec<u8> = (0..n * (side * side) as usize).map(|i| (i * 7 % 256) as u8).collect();
    idx_images(n as u32, side, side, &px)
}

fn labels(n: usize) -> Vec<u8> {
    idx_labels(&(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>())
}

/// A directory holding the four MNIST files with the given contents.
fn mnist_dir(root: &Path, name: &str, files: [Vec<u8>; 4]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    for (n, data) in names.iter().zip(files) {
        std::fs::write(dir.join(n), data).unwrap();
    }
    dir
}

/// A safetensors file split into its JSON header and data section.
fn read_st(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), b[8 + n..].to_vec())
}

fn write_st(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let mut h = serde_json::to_vec(header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// Rebuilds a weights file keeping the tensors `keep` accepts, with extra
/// tensors appended: (name, dtype, shape, bytes).
fn edit_weights(src: &Path, dst: &Path, keep: impl Fn(&str) -> bool, extra: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let (header, data) = read_st(src);
    let mut out = serde_json::Map::new();
    let mut bytes = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" || !keep(name) {
            continue;
        }
        let off = &info["data_offsets"];
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        let mut info = info.clone();
        info["data_offsets"] = serde_json::json!([bytes.len(), bytes.len() + b - a]);
        bytes.extend_from_slice(&data[a..b]);
        out.insert(name.clone(), info);
    }
    for (name, dtype, shape, raw) in extra {
        out.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [bytes.len(), bytes.len() + raw.len()]}),
        );
        bytes.extend_from_slice(raw);
    }
    write_st(dst, &out, &bytes);
}

fn text_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout)
}

/// Trains the default MLP on 20 synthetic images for one epoch.
fn small_run(root: &Path, data: &Path, name: &str) -> PathBuf {
    let out = root.join(name);
    let o = gradflow()
        .args(["train", "--epochs", "1", "--threads", "1", "--data"])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text_of(&o));
    out
}

#[test]
fn bad_invocations_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good_files = || [images(20, 28), labels(20), images(10, 28), labels(10)];
    let good = mnist_dir(d, "good", good_files());

    // Data files named like MNIST's, each wrong in one way.
    let [gi, gl, ti, tl] = good_files();
    let empty_files = mnist_dir(d, "empty_files", [vec![], vec![], vec![], vec![]]);
    let truncated = mnist_dir(
        d,
        "truncated",
        [gi[..5000].to_vec(), gl.clone(), ti.clone(), tl.clone()],
    );
    let wrong_magic = mnist_dir(d, "wrong_magic", [gl.clone(), gl.clone(), ti.clone(), tl.clone()]);
    let mut bad_label = gl.clone();
    *bad_label.last_mut().unwrap() = 10;
    let label_range = mnist_dir(d, "label_range", [gi.clone(), bad_label, ti.clone(), tl.clone()]);
    let mismatch = mnist_dir(d, "mismatch", [gi.clone(), labels(19), ti.clone(), tl.clone()]);
    let zero = mnist_dir(d, "zero", [images(0, 28), labels(0), ti.clone(), tl.clone()]);
    let small = mnist_dir(d, "small", [images(20, 8), gl.clone(), images(10, 8), tl.clone()]);
    let gz_trunc = mnist_dir(d, "gz_trunc", [vec![], gl.clone(), ti.clone(), tl.clone()]);
    std::fs::remove_file(gz_trunc.join("train-images-idx3-ubyte")).unwrap();
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist/train-images-idx3-ubyte.gz");
    let packed = std::fs::read(real).unwrap();
    std::fs::write(gz_trunc.join("train-images-idx3-ubyte.gz"), &packed[..4096]).unwrap();

    // Model files.
    let model = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        s(&p)
    };
    let flat = "input = [784]\n[[layer]]\ntype = \"Linear\"\n";
    let big_kernel = model(
        "big_kernel.toml",
        "input = [1, 28, 28]\n[[layer]]\ntype = \"Conv2d\"\nout_channels = 2\nkernel_size = 30\n",
    );
    let five = model("five.toml", &format!("{flat}out_features = 5\n"));
    let bn = model(
        "bn.toml",
        &format!("{flat}out_features = 10\n[[layer]]\ntype = \"BatchNorm2d\"\n"),
    );
    let unknown_key = model("unknown_key.toml", &format!("{flat}out_features = 10\nunits = 3\n"));
    let huge = model("huge.toml", &format!("{flat}out_features = 1000000000000\n"));
    let too_many = model("too_many.toml", &format!("{flat}out_features = 16000000\n"));
    let no_layers = model("no_layers.toml", "input = [784]\n");
    let missing_cfg = d.join("missing.toml");
    let bad_cfg = model("bad_cfg.toml", "epochs = \"many\"\n");

    // A finished run, and damaged copies of it.
    let run = small_run(d, &good, "run");
    let copy = |name: &str| {
        let dst = d.join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&run).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        dst
    };
    let ck = "checkpoint.safetensors";
    let not_gradflow = copy("not_gradflow");
    std::fs::copy(run.join("model.safetensors"), not_gradflow.join(ck)).unwrap();
    let empty_ck = copy("empty_ck");
    std::fs::write(empty_ck.join(ck), b"").unwrap();
    let ck_dir = copy("ck_dir");
    std::fs::remove_file(ck_dir.join(ck)).unwrap();
    std::fs::create_dir(ck_dir.join(ck)).unwrap();
    // A flipped digit in the JSON metadata (the tensor checksum misses it).
    let meta_flip = copy("meta_flip");
    let (mut header, data) = read_st(&meta_flip.join(ck));
    let json = header["__metadata__"]["gradflow"].as_str().unwrap().to_string();
    assert!(json.contains("\"epoch\":1,"), "{json}");
    header["__metadata__"]["gradflow"] = Value::String(json.replace("\"epoch\":1,", "\"epoch\":7,"));
    write_st(&meta_flip.join(ck), &header, &data);
    // Damaged JSON in a checkpoint without a metadata checksum (older format).
    let meta_cut = copy("meta_cut");
    let (mut header, data) = read_st(&meta_cut.join(ck));
    let md = header["__metadata__"].as_object_mut().unwrap();
    md.remove("gradflow_crc32");
    md.insert("gradflow".into(), Value::String(json[..200].to_string()));
    write_st(&meta_cut.join(ck), &header, &data);
    let bad_toml = copy("bad_toml");
    std::fs::write(bad_toml.join("model.toml"), "input = [").unwrap();
    let no_weights = copy("no_weights");
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();

    // Weights for `--model mlp`, each wrong in one way.
    let w = run.join("model.safetensors");
    let weights = |name: &str, keep: &dyn Fn(&str) -> bool, extra: &[(&str, &str, Vec<usize>, Vec<u8>)]| {
        let p = d.join(name);
        edit_weights(&w, &p, keep, extra);
        s(&p)
    };
    let w_missing = weights("missing.safetensors", &|n| n != "3.bias", &[]);
    let w_extra = weights(
        "extra.safetensors",
        &|_| true,
        &[("9.weight", "F32", vec![1], vec![0; 4])],
    );
    let w_shape = weights(
        "shape.safetensors",
        &|n| n != "3.bias",
        &[("3.bias", "F32", vec![5], vec![0; 20])],
    );
    let w_f16 = weights(
        "f16.safetensors",
        &|n| n != "3.bias",
        &[("3.bias", "F16", vec![10], vec![0; 20])],
    );
    let w_impossible = weights(
        "impossible.safetensors",
        &|_| true,
        &[("e", "F32", vec![0, 1 << 32, 1 << 32], vec![])],
    );
    let not_image = d.join("not_image.png");
    std::fs::write(&not_image, "garbage").unwrap();
    let regular_file = d.join("regular_file");
    std::fs::write(&regular_file, "x").unwrap();

    let g = s(&good);
    let train = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--threads", "1", "--data", &g, "--epochs", "1"]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let data = |dir: &Path| train(&["--data", &s(dir), "--out", &s(&d.join("unused"))]);
    let resume = |dir: &Path| train(&["--epochs", "2", "--resume", &s(dir)]);
    let eval_w = |w: &str| -> Vec<String> {
        ["eval", "--model", "mlp", "--data", &g, "--weights", w]
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let argv = |a: &[&str]| -> Vec<String> { a.iter().map(|x| x.to_string()).collect() };

    let cases: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        // Usage errors: clap rejects them before anything runs.
        (argv(&[]), 2, vec!["Usage"]),
        (argv(&["frobnicate"]), 2, vec!["frobnicate"]),
        (
            argv(&["train", "--epochs", "abc"]),
            2,
            vec!["--epochs", "invalid digit"],
        ),
        (argv(&["train", "--batch-size", "-5"]), 2, vec!["--batch-size"]),
        (argv(&["train", "--seed", "-1"]), 2, vec!["--seed"]),
        (argv(&["train", "--lr"]), 2, vec!["--lr", "a value is required"]),
        (
            argv(&["train", "--warmup-epochs", "100000000000000000000"]),
            2,
            vec!["--warmup-epochs", "too large"],
        ),
        (argv(&["eval", "--limit", "x"]), 2, vec!["--limit"]),
        (argv(&["experiment", "sideways"]), 2, vec!["sideways"]),
        (argv(&["predict", "--bogus", "x"]), 2, vec!["--bogus"]),
        // Settings out of range.
        (
            train(&["--lr", "inf"]),
            1,
            vec!["--lr must be a positive number, got inf"],
        ),
        (
            train(&["--lr", "-0.1"]),
            1,
            vec!["--lr must be a positive number, got -0.1"],
        ),
        (train(&["--lr", "0"]), 1, vec!["--lr must be a positive number, got 0"]),
        (
            train(&["--momentum", "-1"]),
            1,
            vec!["--momentum must be a non-negative number"],
        ),
        (
            train(&["--min-delta", "nan"]),
            1,
            vec!["--min-delta must be a non-negative number"],
        ),
        (
            train(&["--label-smoothing", "2"]),
            1,
            vec!["--label-smoothing must be at most 1"],
        ),
        (
            train(&["--clip-norm", "0"]),
            1,
            vec!["--clip-norm must be a positive number"],
        ),
        (
            train(&["--limit-train", "0"]),
            1,
            vec!["--limit-train must be at least 1"],
        ),
        (train(&["--limit-test", "0"]), 1, vec!["a limit of 0 test images"]),
        (
            train(&["--limit-train", "1", "--val-split", "0.1"]),
            1,
            vec!["validation fraction 0.1 of 1 samples leaves no validation samples"],
        ),
        (
            train(&["--config", &s(&missing_cfg)]),
            1,
            vec!["missing.toml", "cannot read settings"],
        ),
        (
            train(&["--config", &bad_cfg]),
            1,
            vec!["bad_cfg.toml:1:10: `epochs = \"many\"`: invalid type"],
        ),
        // Data files: empty, truncated, wrong magic, damaged gzip, bad labels, counts, sizes.
        (data(&empty_files), 1, vec!["train-images-idx3-ubyte", "only 0 bytes"]),
        (
            data(&truncated),
            1,
            vec!["train-images-idx3-ubyte", "truncated: header says 20 images"],
        ),
        (
            data(&wrong_magic),
            1,
            vec!["train-images-idx3-ubyte", "bad magic number 0x00000801"],
        ),
        (data(&gz_trunc), 1, vec!["train-images-idx3-ubyte.gz", "gzip"]),
        (
            data(&label_range),
            1,
            vec!["train-labels-idx1-ubyte", "label at index 19 is 10"],
        ),
        (
            data(&mismatch),
            1,
            vec!["holds 20 images but", "train-labels-idx1-ubyte holds 19 labels"],
        ),
        (data(&zero), 1, vec!["train-images-idx3-ubyte", "holds no images"]),
        (
            data(&small),
            1,
            vec!["does not fit the training samples of shape [1, 8, 8]"],
        ),
        // Models whose shapes do not chain, or that are malformed or too large.
        (
            train(&["--model", &big_kernel]),
            1,
            vec!["layer 0 (Conv2d): kernel 30x30 does not fit input [1, 28, 28]"],
        ),
        (
            train(&["--model", &five]),
            1,
            vec!["the last layer gives [5] outputs per sample but the data has 10 classes"],
        ),
        (
            train(&["--model", &bn]),
            1,
            vec!["layer 1 (BatchNorm2d): expects [C, H, W] input, gets shape [10]"],
        ),
        (
            train(&["--model", &unknown_key]),
            1,
            vec!["unknown_key.toml: layer 0 (Linear): unknown key 'units'"],
        ),
        (
            train(&["--model", &huge]),
            1,
            vec!["huge.toml: layer 0 (Linear): 'out_features' = 1000000000000 is too large"],
        ),
        (
            train(&["--model", &too_many]),
            1,
            vec!["layer 0 (Linear): 12560000000 parameters", "larger than the limit"],
        ),
        (
            train(&["--model", &no_layers]),
            1,
            vec!["no_layers.toml: no [[layer]] tables"],
        ),
        // Weights with missing, extra, misshapen or unreadable tensors.
        (
            eval_w(&w_missing),
            1,
            vec!["missing.safetensors", "missing tensor '3.bias'"],
        ),
        (
            eval_w(&w_extra),
            1,
            vec!["extra.safetensors", "unexpected tensor '9.weight'"],
        ),
        (
            eval_w(&w_shape),
            1,
            vec![
                "shape.safetensors",
                "tensor '3.bias' has shape [5] in the file but [10] in the model",
            ],
        ),
        (
            eval_w(&w_f16),
            1,
            vec!["f16.safetensors", "tensor '3.bias' has dtype F16"],
        ),
        (
            eval_w(&w_impossible),
            1,
            vec!["impossible.safetensors", "tensor 'e' has an impossible shape"],
        ),
        (eval_w(&s(&run)), 1, vec!["cannot read weights"]),
        (argv(&["eval", "--weights", &s(&w)]), 1, vec!["--weights needs --model"]),
        // Output directories that cannot be written.
        (
            train(&["--out", "/proc/gradflow-forbidden/run"]),
            1,
            vec!["/proc/gradflow-forbidden/run", "cannot create run directory"],
        ),
        (
            train(&["--out", "/dev/full"]),
            1,
            vec!["/dev/full", "cannot create run directory"],
        ),
        (
            train(&["--out", &s(&regular_file.join("run"))]),
            1,
            vec!["regular_file/run", "cannot create run directory"],
        ),
        // Resume directories with damaged checkpoints, or nothing left to do.
        (
            resume(&not_gradflow),
            1,
            vec!["not_gradflow/checkpoint.safetensors", "not a gradflow checkpoint"],
        ),
        (
            resume(&empty_ck),
            1,
            vec!["empty_ck/checkpoint.safetensors", "not a valid safetensors file"],
        ),
        (
            resume(&ck_dir),
            1,
            vec!["ck_dir/checkpoint.safetensors", "cannot read checkpoint"],
        ),
        (
            resume(&meta_flip),
            1,
            vec!["meta_flip/checkpoint.safetensors", "metadata checksum mismatch"],
        ),
        (
            resume(&meta_cut),
            1,
            vec!["meta_cut/checkpoint.safetensors", "damaged checkpoint metadata"],
        ),
        (
            train(&["--resume", &s(&run)]),
            1,
            vec!["the run already finished its 1 epochs"],
        ),
        // Run directories and inputs of eval, predict, report, grad.
        (
            argv(&["eval", &s(&bad_toml), "--data", &g]),
            1,
            vec!["bad_toml/model.toml", "invalid TOML"],
        ),
        (
            argv(&["eval", &s(&no_weights), "--data", &g]),
            1,
            vec!["no_weights/model.safetensors", "cannot read weights"],
        ),
        (
            argv(&["predict", &s(&run), &s(&d.join("missing.png"))]),
            1,
            vec!["missing.png"],
        ),
        (
            argv(&["predict", &s(&run), &s(&not_image)]),
            1,
            vec!["not_image.png", "unsupported image format"],
        ),
        (
            argv(&["report", &s(&d.join("nowhere"))]),
            1,
            vec!["nowhere", "no such run directory"],
        ),
        (
            argv(&[
                "grad",
                "--model",
                "mlp",
                "--weights",
                "w",
                "--batch",
                "b",
                "--out",
                "o",
                "--mode",
                "bogus",
            ]),
            1,
            vec!["--mode bogus"],
        ),
    ];
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (args, code, needles) in &cases {
        let o = gradflow().args(args).output().unwrap();
        let text = text_of(&o);
        let problem = if o.status.code() != Some(*code) {
            Some(format!("exit {:?}, expected {code}", o.status.code()))
        } else if text.contains("panicked") {
            Some("panicked".to_string())
        } else {
            needles
                .iter()
                .find(|n| !text.contains(**n))
                .map(|n| format!("missing '{n}'"))
        };
        if let Some(p) = problem {
            failures.push(format!("{args:?}: {p}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The damaged copies were refused without being touched.
    assert_eq!(std::fs::read(empty_ck.join(ck)).unwrap(), b"");
}

/// Loads a run directory's checkpoint the way `--resume` does (parse, build,
/// load, verify the checksum) and its weights file the way `eval` does;
/// returns the epochs the checkpoint has completed, or None if there is none.
fn check_run_dir(dir: &Path) -> Option<usize> {
    let ck = dir.join("checkpoint.safetensors");
    if !ck.exists() {
        return None;
    }
    let c = gradflow_train::checkpoint::load(&ck).unwrap_or_else(|e| panic!("{e}"));
    let spec = ModelSpec::parse(&c.meta.model_toml, "checkpoint model").unwrap();
    let net = spec.build(BuildOptions::default()).unwrap();
    load_into(&net.state_dict(), &c.model, "checkpoint", false).unwrap();
    gradflow_train::checkpoint::verify(&c.meta, &net.state_dict(), &c.optimizer, "checkpoint")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.meta.history.len(), c.meta.epoch);
    let weights = dir.join("model.safetensors");
    if weights.exists() {
        let (loaded, _) = from_safetensors(&std::fs::read(&weights).unwrap(), "weights").unwrap();
        load_into(&net.state_dict(), &loaded, "weights", true).unwrap();
    }
    for f in ["model.toml", "metrics.jsonl", "summary.json"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            match f {
                "model.toml" => assert_eq!(ModelSpec::parse(&text, f).unwrap(), spec),
                "metrics.jsonl" => {
                    for line in text.lines() {
                        serde_json::from_str::<Value>(line).unwrap();
                    }
                }
                _ => {
                    serde_json::from_str::<Value>(&text).unwrap();
                }
            }
        }
    }
    Some(c.meta.epoch)
}

/// Temporary files (`.NAME.tmp-PID`) in `dir`, with their PIDs.
fn temporaries(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.rsplit_once(".tmp-")?.1.parse().ok()?;
            Some((name, pid))
        })
        .collect()
}

/// Small deterministic generator (the test crate has no `rand`).
struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_never_leaves_a_partial_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let data = subset();
    let seed = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("kill test seed {seed} (RELIABILITY_SEED={seed} replays the delays)");
    let mut rng = XorShift(seed);
    let mut killed: Vec<u32> = Vec::new();
    let (mut mid_write, mut epochs_seen) = (0, 0);
    let start = Instant::now();
    for round in 0..24 {
        let mut cmd = gradflow();
        cmd.args(["train", "--threads", "1", "--epochs", "1000", "--data"])
            .arg(data);
        if dir.join("checkpoint.safetensors").exists() {
            cmd.arg("--resume").arg(&dir);
        } else {
            cmd.args(["--limit-test", "100", "--schedule", "constant", "--out"])
                .arg(&dir);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        // Half the kills aim at a checkpoint or weights write in progress:
        // the moment its temporary file appears. The others land anywhere,
        // including start-up and data loading.
        let target = match round % 4 {
            0 => Some(format!(".checkpoint.safetensors.tmp-{pid}")),
            1 => Some(format!(".model.safetensors.tmp-{pid}")),
            2 => {
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                None
            }
            _ => {
                std::thread::sleep(Duration::from_millis(400 + rng.below(1600)));
                None
            }
        };
        if let Some(name) = target {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !dir.join(&name).exists() {
                assert!(Instant::now() < deadline, "round {round}: {name} never appeared");
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                    panic!("round {round}: gradflow exited early ({status}): {err}");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            panic!("round {round}: the run finished before it was killed");
        }
        killed.push(pid);
        let temps = temporaries(&dir);
        mid_write += usize::from(temps.iter().any(|(_, p)| *p == pid));
        // Every leftover is a temporary of a killed process, never a
        // checkpoint-looking file.
        for (name, p) in &temps {
            assert!(killed.contains(p), "round {round}: {name} belongs to no killed process");
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let known = [
                    "model.toml",
                    "checkpoint.safetensors",
                    "model.safetensors",
                    "metrics.jsonl",
                    "diagnostics.jsonl",
                    "summary.json",
                    ".write-test",
                ];
                assert!(
                    known.contains(&name.as_str()) || temps.iter().any(|(t, _)| *t == name),
                    "round {round}: unexpected file {name}"
                );
            }
        }
        if let Some(epoch) = check_run_dir(&dir) {
            assert!(
                epoch >= epochs_seen,
                "round {round}: went back from epoch {epochs_seen} to {epoch}"
            );
            epochs_seen = epoch;
        }
    }
    // The survivor resumes to completion, and its successful writes sweep
    // away the killed processes' temporaries.
    let epochs = epochs_seen + 1;
    let o = gradflow()
        .args(["train", "--threads", "1", "--data"])
        .arg(data)
        .args(["--epochs", &epochs.to_string(), "--resume"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text_of(&o));
    assert_eq!(check_run_dir(&dir), Some(epochs));
    assert_eq!(temporaries(&dir), vec![], "temporaries left after a successful run");
    let o = gradflow()
        .arg("eval")
        .arg(&dir)
        .args(["--data", &s(data), "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text_of(&o));
    eprintln!(
        "24 kills in {:.1}s: {mid_write} left a temporary file behind (killed mid-write), \
         checkpoint reached epoch {epochs_seen}",
        start.elapsed().as_secs_f64()
    );
    assert!(epochs_seen >= 3, "too few checkpoints were written between kills");
}

/// Runs `script` under `sh` in a private mount namespace; None when mount
/// namespaces or tmpfs mounts are not permitted here.
fn in_mount_namespace(script: &str, args: &[&str]) -> Option<Output> {
    let probe = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\"",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("skipping the tmpfs checks: mount namespaces are not permitted here");
            return None;
        }
    }
    Some(
        Command::new("unshare")
            .args(["-m", "sh", "-c", script, "sh"])
            .args(args)
            .output()
            .unwrap(),
    )
}

#[test]
fn full_or_read_only_disk_while_checkpointing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = subset();
    let train = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["train".into(), "--threads".into(), "1".into(), "--data".into(), s(data)];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };

    // 1. A file-size limit (what a quota or a nearly full disk does to one
    //    large file): the first checkpoint cannot be written.
    let dir = tmp.path().join("fsize");
    let limited = |args: &[String]| {
        Command::new("sh")
            .args(["-c", "ulimit -f 2048; trap '' XFSZ; exec \"$0\" \"$@\"", BIN])
            .args(args)
            .output()
            .unwrap()
    };
    let o = limited(&train(&["--limit-train", "500", "--epochs", "2", "--out", &s(&dir)]));
    let text = text_of(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains(&format!(
            "{}: cannot write checkpoint: File too large",
            s(&dir.join("checkpoint.safetensors"))
        )),
        "{text}"
    );
    assert!(!dir.join("checkpoint.safetensors").exists());
    assert_eq!(temporaries(&dir), vec![]);

    // 2. The same on resume: the previous checkpoint stays byte-identical.
    let o = gradflow()
        .args(train(&["--limit-train", "500", "--epochs", "1", "--out", &s(&dir)]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text_of(&o));
    let before = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let o = limited(&train(&["--epochs", "2", "--resume", &s(&dir)]));
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(text_of(&o).contains("File too large"), "{}", text_of(&o));
    assert_eq!(std::fs::read(dir.join("checkpoint.safetensors")).unwrap(), before);
    assert_eq!(temporaries(&dir), vec![]);
    assert_eq!(check_run_dir(&dir), Some(1));

    // 3. A real full disk: a 12 MiB tmpfs holds one MLP checkpoint (7.6 MB)
    //    plus weights, but not a second checkpoint beside the first.
    //    4. A disk (a 64 MiB tmpfs) remounted read-only while training.
    let script = r#"
        set -u
        mnt=$1; out=$2; bin=$3; data=$4
        mount -t tmpfs -o size=12m tmpfs "$mnt" || exit 90
        "$bin" train --threads 1 --data "$data" --limit-train 500 --epochs 3 --out "$mnt/full" \
            >"$out/full.out" 2>"$out/full.err"
        echo $? >"$out/full.rc"
        cp -a "$mnt/full" "$out/full"
        # The read-only case on a roomier tmpfs, so that the only failure left is the
        # remount, whichever epoch it lands in (epochs of 500 images take milliseconds).
        umount "$mnt" && mount -t tmpfs -o size=64m tmpfs "$mnt" || exit 91
        "$bin" train --threads 1 --data "$data" --limit-train 500 --epochs 1000 --out "$mnt/ro" \
            >"$out/ro.out" 2>"$out/ro.err" &
        pid=$!
        i=0
        while [ ! -e "$mnt/ro/checkpoint.safetensors" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
        i=0
        until mount -o remount,ro "$mnt" 2>/dev/null; do
            i=$((i+1)); [ $i -gt 200 ] && { kill -9 $pid; echo "remount failed" >"$out/ro.skip"; break; }
            sleep 0.01
        done
        wait $pid
        echo $? >"$out/ro.rc"
        cp -a "$mnt/ro" "$out/ro"
    "#;
    let mnt = tmp.path().join("mnt");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let Some(o) = in_mount_namespace(script, &[&s(&mnt), &s(&out), BIN, &s(data)]) else {
        return;
    };
    assert!(o.status.success(), "{}", text_of(&o));
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    assert_eq!(read("full.rc").trim(), "1", "{}", read("full.err"));
    assert!(
        read("full.err").contains("full/checkpoint.safetensors: cannot write checkpoint: No space left on device"),
        "{}",
        read("full.err")
    );
    assert!(!read("full.err").contains("panicked"));
    assert_eq!(
        check_run_dir(&out.join("full")),
        Some(1),
        "the epoch-1 checkpoint must survive"
    );
    assert_eq!(temporaries(&out.join("full")), vec![]);
    if out.join("ro.skip").exists() {
        eprintln!("skipping the read-only check: the tmpfs could not be remounted read-only");
        return;
    }
    assert_eq!(read("ro.rc").trim(), "1", "{}", read("ro.err"));
    assert!(read("ro.err").contains("Read-only file system"), "{}", read("ro.err"));
    assert!(!read("ro.err").contains("panicked"));
    assert!(check_run_dir(&out.join("ro")).is_some_and(|e| e >= 1));
    assert_eq!(temporaries(&out.join("ro")), vec![]);
}

#[test]
fn divergence_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let data = subset();
    // Warm-up raises the lr from 90 to 900 over ten epochs: epoch 1 is
    // survivable, a later epoch overflows.
    let o = gradflow()
        .args(["train", "--threads", "1", "--data", &s(data), "--limit-train", "2000"])
        .args([
            "--limit-test",
            "200",
            "--optimizer",
            "sgd",
            "--momentum",
            "0",
            "--schedule",
            "constant",
        ])
        .args([
            "--warmup-epochs",
            "9",
            "--lr",
            "900",
            "--epochs",
            "1",
            "--out",
            &s(&dir),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "epoch 1 must survive: {}", text_of(&o));
    let resume = || {
        gradflow()
            .args([
                "train",
                "--threads",
                "1",
                "--data",
                &s(data),
                "--epochs",
                "40",
                "--resume",
                &s(&dir),
            ])
            .output()
            .unwrap()
    };
    let o = resume();
    let text = text_of(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("non-finite loss") && !text.contains("panicked"), "{text}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["stopped"], "non_finite_loss", "{summary}");
    let detail = summary["stop_detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("non-finite loss") && detail.contains("the last good checkpoint is kept"),
        "{detail}"
    );
    // The checkpoint is the one of the last completed epoch, whole and
    // verified, and the history matches it.
    let epoch = check_run_dir(&dir).unwrap();
    eprintln!("diverged after the checkpoint of epoch {epoch}: {detail}");
    assert!(
        detail.contains(&format!("at epoch {} step", epoch + 1)),
        "{detail} vs epoch {epoch}"
    );
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, epoch);
    // Diverging again from it (same seed, same thread count) stops at the
    // same step and leaves every byte of the checkpoint and weights alone.
    let ck = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let o = resume();
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    let again: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(again["stop_detail"].as_str().unwrap(), detail);
    assert_eq!(std::fs::read(dir.join("checkpoint.safetensors")).unwrap(), ck);
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights);
    let o = gradflow()
        .arg("eval")
        .arg(&dir)
        .args(["--data", &s(data), "--limit", "100"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text_of(&o));
}

/// VmRSS of a live process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn metrics_without_timing(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("samples_per_second");
            v
        })
        .collect()
}

#[test]
fn long_run_memory_is_flat_and_runs_are_deterministic() {
    if !Path::new("/proc/self/status").exists() {
        eprintln!("skipping: no /proc to read memory use from");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = subset();
    // 50 epochs of 1000 images. A sampler thread reads VmRSS every 5 ms;
    // the epoch lines on stdout mark where each epoch ends.
    let mut child = gradflow()
        .args([
            "train",
            "--threads",
            "1",
            "--data",
            &s(data),
            "--limit-train",
            "1000",
            "--limit-test",
            "100",
        ])
        .args(["--epochs", "50", "--val-split", "0.1", "--dropout", "0.2", "--out"])
        .arg(tmp.path().join("long"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, u64)>::new()));
    let sampler = {
        let samples = samples.clone();
        std::thread::spawn(move || {
            while let Some(kib) = rss_kib(pid) {
                samples.lock().unwrap().push((Instant::now(), kib));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut ends = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().starts_with("epoch ") {
            ends.push(Instant::now());
        }
    }
    assert!(child.wait().unwrap().success());
    sampler.join().unwrap();
    assert_eq!(ends.len(), 50);
    let samples = samples.lock().unwrap();
    // Peak RSS after epoch `k` (1-based) ended: from its line to the next
    // one (or to the exit after the last), which covers its checkpoint
    // save and the next epoch (or the final test evaluation).
    let after = |k: usize| {
        let until = ends.get(k).copied();
        samples
            .iter()
            .filter(|(t, _)| *t > ends[k - 1] && until.is_none_or(|u| *t <= u))
            .map(|&(_, kib)| kib)
            .max()
            .unwrap_or(0)
    };
    let (first, second, tenth, last) = (after(1), after(2), after(10), after(50));
    eprintln!(
        "VmRSS peak after epoch 1: {first} KiB, 2: {second} KiB, 10: {tenth} KiB, 50: {last} KiB ({} samples)",
        samples.len()
    );
    assert!(second > 0 && last > 0, "too few samples");
    assert!(
        last as f64 <= second as f64 * 1.10,
        "memory grew from {second} KiB after epoch 2 to {last} KiB after epoch 50"
    );

    // Same seed, same thread count: identical metrics (minus timing) and weights.
    let run = |name: &str| {
        let out = tmp.path().join(name);
        let o = gradflow()
            .args([
                "train",
                "--threads",
                "2",
                "--data",
                &s(data),
                "--limit-train",
                "1000",
                "--limit-test",
                "100",
            ])
            .args([
                "--epochs",
                "3",
                "--val-split",
                "0.1",
                "--dropout",
                "0.2",
                "--seed",
                "7",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text_of(&o));
        out
    };
    let (a, b) = (run("a"), run("b"));
    assert_eq!(metrics_without_timing(&a), metrics_without_timing(&b));
    assert_eq!(metrics_without_timing(&a).len(), 3);
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
}
