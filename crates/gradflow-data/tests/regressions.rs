//! Regression tests for hostile or degenerate data files: each input here
//! once produced a crash, an allocation sized by an untrusted header, or a
//! silently meaningless result (found by the fuzz targets in `fuzz/` or by
//! the CLI reliability sweep). Each must be a one-line error naming the file.

use gradflow_data::{
    parse_csv_bytes, parse_idx_images_bytes, parse_idx_labels_bytes, read_idx_images, CsvOptions, Dataset, Mnist,
    MnistSplit, Targets, Task,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::Path;

/// Records the largest single allocation of the current thread, so tests can
/// prove that a header's claims do not drive allocations.
struct Probe;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(layout.size())));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(new_size)));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Probe = Probe;

fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let out = f();
    (out, PEAK.with(|p| p.get()))
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn write_mnist(dir: &Path, train: (Vec<u8>, Vec<u8>), test: (Vec<u8>, Vec<u8>)) {
    for (name, data) in [
        ("train-images-idx3-ubyte", train.0),
        ("train-labels-idx1-ubyte", train.1),
        ("t10k-images-idx3-ubyte", test.0),
        ("t10k-labels-idx1-ubyte", test.1),
    ] {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

#[test]
fn hostile_headers_do_not_drive_allocations() {
    let dir = tempfile::tempdir().unwrap();
    // 4 billion images claimed, 84 pixel bytes present: raw file, gzip file, memory.
    let img = idx_images(4_000_000_000, 28, 28, &[0; 84]);
    let raw = dir.path().join("train-images-idx3-ubyte");
    let gz = dir.path().join("train-images-idx3-ubyte.gz");
    std::fs::write(&raw, &img).unwrap();
    std::fs::write(&gz, gzip(&img)).unwrap();
    for path in [&raw, &gz] {
        let (r, peak) = peak_during(|| read_idx_images(path));
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains("truncated"),
            "{e}"
        );
        assert!(peak < 1 << 20, "{}: allocated {peak} bytes", path.display());
    }
    // A gzip bomb: 4 MB of zeros compress to a few KB; the header claims far
    // more. Only the bytes really present may be buffered.
    let mut bomb = idx_images(1_000_000, 28, 28, &[]);
    bomb.resize(bomb.len() + (4 << 20), 0);
    let packed = gzip(&bomb);
    assert!(packed.len() < 16 << 10);
    let (r, peak) = peak_during(|| parse_idx_images_bytes(&packed, "bomb.gz"));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("holds only 4194320 bytes after decompression"), "{e}");
    assert!(peak < 32 << 20, "allocated {peak} bytes");
    // Labels: count u32::MAX, nothing behind it.
    let mut lab = 0x801u32.to_be_bytes().to_vec();
    lab.extend_from_slice(&u32::MAX.to_be_bytes());
    for data in [lab.clone(), gzip(&lab)] {
        let (r, peak) = peak_during(|| parse_idx_labels_bytes(&data, "l"));
        assert!(r.unwrap_err().to_string().contains("header says 4294967295 labels"));
        assert!(peak < 1 << 20, "allocated {peak} bytes");
    }
}

#[test]
fn empty_splits_are_errors_not_zero_percent_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(
        dir.path(),
        (idx_images(0, 28, 28, &[]), idx_labels(&[])),
        (idx_images(1, 28, 28, &[0; 784]), idx_labels(&[3])),
    );
    let e = Mnist::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.ends_with("train-images-idx3-ubyte: holds no images (its header's count is 0)"),
        "{e}"
    );
    // A limit of 0 on a good split.
    let e = gradflow_data::mnist::load_split(dir.path(), MnistSplit::Test, Some(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid argument: a limit of 0 test images leaves nothing to use; the limit must be at least 1"
    );
    let t = gradflow_data::mnist::load_split(dir.path(), MnistSplit::Test, Some(5)).unwrap();
    assert_eq!(t.len(), 1);
}

#[test]
fn a_validation_split_that_rounds_to_nothing_is_an_error() {
    let ds = Dataset::new(
        vec![0.0; 6],
        vec![2],
        Targets::Classes {
            labels: vec![0, 1, 0],
            num_classes: 2,
        },
    )
    .unwrap();
    let e = ds.split(0.1, 0).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid argument: validation fraction 0.1 of 3 samples leaves no validation samples"
    );
    let (tr, va) = ds.split(0.0, 0).unwrap();
    assert_eq!((tr.len(), va.len()), (3, 0));
    let (tr, va) = ds.split(0.34, 0).unwrap();
    assert_eq!((tr.len(), va.len()), (2, 1));
}

#[test]
fn csv_edge_cases_are_errors_or_consistent() {
    let cls = CsvOptions::new("label", Task::Classification);
    let reg = CsvOptions::new("label", Task::Regression);
    // A header only, blank lines only, a lone BOM.
    for text in [&b"a,label\n"[..], b"\n\n\n", b"\xef\xbb\xbf"] {
        for o in [&cls, &reg] {
            let e = parse_csv_bytes(text, "t.csv", o).unwrap_err().to_string();
            assert!(e.starts_with("t.csv: "), "{e}");
        }
    }
    // Huge exponents overflow f32 to infinity: not a finite number.
    let e = parse_csv_bytes(b"a,label\n1e39,1\n", "t.csv", &reg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'1e39' is not a finite number"), "{e}");
    // Unbalanced quotes, NUL bytes and invalid UTF-8 in the header.
    for text in [&b"a,label\n\"1,2\n"[..], b"a,\0label\n1,2\n", b"\xff,label\n1,2\n"] {
        let r = parse_csv_bytes(text, "t.csv", &cls);
        if let Err(e) = r {
            assert!(e.to_string().starts_with("t.csv: "), "{e}");
        }
    }
}

/// Every file of a committed fuzz corpus (seeds and crash inputs).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_corpora_replay_without_panics() {
    // The idx and csv targets' logic (see fuzz/fuzz_targets) on every
    // committed input, in the ordinary test build, under the allocation probe.
    for (name, input) in corpus("idx") {
        let Some((&mode, data)) = input.split_first() else {
            continue;
        };
        let data = if mode & 2 != 0 { gzip(data) } else { data.to_vec() };
        let (_, peak) = peak_during(|| {
            if mode & 1 == 0 {
                if let Ok(img) = parse_idx_images_bytes(&data, &name) {
                    assert_eq!(img.pixels.len(), img.count * img.rows * img.cols, "{name}");
                }
            } else {
                let _ = parse_idx_labels_bytes(&data, &name);
            }
        });
        assert!(peak < 16 << 20, "{name}: allocated {peak} bytes");
    }
    for (name, input) in corpus("csv") {
        let Some((&mode, data)) = input.split_first() else {
            continue;
        };
        let task = if mode & 1 == 0 {
            Task::Classification
        } else {
            Task::Regression
        };
        let delimiter = [b',', b';', b'\t', b' '][usize::from(mode >> 1) & 3];
        let opts = CsvOptions::new("label", task).with_delimiter(delimiter);
        if let Ok(t) = parse_csv_bytes(data, &name, &opts) {
            assert_eq!(
                t.dataset.features.len(),
                t.dataset.len() * t.feature_names.len(),
                "{name}"
            );
        }
    }
}
