//! # gradflow-train
//!
//! The fit loop, metrics, checkpoints and diagnostics. Everything the
//! `gradflow` CLI does is available here to Rust code.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod data;
pub mod diagnostics;
pub mod error;
pub mod experiment;
pub mod explain;
pub mod grad;
pub mod images;
pub mod metrics;
pub mod predict;
pub mod report;
pub mod run_dir;
pub mod step;
pub mod table;
pub mod trainer;

pub use config::TrainConfig;
pub use data::DataSource;
pub use diagnostics::Warning;
pub use error::{Error, Result};
pub use grad::{grad, GradOptions, Gradients};
pub use metrics::{evaluate, predict_all, regression_metrics, EpochMetrics, EpochSums, Evaluation, RegressionMetrics};
pub use step::{train_step, Objective, Step, StepOutcome, Update};
pub use trainer::{Observer, Silent, StopReason, Summary, Trainer};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
