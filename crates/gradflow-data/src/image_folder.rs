//! Image folders in torchvision's `ImageFolder` layout: `DIR/train/<class>/*.png|jpg`
//! and optionally `DIR/test/<class>/*`. Class names are the sorted folder names.
//!
//! Files are decoded in parallel (rayon), one at a time per thread, so only the
//! decoded pixels of all images are held, never the undecoded files. Pixels are
//! scaled to `[0, 1]` and normalized with per-channel mean and std of the
//! training images; [`ImageNorm`] keeps them (and the class names) for
//! `eval` and `predict`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};

/// How to read an image folder.
#[derive(Debug, Clone, Default)]
pub struct ImageFolderOptions {
    /// Resize every image to `(height, width)`; without it, differing sizes are an error.
    pub size: Option<(usize, usize)>,
    /// Skip unreadable or corrupt images (and count them) instead of stopping.
    pub skip_bad: bool,
    /// Fraction of the training images held out for testing when there is no `test/` folder.
    pub test_split: f64,
    /// Seed of that split.
    pub seed: u64,
}

/// The input shape, normalization and class names of an image run, saved as JSON in its directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageNorm {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Whether images of another size are resized (`--image-size`).
    pub resize: bool,
    /// Per-channel mean of the training pixels in `[0, 1]`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of the training pixels.
    pub std: Vec<f32>,
    /// Class names in label order (sorted folder names).
    pub class_names: Vec<String>,
}

/// A loaded, normalized image folder.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// Training images, `[channels, height, width]` each.
    pub train: Dataset,
    /// Test images (the `test/` folder, or the held-out part of `train/`).
    pub test: Dataset,
    /// What `eval` and `predict` need to read new images the same way.
    pub norm: ImageNorm,
    /// Images skipped with `skip_bad`.
    pub skipped: usize,
}

/// Whether `dir` looks like an image folder: it has a `train/` or `test/`
/// subfolder, or (a misplaced layout, then reported by [`load_image_folder`])
/// subfolders holding images.
pub fn is_image_folder(dir: &Path) -> bool {
    if dir.join("train").is_dir() || dir.join("test").is_dir() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .any(|sub| std::fs::read_dir(sub).is_ok_and(|files| files.flatten().any(|f| is_image_file(&f.path()))))
}

/// Reads `dir/train` (and `dir/test` if present) into normalized datasets.
pub fn load_image_folder(dir: &Path, options: &ImageFolderOptions) -> Result<ImageFolder> {
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::NotFound {
            path: train_dir.display().to_string(),
            hint: "an image folder holds train/<class>/*.png|jpg (and optionally test/<class>/...)".into(),
        });
    }
    let classes = class_folders(&train_dir)?;
    let train_files = list_files(&train_dir, &classes)?;
    let (first, channels, shape) = probe(&train_files, options)?;
    let mut skipped = 0;
    let train = decode_all(&train_files, channels, shape, options, (&first, &mut skipped))?;
    let test_dir = dir.join("test");
    let (train, test) = if test_dir.is_dir() {
        let test_classes = class_folders(&test_dir)?;
        if test_classes != classes {
            return Err(DataError::format(
                test_dir.display().to_string(),
                format!("its classes {test_classes:?} differ from train/'s {classes:?}"),
            ));
        }
        let test_files = list_files(&test_dir, &classes)?;
        (
            train,
            decode_all(&test_files, channels, shape, options, (&first, &mut skipped))?,
        )
    } else if options.test_split > 0.0 {
        train.split(options.test_split as f32, options.seed)?
    } else {
        return Err(DataError::InvalidArgument(format!(
            "{}: no test/ folder, and a test split of 0 leaves nothing to test on",
            dir.display()
        )));
    };
    let (mean, std) = channel_stats(&train, channels);
    let norm = ImageNorm {
        channels,
        height: shape.0,
        width: shape.1,
        resize: options.size.is_some(),
        mean,
        std,
        class_names: classes,
    };
    let (mut train, mut test) = (train, test);
    normalize(&mut train, &norm);
    normalize(&mut test, &norm);
    Ok(ImageFolder {
        train,
        test,
        norm,
        skipped,
    })
}

/// Reads single images (for `predict`) with a saved normalization: `[channels, height, width]` each.
pub fn load_images(paths: &[PathBuf], norm: &ImageNorm) -> Result<Vec<f32>> {
    let options = ImageFolderOptions {
        size: norm.resize.then_some((norm.height, norm.width)),
        ..Default::default()
    };
    let shape = (norm.height, norm.width);
    let mut out = Vec::with_capacity(paths.len() * norm.channels * shape.0 * shape.1);
    for path in paths {
        let pixels = decode_one(path, norm.channels, shape, &options, Path::new("the training images"))?;
        out.extend(pixels);
    }
    let n = norm.channels * shape.0 * shape.1;
    normalize_pixels(&mut out, n, norm);
    Ok(out)
}

/// Sorted names of the class subfolders of `dir`; at least one.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let io = |e| DataError::Io {
        path: dir.display().to_string(),
        error: e,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(DataError::format(
            dir.display().to_string(),
            "no class folders (expected <class>/*.png|jpg)",
        ));
    }
    Ok(names)
}

fn is_image_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Every image file with its class index, class by class, sorted by name.
fn list_files(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        let io = |e| DataError::Io {
            path: class_dir.display().to_string(),
            error: e,
        };
        let mut these: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&class_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_file() && is_image_file(&path) {
                these.push(path);
            }
        }
        if these.is_empty() {
            return Err(DataError::format(
                class_dir.display().to_string(),
                "empty class folder: no .png/.jpg/.jpeg images",
            ));
        }
        these.sort();
        files.extend(these.into_iter().map(|p| (p, label)));
    }
    Ok(files)
}

/// Channels and size of the run: from the first readable training image
/// (grayscale: 1 channel, else 3), or `--image-size`.
fn probe(files: &[(PathBuf, usize)], options: &ImageFolderOptions) -> Result<(PathBuf, usize, (usize, usize))> {
    let mut last = None;
    for (path, _) in files {
        match open(path) {
            Ok(img) => {
                let channels = if img.color().has_color() { 3 } else { 1 };
                let shape = options.size.unwrap_or((img.height() as usize, img.width() as usize));
                return Ok((path.clone(), channels, shape));
            }
            Err(e) if !options.skip_bad => return Err(with_hint(e)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| DataError::InvalidArgument("no training images".into())))
}

fn open(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.display().to_string(),
        error: e,
    })?;
    image::load_from_memory(&bytes)
        .map_err(|e| DataError::format(path.display().to_string(), format!("not a readable image: {e}")))
}

/// One image as `[channels, height, width]` values in `[0, 1]`. Without a resize,
/// a size other than `expect` is an error naming `first` too.
fn decode_one(
    path: &Path,
    channels: usize,
    shape: (usize, usize),
    options: &ImageFolderOptions,
    first: &Path,
) -> Result<Vec<f32>> {
    let mut img = open(path)?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    if (h, w) != shape {
        if options.size.is_none() {
            return Err(DataError::format(
                path.display().to_string(),
                format!(
                    "is {h}x{w} (HxW) but {} is {}x{}; images must have one size, or pass --image-size HxW to resize",
                    first.display(),
                    shape.0,
                    shape.1
                ),
            ));
        }
        img = img.resize_exact(shape.1 as u32, shape.0 as u32, image::imageops::FilterType::Triangle);
    }
    let hw = shape.0 * shape.1;
    let mut out = vec![0f32; channels * hw];
    if channels == 1 {
        for (o, p) in out.iter_mut().zip(img.to_luma8().into_raw()) {
            *o = f32::from(p) / 255.0;
        }
    } else {
        for (i, px) in img.to_rgb8().into_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * hw + i] = f32::from(px[c]) / 255.0;
            }
        }
    }
    Ok(out)
}

/// Decodes the files in parallel into one dataset; a bad file stops it unless `skip_bad`.
fn decode_all(
    files: &[(PathBuf, usize)],
    channels: usize,
    shape: (usize, usize),
    options: &ImageFolderOptions,
    (first, skipped): (&Path, &mut usize),
) -> Result<Dataset> {
    let decoded: Vec<Result<Vec<f32>>> = files
        .par_iter()
        .map(|(p, _)| decode_one(p, channels, shape, options, first))
        .collect();
    let mut features = Vec::with_capacity(files.len() * channels * shape.0 * shape.1);
    let mut labels = Vec::with_capacity(files.len());
    for (result, (_, label)) in decoded.into_iter().zip(files) {
        match result {
            Ok(pixels) => {
                features.extend(pixels);
                labels.push(*label);
            }
            Err(e @ DataError::Format { .. }) if e.to_string().contains("must have one size") => return Err(e),
            Err(_) if options.skip_bad => *skipped += 1,
            Err(e) => return Err(with_hint(e)),
        }
    }
    if labels.is_empty() {
        return Err(DataError::InvalidArgument(
            "every image was skipped as unreadable".into(),
        ));
    }
    let num_classes = files.iter().map(|f| f.1).max().unwrap_or(0) + 1;
    Dataset::new(
        features,
        vec![channels, shape.0, shape.1],
        Targets::Classes { labels, num_classes },
    )
}

fn with_hint(e: DataError) -> DataError {
    match e {
        DataError::Format { path, message } => DataError::Format {
            path,
            message: format!("{message} (--skip-bad skips such files)"),
        },
        e => e,
    }
}

/// Per-channel mean and std (population) of `[channels, h, w]` samples.
fn channel_stats(ds: &Dataset, channels: usize) -> (Vec<f32>, Vec<f32>) {
    let plane = ds.sample_len() / channels;
    let mut sum = vec![0f64; channels];
    let mut sq = vec![0f64; channels];
    for sample in ds.features.chunks_exact(ds.sample_len()) {
        for (c, px) in sample.chunks_exact(plane).enumerate() {
            for &v in px {
                sum[c] += f64::from(v);
                sq[c] += f64::from(v) * f64::from(v);
            }
        }
    }
    let n = (ds.len() * plane) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / n - m * m).max(0.0).sqrt() as f32).max(1e-6))
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

fn normalize(ds: &mut Dataset, norm: &ImageNorm) {
    let n = ds.sample_len();
    normalize_pixels(&mut ds.features, n, norm);
}

fn normalize_pixels(features: &mut [f32], sample_len: usize, norm: &ImageNorm) {
    let plane = sample_len / norm.channels;
    for sample in features.chunks_exact_mut(sample_len) {
        for (c, px) in sample.chunks_exact_mut(plane).enumerate() {
            for v in px {
                *v = (*v - norm.mean[c]) / norm.std[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes an 8x8 (or `h`x`w`) PNG whose brightness is `level`.
    fn png(path: &Path, h: u32, w: u32, level: u8, rgb: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if rgb {
            image::RgbImage::from_fn(w, h, |x, _| image::Rgb([level, x as u8 * 10, 255 - level]))
                .save(path)
                .unwrap();
        } else {
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([level.wrapping_add((x + y) as u8)]))
                .save(path)
                .unwrap();
        }
    }

    fn folder(rgb: bool, test: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (class, level) in [("cat", 20u8), ("dog", 200u8)] {
            for i in 0..4 {
                png(&dir.path().join(format!("train/{class}/{i}.png")), 8, 8, level, rgb);
            }
            if test {
                png(&dir.path().join(format!("test/{class}/0.png")), 8, 8, level, rgb);
            }
        }
        dir
    }

    fn opts() -> ImageFolderOptions {
        ImageFolderOptions {
            test_split: 0.25,
            seed: 1,
            ..Default::default()
        }
    }

    #[test]
    fn grayscale_folder_loads_with_test_folder() {
        let dir = folder(false, true);
        let f = load_image_folder(dir.path(), &opts()).unwrap();
        assert_eq!(f.norm.class_names, ["cat", "dog"]);
        assert_eq!(f.train.sample_shape, [1, 8, 8]);
        assert_eq!((f.train.len(), f.test.len()), (8, 2));
        assert_eq!(f.train.labels().unwrap(), [0, 0, 0, 0, 1, 1, 1, 1]);
        let mean: f32 = f.train.features.iter().sum::<f32>() / f.train.features.len() as f32;
        assert!(mean.abs() < 1e-4, "{mean}");
    }

    #[test]
    fn rgb_folder_without_test_holds_out_a_split() {
        let dir = folder(true, false);
        let f = load_image_folder(dir.path(), &opts()).unwrap();
        assert_eq!(f.train.sample_shape, [3, 8, 8]);
        assert_eq!((f.train.len(), f.test.len()), (6, 2));
        assert_eq!(f.norm.mean.len(), 3);
        let json = serde_json::to_string(&f.norm).unwrap();
        assert_eq!(serde_json::from_str::<ImageNorm>(&json).unwrap(), f.norm);
    }

    #[test]
    fn predict_images_use_the_saved_normalization() {
        let dir = folder(false, true);
        let f = load_image_folder(dir.path(), &opts()).unwrap();
        let x = load_images(&[dir.path().join("test/dog/0.png")], &f.norm).unwrap();
        assert_eq!(x, f.test.sample(1).unwrap());
    }

    #[test]
    fn mixed_sizes_name_both_files_unless_resized() {
        let dir = folder(false, false);
        png(&dir.path().join("train/dog/9.png"), 10, 12, 50, false);
        let e = load_image_folder(dir.path(), &opts()).unwrap_err().to_string();
        assert!(
            e.contains("9.png: is 10x12 (HxW) but") && e.contains("cat/0.png is 8x8"),
            "{e}"
        );
        assert!(e.contains("--image-size"), "{e}");
        let resized = ImageFolderOptions {
            size: Some((6, 7)),
            ..opts()
        };
        let f = load_image_folder(dir.path(), &resized).unwrap();
        assert_eq!(f.train.sample_shape, [1, 6, 7]);
    }

    #[test]
    fn corrupt_image_is_an_error_or_skipped() {
        let dir = folder(false, false);
        std::fs::write(dir.path().join("train/cat/bad.png"), b"not a png").unwrap();
        let e = load_image_folder(dir.path(), &opts()).unwrap_err().to_string();
        assert!(
            e.contains("bad.png: not a readable image") && e.contains("--skip-bad"),
            "{e}"
        );
        let skip = ImageFolderOptions {
            skip_bad: true,
            ..opts()
        };
        let f = load_image_folder(dir.path(), &skip).unwrap();
        assert_eq!((f.skipped, f.train.len() + f.test.len()), (1, 8));
    }

    #[test]
    fn empty_class_folder_and_missing_train_are_errors() {
        let dir = folder(false, false);
        std::fs::create_dir_all(dir.path().join("train/emu")).unwrap();
        let e = load_image_folder(dir.path(), &opts()).unwrap_err().to_string();
        assert!(e.contains("emu: empty class folder"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = load_image_folder(empty.path(), &opts()).unwrap_err().to_string();
        assert!(e.contains("train: not found") && e.contains("train/<class>"), "{e}");
    }

    #[test]
    fn test_classes_must_match_train_classes() {
        let dir = folder(false, true);
        png(&dir.path().join("test/emu/0.png"), 8, 8, 9, false);
        let e = load_image_folder(dir.path(), &opts()).unwrap_err().to_string();
        assert!(e.contains("differ from train/"), "{e}");
    }

    #[test]
    fn jpeg_images_decode_too() {
        let dir = tempfile::tempdir().unwrap();
        for (class, level) in [("a", 30u8), ("b", 220u8)] {
            for i in 0..3u8 {
                let p = dir.path().join(format!("train/{class}/{i}.jpg"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let img =
                    image::RgbImage::from_fn(8, 8, |x, _| image::Rgb([level, level, level.wrapping_add(x as u8 + i)]));
                img.save(&p).unwrap();
            }
        }
        let f = load_image_folder(dir.path(), &opts()).unwrap();
        assert_eq!(
            (f.train.len() + f.test.len(), f.train.sample_shape.clone()),
            (6, vec![3, 8, 8])
        );
        let none = ImageFolderOptions {
            test_split: 0.0,
            ..opts()
        };
        let e = load_image_folder(dir.path(), &none).unwrap_err().to_string();
        assert!(e.contains("no test/ folder, and a test split of 0"), "{e}");
    }
}
