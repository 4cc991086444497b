//! Exports MNIST digits from the IDX files as an image folder
//! (`OUT/train/<digit>/<index>.png`, `OUT/test/<digit>/<index>.png`), to check
//! that training on the PNG folder matches training on the IDX files.
//!
//! `cargo run -p gradflow-data --example mnist_to_png -- data/mnist /tmp/mnist-png 2000 1000`

use gradflow_data::{mnist::load_split, MnistSplit};
use std::path::{Path, PathBuf};

fn export(dir: &Path, out: &Path, split: MnistSplit, name: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let ds = load_split(dir, split, Some(n))?;
    let labels = ds.labels().ok_or("MNIST has class labels")?.to_vec();
    for (i, label) in labels.iter().enumerate() {
        let px: Vec<u8> = ds
            .sample(i)
            .ok_or("sample")?
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        let path = out.join(name).join(label.to_string()).join(format!("{i:05}.png"));
        std::fs::create_dir_all(path.parent().ok_or("parent")?)?;
        image::GrayImage::from_raw(28, 28, px).ok_or("28x28")?.save(&path)?;
    }
    println!("{}: {} {name} digits", out.display(), labels.len());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out, train, test] = args.as_slice() else {
        return Err("usage: mnist_to_png MNIST_DIR OUT_DIR N_TRAIN N_TEST".into());
    };
    let out = PathBuf::from(out);
    export(Path::new(dir), &out, MnistSplit::Train, "train", train.parse()?)?;
    export(Path::new(dir), &out, MnistSplit::Test, "test", test.parse()?)?;
    Ok(())
}
