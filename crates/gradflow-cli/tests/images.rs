//! `gradflow train --data DIR` on an image folder (train/<class>/*.png):
//! train, eval and predict with the saved normalization, resume, and every
//! bad folder (exit 2, the file named, nothing written).

mod common;

use common::{gradflow, stdout};
use std::path::{Path, PathBuf};

/// An 8x8 (or h×w) grayscale PNG: dark images for "dark", bright ones for "light", with some texture.
fn png(path: &Path, h: u32, w: u32, bright: bool, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let base: u32 = if bright { 170 } else { 30 };
    image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([(base + (x * 7 + y * 13 + seed * 29) % 60) as u8])
    })
    .save(path)
    .unwrap();
}

/// train/{dark,light}/ with 8 images each, and test/ with 3 each.
fn folder() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shades");
    for (class, bright) in [("dark", false), ("light", true)] {
        for i in 0..8 {
            png(&dir.join(format!("train/{class}/{i}.png")), 8, 8, bright, i);
        }
        for i in 0..3 {
            png(&dir.join(format!("test/{class}/t{i}.png")), 8, 8, bright, 100 + i);
        }
    }
    (tmp, dir)
}

/// Training on a tiny folder: 8 epochs of batch 4.
fn train(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> = ["--epochs", "8", "--batch-size", "4"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    common::train(data, out, &args)
}

#[test]
fn image_folder_trains_evals_and_predicts_with_the_saved_normalization() {
    let (tmp, dir) = folder();
    let out = tmp.path().join("run");
    let o = stdout(&train(&dir, &out, &[]));
    assert!(
        o.contains("16 training, 6 test, 1x8x8 (CxHxW), 2 classes: dark, light"),
        "{o}"
    );
    assert!(o.contains("model mlp (the default for 8x8 images)"), "{o}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("images.json")).unwrap()).unwrap();
    assert_eq!(saved["norm"]["class_names"], serde_json::json!(["dark", "light"]));
    assert_eq!(saved["norm"]["mean"].as_array().unwrap().len(), 1);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["test_accuracy"].as_f64(), Some(1.0), "{summary}");

    let o = gradflow().arg("eval").arg(&out).output().unwrap();
    let text = stdout(&o);
    assert!(
        o.status.success() && text.contains("accuracy 100.00%") && text.contains("dark: 100.00%"),
        "{text}"
    );

    let light = dir.join("test/light/t0.png");
    let dark = dir.join("test/dark/t1.png");
    let o = gradflow()
        .arg("predict")
        .arg(&out)
        .arg(&light)
        .arg(&dark)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(text.contains(&format!("{}: light", light.display())), "{text}");
    assert!(text.contains(&format!("{}: dark", dark.display())), "{text}");

    // --resume re-reads the folder and continues.
    let o = gradflow()
        .arg("train")
        .arg("--resume")
        .arg(&out)
        .args(["--epochs", "9", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn without_test_folder_a_split_is_held_out_and_rgb_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("colours");
    for (class, c) in [("blue", [10u8, 20, 220]), ("red", [220, 20, 10])] {
        for i in 0..10u8 {
            let p = dir.join(format!("train/{class}/{i}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::from_fn(6, 5, |x, _| image::Rgb([c[0], c[1] + x as u8 + i, c[2]]))
                .save(&p)
                .unwrap();
        }
    }
    let out = tmp.path().join("run");
    let o = stdout(&train(&dir, &out, &["--test-split", "0.3"]));
    assert!(
        o.contains("14 training, 6 test, 3x5x6 (CxHxW), 2 classes: blue, red"),
        "{o}"
    );
}

/// A bad folder: exit 2, `needle` in the error, no run directory.
fn bad_folder(dir: &Path, extra: &[&str], needle: &str) {
    let out = dir.parent().unwrap().join("run");
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!out.exists(), "the run directory was written before the data validated");
}

#[test]
fn every_bad_folder_is_exit_2_naming_the_file() {
    let (_tmp, dir) = folder();
    png(&dir.join("train/dark/big.png"), 10, 12, false, 1);
    let big = dir.join("train/dark/big.png");
    bad_folder(&dir, &[], &format!("{}: is 10x12 (HxW) but", big.display()));
    bad_folder(
        &dir,
        &[],
        "0.png is 8x8; images must have one size, or pass --image-size HxW",
    );
    std::fs::remove_file(&big).unwrap();

    let corrupt = dir.join("train/light/broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    bad_folder(&dir, &[], &format!("{}: not a readable image", corrupt.display()));

    std::fs::create_dir_all(dir.join("train/grey")).unwrap();
    bad_folder(
        &dir,
        &["--skip-bad"],
        &format!("{}: empty class folder", dir.join("train/grey").display()),
    );
    std::fs::remove_dir(dir.join("train/grey")).unwrap();

    let out = dir.parent().unwrap().join("skipped");
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args(["--skip-bad", "--epochs", "1", "--threads", "1"])
        .output()
        .unwrap();
    assert!(
        o.status.success() && stdout(&o).contains("skipped 1 unreadable images"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_folder_without_train_and_bad_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flat");
    png(&dir.join("cats/0.png"), 8, 8, false, 0);
    bad_folder(
        &dir,
        &[],
        &format!(
            "{}: not found; an image folder holds train/<class>",
            dir.join("train").display()
        ),
    );
    let (_tmp, good) = folder();
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(&good)
        .args(["--image-size", "8by8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--image-size \"8by8\": expected HxW"), "{err}");
    let o = gradflow()
        .arg("train")
        .args(["--skip-bad", "--epochs", "1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--skip-bad need --data DIR"));
}

fn summary_accuracy(out: &Path) -> f64 {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    s["test_accuracy"].as_f64().unwrap()
}

/// A small version of the README's measured check: 400 MNIST training and 200
/// test digits as IDX files and as a PNG folder train to the same accuracy (within noise).
#[test]
fn mnist_digits_as_png_folder_train_like_the_idx_files() {
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("digits");
    for (split, name, n) in [
        (gradflow_data::MnistSplit::Train, "train", 400),
        (gradflow_data::MnistSplit::Test, "test", 200),
    ] {
        let ds = gradflow_data::mnist::load_split(&mnist, split, Some(n)).unwrap();
        for (i, label) in ds.labels().unwrap().iter().enumerate() {
            let px: Vec<u8> = ds
                .sample(i)
                .unwrap()
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect();
            let p = dir.join(format!("{name}/{label}/{i:04}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::GrayImage::from_raw(28, 28, px).unwrap().save(&p).unwrap();
        }
    }
    let flags = ["--model", "mlp", "--epochs", "3", "--seed", "1", "--threads", "1"];
    let idx_out = tmp.path().join("idx");
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(&mnist)
        .args(["--limit-train", "400", "--limit-test", "200"])
        .arg("--out")
        .arg(&idx_out)
        .args(flags)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png_out = tmp.path().join("png");
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(&dir)
        .arg("--out")
        .arg(&png_out)
        .args(flags)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (idx, png) = (summary_accuracy(&idx_out), summary_accuracy(&png_out));
    assert!(idx > 0.6 && png > 0.6, "IDX {idx}, PNG {png}");
    assert!((idx - png).abs() < 0.06, "IDX {idx}, PNG {png}");
}

#[test]
fn jpeg_photos_of_mixed_sizes_resize_and_default_to_lenet5() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    for (class, c) in [
        ("blue", [20u8, 30, 210]),
        ("green", [20, 210, 30]),
        ("red", [210, 30, 20]),
    ] {
        for i in 0..6u32 {
            let p = dir.join(format!("train/{class}/{i}.jpg"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::from_fn(30 + i, 40 - i, |x, _| image::Rgb([c[0], c[1] + (x % 9) as u8, c[2]]))
                .save(&p)
                .unwrap();
        }
    }
    let out = tmp.path().join("run");
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--image-size"));
    let o = stdout(&train(&dir, &out, &["--image-size", "32x32", "--test-split", "0.34"]));
    assert!(o.contains("3x32x32 (CxHxW), 3 classes: blue, green, red"), "{o}");
    assert!(o.contains("model lenet5 (the default for 32x32 images)"), "{o}");
    let o = gradflow()
        .arg("predict")
        .arg(&out)
        .arg(dir.join("train/red/0.jpg"))
        .output()
        .unwrap();
    assert!(
        o.status.success() && stdout(&o).contains("0.jpg: "),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
