//! `memory`: the adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly &
//! Hinton 2015). Each sequence has T steps of two features, a number drawn
//! from U(0, 1) and a marker that is 1 at exactly two steps, one in each
//! half; the target is the sum of the two marked numbers. Always answering 1
//! scores an MSE of 1/6 ≈ 0.167, the variance of the sum: a network beats
//! it only by carrying the first marked number across at least T/2 steps.
//! A tanh RNN, an LSTM and a GRU of the same size train on the same budget,
//! and ‖∂L/∂h_t‖ shows, step by step, how much of the loss reaches back.

use super::{io_err, line_plot, write, ExperimentOptions, Progress};
use crate::config::TrainConfig;
use crate::error::Result as Res;
use crate::metrics::batch_tensor;
use crate::trainer::{DataSource, Silent, Trainer};
use gradflow::DType;
use gradflow_data::{Dataset, Targets};
use gradflow_nn::{Ctx, Loss, ModelSpec, Module, Sequential, Target};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The cells compared, by model-file layer type.
const CELLS: [&str; 3] = ["RNN", "LSTM", "GRU"];

/// A run has solved the task when its test MSE is below this share of the baseline's.
const SOLVED_SHARE: f64 = 0.1;

/// `n` adding-problem sequences of `steps` steps, drawn from `seed`: features
/// `[n, steps, 2]` (number, marker), one target per sequence.
pub fn adding_problem(n: usize, steps: usize, seed: u64) -> Res<Dataset> {
    let mut rng = gradflow::seeded_rng(seed);
    let half = steps / 2;
    let mut features = vec![0f32; n * steps * 2];
    let mut targets = Vec::with_capacity(n);
    for seq in features.chunks_mut(steps * 2) {
        for step in seq.chunks_mut(2) {
            step[0] = rng.gen::<f32>();
        }
        let (a, b) = (rng.gen_range(0..half), rng.gen_range(half..steps));
        seq[2 * a + 1] = 1.0;
        seq[2 * b + 1] = 1.0;
        targets.push(seq[2 * a] + seq[2 * b]);
    }
    let targets = Targets::Values {
        values: targets,
        width: 1,
    };
    Ok(Dataset::new(features, vec![steps, 2], targets)?)
}

/// The MSE of always answering 1 on `ds`: what a model that remembers nothing can reach.
pub fn baseline_mse(ds: &Dataset) -> f64 {
    let Targets::Values { values, .. } = &ds.targets else {
        return f64::NAN;
    };
    values.iter().map(|&y| (f64::from(y) - 1.0).powi(2)).sum::<f64>() / values.len().max(1) as f64
}

/// The model of one run: `cell` (`RNN`, `LSTM`, `GRU`) with `hidden` units over
/// `steps` steps, its last hidden state read by Linear 1.
pub fn memory_model(cell: &str, hidden: usize, steps: usize) -> Res<ModelSpec> {
    let text = format!(
        "input = [{steps}, 2]\n[[layer]]\ntype = \"{cell}\"\nhidden_size = {hidden}\noutput = \"last\"\n\
         [[layer]]\ntype = \"Linear\"\nout_features = 1\n"
    );
    Ok(ModelSpec::parse(&text, &format!("memory-{cell}"))?)
}

/// ‖∂L/∂h_t‖ of the recurrent layer (the model's first) on the first `n`
/// sequences of `ds`, t = 0 … T−1, read from the diagnostics' hook in the op.
pub fn hidden_grad_norms(model: &Sequential, ds: &Dataset, n: usize) -> Res<Vec<f64>> {
    let idx: Vec<usize> = (0..n.min(ds.len())).collect();
    let x = batch_tensor(ds, &idx, DType::F32)?;
    let Targets::Values { values, .. } = &ds.targets else {
        return Err(crate::Error::Input("the adding problem has values as targets".into()));
    };
    let y = gradflow::Tensor::from_vec(values[..idx.len()].to_vec(), &[idx.len(), 1])?;
    let mut ctx = Ctx::eval();
    ctx.record_outputs = true;
    let out = model.forward(&x, &mut ctx)?;
    Loss::Mse.compute(&out, Target::Values(&y))?.backward()?;
    let slot = ctx.hidden_grads.first().map(|s| s.norms.get());
    Ok(slot.flatten().unwrap_or_default())
}

/// One run of the memory study.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    /// `RNN` (tanh), `LSTM` or `GRU`.
    pub cell: String,
    /// Sequence length T.
    pub steps: usize,
    /// Test MSE after the budget.
    pub test_mse: f64,
    /// MSE of always answering 1 on the same test set.
    pub baseline_mse: f64,
    /// Whether the test MSE is below a tenth of the baseline's.
    pub solved: bool,
    /// ‖∂L/∂h_t‖ at the first step over the last, at initialization.
    pub grad_ratio_init: f64,
    /// The same ratio after training.
    pub grad_ratio_trained: f64,
    /// Training MSE per epoch.
    pub train_mse: Vec<f64>,
    /// Validation MSE per epoch.
    pub val_mse: Vec<f64>,
    /// ‖∂L/∂h_t‖ by step t at initialization.
    pub grad_norms_init: Vec<f64>,
    /// ‖∂L/∂h_t‖ by step t after training.
    pub grad_norms_trained: Vec<f64>,
    /// Wall-clock seconds of training.
    pub seconds: f64,
}

/// The settings every run shares: the same budget for every cell and length.
fn memory_config(opts: &ExperimentOptions) -> TrainConfig {
    TrainConfig {
        model: "memory".into(),
        epochs: opts.epochs,
        batch_size: 32,
        lr: MEMORY_LR,
        optimizer: "adam".into(),
        schedule: "constant".into(),
        clip_norm: Some(1.0),
        seed: opts.seed,
        diagnostics_every: 0,
        ..TrainConfig::default()
    }
}

/// Adam's learning rate in every run.
const MEMORY_LR: f64 = 3e-3;

/// The data of one sequence length: training, validation and test sets, each from its own seed.
struct Split {
    train: Dataset,
    val: Dataset,
    test: Dataset,
}

fn split(opts: &ExperimentOptions, steps: usize) -> Res<Split> {
    let held_out = if opts.quick { 128 } else { 1000 };
    let seed = opts.seed.wrapping_mul(1000).wrapping_add(steps as u64);
    Ok(Split {
        train: adding_problem(opts.train_size, steps, seed)?,
        val: adding_problem(held_out, steps, seed ^ 0x5eed_0001)?,
        test: adding_problem(held_out, steps, seed ^ 0x5eed_0002)?,
    })
}

/// Train each cell on each length; write the table, the curves and the gradient plots.
pub fn memory(opts: &ExperimentOptions, progress: &mut dyn Progress) -> Res<Vec<MemoryRow>> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| io_err(&opts.out_dir, e))?;
    let total = CELLS.len() * opts.lengths.len();
    let mut rows = Vec::with_capacity(total);
    for &steps in &opts.lengths {
        let data = split(opts, steps)?;
        for cell in CELLS {
            progress.run_start(rows.len(), total, &format!("{cell}, T = {steps}"));
            let row = memory_run(opts, &data, cell, steps)?;
            progress.run_end(
                rows.len(),
                &format!(
                    "test MSE {:.4} (baseline {:.3}), ‖∂L/∂h₀‖/‖∂L/∂h_T‖ {:.1e} at init",
                    row.test_mse, row.baseline_mse, row.grad_ratio_init
                ),
            );
            rows.push(row);
        }
    }
    write_memory(opts, &rows)?;
    Ok(rows)
}

/// First step's norm over the last step's.
fn first_over_last(v: &[f64]) -> f64 {
    match (v.first(), v.last()) {
        (Some(a), Some(b)) if *b > 0.0 => a / b,
        _ => f64::NAN,
    }
}

fn memory_run(opts: &ExperimentOptions, data: &Split, cell: &str, steps: usize) -> Res<MemoryRow> {
    let spec = memory_model(cell, opts.width, steps)?;
    let run_dir = opts
        .out_dir
        .join("runs")
        .join(format!("{}-t{steps}", cell.to_lowercase()));
    let source = DataSource::Datasets {
        train: data.train.clone(),
        val: Some(data.val.clone()),
        test: data.test.clone(),
    };
    let mut t = Trainer::new(memory_config(opts), spec, source, &run_dir)?;
    let probe = if opts.quick { 64 } else { 256 };
    let grad_norms_init = hidden_grad_norms(&t.model, &data.test, probe)?;
    let t0 = Instant::now();
    let summary = t.fit(&mut Silent, &AtomicBool::new(false))?;
    let seconds = t0.elapsed().as_secs_f64();
    let grad_norms_trained = hidden_grad_norms(&t.model, &data.test, probe)?;
    let baseline = baseline_mse(&data.test);
    Ok(MemoryRow {
        cell: cell.into(),
        steps,
        test_mse: summary.test_loss,
        baseline_mse: baseline,
        solved: summary.test_loss < SOLVED_SHARE * baseline,
        grad_ratio_init: first_over_last(&grad_norms_init),
        grad_ratio_trained: first_over_last(&grad_norms_trained),
        train_mse: t.history().iter().map(|m| m.train_data_loss).collect(),
        val_mse: t.history().iter().map(|m| m.val_loss.unwrap_or(f64::NAN)).collect(),
        grad_norms_init,
        grad_norms_trained,
        seconds,
    })
}

/// The table as CSV, markdown and JSON; per length, the validation curves and the gradient by step.
fn write_memory(opts: &ExperimentOptions, rows: &[MemoryRow]) -> Res<()> {
    let mut csv = String::from("cell,steps,test_mse,baseline_mse,solved,grad_ratio_init,grad_ratio_trained,seconds\n");
    let mut md = format!(
        "The adding problem: {} training sequences, {} epochs, batch 32, Adam (lr {MEMORY_LR}), gradient norm clipped at 1, \
         {} hidden units; solved = test MSE below {SOLVED_SHARE} × the baseline (always answering 1).\n\n\
         | cell | T | test MSE | baseline MSE | solved | ‖∂L/∂h₀‖/‖∂L/∂h_T−1‖ at init | after training | seconds |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        opts.train_size, opts.epochs, opts.width
    );
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:e},{:e},{:.1}",
            r.cell, r.steps, r.test_mse, r.baseline_mse, r.solved, r.grad_ratio_init, r.grad_ratio_trained, r.seconds
        );
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {} | {:.1e} | {:.1e} | {:.0} |",
            r.cell,
            r.steps,
            r.test_mse,
            r.baseline_mse,
            if r.solved { "yes" } else { "no" },
            r.grad_ratio_init,
            r.grad_ratio_trained,
            r.seconds
        );
    }
    write(&opts.out_dir, "memory.csv", &csv)?;
    write(&opts.out_dir, "memory.md", &md)?;
    write(
        &opts.out_dir,
        "memory.json",
        &serde_json::to_string_pretty(&rows).expect("serialize"),
    )?;
    for &steps in &opts.lengths {
        plot_length(opts, rows, steps)?;
    }
    Ok(())
}

/// For one length: each cell's validation MSE by epoch against the baseline,
/// and its ‖∂L/∂h_t‖ by step at initialization and after training.
fn plot_length(opts: &ExperimentOptions, rows: &[MemoryRow], steps: usize) -> Res<()> {
    let rows: Vec<&MemoryRow> = rows.iter().filter(|r| r.steps == steps).collect();
    let mut curves: Vec<(String, Vec<f64>)> = rows.iter().map(|r| (r.cell.clone(), r.val_mse.clone())).collect();
    if let Some(r) = rows.first() {
        curves.push(("baseline (always 1)".into(), vec![r.baseline_mse; r.val_mse.len()]));
    }
    line_plot(
        &opts.out_dir.join(format!("memory_curves_t{steps}.png")),
        &format!("Adding problem, T = {steps}: validation MSE by epoch"),
        "epoch",
        "validation MSE (log)",
        &curves,
        true,
    )?;
    let grads: Vec<(String, Vec<f64>)> = rows
        .iter()
        .flat_map(|r| {
            [
                (format!("{} at init", r.cell), r.grad_norms_init.clone()),
                (format!("{} trained", r.cell), r.grad_norms_trained.clone()),
            ]
        })
        .collect();
    line_plot(
        &opts.out_dir.join(format!("memory_grad_t{steps}.png")),
        &format!("Adding problem, T = {steps}: gradient reaching the hidden state"),
        "time step t (1 = first)",
        "‖∂L/∂h_t‖ (log)",
        &grads,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_problem_marks_one_number_in_each_half_and_sums_them() {
        let ds = adding_problem(50, 10, 3).unwrap();
        assert_eq!((ds.len(), ds.sample_shape.as_slice()), (50, &[10usize, 2][..]));
        let Targets::Values { values, .. } = &ds.targets else {
            panic!()
        };
        for (i, &y) in values.iter().enumerate() {
            let seq = ds.sample(i).unwrap();
            let marked: Vec<usize> = (0..10).filter(|&t| seq[2 * t + 1] == 1.0).collect();
            assert_eq!(marked.len(), 2, "{seq:?}");
            assert!(marked[0] < 5 && marked[1] >= 5, "{marked:?}");
            assert!(seq
                .chunks(2)
                .all(|s| (0.0..1.0).contains(&s[0]) && (s[1] == 0.0 || s[1] == 1.0)));
            assert_eq!(y, seq[2 * marked[0]] + seq[2 * marked[1]]);
        }
        // Seeded: the same seed draws the same sequences, another seed others.
        assert_eq!(adding_problem(50, 10, 3).unwrap(), ds);
        assert_ne!(adding_problem(50, 10, 4).unwrap(), ds);
    }

    #[test]
    fn always_answering_one_scores_about_a_sixth() {
        let b = baseline_mse(&adding_problem(20_000, 4, 1).unwrap());
        assert!((b - 1.0 / 6.0).abs() < 0.005, "{b}");
    }

    #[test]
    fn a_recurrent_runs_diagnostics_and_report_carry_the_gradient_through_time() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            epochs: 2,
            batch_size: 8,
            diagnostics_every: 2,
            ..TrainConfig::default()
        };
        let source = DataSource::Datasets {
            train: adding_problem(32, 6, 1).unwrap(),
            val: None,
            test: adding_problem(16, 6, 2).unwrap(),
        };
        let spec = memory_model("GRU", 4, 6).unwrap();
        let mut t = Trainer::new(config, spec, source, dir.path()).unwrap();
        t.fit(&mut Silent, &AtomicBool::new(false)).unwrap();
        let data = crate::report::RunData::load(dir.path()).unwrap();
        assert_eq!(data.steps.len(), 4, "steps 0, 2, 4, 6 of 8");
        for r in &data.steps {
            let series = &r.layers[0].hidden_grad_norms;
            assert_eq!((series.len(), series[0].norms.len()), (1, 6));
            assert!(series[0].norms.iter().all(|v| v.is_finite() && *v > 0.0));
            assert!(r.layers[1].hidden_grad_norms.is_empty());
        }
        let report = crate::report::write_report(dir.path()).unwrap();
        assert_eq!(
            report.plots.last().unwrap(),
            &dir.path().join(crate::report::TIME_PLOT_FILE)
        );
    }

    #[test]
    fn the_hidden_gradient_of_an_untrained_rnn_fades_towards_the_first_step() {
        let spec = memory_model("RNN", 8, 30).unwrap();
        let model = spec.build(Default::default()).unwrap();
        let norms = hidden_grad_norms(&model, &adding_problem(16, 30, 2).unwrap(), 16).unwrap();
        assert_eq!(norms.len(), 30);
        assert!(first_over_last(&norms) < 1e-3, "{norms:?}");
    }
}
