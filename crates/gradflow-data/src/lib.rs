//! Data loading for gradflow: MNIST (IDX files), CSV tables and single
//! images, plus the splitting, normalization and batching a training loop
//! needs.
//!
//! The crate deliberately knows nothing about tensors: it hands out flat
//! `Vec<f32>` buffers with shapes, so it can be tested and reused on its own.
//! Every failure caused by a file is a [`DataError`] whose message names the
//! file; nothing here panics on user-supplied data.
//!
//! A typical training setup:
//!
//! ```no_run
//! use gradflow_data::{default_data_dir, Batch, Loader, Mnist, MNIST_MEAN, MNIST_STD};
//!
//! # fn main() -> gradflow_data::Result<()> {
//! let mut mnist = Mnist::load(&default_data_dir())?;
//! mnist.train.normalize(MNIST_MEAN, MNIST_STD);
//! let (train, val) = mnist.train.split(0.1, 42)?;
//! let loader = Loader::new(64, true, false, 42)?;
//! let mut batch = Batch::default();
//! for epoch in 0..2 {
//!     let order = loader.order(train.len(), epoch);
//!     for indices in loader.chunks(&order) {
//!         batch.fill(&train, indices); // reuses buffers
//!         // batch.inputs: [n, 1, 28, 28] as batch.shape; batch.labels(): classes
//!     }
//! }
//! # let _ = val;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod csv;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod image;
pub mod loader;
pub mod mnist;
pub mod table;
mod table_read;

pub use self::csv::{parse_csv_bytes, read_csv, CsvDataset, CsvOptions, Task};
pub use dataset::{Dataset, Targets};
pub use error::{DataError, Result};
pub use idx::{parse_idx_images_bytes, parse_idx_labels_bytes, read_idx_images, read_idx_labels, IdxImages};
pub use image::{
    decode_gray_image, decode_gray_image_bytes, invert_if_light_background, load_gray_image, GrayImage, IMAGE_SIDE,
};
pub use loader::{fill_batch, Batch, BatchTargets, Batches, Loader};
pub use mnist::{default_data_dir, Mnist, MnistSplit, MNIST_CLASSES, MNIST_MEAN, MNIST_STD};
pub use table::{read_table, read_table_with_progress, EncodedRows, Encoding, Feature, Missing, Table, TableOptions};

/// Test-only global allocator that records the largest single allocation
/// made by the current thread, so tests can prove that hostile headers do
/// not trigger huge allocations.
#[cfg(test)]
mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Probe;

    thread_local! {
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn record(size: usize) {
        let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
    }

    // SAFETY: forwards every call unchanged to the system allocator.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            System.alloc_zeroed(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            record(new_size);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static GLOBAL: Probe = Probe;

    /// Runs `f` and returns its result with the largest single allocation
    /// (in bytes) this thread made meanwhile.
    pub(crate) fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        PEAK.with(|p| p.set(0));
        let out = f();
        (out, PEAK.with(|p| p.get()))
    }

    #[test]
    fn probe_sees_large_allocations() {
        let (v, peak) = peak_during(|| vec![1u8; 3 << 20]);
        assert_eq!(v.len(), 3 << 20);
        assert!(peak >= 3 << 20, "peak {peak}");
        let ((), small) = peak_during(|| ());
        assert!(small < 1 << 20);
    }
}
