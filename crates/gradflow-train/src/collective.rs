//! The seam between the fit loop and the processes of a data-parallel run.
//!
//! The trainer always talks to a [`Collective`]: [`SingleProcess`] when one
//! process trains (every call is a no-op), MPI's world when `mpirun` started
//! the run and gradflow was built with `--features mpi`. So the loop reads the
//! same either way and no `cfg` reaches it.

#[cfg(feature = "mpi")]
mod mpi_world;

use crate::error::{Error, Result};
use gradflow::{DType, Element, GradStore, Tensor};
use gradflow_nn::optim::Param;
use std::ops::Range;

/// The operations data-parallel training needs from the processes of a run.
/// Every process calls each of them in the same order (they are collective).
pub trait Collective {
    /// This process's index, 0 to `size() - 1`; rank 0 prints and writes files.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Element-wise sum over the processes, in place; every process gets the same bits.
    fn sum_f64(&self, values: &mut [f64]);
    /// As [`sum_f64`](Self::sum_f64), for f32 gradients (half the bytes on the wire).
    fn sum_f32(&self, values: &mut [f32]);
    /// Overwrite `bytes` with rank 0's (every process passes the same length).
    fn broadcast(&self, bytes: &mut [u8]);
}

/// One process alone: the sums and broadcasts are the identity.
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f64(&self, _values: &mut [f64]) {}
    fn sum_f32(&self, _values: &mut [f32]) {}
    fn broadcast(&self, _bytes: &mut [u8]) {}
}

/// The processes of this run: MPI's world when a launcher (`mpirun`) started
/// more than one, else this process alone. A build without the `mpi` feature
/// refuses to run under a launcher, where each process would otherwise train
/// the whole model and write the same run directory.
pub fn from_environment() -> Result<Box<dyn Collective>> {
    let Some(size) = launched_size() else {
        return Ok(Box::new(SingleProcess));
    };
    #[cfg(feature = "mpi")]
    {
        let _ = size;
        Ok(Box::new(mpi_world::MpiWorld::initialize()?))
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::Distributed(format!(
        "started by an MPI launcher with {size} processes, but this gradflow was built without MPI: build it with `cargo build --release --features mpi`"
    )))
}

/// End the processes' cooperation when this one is done: MPI is finalized
/// after success; after an error (which the caller has already shown), every
/// process of the run is aborted, as the others may be waiting for this one.
/// Does nothing in a single process.
pub fn finish(ok: bool) {
    #[cfg(feature = "mpi")]
    mpi_world::finish(ok);
    #[cfg(not(feature = "mpi"))]
    let _ = ok;
}

/// The process count an MPI launcher announces (OpenMPI's and MPICH's variables), when above 1.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .filter(|&n| n > 1)
}

/// The processes that share one machine's cores with this one (1 outside a launcher).
pub fn local_processes() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Rank `rank`'s contiguous part of `len` items split over `size` processes,
/// the sizes differing by at most one.
pub fn shard_range(len: usize, rank: usize, size: usize) -> Range<usize> {
    len * rank / size..len * (rank + 1) / size
}

/// Gradients are summed in buckets of about this many bytes, so that a large
/// model's all-reduce never needs a second copy of every gradient at once.
pub const BUCKET_BYTES: usize = 4 << 20;

/// This process's part of one global batch: who to reduce with, and the
/// fraction of the batch's samples it holds (its loss is a mean over those).
#[derive(Clone, Copy)]
pub struct Shard<'a> {
    /// The processes sharing the batch.
    pub collective: &'a dyn Collective,
    /// This shard's samples over the batch's: the weight of its mean loss in the batch's mean.
    pub weight: f64,
}

impl Shard<'_> {
    /// The whole batch in one process: nothing is reduced.
    pub const WHOLE: Shard<'static> = Shard {
        collective: &SingleProcess,
        weight: 1.0,
    };

    fn alone(&self) -> bool {
        self.collective.size() == 1
    }

    /// The batch's mean of two per-sample-mean losses, from each shard's.
    pub fn batch_losses(&self, losses: [f64; 2]) -> [f64; 2] {
        if self.alone() {
            return losses;
        }
        let mut v = losses.map(|l| l * self.weight);
        self.collective.sum_f64(&mut v);
        v
    }

    /// Replace each parameter's gradient by the batch's: the shards' gradients
    /// weighted by their share and summed, in buckets of [`BUCKET_BYTES`] taken
    /// in parameter order, so every process gets the same bits every run. A
    /// parameter without a gradient here counts as zero (another shard may have one).
    pub fn all_reduce_gradients(&self, params: &[Param], grads: &mut GradStore) -> Result<()> {
        if self.alone() {
            return Ok(());
        }
        let mut start = 0;
        let mut bytes = 0;
        for (i, p) in params.iter().enumerate() {
            bytes += p.tensor.numel() * dtype_bytes(p.tensor.dtype());
            let dtype_changes = params.get(i + 1).is_some_and(|n| n.tensor.dtype() != p.tensor.dtype());
            if bytes >= BUCKET_BYTES || dtype_changes || i + 1 == params.len() {
                self.reduce_bucket(&params[start..=i], grads)?;
                (start, bytes) = (i + 1, 0);
            }
        }
        Ok(())
    }

    fn reduce_bucket(&self, bucket: &[Param], grads: &mut GradStore) -> Result<()> {
        match bucket[0].tensor.dtype() {
            DType::F32 => self.reduce_typed::<f32>(bucket, grads, |c, v| c.sum_f32(v)),
            DType::F64 => self.reduce_typed::<f64>(bucket, grads, |c, v| c.sum_f64(v)),
        }
    }

    fn reduce_typed<T: Element>(
        &self,
        bucket: &[Param],
        grads: &mut GradStore,
        sum: impl Fn(&dyn Collective, &mut [T]),
    ) -> Result<()> {
        let weight = T::of(self.weight);
        let mut flat: Vec<T> = Vec::with_capacity(bucket.iter().map(|p| p.tensor.numel()).sum());
        for p in bucket {
            match grads.get(&p.tensor) {
                Some(g) => flat.extend(g.to_vec::<T>()?.into_iter().map(|v| v * weight)),
                None => flat.resize(flat.len() + p.tensor.numel(), T::zero()),
            }
        }
        sum(self.collective, &mut flat);
        let mut rest = &flat[..];
        for p in bucket {
            let (mine, tail) = rest.split_at(p.tensor.numel());
            grads.insert(&p.tensor, Tensor::from_vec(mine.to_vec(), p.tensor.shape())?);
            rest = tail;
        }
        Ok(())
    }
}

fn dtype_bytes(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 4,
        DType::F64 => 8,
    }
}

/// Overwrite each tensor with rank 0's values (the initial weights, a
/// resumed checkpoint's, BatchNorm's running statistics).
pub fn broadcast_tensors(collective: &dyn Collective, tensors: &[Tensor]) -> Result<()> {
    if collective.size() == 1 {
        return Ok(());
    }
    for t in tensors {
        let mut values = t.to_vec_f64();
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        collective.broadcast(&mut bytes);
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        t.assign(&Tensor::from_vec(values, t.shape())?.to_dtype(t.dtype()))?;
    }
    Ok(())
}

/// Whether any process's flag is set (a Ctrl-C reaches the processes at
/// slightly different steps; they must stop at the same one).
pub fn any(collective: &dyn Collective, flag: bool) -> bool {
    let mut v = [f64::from(u8::from(flag))];
    collective.sum_f64(&mut v);
    v[0] > 0.0
}

/// Refuse to train when a process was started with other settings than rank 0
/// (another seed, model, batch size or data): `what` describes this process's.
pub fn check_same_settings(collective: &dyn Collective, what: &str) -> Result<()> {
    if collective.size() == 1 {
        return Ok(());
    }
    let mine = crc32fast::hash(what.as_bytes());
    let mut theirs = mine.to_le_bytes();
    collective.broadcast(&mut theirs);
    let mut differs = [f64::from(u8::from(u32::from_le_bytes(theirs) != mine))];
    collective.sum_f64(&mut differs);
    if differs[0] > 0.0 {
        return Err(Error::Distributed(format!(
            "{} of the {} processes were started with other settings, model or data than rank 0 (this is rank {}): every process must get the same flags and files",
            differs[0],
            collective.size(),
            collective.rank()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_batch_in_order_with_sizes_differing_by_at_most_one() {
        for (len, size) in [(10, 1), (10, 2), (7, 2), (7, 3), (3, 3), (64, 4)] {
            let parts: Vec<Range<usize>> = (0..size).map(|r| shard_range(len, r, size)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[size - 1].end, len);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let lens: Vec<usize> = parts.iter().map(|r| r.len()).collect();
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{lens:?}");
        }
    }

    #[test]
    fn one_process_reduces_nothing_and_keeps_the_bits() {
        let w = Param::new(
            "w",
            Tensor::from_vec(vec![0.1f32, 0.2], &[2]).unwrap().requires_grad_(true),
        );
        let mut grads = w.tensor.square().sum_all().backward().unwrap();
        let before = grads.get(&w.tensor).unwrap().to_vec::<f32>().unwrap();
        Shard::WHOLE
            .all_reduce_gradients(std::slice::from_ref(&w), &mut grads)
            .unwrap();
        assert_eq!(grads.get(&w.tensor).unwrap().to_vec::<f32>().unwrap(), before);
        assert_eq!(Shard::WHOLE.batch_losses([0.3, 0.1]), [0.3, 0.1]);
        assert!(!any(&SingleProcess, false) && any(&SingleProcess, true));
        check_same_settings(&SingleProcess, "anything").unwrap();
    }

    /// Rank 0 of two processes whose other holds the same values; its
    /// broadcasts bring rank 0's bytes flipped when `other_settings`.
    struct Mirror {
        other_settings: bool,
    }

    impl Collective for Mirror {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f64(&self, values: &mut [f64]) {
            values.iter_mut().for_each(|v| *v *= 2.0);
        }
        fn sum_f32(&self, values: &mut [f32]) {
            values.iter_mut().for_each(|v| *v *= 2.0);
        }
        fn broadcast(&self, bytes: &mut [u8]) {
            if self.other_settings {
                bytes.iter_mut().for_each(|b| *b = !*b);
            }
        }
    }

    #[test]
    fn two_equal_halves_give_back_the_whole_batch_gradient_in_buckets() {
        let big = vec![0.25f32; BUCKET_BYTES / 4 + 3];
        let params = [
            Param::new(
                "a",
                Tensor::from_vec(vec![1.5f32, -2.0], &[2]).unwrap().requires_grad_(true),
            ),
            Param::new(
                "b",
                Tensor::from_vec(big.clone(), &[big.len()])
                    .unwrap()
                    .requires_grad_(true),
            ),
            Param::new("c", Tensor::from_vec(vec![3.0f64], &[1]).unwrap().requires_grad_(true)),
        ];
        let loss = params[0]
            .tensor
            .square()
            .sum_all()
            .add(&params[1].tensor.sum_all())
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let shard = Shard {
            collective: &Mirror { other_settings: false },
            weight: 0.5,
        };
        shard.all_reduce_gradients(&params, &mut grads).unwrap();
        assert_eq!(
            grads.get(&params[0].tensor).unwrap().to_vec::<f32>().unwrap(),
            vec![3.0, -4.0]
        );
        assert!(grads
            .get(&params[1].tensor)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|&g| g == 1.0));
        // Unused here, so zero here; the sum over processes is a gradient all the same.
        assert_eq!(
            grads.get(&params[2].tensor).unwrap().to_vec::<f64>().unwrap(),
            vec![0.0]
        );
        assert_eq!(shard.batch_losses([0.75, 0.5]), [0.75, 0.5]);
    }

    #[test]
    fn a_process_started_with_other_settings_is_refused() {
        check_same_settings(&Mirror { other_settings: false }, "seed 1").unwrap();
        let e = check_same_settings(&Mirror { other_settings: true }, "seed 1").unwrap_err();
        assert!(
            e.to_string()
                .contains("were started with other settings, model or data than rank 0"),
            "{e}"
        );
    }
}
