//! Data-parallel steps in f64 (built with `--features mpi`; `.ci/run` runs it):
//! two processes, each with its half of every batch, reach the weights one
//! process reaches with the whole batch, to 1e-12. The test starts itself
//! again under `mpirun -np 2`; rank 0 also trains the single-process
//! reference and compares.
#![cfg(feature = "mpi")]

use gradflow::{DType, Tensor};
use gradflow_nn::optim::{self, OptimizerSpec, Param};
use gradflow_nn::{BuildOptions, Ctx, Loss, ModelSpec, Module, Penalty, Sequential, Target};
use gradflow_train::collective::{self, shard_range, Collective, Shard};
use gradflow_train::step::{train_step_sharded, Objective, StepOutcome, Update};

const MODEL: &str = "input = [5]
[[layer]]
type = \"Linear\"
out_features = 16
[[layer]]
type = \"Tanh\"
[[layer]]
type = \"Linear\"
out_features = 3
";
const BATCH: usize = 11;
const STEPS: usize = 20;
const INNER: &str = "GRADFLOW_MPI_F64_WORKER";

fn model() -> Sequential {
    let options = BuildOptions {
        dtype: DType::F64,
        seed: 7,
        ..Default::default()
    };
    ModelSpec::parse(MODEL, "mlp").unwrap().build(options).unwrap()
}

/// Sample `i` of step `s`: features and class, the same in every process.
fn sample(s: usize, i: usize) -> (Vec<f64>, usize) {
    let x = (0..5)
        .map(|j| (((s * 31 + i * 7 + j * 3) % 17) as f64 - 8.0) / 5.0)
        .collect();
    (x, (s + i) % 3)
}

/// `STEPS` steps of SGD with momentum, an L2 penalty and norm clipping on
/// the samples `part` of each batch; the final weights.
fn train(collective: &dyn Collective, part: std::ops::Range<usize>) -> Vec<f64> {
    let net = model();
    let params: Vec<Param> = net
        .parameters()
        .into_iter()
        .map(|p| Param::new(p.name, p.tensor))
        .collect();
    let targets = net.named_penalty_targets();
    let mut spec = OptimizerSpec::parse("sgd", 0.1).unwrap();
    spec.set("momentum", 0.9).unwrap();
    let mut sgd = optim::build(&spec);
    let loss = Loss::CrossEntropy { label_smoothing: 0.1 };
    let objective = Objective {
        loss: &loss,
        penalty: Penalty { l1: 1e-4, l2: 1e-3 },
        penalty_targets: &targets,
    };
    for s in 0..STEPS {
        let (xs, ys): (Vec<Vec<f64>>, Vec<usize>) = part.clone().map(|i| sample(s, i)).unzip();
        let x = Tensor::from_vec(xs.concat(), &[part.len(), 5]).unwrap();
        let mut update = Update {
            optimizer: sgd.as_mut(),
            params: &params,
            clip_norm: Some(0.5),
            clip_value: None,
            max_norm: None,
            check_parameters: true,
        };
        let shard = Shard {
            collective,
            weight: part.len() as f64 / BATCH as f64,
        };
        let outcome = train_step_sharded(
            &net,
            &x,
            Target::Classes(&ys),
            &objective,
            &mut update,
            &mut Ctx::eval(),
            shard,
        );
        assert!(matches!(outcome.unwrap(), StepOutcome::Updated(_)));
    }
    params.iter().flat_map(|p| p.tensor.to_vec_f64()).collect()
}

#[test]
fn two_processes_with_half_a_batch_each_match_one_process_in_f64() {
    if std::env::var_os(INNER).is_none() {
        let me = std::env::current_exe().unwrap();
        let o = std::process::Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", INNER])
            .arg(me)
            .args([
                "--exact",
                "two_processes_with_half_a_batch_each_match_one_process_in_f64",
            ])
            .args(["--nocapture", "--test-threads", "1"])
            .env(INNER, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        assert!(text.contains("rank 0 of 2 agrees"), "{text}");
        return;
    }
    let world = collective::from_environment().unwrap();
    let (rank, size) = (world.rank(), world.size());
    assert_eq!(size, 2);
    // An odd batch: shards of 5 and 6 samples, weighted 5/11 and 6/11.
    let parallel = train(world.as_ref(), shard_range(BATCH, rank, size));
    if rank == 0 {
        let single = train(&collective::SingleProcess, 0..BATCH);
        let worst = single
            .iter()
            .zip(&parallel)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-12, "the weights differ by {worst}");
        println!("rank 0 of 2 agrees with one process to {worst:e}");
    }
    // MPI is finalized explicitly (the world is not finalized on drop): without it
    // mpirun reports an improper exit and fails the job.
    collective::finish(true);
}

/// The all-reduce's bandwidth, for docs/distributed.md (not a check: run by hand,
/// `mpirun -np 2 TEST_BINARY --ignored --exact all_reduce_bandwidth --nocapture`).
#[test]
#[ignore]
fn all_reduce_bandwidth() {
    let world = collective::from_environment().unwrap();
    for floats in [1usize << 10, 1 << 14, 1 << 18, 1 << 20, 1 << 22] {
        let mut v = vec![1.0f32; floats];
        world.sum_f32(&mut v);
        let reps = (64 << 20) / (floats * 4) + 3;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            world.sum_f32(&mut v);
        }
        let secs = t0.elapsed().as_secs_f64() / reps as f64;
        if world.rank() == 0 {
            let bytes = (floats * 4) as f64;
            println!(
                "{:>9} bytes: {:>9.1} us per all-reduce, {:.2} GB/s of gradient",
                floats * 4,
                secs * 1e6,
                bytes / secs / 1e9
            );
        }
    }
    collective::finish(true);
}
