//! Mini-batching: deterministic per-epoch sample orders and batch assembly.
//!
//! The order of epoch `k` depends only on `(seed, k)`, so a run resumed from
//! a checkpoint at epoch `k` sees exactly the batches it would have seen
//! without the interruption, without replaying earlier epochs.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};

/// Golden-ratio multiplier that spreads consecutive epoch numbers over the
/// whole seed space before mixing them with the user's seed.
const EPOCH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Batching policy: how many samples per step, in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loader {
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
}

/// Targets of one batch, in the same order as the batch's inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchTargets {
    /// One class index per sample.
    Classes(Vec<usize>),
    /// `width` values per sample, sample after sample (the `usize` is `width`).
    Values(Vec<f32>, usize),
}

impl Default for BatchTargets {
    fn default() -> Self {
        BatchTargets::Classes(Vec::new())
    }
}

/// One mini-batch, ready to be copied into a tensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// `shape.iter().product()` values, sample after sample.
    pub inputs: Vec<f32>,
    /// `[n, sample_shape...]`, so the consumer can build an input tensor
    /// without knowing the dataset.
    pub shape: Vec<usize>,
    /// Targets of the `n` samples.
    pub targets: BatchTargets,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// True for a batch without samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class labels, or `None` for regression batches.
    pub fn labels(&self) -> Option<&[usize]> {
        match &self.targets {
            BatchTargets::Classes(l) => Some(l),
            BatchTargets::Values(..) => None,
        }
    }

    /// Overwrites this batch with the samples at `indices`, reusing the
    /// existing buffers so a training loop allocates nothing per step once
    /// the buffers have grown to batch size.
    ///
    /// # Panics
    /// If an index is `>= ds.len()` (indices come from [`Loader::order`], so
    /// that is a bug in the caller, not bad data).
    pub fn fill(&mut self, ds: &Dataset, indices: &[usize]) {
        fill_batch(ds, indices, self);
    }
}

/// Copies the samples at `indices` of `ds` into `batch`, reusing its
/// buffers (see [`Batch::fill`]).
///
/// # Panics
/// If an index is `>= ds.len()`.
pub fn fill_batch(ds: &Dataset, indices: &[usize], batch: &mut Batch) {
    let n = ds.len();
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        panic!("fill_batch: index {bad} out of range for {n} samples");
    }
    let len = ds.sample_len();
    batch.inputs.clear();
    batch.inputs.reserve(indices.len() * len);
    for &i in indices {
        batch.inputs.extend_from_slice(&ds.features[i * len..(i + 1) * len]);
    }
    batch.shape.clear();
    batch.shape.push(indices.len());
    batch.shape.extend_from_slice(&ds.sample_shape);
    match &ds.targets {
        Targets::Classes { labels, .. } => {
            if !matches!(batch.targets, BatchTargets::Classes(_)) {
                batch.targets = BatchTargets::Classes(Vec::new());
            }
            if let BatchTargets::Classes(out) = &mut batch.targets {
                out.clear();
                out.extend(indices.iter().map(|&i| labels[i]));
            }
        }
        Targets::Values { values, width } => {
            if !matches!(batch.targets, BatchTargets::Values(..)) {
                batch.targets = BatchTargets::Values(Vec::new(), *width);
            }
            if let BatchTargets::Values(out, w) = &mut batch.targets {
                *w = *width;
                out.clear();
                for &i in indices {
                    out.extend_from_slice(&values[i * width..(i + 1) * width]);
                }
            }
        }
    }
}

impl Loader {
    /// Creates a loader; errors on `batch_size == 0` (it would loop forever
    /// or divide by zero later).
    pub fn new(batch_size: usize, shuffle: bool, drop_last: bool, seed: u64) -> Result<Loader> {
        if batch_size == 0 {
            return Err(DataError::InvalidArgument("batch size must be at least 1".into()));
        }
        Ok(Loader {
            batch_size,
            shuffle,
            drop_last,
            seed,
        })
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether each epoch visits the samples in a fresh random order.
    pub fn shuffle(&self) -> bool {
        self.shuffle
    }

    /// Whether a final batch smaller than `batch_size` is skipped.
    pub fn drop_last(&self) -> bool {
        self.drop_last
    }

    /// Base seed of the per-epoch shuffles.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The order in which epoch `epoch` visits samples `0..n`: a permutation
    /// that depends only on `(seed, epoch)` when shuffling, else `0..n`.
    pub fn order(&self, n: usize, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if self.shuffle {
            let seed = self.seed ^ (epoch as u64).wrapping_mul(EPOCH_MIX);
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        order
    }

    /// Batches per epoch over `n` samples, honouring `drop_last`.
    pub fn num_batches(&self, n: usize) -> usize {
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// Cuts an epoch's `order` into batch-sized index slices, honouring
    /// `drop_last`; pair it with [`Batch::fill`] for an allocation-free loop.
    pub fn chunks<'o>(&self, order: &'o [usize]) -> impl Iterator<Item = &'o [usize]> + 'o {
        let full = self.num_batches(order.len());
        order.chunks(self.batch_size).take(full)
    }

    /// Iterates over the batches of epoch `epoch`, allocating each batch;
    /// the simple path when per-step allocation does not matter.
    pub fn batches<'a>(&self, ds: &'a Dataset, epoch: usize) -> Batches<'a> {
        let order = self.order(ds.len(), epoch);
        Batches {
            ds,
            batch_size: self.batch_size,
            remaining: self.num_batches(order.len()),
            order,
            pos: 0,
        }
    }
}

/// Iterator returned by [`Loader::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    ds: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
    remaining: usize,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let end = (self.pos + self.batch_size).min(self.order.len());
        let mut batch = Batch::default();
        fill_batch(self.ds, &self.order[self.pos..end], &mut batch);
        self.pos = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset::new(
            (0..n * 2).map(|i| i as f32).collect(),
            vec![1, 2],
            Targets::Classes {
                labels: (0..n).collect(),
                num_classes: n.max(1),
            },
        )
        .unwrap()
    }

    #[test]
    fn zero_batch_size_is_an_error() {
        assert!(Loader::new(0, true, false, 1).is_err());
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let l = Loader::new(4, true, false, 42).unwrap();
        assert_eq!(l.order(100, 3), l.order(100, 3));
        // A fresh loader (a resumed run) reproduces epoch 3 directly.
        assert_eq!(Loader::new(4, true, false, 42).unwrap().order(100, 3), l.order(100, 3));
        assert_ne!(l.order(100, 3), l.order(100, 4));
        assert_ne!(l.order(100, 0), Loader::new(4, true, false, 43).unwrap().order(100, 0));
        let mut o = l.order(100, 5);
        assert_ne!(o, (0..100).collect::<Vec<_>>());
        o.sort_unstable();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
        let plain = Loader::new(4, false, false, 42).unwrap();
        assert_eq!(plain.order(5, 9), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn every_index_once_per_epoch_and_drop_last() {
        let ds = toy(10);
        let keep = Loader::new(4, true, false, 1).unwrap();
        assert_eq!(keep.num_batches(10), 3);
        let batches: Vec<Batch> = keep.batches(&ds, 2).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.labels().unwrap().to_vec()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());

        let drop = Loader::new(4, true, true, 1).unwrap();
        assert_eq!(drop.num_batches(10), 2);
        assert_eq!(drop.batches(&ds, 0).len(), 2);
        assert!(drop.batches(&ds, 0).all(|b| b.len() == 4));
        assert_eq!(drop.chunks(&drop.order(10, 0)).count(), 2);
        assert_eq!(drop.batches(&toy(3), 0).count(), 0);
        assert_eq!(keep.batches(&toy(0), 0).count(), 0);
    }

    #[test]
    fn batch_contents_and_shape_match_the_samples() {
        let ds = toy(5);
        let l = Loader::new(2, true, false, 9).unwrap();
        for b in l.batches(&ds, 1) {
            assert_eq!(b.shape[1..], [1, 2]);
            assert_eq!(b.inputs.len(), b.len() * 2);
            for (k, &label) in b.labels().unwrap().iter().enumerate() {
                assert_eq!(b.inputs[2 * k], (2 * label) as f32);
            }
        }
    }

    #[test]
    fn fill_reuses_buffers_and_switches_target_kind() {
        let ds = toy(6);
        let l = Loader::new(3, false, false, 0).unwrap();
        let order = l.order(ds.len(), 0);
        let mut b = Batch::default();
        let mut ptr = None;
        for idx in l.chunks(&order) {
            b.fill(&ds, idx);
            assert_eq!(b.shape, vec![3, 1, 2]);
            let p = b.inputs.as_ptr();
            if let Some(q) = ptr {
                assert_eq!(q, p, "buffer was reallocated");
            }
            ptr = Some(p);
        }
        assert_eq!(b.labels(), Some(&[3, 4, 5][..]));
        let reg = Dataset::new(
            vec![1.0, 2.0],
            vec![1],
            Targets::Values {
                values: vec![0.5, 0.6, 0.7, 0.8],
                width: 2,
            },
        )
        .unwrap();
        fill_batch(&reg, &[1], &mut b);
        assert_eq!(b.targets, BatchTargets::Values(vec![0.7, 0.8], 2));
        assert_eq!(b.inputs, vec![2.0]);
        assert_eq!(b.labels(), None);
    }
}
