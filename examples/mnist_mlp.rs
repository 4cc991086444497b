//! Train a 784-800-10 MLP on MNIST from Rust, the way `gradflow train` does,
//! in a few lines. Pass `--quick` to use 2,000 images (what the test runs).
//!
//! Run: `cargo run --release -p gradflow-examples --example mnist_mlp`

use gradflow_train::trainer::model_from_config;
use gradflow_train::{DataSource, Observer, TrainConfig, Trainer};
use std::sync::atomic::AtomicBool;

struct Print;
impl Observer for Print {
    fn epoch_end(&mut self, m: &gradflow_train::EpochMetrics) {
        println!(
            "epoch {}: train loss {:.4}, accuracy {:.2}%",
            m.epoch,
            m.train_loss,
            m.train_accuracy * 100.0
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `gradflow` command does: this thread joins the kernel pool (all cores),
    // and freed buffers are kept for the next step.
    gradflow::set_num_threads_on_this_thread(std::thread::available_parallelism().map_or(1, |n| n.get()));
    gradflow::keep_freed_memory();
    let quick = std::env::args().any(|a| a == "--quick");
    let config = TrainConfig {
        model: "mlp".into(),
        epochs: if quick { 3 } else { 5 },
        limit_train: quick.then_some(2000),
        limit_test: quick.then_some(1000),
        ..TrainConfig::default()
    };
    let spec = model_from_config(&config)?;
    let out = std::env::temp_dir().join(format!("gradflow-example-mnist-{}", std::process::id()));
    let data = DataSource::Mnist(gradflow_data::default_data_dir());
    let mut trainer = Trainer::new(config, spec, data, &out)?;
    let summary = trainer.fit(&mut Print, &AtomicBool::new(false))?;
    println!("test accuracy {:.2}%", summary.test_accuracy * 100.0);
    let _ = std::fs::remove_dir_all(&out);
    assert!(summary.test_accuracy > if quick { 0.85 } else { 0.97 });
    Ok(())
}
